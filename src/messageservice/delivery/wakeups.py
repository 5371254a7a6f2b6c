"""The process's one LISTEN connection (PostgreSQL), on two channels:

- `CHANNEL`: a send announces itself inside its own transaction, so the notification goes out on commit;
  every dispatching process starts claiming at once instead of waiting for its next sweep;
- `cache.changes.CHANNEL`: a change to what the REST cache holds (cache/); every process drops its cache.
  While this connection is down the REST cache is bypassed: a notice missed then would leave it stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
from sqlalchemy.engine import make_url

from messageservice.background import BackgroundLoop
from messageservice.cache import changes
from messageservice.config import normalize_database_url
from messageservice.store.sends import WAKE_CHANNEL, NewWork, woken_work
from messageservice.supervisor import DEFAULT_BACKOFF, Backoff, Sleep

if TYPE_CHECKING:
    from messageservice.core.context import Core

log = logging.getLogger("messageservice.wakeups")

CHANNEL = WAKE_CHANNEL
CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 2.0


class ListenerLost(ConnectionError):
    """The LISTEN connection closed or stopped answering; the supervisor reconnects."""


class QueueListener(BackgroundLoop):
    """A dedicated connection that calls `on_queued` whenever a send commits anywhere, and drops the REST
    cache whenever a change to what it holds commits anywhere.

    It pings its connection every `quiet_seconds`, since a connection that died without a word would
    otherwise go unnoticed; a lost connection ends `run()` with an error, and the supervisor connects
    again with backoff. After every (re)connect `on_queued` is called once: what was queued while
    nobody listened is found by that sweep. `wakeups=False` (a process that does not dispatch): the cache's
    channel only, so that sends elsewhere do not wake it.
    """

    name = "listener"
    quiet_seconds = 10.0

    def __init__(
        self,
        core: Core,
        on_queued: Callable[[NewWork | None], None] | None = None,
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Sleep = asyncio.sleep,
        wakeups: bool = True,
    ) -> None:
        super().__init__(core, backoff=backoff, sleep=sleep)
        self._wakeups = wakeups
        url = make_url(normalize_database_url(core.settings.database_url))
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_queued = on_queued or core.notify_queued

    @staticmethod
    def wanted(database_url: str) -> bool:
        return normalize_database_url(database_url).startswith("postgresql")

    async def run(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_SECONDS)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self._lost(lost))
        try:
            await conn.add_listener(changes.CHANNEL, self._cache_changed)
            if self._wakeups:
                await conn.add_listener(CHANNEL, self._notified)
            # From here on no change can go unseen: the REST cache may be used (it starts empty).
            self._core.cache.listening(True)
            if self._wakeups:
                self._on_queued(None)
            while True:
                self.mark_active()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), timeout=self.quiet_seconds)
                if lost.is_set():
                    raise ListenerLost(f"LISTEN {CHANNEL}: the connection closed")
                try:
                    await conn.fetchval("SELECT 1", timeout=self.quiet_seconds)
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    raise ListenerLost(f"LISTEN {CHANNEL}: the connection stopped answering ({exc})") from exc
        finally:
            self._core.cache.listening(False)
            await self._close(conn, lost.is_set())

    def _lost(self, lost: asyncio.Event) -> None:
        # At once, not when the loop next wakes: a notice may already have been missed.
        self._core.cache.listening(False)
        lost.set()

    @staticmethod
    async def _close(conn: asyncpg.Connection, lost: bool) -> None:
        # Politely when stopping; a connection that died or hangs is only dropped.
        if not lost:
            with contextlib.suppress(Exception):
                await conn.close(timeout=CLOSE_TIMEOUT_SECONDS)
        if not conn.is_closed():
            conn.terminate()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._on_queued(woken_work(payload))

    def _cache_changed(self, *_: object) -> None:
        self._core.cache.invalidate()
