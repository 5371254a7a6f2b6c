"""The LISTEN connection (PostgreSQL) under supervision: a lost connection is reconnected, then a sweep."""

from __future__ import annotations

import asyncio
import logging
import uuid
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from messageservice.cache.memory import RestCache
from messageservice.delivery.wakeups import CHANNEL, ListenerLost, QueueListener
from messageservice.supervisor import Backoff
from tests.conftest import BACKENDS
from tests.postgres import TempPostgres

pytestmark = pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not in MESSAGESERVICE_TEST_BACKENDS")


class Calls:
    """Counts `on_queued` calls and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self.count = 0
        self.work: list[frozenset[tuple[int, int]] | None] = []
        self.changed = asyncio.Event()

    def __call__(self, work: frozenset[tuple[int, int]] | None) -> None:
        self.count += 1
        self.work.append(work)
        self.changed.set()

    async def reach(self, count: int, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while self.count < count:
                self.changed.clear()
                await self.changed.wait()


async def listener_backends(admin: asyncpg.Connection) -> list[int]:
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()", f"LISTEN%{CHANNEL}%"
    )
    return [row["pid"] for row in rows]


async def scenario(url: str, caplog: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    core: Any = SimpleNamespace(settings=SimpleNamespace(database_url=url), cache=RestCache())
    listener = QueueListener(core, calls, backoff=Backoff(first=0.05, cap=0.2))
    admin = await asyncpg.connect(url.replace("postgresql://", "postgres://"))
    listener.start()
    try:
        await calls.reach(1)  # the sweep right after connecting
        assert listener.health.ready()
        await admin.execute(f"NOTIFY {CHANNEL}")
        await calls.reach(2)
        await admin.execute(f"NOTIFY {CHANNEL}, '5:50,3:30'")  # a send names its (app, sender) pairs
        await calls.reach(3)
        assert calls.work[:3] == [None, None, frozenset({(3, 30), (5, 50)})]

        # The server drops the LISTEN connection (a restart, a failover, an idle-connection killer).
        [pid] = await listener_backends(admin)
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        await calls.reach(4)  # reconnected: a sweep for what was queued while nobody listened
        assert listener.health.restarts == 1
        assert listener.health.last_error is not None and "ListenerLost" in listener.health.last_error
        assert listener.health.ready()
        [new_pid] = await listener_backends(admin)
        assert new_pid != pid
        await admin.execute(f"NOTIFY {CHANNEL}")
        await calls.reach(5)
    finally:
        await listener.stop()
        await admin.close()
    assert listener.health.state == "stopped"
    lost = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], ListenerLost)]
    assert lost and "listener crashed" in lost[0].getMessage()


def test_a_lost_listen_connection_reconnects_and_sweeps(
    postgres: TempPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="messageservice.supervisor")
    url = postgres.create_database("ms_listen_" + uuid.uuid4().hex[:8])
    asyncio.run(scenario(url, caplog))
