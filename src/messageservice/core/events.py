"""App lifecycle events (ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL) queued with the change that caused
them; delivery/app_events.py sends them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert

from messageservice.core.context import Core
from messageservice.phpquery import http_build_query
from messageservice.store.connection import StoreConnection
from messageservice.store.tables import app_events


async def enqueue_event(
    core: Core,
    conn: StoreConnection,
    app_row: Any,
    event: str,
    data: dict[str, Any],
    auth: dict[str, Any],
) -> int:
    now = core.clock()
    body = http_build_query({"event": event, "data": data, "ts": int(now), "auth": auth})
    # The body carries live tokens (refresh_token included), so it is encrypted at rest.
    result = await conn.execute(
        insert(app_events)
        .values(
            app_id=app_row.id,
            event=event,
            url=app_row.url,
            body=core.box.encrypt(body),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(app_events.c.id)
    )
    return int(result.scalar_one())
