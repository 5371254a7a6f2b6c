"""Hourly clean-up: expired tokens and codes, app events finished long ago, messages past retention,
breakers closed for a day."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import bindparam, delete, select

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core
from messageservice.core.tokens import purge_expired
from messageservice.store.queues import forget_closed_breakers
from messageservice.store.tables import app_events, deliveries, messages

log = logging.getLogger("messageservice.housekeeping")

INTERVAL_SECONDS = 3600.0
EVENT_RETENTION_SECONDS = 30 * 86400.0
CLOSED_BREAKER_SECONDS = 86400.0


# Messages deleted per transaction by the retention purge: each chunk holds the (SQLite) writer for a
# few milliseconds, so live sends wait at most that long behind it.
PURGE_CHUNK = 500


async def purge_once(core: Core) -> None:
    await purge_expired(core)
    now = core.clock()
    async with core.store.transaction() as conn:
        await conn.execute(
            delete(app_events).where(
                app_events.c.state != "pending", app_events.c.finished_at < now - EVENT_RETENTION_SECONDS
            )
        )
        await conn.run_sync(lambda sync: forget_closed_breakers(sync, now - CLOSED_BREAKER_SECONDS))
    days = core.settings.retention_days
    if days > 0:
        await purge_messages(core, now - days * 86400)


# The created_at index finds the oldest; the join leaves out the messages still pending. Every process
# purges: on PostgreSQL each takes rows no other purge holds, and none waits for another.
OLDEST_FINISHED = (
    select(messages.c.id)
    .join(deliveries, deliveries.c.message_id == messages.c.id)
    .where(messages.c.created_at < bindparam("before"), deliveries.c.state != "pending")
    .order_by(messages.c.created_at)
    .limit(bindparam("chunk"))
    .with_for_update(of=messages, skip_locked=True)
)


async def purge_messages(core: Core, created_before: float, chunk: int = PURGE_CHUNK) -> int:
    """Delete the finished messages created before `created_before` (their delivery, attempts and history
    go with them by cascade), oldest first, `chunk` per transaction; returns how many went.

    A message still being delivered is kept whatever its age. Between chunks the purge pauses as long as
    the last chunk took, so that it takes at most about half of the database's time from live traffic,
    however many messages are due to go (a million after a long retention change)."""
    purged = 0
    started = time.monotonic()
    while True:
        began = time.monotonic()
        async with core.store.transaction() as conn:
            ids = (await conn.execute(OLDEST_FINISHED, {"before": created_before, "chunk": chunk})).scalars().all()
            if ids:
                await conn.execute(delete(messages).where(messages.c.id.in_(ids)))
        purged += len(ids)
        if len(ids) < chunk:
            break
        await asyncio.sleep(time.monotonic() - began)
    if purged:
        log.info("purged %d messages past retention in %.1f s", purged, time.monotonic() - started)
    return purged


class Housekeeper(BackgroundLoop):
    name = "housekeeping"
    quiet_seconds = INTERVAL_SECONDS

    async def run(self) -> None:
        while True:
            self.mark_active()
            try:
                await purge_once(self._core)
            except Exception:  # a failed clean-up must not end the server
                log.exception("housekeeping failed")
            await asyncio.sleep(INTERVAL_SECONDS)
