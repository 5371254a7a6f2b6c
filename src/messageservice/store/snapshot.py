"""Read-only work over one consistent snapshot, without taking SQLite's write lock.

Reports (stats, following the message stream) run several aggregate queries that must agree with
each other. The store's write engine begins every SQLite transaction with BEGIN IMMEDIATE, so a
report run there would hold up every send for its whole duration. Here SQLite gets a plain deferred
read transaction (a WAL snapshot: writers carry on) in a worker thread, so a long report never blocks
the event loop either; PostgreSQL gets one REPEATABLE READ transaction on the async engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from messageservice.store.db import sqlite_file

T = TypeVar("T")


async def read_snapshot(engine: AsyncEngine, work: Callable[[Connection], T]) -> T:
    """Run `work` (plain synchronous SQLAlchemy calls) inside one read-only snapshot of the database."""
    path = sqlite_file(engine.url.render_as_string(hide_password=False))
    if path is None:
        async with engine.connect() as connection:
            conn = await connection.execution_options(isolation_level="REPEATABLE READ")
            return await conn.run_sync(work)
    return await asyncio.to_thread(_sqlite_snapshot, str(path), work)


def _sqlite_snapshot(path: str, work: Callable[[Connection], T]) -> T:
    engine = create_engine(f"sqlite:///{path}", poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA query_only=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_deferred(conn) -> None:  # type: ignore[no-untyped-def]
        # A deferred transaction: its first read fixes the snapshot; no lock that writers wait on.
        conn.exec_driver_sql("BEGIN")

    try:
        with engine.connect() as conn:
            try:
                return work(conn)
            finally:
                conn.rollback()
    finally:
        engine.dispose()
