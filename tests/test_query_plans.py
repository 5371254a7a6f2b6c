"""SQLite's query plans for the statements that run per batch of messages: each must find its rows through
an index that follows the batch, not the backlog (SQLite keeps no statistics here, so a plan can turn
into a walk over every due job as the queue grows; that made a million-message run three times slower)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event

from messageservice.delivery.claims import UPDATE, VARIANTS
from messageservice.delivery.queue import _FINISH
from messageservice.housekeeping import OLDEST_FINISHED
from messageservice.store.db import migrate


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('plans')) / 'plans.db'}"
    migrate(url)
    engine = create_engine(url)

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def explain(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> tuple[str, Any]:
        return "EXPLAIN QUERY PLAN " + statement, parameters

    yield engine
    engine.dispose()


def plan(engine: Engine, statement: Any, params: dict[str, Any]) -> str:
    """SQLite's plan for `statement` as the store runs it (the same compiled SQL and parameters)."""
    with engine.connect() as conn:
        return " | ".join(row[-1] for row in conn.execute(statement, params).fetchall())


def test_finishing_a_batch_looks_each_job_up_by_its_key(engine: Engine) -> None:
    found = plan(engine, _FINISH, {"ids": [1, 2, 3], "now": 0.0})
    assert "PRIMARY KEY" in found and "ix_deliveries_due" not in found, found


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_claim_reads_the_due_jobs_in_their_order(engine: Engine, variant: tuple[bool, bool]) -> None:
    skipping, skipping_apps = variant
    params: dict[str, Any] = {"now": 0.0, "limit": 10, "lease_until": 30.0}
    if skipping:
        params["skip"] = [1, 2]
    if skipping_apps:
        params["skip_apps"] = [3]
    found = plan(engine, UPDATE[variant], params)
    assert "ix_deliveries_due" in found and "TEMP B-TREE" not in found, found


def test_the_purge_reads_the_oldest_messages_by_their_creation_time(engine: Engine) -> None:
    found = plan(engine, OLDEST_FINISHED, {"before": 0.0, "chunk": 500})
    assert "ix_messages_created_at" in found and "TEMP B-TREE" not in found, found
