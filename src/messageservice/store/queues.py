"""What both outboxes (app events, message deliveries) ask of their table: when is the next job due."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, func, literal_column, select

from messageservice.core.context import Core


async def seconds_until_due(core: Core, table: Table) -> float | None:
    """Seconds until the earliest pending job of a table with `state` and `next_attempt_at`; None if none."""
    query = _EARLIEST.get(table.name)
    if query is None:
        # Built once per table: the hot-path reads compile a statement once and keep it by identity.
        # No bound parameters (a LIMIT would be one): the hot-path readers pass only what we give them.
        query = _EARLIEST[table.name] = select(func.min(table.c.next_attempt_at)).where(
            table.c.state == literal_column("'pending'")
        )
    rows = await core.reads.fetch(query, {})
    due = rows[0][0] if rows else None
    return None if due is None else max(0.0, due - core.clock())


_EARLIEST: dict[str, Select[Any]] = {}
