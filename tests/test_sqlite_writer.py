"""The SQLite writer commits transactions that wait together in one COMMIT, each still alone in success
or failure (store/sqlite.py SqliteWriter). On a real database file; no server."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from messageservice.store.sqlite import SqliteWriter


def rows(path: Path) -> list[Any]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT value FROM t ORDER BY value").fetchall()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (value INTEGER PRIMARY KEY)")
    return path


def insert(value: int) -> Any:
    def transaction(conn: Connection) -> int:
        conn.execute(text("INSERT INTO t (value) VALUES (:v)"), {"v": value})
        return value

    return transaction


def test_transactions_that_wait_together_commit_together_each_failing_alone(database: Path) -> None:
    async def scenario() -> list[Any]:
        writer = SqliteWriter(database)
        try:
            async with writer.transaction():  # holds the writer: the next four wait, then go in one batch
                waiting = [
                    asyncio.create_task(writer.run(work))
                    # A duplicate key: the third fails in its savepoint, the others commit.
                    for work in (insert(1), insert(2), insert(1), insert(3))
                ]
                await asyncio.sleep(0.05)
            return await asyncio.gather(*waiting, return_exceptions=True)
        finally:
            await writer.close()

    results = asyncio.run(scenario())
    assert results[0] == 1 and results[1] == 2 and results[3] == 3
    assert isinstance(results[2], Exception) and "UNIQUE" in str(results[2])
    assert rows(database) == [(1,), (2,), (3,)]


def test_a_failed_commit_fails_every_transaction_of_the_batch(database: Path) -> None:
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")

    def orphan(conn: Connection) -> None:
        # A deferred foreign key is checked at COMMIT: this one makes the shared COMMIT fail.
        conn.execute(text("INSERT INTO child (parent_id) VALUES (99)"))

    async def scenario() -> list[Any]:
        writer = SqliteWriter(database)
        try:
            async with writer.transaction():  # holds the writer: the next three wait, then go together
                waiting = [asyncio.create_task(writer.run(work)) for work in (insert(1), orphan, insert(2))]
                await asyncio.sleep(0.05)
            results = await asyncio.gather(*waiting, return_exceptions=True)
            results.append(await writer.run(insert(3)))  # and the writer goes on
            return results
        finally:
            await writer.close()

    results = asyncio.run(scenario())
    assert all(isinstance(r, Exception) and "FOREIGN KEY" in str(r) for r in results[:3]), results
    assert results[3] == 3
    assert rows(database) == [(3,)]


def test_a_caller_that_gives_up_before_its_turn_is_left_out(database: Path) -> None:
    async def scenario() -> None:
        writer = SqliteWriter(database)
        try:
            async with writer.transaction():
                first = asyncio.create_task(writer.run(insert(1)))
                second = asyncio.create_task(writer.run(insert(2)))
                await asyncio.sleep(0.05)  # both wait for the writer
                second.cancel()
                await asyncio.sleep(0)
            assert await first == 1
            with pytest.raises(asyncio.CancelledError):
                await second
        finally:
            await writer.close()

    asyncio.run(scenario())
    assert rows(database) == [(1,)]
