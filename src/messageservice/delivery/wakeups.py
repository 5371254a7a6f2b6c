"""Waking dispatchers in other processes: PostgreSQL's LISTEN/NOTIFY on one channel.

A send announces itself inside its own transaction, so the notification goes out on commit; every
worker process listens and starts claiming at once instead of waiting for its next sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from messageservice.config import normalize_database_url

log = logging.getLogger("messageservice.wakeups")

CHANNEL = "messageservice_queued"


def announce(conn: Connection) -> None:
    """Inside a transaction that queued deliveries (a sync connection, see store/writes.py)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"NOTIFY {CHANNEL}"))


class QueueListener:
    """A dedicated connection that calls `on_queued` whenever a send commits anywhere."""

    def __init__(self, database_url: str, on_queued: Callable[[], None]) -> None:
        url = make_url(normalize_database_url(database_url))
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_queued = on_queued
        self._conn: asyncpg.Connection | None = None

    @staticmethod
    def wanted(database_url: str) -> bool:
        return normalize_database_url(database_url).startswith("postgresql")

    async def start(self) -> None:
        try:
            self._conn = await asyncpg.connect(self._dsn)
            await self._conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError):
            # Without it the dispatcher still finds work on its sweep, only later.
            log.exception("LISTEN %s failed; relying on the sweep", CHANNEL)
            self._conn = None

    def _notified(self, *_: object) -> None:
        self._on_queued()

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()
