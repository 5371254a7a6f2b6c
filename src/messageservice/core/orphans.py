"""Messages left behind when their sender or app goes (spec 1.9)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from messageservice.core import statuses
from messageservice.observability.metrics import metrics_for
from messageservice.store.connection import StoreConnection
from messageservice.store.tables import deliveries, messages

if TYPE_CHECKING:
    from messageservice.core.context import Core

# Bitrix's own text for a message whose sending app is gone (lang/en/lib/sender/sms/rest.php).
APP_GONE = "Message sending application is not registered or was uninstalled"


async def fail_queued(conn: StoreConnection, where: Any, now: float) -> dict[str, int]:
    """Messages still waiting for a sender that is gone fail as Bitrix's do (spec 1.9).

    Returns how many failed per sender, for the metrics once the caller's transaction commits."""
    ids = select(messages.c.id).where(where)
    pending = select(deliveries.c.message_id).where(deliveries.c.state == "pending", deliveries.c.message_id.in_(ids))
    failed = await conn.execute(
        update(messages)
        .where(messages.c.id.in_(pending))
        .values(status_id=statuses.ERROR.id, exec_error=APP_GONE, updated_at=now)
        .returning(messages.c.message_from)
    )
    per_sender: dict[str, int] = {}
    for (sender,) in failed:
        per_sender[sender] = per_sender.get(sender, 0) + 1
    await conn.execute(
        update(deliveries)
        .where(deliveries.c.state == "pending", deliveries.c.message_id.in_(ids))
        .values(state="dead", last_error=APP_GONE)
    )
    return per_sender


def count_failed(core: Core, failed: dict[str, int]) -> None:
    """Once the transaction that failed them committed: the metrics' status changes."""
    metrics = metrics_for(core)
    for sender, count in failed.items():
        metrics.status_changed(sender, statuses.ERROR.name, count)
