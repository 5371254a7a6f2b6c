"""The store boundary: its budget, its declared features, its one error type, SQLite's one writer,
durability and file modes. Pure logic first (no database), then the store itself on both engines."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy import bindparam, insert, select, text
from sqlalchemy import exc as sa

from messageservice.config import SettingsError
from messageservice.store import sends
from messageservice.store.budget import split
from messageservice.store.db import migrate
from messageservice.store.errors import StoreConflict, StoreError, StoreUnavailable
from messageservice.store.failures import translate
from messageservice.store.features import POSTGRESQL, SQLITE, features_for
from messageservice.store.sqlite import prepare_file
from messageservice.store.store import Store
from messageservice.store.tables import messages, users
from tests.conftest import new_database_url
from tests.postgres import free_port

T = TypeVar("T")

# Pure logic.


@pytest.mark.parametrize("total", [3, 4, 10, 16, 100])
def test_the_budget_is_split_without_exceeding_it(total: int) -> None:
    budget = split(total)
    assert budget.total == total
    assert min(budget.engine, budget.fast, budget.listener) >= 1


def test_a_budget_too_small_to_run_is_a_settings_error() -> None:
    with pytest.raises(SettingsError) as caught:
        split(2)
    assert caught.value.variable == "MESSAGESERVICE_DB_MAX_CONNECTIONS"


def test_features_are_chosen_from_the_url() -> None:
    assert features_for("sqlite:///var/x.db") is SQLITE
    assert features_for("postgres://u@h/db") is POSTGRESQL
    assert features_for("postgresql+asyncpg://u@h/db").skip_locked
    assert SQLITE.single_writer and not POSTGRESQL.single_writer
    with pytest.raises(ValueError):
        features_for("mysql://u@h/db")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (sqlite3.OperationalError("database or disk is full"), StoreUnavailable),
        (sqlite3.OperationalError("attempt to write a readonly database"), StoreUnavailable),
        (sqlite3.OperationalError("no such table: messages"), StoreError),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StoreConflict),
        (sa.OperationalError("SELECT 1", {}, sqlite3.OperationalError("database or disk is full")), StoreUnavailable),
        (sa.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE")), StoreConflict),
        (asyncpg.exceptions.DiskFullError("no space left on device"), StoreUnavailable),
        (asyncpg.exceptions.ReadOnlySQLTransactionError("read-only transaction"), StoreUnavailable),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), StoreUnavailable),
        (asyncpg.exceptions.TooManyConnectionsError("too many clients"), StoreUnavailable),
        (asyncpg.exceptions.UniqueViolationError("duplicate key"), StoreConflict),
        (asyncpg.exceptions.UndefinedTableError("relation does not exist"), StoreError),
        (ConnectionRefusedError(111, "Connection refused"), StoreUnavailable),
    ],
)
def test_driver_errors_become_store_errors(error: Exception, expected: type[StoreError]) -> None:
    mapped = translate(error)
    assert type(mapped) is expected


def test_other_errors_pass_through() -> None:
    assert translate(ValueError("not a database error")) is None
    assert translate(KeyError("x")) is None


def test_the_send_statement_is_generated_from_the_tables() -> None:
    # Every messages column the statement does not fill itself is an input array, in table order.
    filled = {"id", "app_id", "sender_id", "sender_code", "status_id", "exec_error", "updated_at"}
    expected = [c.name for c in messages.columns if c.name not in filled] + ["reporter_app_id"]
    assert list(sends.INPUT_NAMES) == expected
    assert f"${len(expected)}::INTEGER[]" in sends.QUEUE_SQL
    assert f"${len(expected) + 2}" in sends.QUEUE_SQL and f"${len(expected) + 3}" not in sends.QUEUE_SQL
    assert "ON CONFLICT DO NOTHING" in sends.QUEUE_SQL and "pg_notify" in sends.QUEUE_SQL
    rows = [{name: f"v{name}" for name in expected}]
    assert sends.arguments(rows) == [[f"v{name}"] for name in expected]


# The store on a real database (no async test plugin here: each scenario runs under asyncio.run).


@pytest.fixture
def database(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> str:
    url = new_database_url(request, backend, tmp_path)
    migrate(url)
    return url


def with_store(url: str, scenario: Callable[[Store], Awaitable[T]]) -> T:
    async def main() -> T:
        store = Store(url, 10)
        try:
            return await scenario(store)
        finally:
            await store.close()

    return asyncio.run(main())


# Hot-path reads are compiled once and keep their statement by identity, with named parameters only.
_BY_NAME = select(users.c.name).where(users.c.name == bindparam("name"))


async def _add_user(store: Store, name: str, login: str | None = None) -> int:
    async with store.transaction() as conn:
        row = await conn.execute(insert(users).values(name=name, login=login, created_at=1.0).returning(users.c.id))
        return int(row.scalar_one())


async def _names(store: Store) -> list[str]:
    async with store.connection() as conn:
        return list((await conn.execute(select(users.c.name).order_by(users.c.id))).scalars().all())


def test_a_transaction_commits_or_rolls_back_as_a_whole(database: str) -> None:
    async def scenario(store: Store) -> list[str]:
        await _add_user(store, "kept")
        with pytest.raises(RuntimeError):
            async with store.transaction() as conn:
                await conn.execute(insert(users).values(name="undone", created_at=1.0))
                raise RuntimeError("the caller failed")
        return await _names(store)

    assert with_store(database, scenario) == ["kept"]


def test_a_unique_key_refusal_is_a_store_conflict(database: str) -> None:
    async def scenario(store: Store) -> list[str]:
        await _add_user(store, "a", login="same")
        with pytest.raises(StoreConflict):
            await _add_user(store, "b", login="same")
        # A savepoint keeps the rest of the transaction.
        async with store.transaction() as conn:
            with pytest.raises(StoreConflict):
                async with conn.begin_nested():
                    await conn.execute(insert(users).values(name="c", login="same", created_at=1.0))
            await conn.execute(insert(users).values(name="d", created_at=1.0))
        return await _names(store)

    assert with_store(database, scenario) == ["a", "d"]


def test_write_read_and_fetch_run_where_they_should(database: str) -> None:
    async def scenario(store: Store) -> tuple[str, list[str]]:
        await store.write(lambda conn: conn.execute(insert(users).values(name="w", created_at=1.0)))
        read = await store.read(lambda conn: conn.execute(select(users.c.name)).scalar_one())
        rows = await store.fetch(_BY_NAME, {"name": "w"})
        return read, [row["name"] for row in rows]

    assert with_store(database, scenario) == ("w", ["w"])


def test_an_unreachable_database_is_store_unavailable(backend: str, tmp_path: Path) -> None:
    if backend == "sqlite":
        folder = tmp_path / "db-is-a-folder"
        folder.mkdir()  # SQLite cannot open a directory as its database
        url = f"sqlite:///{folder}"
    else:
        url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"

    async def scenario(store: Store) -> None:
        with pytest.raises(StoreUnavailable):
            async with store.connection() as conn:
                await conn.execute(text("SELECT 1"))
        with pytest.raises(StoreUnavailable):
            await store.write(lambda conn: conn.execute(text("SELECT 1")))

    with_store(url, scenario)


# SQLite: one writer, reads that never wait for it, FULL durability, an owner-only file.


@pytest.fixture
def sqlite_database(backend: str, database: str) -> str:
    if backend != "sqlite":
        pytest.skip("SQLite's own behaviour")
    return database


def test_sqlite_acknowledges_only_what_is_on_disk(sqlite_database: str) -> None:
    async def scenario(store: Store) -> tuple[int, str]:
        synchronous = await store.write(lambda conn: conn.exec_driver_sql("PRAGMA synchronous").scalar())
        journal = await store.write(lambda conn: conn.exec_driver_sql("PRAGMA journal_mode").scalar())
        return synchronous, journal

    # 2 is FULL: in WAL mode a commit returns only after the WAL is synced.
    assert with_store(sqlite_database, scenario) == (2, "wal")


def test_sqlite_files_are_owner_only(sqlite_database: str, tmp_path: Path) -> None:
    async def scenario(store: Store) -> None:
        await _add_user(store, "someone")
        path = tmp_path / "messageservice.db"
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert name.exists(), name
            assert stat.S_IMODE(name.stat().st_mode) == 0o600, name

    with_store(sqlite_database, scenario)


def test_an_older_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    path.chmod(0o644)
    prepare_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sqlite_writes_go_through_one_writer_thread(sqlite_database: str) -> None:
    async def scenario(store: Store) -> None:
        async with store.transaction() as conn:
            in_block = await conn.run_sync(lambda _: threading.current_thread().name)
        in_function = await store.write(lambda _: threading.current_thread().name)
        assert in_block.startswith("sqlite-writer") and in_function == in_block
        # The read connections cannot write at all.
        with pytest.raises(StoreError):
            async with store.connection() as conn:
                await conn.execute(insert(users).values(name="no", created_at=1.0))

    with_store(sqlite_database, scenario)


def test_sqlite_reads_never_wait_for_a_writer(sqlite_database: str, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "messageservice.db", isolation_level=None)

    async def scenario(store: Store) -> tuple[list[str], str | None]:
        await _add_user(store, "visible")
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        other.execute(
            "INSERT INTO users (name, last_name, is_admin, active, time_zone, created_at) "
            "VALUES ('pending', '', 0, 1, '', 1.0)"
        )

        async def reads() -> tuple[list[str], str | None]:
            names = await _names(store)
            async with store.snapshot() as conn:
                first = (await conn.execute(select(users.c.name))).scalars().first()
            return names, first

        # Were reads to BEGIN IMMEDIATE, they would wait out the 30 s busy timeout.
        return await asyncio.wait_for(reads(), timeout=5)

    try:
        assert with_store(sqlite_database, scenario) == (["visible"], "visible")
    finally:
        other.close()


def test_a_cancelled_transaction_block_leaves_the_store_usable(database: str) -> None:
    async def scenario(store: Store) -> list[str]:
        inside = asyncio.Event()

        async def stuck() -> None:
            async with store.transaction() as conn:
                await conn.execute(insert(users).values(name="cancelled", created_at=1.0))
                inside.set()
                await asyncio.Event().wait()  # until cancelled

        task = asyncio.create_task(stuck())
        await inside.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await _add_user(store, "after")
        await store.write(lambda conn: conn.execute(insert(users).values(name="then", created_at=1.0)))
        return await _names(store)

    assert with_store(database, scenario) == ["after", "then"]
