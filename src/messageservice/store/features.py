"""What differs between the engines, declared once (as Django's `connection.features`).

Code above the store asks a named capability (`store.features.skip_locked`), never the engine's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql.dml import Insert

from messageservice.config import normalize_database_url


@dataclass(frozen=True)
class Features:
    # Claims may skip rows other workers hold (FOR UPDATE SKIP LOCKED); without it claims are serial.
    skip_locked: bool
    # Other processes can be woken on commit (LISTEN/NOTIFY); without it they find work on a sweep.
    listen_notify: bool
    # INSERT/UPDATE ... RETURNING.
    returning: bool
    # A group of sends is one generated statement on the bare driver (store/sends.py).
    bulk_send_statement: bool
    # A claim of due HANDLER calls, and the write-back of their outcomes, are each one statement on
    # the bare driver (delivery/claims.py, store/writebacks.py).
    outbox_statements: bool
    # One writer per process: every write transaction goes through the store's writer thread.
    single_writer: bool
    # Serial columns keep their own sequence, which an explicit id does not move.
    sequences: bool
    # Several read statements can share one consistent snapshot only by asking for REPEATABLE READ.
    repeatable_read_snapshots: bool
    # Integer division of floats truncates, so floor() must be asked for (PostgreSQL casts round).
    cast_rounds: bool
    # Planner statistics are worth refreshing by hand on a young database (store/statistics.py).
    analyze: bool
    # SQLAlchemy's dialect: read only by the helpers below, never by code above the store.
    dialect: str

    def upsert(self, table: Table) -> Insert:
        """An INSERT that takes ON CONFLICT ... DO UPDATE/NOTHING: both engines speak it, each through
        its own SQLAlchemy dialect module."""
        module: Any = postgresql if self.dialect == "postgresql" else sqlite
        return module.insert(table)


POSTGRESQL = Features(
    skip_locked=True,
    listen_notify=True,
    returning=True,
    bulk_send_statement=True,
    outbox_statements=True,
    single_writer=False,
    sequences=True,
    repeatable_read_snapshots=True,
    cast_rounds=True,
    analyze=True,
    dialect="postgresql",
)

SQLITE = Features(
    skip_locked=False,
    listen_notify=False,
    returning=True,
    bulk_send_statement=False,
    outbox_statements=False,
    single_writer=True,
    sequences=False,
    repeatable_read_snapshots=False,
    cast_rounds=False,
    analyze=False,
    dialect="sqlite",
)


def features_for(database_url: str) -> Features:
    """The capabilities of the engine a database URL names."""
    backend = make_url(normalize_database_url(database_url)).get_backend_name()
    if backend == "postgresql":
        return POSTGRESQL
    if backend == "sqlite":
        return SQLITE
    raise ValueError(f"unsupported database engine: {backend}")


def features_of(connection: Any) -> Features:
    """The capabilities behind a SQLAlchemy connection or engine (sync or async)."""
    return POSTGRESQL if connection.dialect.name == "postgresql" else SQLITE
