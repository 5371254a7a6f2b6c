"""Fresh databases for tests, copied from one migrated template per engine.

Migrating a new database costs about a second (Alembic loads and runs every revision); copying a
migrated SQLite file or cloning a PostgreSQL template database costs a few milliseconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from messageservice.store.db import migrate
from tests.postgres import TempPostgres

T = TypeVar("T")
BACKENDS = [b for b in os.environ.get("MESSAGESERVICE_TEST_BACKENDS", "sqlite,postgres").split(",") if b]
TEMPLATE = "ms_template"


def run_sync(work: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even under a running loop (Playwright keeps one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work()).result()  # type: ignore[arg-type]


class DatabaseFactory:
    """Hands out new, migrated, empty databases; the template of each engine is made on first use."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.sqlite_template: Path | None = None
        self.postgres_template = False

    def new_url(self, backend: str, folder: Path, postgres: TempPostgres | None = None) -> str:
        """A SQLite file in `folder`, or a new database on `postgres`."""
        if backend == "sqlite":
            return self._new_sqlite(folder / "messageservice.db")
        assert postgres is not None
        return self._new_postgres(postgres, "ms_" + uuid.uuid4().hex[:12])

    def _new_sqlite(self, target: Path) -> str:
        with self.lock:
            if self.sqlite_template is None:
                template = self.folder / "template.db"
                migrate(f"sqlite:///{template}")
                self.sqlite_template = template
        target.parent.mkdir(parents=True, exist_ok=True)
        # The migration's engine is disposed, so the WAL is checkpointed and the main file is complete.
        shutil.copyfile(self.sqlite_template, target)
        return f"sqlite:///{target}"

    def _new_postgres(self, pg: TempPostgres, name: str) -> str:
        with self.lock:
            if not self.postgres_template:
                migrate(pg.create_database(TEMPLATE))
                self.postgres_template = True
        run_sync(lambda: clone(pg.url(), name))
        return pg.url(name)


async def clone(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
                return
            except asyncpg.ObjectInUseError:
                # The template must have no other session; a migration's connection may still be closing.
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
    finally:
        await connection.close()


def new_database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    """A new, migrated, empty database of `backend` (a SQLite file in `folder`), from the session's factory."""
    factory: DatabaseFactory = request.getfixturevalue("databases")
    postgres = request.getfixturevalue("postgres") if backend == "postgres" else None
    return factory.new_url(backend, folder, postgres)
