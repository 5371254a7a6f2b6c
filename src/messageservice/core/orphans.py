"""Messages left behind when their sender or app goes (spec 1.9)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from messageservice.core import statuses
from messageservice.store.connection import StoreConnection
from messageservice.store.tables import deliveries, messages

# Bitrix's own text for a message whose sending app is gone (lang/en/lib/sender/sms/rest.php).
APP_GONE = "Message sending application is not registered or was uninstalled"


async def fail_queued(conn: StoreConnection, where: Any, now: float) -> None:
    """Messages still waiting for a sender that is gone fail as Bitrix's do (spec 1.9)."""
    ids = select(messages.c.id).where(where)
    pending = select(deliveries.c.message_id).where(deliveries.c.state == "pending", deliveries.c.message_id.in_(ids))
    await conn.execute(
        update(messages)
        .where(messages.c.id.in_(pending))
        .values(status_id=statuses.ERROR.id, exec_error=APP_GONE, updated_at=now)
    )
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.state == "pending", deliveries.c.message_id.in_(ids))
        .values(state="dead", last_error=APP_GONE)
    )
