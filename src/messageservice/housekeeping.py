"""Hourly clean-up: expired tokens and codes, and app events finished long ago."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import delete

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core
from messageservice.core.tokens import purge_expired
from messageservice.store.tables import app_events

log = logging.getLogger("messageservice.housekeeping")

INTERVAL_SECONDS = 3600.0
EVENT_RETENTION_SECONDS = 30 * 86400.0


async def purge_once(core: Core) -> None:
    await purge_expired(core)
    async with core.engine.begin() as conn:
        await conn.execute(
            delete(app_events).where(
                app_events.c.state != "pending", app_events.c.finished_at < core.clock() - EVENT_RETENTION_SECONDS
            )
        )


class Housekeeper(BackgroundLoop):
    name = "housekeeping"

    async def run(self) -> None:
        while True:
            try:
                await purge_once(self._core)
            except Exception:  # a failed clean-up must not end the server
                log.exception("housekeeping failed")
            await asyncio.sleep(INTERVAL_SECONDS)
