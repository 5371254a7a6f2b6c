"""Hot-path reads (token and webhook lookups, sender lists) without the async ORM stack's overhead.

Every REST call makes one or two of these, so they skip SQLAlchemy's execution machinery and run a
statement compiled once on the bare driver (bench/README.md has the numbers):
* SQLite: a plain sqlite3 connection in the event loop's own thread. An indexed read takes a few
  microseconds; aiosqlite hands every query to a thread and back (about 300 us). A WAL reader never
  waits for the writer, and autocommit mode makes every SELECT see the latest committed data.
* PostgreSQL: asyncpg's own pool with prepared statements, with no BEGIN/ROLLBACK around each read.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.sql import Select

Row = Mapping[str, Any]


class PostgresReads:
    _dialect = postgresql.dialect(paramstyle="numeric_dollar")

    def __init__(self, database_url: str, max_size: int) -> None:
        self._dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)
        self._max_size = max(2, max_size)
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self._sql: dict[int, tuple[Select[Any], str, list[str], dict[str, Any]]] = {}

    def _compiled(self, statement: Select[Any]) -> tuple[str, list[str], dict[str, Any]]:
        cached = self._sql.get(id(statement))
        if cached is None or cached[0] is not statement:
            compiled = statement.compile(dialect=self._dialect)
            # The values written into the statement itself (`state == "pending"`) are parameters too.
            fixed = {name: value for name, value in compiled.params.items() if value is not None}
            cached = (statement, str(compiled), list(compiled.positiontup or []), fixed)
            self._sql[id(statement)] = cached
        return cached[1], cached[2], cached[3]

    async def _connections(self) -> asyncpg.Pool:
        # Created on first use, inside the loop that will use it.
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self._dsn, min_size=1, max_size=self._max_size, reset=_keep_session
                    )
        return self._pool

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        sql, names, fixed = self._compiled(statement)
        pool = await self._connections()
        return await pool.fetch(sql, *(params[name] if name in params else fixed[name] for name in names))

    async def fetch_sql(self, sql: str, *args: Any) -> Sequence[Row]:
        """One statement of SQL written for PostgreSQL, in autocommit (atomic on its own)."""
        pool = await self._connections()
        return await pool.fetch(sql, *args)

    async def execute_sql(self, sql: str) -> None:
        """One statement without parameters, outside any transaction block (VACUUM)."""
        pool = await self._connections()
        await pool.execute(sql)

    def in_use(self) -> int:
        return 0 if self._pool is None else self._pool.get_size() - self._pool.get_idle_size()

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset: these connections only run single SELECTs and never change session state.

    asyncpg's default reset is one more round trip (RESET ALL, UNLISTEN *, ...) on every release,
    which cost as much as the read itself.
    """


class SqliteReads:
    _dialect = sqlite_dialect.dialect(paramstyle="named")

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._sql: dict[int, tuple[Select[Any], str]] = {}

    def _connection(self) -> sqlite3.Connection:
        # Opened on first use, so that opening the store touches no file and cannot fail.
        if self._conn is None:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA query_only=ON")
            # Short: this runs in the event loop, and a WAL reader waits only during recovery.
            conn.execute("PRAGMA busy_timeout=250")
            self._conn = conn
        return self._conn

    def _compiled(self, statement: Select[Any]) -> str:
        cached = self._sql.get(id(statement))
        if cached is None or cached[0] is not statement:
            cached = (statement, str(statement.compile(dialect=self._dialect)))
            self._sql[id(statement)] = cached
        return cached[1]

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        return self._connection().execute(self._compiled(statement), dict(params)).fetchall()

    def in_use(self) -> int:
        return 0  # one connection in the event loop's thread, never held across an await

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
