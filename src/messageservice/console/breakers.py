"""Circuit breakers as every dispatcher shares them through the database: the same view from any process,
an API-only `serve --no-dispatch` included."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from messageservice.core.context import Core
from messageservice.delivery.breaker import breaker_state
from messageservice.delivery.origin import origin
from messageservice.store.queues import breakers

NO_CALLS = "closed"

BreakerStates = dict[tuple[str, str], str]  # (app client_id, handler origin) -> closed | open | half-open


async def breaker_states(core: Core) -> BreakerStates:
    now = core.clock()
    threshold = core.settings.breaker_failures
    # The hot-path readers hand back plain rows (sqlite3.Row, asyncpg.Record): read them by column name.
    return {
        (row["client_id"], row["origin"]): breaker_state(row["failures"], row["open_until"], threshold, now)
        for row in await breakers(core.store)
    }


def breaker_of(client_id: str, handler: str, states: BreakerStates) -> str:
    return states.get((client_id, origin(handler)), NO_CALLS)


@dataclass(frozen=True)
class Held:
    """A pending message that waits for its handler's open breaker, not for a retry of its own."""

    origin: str
    until: float

    def text(self, clock: Callable[[float], str]) -> str:
        return f"held: breaker open for {self.origin} until {clock(self.until)}"


def held_by(
    view: dict[str, Any], handler: str | None, rows: Iterable[Any], failures_to_open: int, now: float
) -> Held | None:
    """Whether the message (a message.get view) is held back by an open breaker of its app and handler."""
    delivery = view.get("DELIVERY") or {}
    if delivery.get("STATE") != "pending" or not handler or "|" not in view["MESSAGE_FROM"]:
        return None
    client_id = view["MESSAGE_FROM"].split("|", 1)[0]
    key = origin(handler)
    for row in rows:
        mine = row["client_id"] == client_id and row["origin"] == key
        if mine and breaker_state(row["failures"], row["open_until"], failures_to_open, now) == "open":
            return Held(key, float(row["open_until"]))
    return None


async def held_message(core: Core, view: dict[str, Any], handler: str | None) -> Held | None:
    if (view.get("DELIVERY") or {}).get("STATE") != "pending":
        return None
    rows = await breakers(core.store)
    return held_by(view, handler, rows, core.settings.breaker_failures, core.clock())


def utc_clock(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).strftime("%H:%M:%S UTC")
