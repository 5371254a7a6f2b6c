"""Hourly clean-up: expired tokens and codes, app events finished long ago, messages past retention,
breakers closed for a day."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete, select

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core
from messageservice.core.tokens import purge_expired
from messageservice.store.queues import forget_closed_breakers
from messageservice.store.tables import app_events, deliveries, messages

log = logging.getLogger("messageservice.housekeeping")

INTERVAL_SECONDS = 3600.0
EVENT_RETENTION_SECONDS = 30 * 86400.0
CLOSED_BREAKER_SECONDS = 86400.0


async def purge_once(core: Core) -> None:
    await purge_expired(core)
    now = core.clock()
    async with core.engine.begin() as conn:
        await conn.execute(
            delete(app_events).where(
                app_events.c.state != "pending", app_events.c.finished_at < now - EVENT_RETENTION_SECONDS
            )
        )
        await conn.run_sync(lambda sync: forget_closed_breakers(sync, now - CLOSED_BREAKER_SECONDS))
        days = core.settings.retention_days
        if days > 0:
            # A message still being delivered is kept whatever its age; its attempts and history go with it.
            finished = select(deliveries.c.message_id).where(deliveries.c.state != "pending")
            await conn.execute(
                delete(messages).where(messages.c.created_at < now - days * 86400, messages.c.id.in_(finished))
            )


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
