"""Hot-path reads (token and webhook lookups, sender lists) without the async driver's overhead.

On SQLite an indexed read takes a few microseconds on a plain sqlite3 connection in the event
loop's own thread; aiosqlite hands every query to a thread and back (about 300 us each, see
bench/README.md). A WAL reader never waits for the writer, and autocommit mode makes every SELECT
see the latest committed data. Other engines read through the async pool as usual.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

Row = Mapping[str, Any]


class AsyncReads:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        async with self._engine.connect() as conn:
            return (await conn.execute(statement, params)).mappings().all()

    def close(self) -> None:
        pass


class SqliteReads:
    _dialect = sqlite_dialect.dialect(paramstyle="named")

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA query_only=ON")
        # Short: this runs in the event loop, and readers wait only during WAL recovery.
        self._conn.execute("PRAGMA busy_timeout=2000")
        self._sql: dict[int, tuple[Select[Any], str]] = {}

    def _compiled(self, statement: Select[Any]) -> str:
        cached = self._sql.get(id(statement))
        if cached is None or cached[0] is not statement:
            cached = (statement, str(statement.compile(dialect=self._dialect)))
            self._sql[id(statement)] = cached
        return cached[1]

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        return self._conn.execute(self._compiled(statement), dict(params)).fetchall()

    def close(self) -> None:
        self._conn.close()
