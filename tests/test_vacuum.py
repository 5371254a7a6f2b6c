"""The queue table vacuumed by a busy dispatcher once autovacuum's own rule says so (store/vacuum.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from messageservice.background import stop_loops
from messageservice.core.context import Core
from messageservice.delivery.dispatcher import Dispatcher
from messageservice.delivery.queue import HandlerOutbox
from messageservice.store.vacuum import vacuum_if_due
from tests.portal import LivePortal
from tests.receiver import Receiver
from tests.test_messages import register, send

QUIET = {"serve_dispatch": False, "allowed_handler_networks": "127.0.0.0/8"}
MESSAGES = 30


async def table_stats(core: Core) -> dict[str, Any]:
    direct = core.store.direct
    assert direct is not None
    # A statement of its own: the statistics a transaction reads are a snapshot taken at its first look.
    rows = await direct.fetch_sql(
        "SELECT n_live_tup, n_dead_tup, vacuum_count + autovacuum_count AS vacuums FROM pg_stat_user_tables"
        " WHERE relname = 'deliveries'"
    )
    return dict(rows[0])


async def wait_for_stats(core: Core, ready: Any, timeout: float = 15.0) -> dict[str, Any]:
    """Backends report their counts at most once a second: wait until they say what `ready` wants."""
    deadline = time.monotonic() + timeout
    while True:
        stats = await table_stats(core)
        if ready(stats) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.2)


def queue_messages(portal: LivePortal, url: str) -> None:
    app = portal.add_app(url="http://127.0.0.1:7/")
    message_from = register(portal, app, url)
    for _ in range(MESSAGES):
        send(portal, app.access_token, message_from)


async def churn(core: Core, times: int) -> None:
    """What claims and write-backs leave behind: a dead row version per delivery per update."""
    direct = core.store.direct
    assert direct is not None
    for _ in range(times):
        await direct.fetch_sql("UPDATE deliveries SET attempts = attempts")


@pytest.mark.parametrize("local_fresh_portal", [QUIET], indirect=True)
def test_the_queue_table_is_vacuumed_once_its_dead_rows_pass_autovacuums_threshold(
    local_fresh_portal: LivePortal,
) -> None:
    portal = local_fresh_portal
    if portal.backend == "sqlite":
        assert portal.run(vacuum_if_due) is False  # nothing to do: SQLite reuses its free pages itself
        return
    queue_messages(portal, "http://127.0.0.1:9/h")

    async def check(core: Core) -> tuple[bool, dict[str, Any], bool, dict[str, Any]]:
        # No dead rows: under the threshold (50 + 0.2 x live rows by PostgreSQL's defaults).
        before = await table_stats(core)
        clean = await vacuum_if_due(core)
        await churn(core, 4)  # 120 dead rows: over it
        dirty = await wait_for_stats(core, lambda s: s["n_dead_tup"] >= 4 * MESSAGES)
        vacuumed = await vacuum_if_due(core)
        after = await wait_for_stats(core, lambda s: s["vacuums"] > before["vacuums"])
        return clean, dirty, vacuumed, {"before": before, "after": after}

    clean, dirty, vacuumed, stats = portal.run(check)
    assert clean is False, stats
    assert dirty["n_dead_tup"] >= 4 * MESSAGES, dirty
    assert vacuumed is True
    # SKIP_LOCKED: had autovacuum been at the table just then, its vacuum is the one counted.
    assert stats["after"]["vacuums"] == stats["before"]["vacuums"] + 1, stats
    assert stats["after"]["n_dead_tup"] < dirty["n_dead_tup"], stats


@pytest.mark.parametrize("local_fresh_portal", [QUIET], indirect=True)
def test_a_busy_dispatcher_vacuums_the_queue_table_it_churns(local_fresh_portal: LivePortal) -> None:
    portal = local_fresh_portal
    if portal.backend == "sqlite":
        pytest.skip("PostgreSQL's: SQLite has no vacuum to run for the queue")
    handler = Receiver().start()
    try:
        queue_messages(portal, handler.url + "h")

        async def deliver(core: Core) -> tuple[dict[str, Any], dict[str, Any]]:
            await churn(core, 4)
            before = await wait_for_stats(core, lambda s: s["n_dead_tup"] >= 4 * MESSAGES)
            dispatcher = Dispatcher(core, HandlerOutbox())
            dispatcher.start()
            try:
                after = await wait_for_stats(core, lambda s: s["vacuums"] > before["vacuums"])
            finally:
                await stop_loops([dispatcher], 2.0)
            return before, after

        before, after = portal.run(deliver)
        assert after["vacuums"] > before["vacuums"], (before, after)
        assert handler.wait_for(MESSAGES) and len(handler.requests) == MESSAGES
    finally:
        handler.stop()
