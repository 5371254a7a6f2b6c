"""What both outboxes (app events, message deliveries) ask of their table: when is the next job due."""

from __future__ import annotations

from sqlalchemy import Table, select

from messageservice.core.context import Core


async def seconds_until_due(core: Core, table: Table) -> float | None:
    """Seconds until the earliest pending job of a table with `state` and `next_attempt_at`; None if none."""
    query = select(table.c.next_attempt_at).where(table.c.state == "pending").order_by(table.c.next_attempt_at).limit(1)
    async with core.engine.connect() as conn:
        due = (await conn.execute(query)).scalar()
    return None if due is None else max(0.0, due - core.clock())
