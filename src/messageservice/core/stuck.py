"""Stuck messages: the HANDLER accepted them, but their provider never reported a final status in time.

A provider that silently stopped reporting (one that omits CODE in its reports, say) leaves its messages
"sent" forever. A message is *stuck* when:

* its delivery is done (the HANDLER answered, so the provider has it), and
* its status is still `sent` (no delivered, undelivered or failed came), and
* both happened more than the sender's time ago: its own `stuck_after_seconds`, else the setting
  MESSAGESERVICE_STUCK_AFTER_SECONDS; 0 means the sender's messages are never stuck.

This is the one definition: the CLI (`messages list --stuck`), the console's filter and Providers page,
and the metrics (`messageservice_stuck_messages{sender}`) all ask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, literal_column, select, update
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from messageservice.config import MAX_STUCK_AFTER_SECONDS
from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.store.tables import apps, deliveries, messages, senders

# A literal, not a parameter: both engines use the partial index ix_messages_sent only for a query whose
# WHERE names the same constant.
_SENT = literal_column(str(statuses.SENT.id))


# The shortest stuck time a sender has of its own (0 and unset do not count).
SHORTEST_OWN = select(func.min(senders.c.stuck_after_seconds)).where(senders.c.stuck_after_seconds > 0)


def shortest_after(shortest_own: float | None, default_after: float) -> float | None:
    """The shortest stuck time of any sender (its own, or the default that deleted senders' messages and
    senders without one take); None when no message can be stuck. Nothing sent more recently is stuck."""
    times = [t for t in (shortest_own, default_after) if t is not None and t > 0]
    return min(times) if times else None


def condition(now: float, default_after: float, shortest: float = 0.0) -> ColumnElement[bool]:
    """True for the stuck rows of `messages` at `now` (add it to any query over that table). `shortest`
    (`shortest_after`) bounds the index range to what is old enough to be stuck for some sender: a
    provider that reports late leaves many messages `sent` for a while, and those are not read."""
    # Aliases, correlated to `messages` only: the query this joins may join deliveries or senders itself.
    sender, delivery = senders.alias("stuck_sender"), deliveries.alias("stuck_delivery")
    own = (
        select(sender.c.stuck_after_seconds)
        .where(sender.c.id == messages.c.sender_id)
        .correlate(messages)
        .scalar_subquery()
    )
    after = func.coalesce(own, default_after)
    cutoff = now - after
    accepted = (
        exists()
        .where(
            delivery.c.message_id == messages.c.id,
            delivery.c.state == "done",
            delivery.c.next_attempt_at <= cutoff,
        )
        .correlate(messages)
    )
    # Implied by the cutoff; said with a constant bound, it lets the index be ranged.
    return and_(
        messages.c.status_id == _SENT,
        messages.c.updated_at <= now - shortest,
        messages.c.updated_at <= cutoff,
        after > 0,
        accepted,
    )


def core_condition(core: Core, now: float | None = None) -> ColumnElement[bool]:
    return condition(core.clock() if now is None else now, core.settings.stuck_after_seconds)


@dataclass(frozen=True)
class StuckCount:
    sender_id: int | None  # None: the sender was deleted after the message was sent
    message_from: str  # client_id|CODE, the sender's key as messages store it
    count: int


def count_query(now: float, default_after: float, shortest: float = 0.0) -> Select[Any]:
    """Stuck messages per sender: rows (sender_id, message_from, n), for a caller that reads in its own snapshot."""
    return (
        select(messages.c.sender_id, messages.c.message_from, func.count().label("n"))
        .where(condition(now, default_after, shortest))
        .group_by(messages.c.sender_id, messages.c.message_from)
    )


async def stuck_counts(core: Core, now: float | None = None) -> list[StuckCount]:
    """How many messages are stuck now, per sender; senders with none are left out."""
    default_after = core.settings.stuck_after_seconds
    async with core.store.connection() as conn:
        shortest = shortest_after((await conn.execute(SHORTEST_OWN)).scalar(), default_after)
        if shortest is None:
            return []
        query = count_query(core.clock() if now is None else now, default_after, shortest)
        rows = (await conn.execute(query)).all()
    return [StuckCount(r.sender_id, r.message_from, int(r.n)) for r in rows]


async def stuck_per_sender(core: Core, now: float | None = None) -> dict[str, int]:
    """Stuck messages by sender key (client_id|CODE): what the gauge messageservice_stuck_messages{sender} shows."""
    counts: dict[str, int] = {}
    for row in await stuck_counts(core, now):
        counts[row.message_from] = counts.get(row.message_from, 0) + row.count
    return counts


async def stuck_per_sender_id(core: Core, now: float | None = None) -> dict[int, int]:
    """Stuck messages by senders.id, for the Providers page."""
    counts: dict[int, int] = {}
    for row in await stuck_counts(core, now):
        if row.sender_id is not None:
            counts[row.sender_id] = counts.get(row.sender_id, 0) + row.count
    return counts


async def list_stuck_messages(core: Core, actor: Any, params: dict[str, Any], start: Any) -> tuple[list[Any], int, int]:
    """message.list's page (same filters, same rows) restricted to the stuck messages."""
    from messageservice.core.messages import list_messages

    return await list_messages(core, actor, params, start, core_condition(core))


def check_after(seconds: float) -> str | None:
    """Why a sender's own time cannot be used, or None."""
    if not 0 <= seconds <= MAX_STUCK_AFTER_SECONDS:
        return f"must be from 0 to {MAX_STUCK_AFTER_SECONDS:g} seconds (0: never stuck)"
    return None


async def set_stuck_after(core: Core, client_id: str, code: str, seconds: float | None) -> bool:
    """Set a sender's own time (None: back to the setting); False when the app has no such sender."""
    problem = None if seconds is None else check_after(seconds)
    if problem is not None:
        raise ValueError(problem)
    app_id = select(apps.c.id).where(apps.c.client_id == client_id).scalar_subquery()
    async with core.store.transaction() as conn:
        result = await conn.execute(
            update(senders)
            .where(senders.c.app_id == app_id, senders.c.code == code)
            .values(stuck_after_seconds=seconds, updated_at=core.clock())
        )
    return bool(result.rowcount)


async def stuck_after_of(core: Core, client_id: str, code: str) -> tuple[float, bool] | None:
    """A sender's time in force and whether it is its own (else the setting's); None: no such sender."""
    query = (
        select(senders.c.stuck_after_seconds)
        .join(apps, apps.c.id == senders.c.app_id)
        .where(apps.c.client_id == client_id, senders.c.code == code)
    )
    async with core.store.connection() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    if row.stuck_after_seconds is None:
        return core.settings.stuck_after_seconds, False
    return float(row.stuck_after_seconds), True


async def own_times(core: Core) -> dict[int, float]:
    """The senders that have a time of their own (senders.id -> seconds); the others use the setting."""
    query = select(senders.c.id, senders.c.stuck_after_seconds).where(senders.c.stuck_after_seconds.is_not(None))
    async with core.store.connection() as conn:
        rows = (await conn.execute(query)).all()
    return {r.id: float(r.stuck_after_seconds) for r in rows}
