"""The store: the only code that talks to the database, one object for both engines.

Everything a process opens is counted against one connection budget (store/budget.py); what differs
between the engines is in `features` (store/features.py); every failure leaves as StoreError
(store/failures.py). Core asks for:

* `transaction()`: a write transaction block (`async with store.transaction() as conn`);
* `connection()`: reads that never take a write lock;
* `write(fn)` / `read(fn)`: a synchronous function run in one write transaction / one read snapshot;
* `fetch(statement, params)`: a hot-path read, compiled once and run on the bare driver;
* `insert_sends(rows)` / `known_sends(keys)`: the generated single-statement send (PostgreSQL).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Select

from messageservice.config import normalize_database_url
from messageservice.store import sends, writebacks
from messageservice.store.budget import Budget, split
from messageservice.store.change_signal import ChangeSignal
from messageservice.store.connection import StoreConnection
from messageservice.store.failures import store_errors
from messageservice.store.features import Features, features_for
from messageservice.store.reads import PostgresReads, Row, SqliteReads
from messageservice.store.sqlite import SqliteWriter, configure, prepare_file, sqlite_file

T = TypeVar("T")


class Store:
    def __init__(self, database_url: str, max_connections: int) -> None:
        url = normalize_database_url(database_url)
        self.url = url
        self.features: Features = features_for(url)
        self.budget: Budget = split(max_connections)
        path = sqlite_file(url)
        # No overflow: the budget is a bound, and a request waits for a connection rather than open one.
        self._engine: AsyncEngine = create_async_engine(
            url,
            pool_size=self.budget.engine,
            max_overflow=0,
            **({"connect_args": {"timeout": 30}} if path is not None else {}),
        )
        self._writer: SqliteWriter | None = None
        self._fast: PostgresReads | SqliteReads
        # SQLite: the REST cache's change counter in shared memory (store/change_signal.py).
        self.change_signal: ChangeSignal | None = None
        if path is not None:
            with store_errors():
                prepare_file(path)
            configure(self._engine.sync_engine, writer=False)
            self._writer = SqliteWriter(path)
            self._fast = SqliteReads(path)
            self.change_signal = ChangeSignal.beside(path)
        else:
            self._fast = PostgresReads(url, self.budget.fast)
        self.engine = EngineFacade(self)

    # Write transactions.

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreConnection]:
        """One write transaction: commits when the block ends, rolls back if it raises."""
        with store_errors():
            if self._writer is not None:
                async with self._writer.transaction() as conn:
                    yield StoreConnection(conn, self.features)
            else:
                async with self._engine.begin() as conn:
                    yield StoreConnection(conn, self.features)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """Run `work` (plain synchronous SQLAlchemy calls) as one write transaction."""
        with store_errors():
            if self._writer is not None:
                return await self._writer.run(work)
            async with self._engine.begin() as conn:
                return await conn.run_sync(work)

    # Reads.

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[StoreConnection]:
        """A connection for reads (on SQLite it cannot write, and never waits for the writer)."""
        with store_errors():
            async with self._engine.connect() as conn:
                yield StoreConnection(conn, self.features)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[StoreConnection]:
        """A read connection whose statements all see one consistent state of the database."""
        async with self.connection() as conn:
            if self.features.repeatable_read_snapshots:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            yield conn

    async def read(self, work: Callable[[Connection], T]) -> T:
        """Run `work` (plain synchronous SQLAlchemy calls) over one consistent snapshot, off the event loop."""
        async with self.snapshot() as conn:
            return await conn.run_sync(work)

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        """A hot-path read: compiled once, run on the bare driver."""
        with store_errors():
            return await self._fast.fetch(statement, params)

    # The single-statement send (features.bulk_send_statement).

    async def insert_sends(self, rows: Sequence[Mapping[str, Any]], status_id: int, status: str) -> Sequence[Row]:
        """Queue many sends in one statement; answers (id, message_id) of those inserted."""
        assert isinstance(self._fast, PostgresReads), "bulk_send_statement is PostgreSQL's"
        with store_errors():
            return await self._fast.fetch_sql(sends.QUEUE_SQL, *sends.arguments(rows), status_id, status)

    async def known_sends(self, keys: Sequence[tuple[str, str]]) -> Sequence[Row]:
        """The messages that (idempotency_scope, idempotency_key) pairs already name."""
        assert isinstance(self._fast, PostgresReads), "bulk_send_statement is PostgreSQL's"
        with store_errors():
            return await self._fast.fetch_sql(sends.KNOWN_SQL, [s for s, _ in keys], [k for _, k in keys])

    async def write_back(self, arguments: Sequence[Any]) -> Sequence[Row]:
        """A batch of HANDLER call outcomes in one statement (features.outbox_statements;
        `arguments` from store/writebacks.py): the (message_id, status) of each message that moved."""
        assert isinstance(self._fast, PostgresReads), "outbox_statements are PostgreSQL's"
        with store_errors():
            return await self._fast.fetch_sql(writebacks.WRITE_BACK_SQL, *arguments)

    def connections_in_use(self) -> int:
        """Connections checked out of this process's pools now (for the metrics)."""
        return self._engine.pool.checkedout() + self._fast.in_use()

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.close()
        await self._fast.close()
        await self._engine.dispose()
        if self.change_signal is not None:
            self.change_signal.close()
            self.change_signal = None

    # Compatible accessors for code written against the older Core attributes.

    @property
    def dialect(self) -> Any:
        return self._engine.dialect

    @property
    def direct(self) -> DirectStatements | None:
        return DirectStatements(self._fast) if isinstance(self._fast, PostgresReads) else None


class EngineFacade:
    """`core.engine` as it was used: `begin()` is a write transaction, `connect()` a read connection."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def dialect(self) -> Any:
        return self._store.dialect

    @property
    def url(self) -> Any:
        return self._store._engine.url

    def begin(self) -> contextlib.AbstractAsyncContextManager[StoreConnection]:
        return self._store.transaction()

    def connect(self) -> contextlib.AbstractAsyncContextManager[StoreConnection]:
        return self._store.connection()

    async def dispose(self) -> None:
        """The store closes its engine; nothing to do here."""


class DirectStatements:
    """`core.direct`: single PostgreSQL statements (atomic on their own) on the bare driver."""

    def __init__(self, fast: PostgresReads) -> None:
        self._fast = fast

    async def fetch(self, statement: Select[Any], params: Mapping[str, Any]) -> Sequence[Row]:
        with store_errors():
            return await self._fast.fetch(statement, params)

    async def fetch_sql(self, sql: str, *args: Any) -> Sequence[Row]:
        with store_errors():
            return await self._fast.fetch_sql(sql, *args)

    async def execute_sql(self, sql: str) -> None:
        with store_errors():
            await self._fast.execute_sql(sql)


class Writes:
    """`core.writes`: `run(fn)` is one write transaction."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self, transaction: Callable[[Connection], T]) -> T:
        return await self._store.write(transaction)
