"""SQLite's side of the store: the file (0600), the connection pragmas, the one writer thread.

* Durability: WAL with synchronous=FULL, so a commit returns only once the WAL is on disk: a send is
  acknowledged only when a power cut cannot lose it (group commit shares that fsync between sends).
* Privacy: the file holds phone numbers and texts, so it is created readable by its owner only;
  SQLite gives the -wal and -shm files the database file's own mode.
* One writer per process: every write transaction runs on one connection in one thread (a
  transaction block, a whole function, or a group of sends), so the process never competes with
  itself for SQLite's write lock. Reads use other connections that never take it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, event
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection

T = TypeVar("T")

FILE_MODE = 0o600
SYNCHRONOUS = "FULL"


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def prepare_file(path: Path) -> None:
    """Create the database file owner-only before SQLite does (its -wal and -shm follow its mode).

    A file made by an older version with wider permissions is narrowed too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = name.stat().st_mode
            if stat.S_ISREG(mode) and mode & 0o077:
                os.chmod(name, FILE_MODE)


WRITER_CACHE_KIB = 65536
READER_CACHE_KIB = 16384


def _pragmas(dbapi_connection: DBAPIConnection, *, writer: bool) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the writer; foreign keys are off in SQLite unless asked.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # SQLite's default page cache is 2 MB a connection: past some 10,000 messages the indexes a send and a
    # claim walk no longer fit, and every miss is a read from the OS. Pages are allocated as they are used.
    cursor.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB if writer else READER_CACHE_KIB}")
    if not writer:
        cursor.execute("PRAGMA query_only=ON")
    cursor.close()


def configure(engine: Engine, *, writer: bool) -> None:
    """Pragmas and transaction handling for every connection of an engine (the writer's, or readers')."""

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        _pragmas(dbapi_connection, writer=writer)
        # The driver would BEGIN only at the first write, leaving the reads before it outside the
        # transaction; we begin ourselves (SQLAlchemy's documented pysqlite recipe).
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # type: ignore[no-untyped-def]
        # The writer: IMMEDIATE takes the write lock up front, so check-then-write blocks are atomic and
        # another process's writer queues on busy_timeout instead of failing with SQLITE_BUSY_SNAPSHOT.
        # Readers: a deferred BEGIN, whose first read fixes a WAL snapshot; no lock a writer waits on.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


class _Buffered:
    """A statement's result, read whole in the writer thread (rows, rowcount) and used anywhere."""

    def __init__(self, result: Any) -> None:
        self.rowcount: int = result.rowcount
        self._frozen = result.freeze() if result.returns_rows else None

    def _rows(self) -> Any:
        if self._frozen is None:
            raise AttributeError("this statement returns no rows")
        return self._frozen()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rows(), name)

    def __iter__(self) -> Any:
        return iter(self._rows())


Outcome = tuple[bool, Any]  # (committed, its value) or (rolled back, its exception)


class SqliteWriter:
    """The process's one SQLite writer: one connection, one thread, one transaction at a time.

    Transactions submitted while another one runs are committed together: each in a savepoint of one
    transaction (so each still succeeds or fails alone), with one COMMIT, one fsync (synchronous=FULL)
    and one hand-off to the thread for all of them. A send, a claim and a write-back arriving together
    used to cost three commits; under load that serial fsync was what the writer spent its time on.
    Every caller hears of its result only after the shared COMMIT.
    """

    def __init__(self, path: Path) -> None:
        self._engine = create_sync_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})
        configure(self._engine, writer=True)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        # One connection for the writer thread's life: checking one out of the pool for each
        # transaction cost about as much as a small transaction itself.
        self._conn: Connection | None = None
        # A transaction block spans several hand-offs to the thread; nothing else may run between them.
        self._lock: asyncio.Lock | None = None
        # Transactions waiting for the next commit, with the futures their callers await.
        self._waiting: list[tuple[Callable[[Connection], Any], asyncio.Future[Any]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.invalidated or self._conn.closed:
            self._conn = self._engine.connect()
        return self._conn

    def _in_thread(self, transaction: Callable[[Connection], T]) -> T:
        conn = self._connection()
        begun = conn.begin()
        try:
            value = transaction(conn)
        except BaseException:
            begun.rollback()
            raise
        self._commit(conn)
        return value

    def _together_in_thread(self, transactions: list[Callable[[Connection], Any]]) -> list[Outcome]:
        """Each transaction in a savepoint of one transaction; raises only when the COMMIT fails."""
        conn = self._connection()
        outcomes: list[Outcome] = []
        begun = conn.begin()
        try:
            for transaction in transactions:
                savepoint = conn.begin_nested()
                try:
                    value = transaction(conn)
                except Exception as exc:
                    savepoint.rollback()
                    outcomes.append((False, exc))
                else:
                    savepoint.commit()
                    outcomes.append((True, value))
        except BaseException:
            begun.rollback()
            raise
        self._commit(conn)
        return outcomes

    def _commit(self, conn: Connection) -> None:
        transaction = conn.get_transaction()
        if transaction is None:
            return
        try:
            transaction.commit()
        except BaseException:
            # A failed COMMIT (a full disk, a deferred constraint) leaves SQLite inside the transaction:
            # the connection is dropped (closing it rolls back), and the next use opens a fresh one.
            conn.invalidate()
            raise

    def _call(self, work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        # Submitted at once: the thread runs hand-offs in the order they were made.
        return asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def _locked(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def run(self, transaction: Callable[[Connection], T]) -> T:
        """Run `transaction` (plain synchronous SQLAlchemy calls) as one transaction; commit on return."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append((transaction, future))
        if len(self._waiting) == 1:
            # Its own task, so that a caller cancelled meanwhile leaves no one else waiting forever.
            flush = asyncio.create_task(self._commit_waiting())
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        return await future

    async def _commit_waiting(self) -> None:
        async with self._locked():
            # Everything queued by now goes together; a caller that gave up before this is left out.
            batch = [(transaction, future) for transaction, future in self._waiting if not future.done()]
            self._waiting = []
            if not batch:
                return
            try:
                if len(batch) == 1:
                    outcomes: list[Outcome] = [(True, await self._call(self._in_thread, batch[0][0]))]
                else:
                    outcomes = await self._call(self._together_in_thread, [transaction for transaction, _ in batch])
            except Exception as exc:
                # A transaction alone raised, or the shared COMMIT failed: nothing of the batch was committed.
                outcomes = [(False, exc)] * len(batch)
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if not future.done():
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[WriterConnection]:
        """One transaction across awaits (each statement a hand-off); commits at the end of the block."""
        async with self._locked():
            try:
                await self._call(lambda: self._connection().begin())
                yield WriterConnection(self)
            except BaseException:
                # Submitted before the lock is released (the thread runs hand-offs in order), so it ends
                # whatever was begun, even by a cancelled caller, before anyone else's transaction.
                rollback = self._call(self._end, False)
                with contextlib.suppress(BaseException):
                    await rollback
                raise
            await self._call(self._end, True)

    def _end(self, commit: bool) -> None:
        transaction = self._connection().get_transaction()
        if transaction is None:
            return
        if not commit:
            transaction.rollback()
            return
        self._commit(self._connection())

    def _close_in_thread(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.gather(*self._flushes, return_exceptions=True)
        await self._call(self._close_in_thread)
        self._thread.shutdown(wait=True)
        self._engine.dispose()


class WriterConnection:
    """The writer's connection inside a transaction block, with an AsyncConnection's calls."""

    def __init__(self, writer: SqliteWriter) -> None:
        self._writer = writer

    @property
    def dialect(self) -> Any:
        return self._writer._engine.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return await self._writer._call(lambda: _Buffered(self._writer._connection().execute(statement, parameters)))

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        return await self._writer._call(lambda: self._writer._connection().scalar(statement, parameters))

    async def run_sync(self, work: Callable[..., T], *args: Any) -> T:
        return await self._writer._call(lambda: work(self._writer._connection(), *args))

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        savepoint = await self._writer._call(lambda: self._writer._connection().begin_nested())
        try:
            yield
        except BaseException:
            rollback = self._writer._call(savepoint.rollback)
            with contextlib.suppress(BaseException):
                await rollback
            raise
        await self._writer._call(savepoint.commit)
