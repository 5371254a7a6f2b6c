"""Hot-path write transactions (a send) as one synchronous function, run where it is cheapest.

* SQLite: on one plain connection in one writer thread, the whole transaction in a single hand-off.
  Through aiosqlite the same send took about 19 thread hand-offs (one per statement, fetch and
  commit) and some 2 ms; SQLite serialises writers anyway, so one writer thread loses nothing.
* PostgreSQL: inside the async engine's transaction via run_sync (asyncpg underneath, no threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.ext.asyncio import AsyncEngine

from messageservice.store.db import configure_sqlite

T = TypeVar("T")


class AsyncWrites:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def run(self, transaction: Callable[[Connection], T]) -> T:
        async with self._engine.begin() as conn:
            return await conn.run_sync(transaction)

    async def close(self) -> None:
        pass


class SqliteWrites:
    def __init__(self, path: Path) -> None:
        self._engine = create_sync_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})
        configure_sqlite(self._engine)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        # One connection for the writer thread's life: checking one out of the pool for each
        # transaction cost about as much as a small transaction itself.
        self._conn: Connection | None = None

    def _in_thread(self, transaction: Callable[[Connection], T]) -> T:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            self._conn = self._engine.connect()
        with self._conn.begin():
            return transaction(self._conn)

    def _close_in_thread(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, transaction: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._in_thread, transaction)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close_in_thread)
        self._thread.shutdown(wait=True)
        self._engine.dispose()
