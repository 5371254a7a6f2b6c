"""The installation's state, read from the database when /metrics is scraped: the same numbers from every
process, and nothing lost by a restart. One read snapshot per scrape, a few aggregate statements, each
over an index whose size follows the queue, the dead letters or the messages old enough to be stuck,
never the whole messages table (a scrape must cost the same at a million stored messages as at a thousand)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Select, case, func, select

from messageservice.core.context import Core
from messageservice.core.stuck import SHORTEST_OWN, shortest_after
from messageservice.core.stuck import count_query as stuck_query
from messageservice.delivery.breaker import breaker_state
from messageservice.store.tables import deliveries, delivery_breakers


@dataclass(frozen=True)
class State:
    due: int = 0
    oldest_due_age: float = 0.0
    dead: int = 0
    breakers: dict[str, int] = field(default_factory=dict)  # origin -> 1 open or half-open, 0 closed
    stuck: dict[str, int] = field(default_factory=dict)  # sender -> stuck messages (core/stuck.py)
    pool_in_use: int = 0


_DEAD = select(func.count()).where(deliveries.c.state == "dead")
_BREAKERS = select(delivery_breakers.c.origin, delivery_breakers.c.failures, delivery_breakers.c.open_until)


def _due(now: float) -> Select[Any]:
    # The (state, next_attempt_at) index only. A claimed job's time is its lease's end: in flight is not due.
    due = deliveries.c.next_attempt_at <= now
    return select(
        func.coalesce(func.sum(case((due, 1), else_=0)), 0),
        func.min(case((due, deliveries.c.next_attempt_at), else_=None)),
    ).where(deliveries.c.state == "pending")


def _read(conn: Connection, now: float, breaker_failures: int, stuck_after: float) -> State:
    due, oldest = conn.execute(_due(now)).one()
    breakers: dict[str, int] = {}
    for origin, failures, open_until in conn.execute(_BREAKERS):
        tripped = breaker_state(failures, open_until, breaker_failures, now) != "closed"
        breakers[origin] = max(breakers.get(origin, 0), int(tripped))  # open for any app: open
    stuck: dict[str, int] = {}
    shortest = shortest_after(conn.execute(SHORTEST_OWN).scalar(), stuck_after)
    if shortest is not None:
        for _sender_id, sender, count in conn.execute(stuck_query(now, stuck_after, shortest)):
            stuck[sender] = stuck.get(sender, 0) + int(count)
    return State(
        due=int(due),
        oldest_due_age=max(0.0, now - float(oldest)) if oldest is not None else 0.0,
        dead=int(conn.execute(_DEAD).scalar_one()),
        breakers=breakers,
        stuck=stuck,
    )


async def read_state(core: Core) -> State:
    now = core.clock()
    failures, stuck_after = core.settings.breaker_failures, core.settings.stuck_after_seconds
    state = await core.store.read(lambda conn: _read(conn, now, failures, stuck_after))
    return dataclasses.replace(state, pool_in_use=core.store.connections_in_use())


class StateCollector(Collector):
    """Yields one scrape's state (read before, asynchronously) as gauges."""

    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state
        yield GaugeMetricFamily("messageservice_queue_depth", "Messages due for delivery now (not in flight).", s.due)
        yield GaugeMetricFamily(
            "messageservice_queue_oldest_due_age_seconds",
            "How long the longest-waiting due message has been due; 0 when none is.",
            s.oldest_due_age,
        )
        yield GaugeMetricFamily("messageservice_dead_letters", "Dead letters in the store (given up).", s.dead)
        breakers = GaugeMetricFamily(
            "messageservice_breaker_open", "1 while a handler origin's breaker is open or half-open.", labels=["origin"]
        )
        for origin, value in sorted(s.breakers.items()):
            breakers.add_metric([origin], value)
        yield breakers
        stuck = GaugeMetricFamily(
            "messageservice_stuck_messages",
            "Messages the HANDLER accepted whose provider has not reported a final status within the sender's time.",
            labels=["sender"],
        )
        for sender, count in sorted(s.stuck.items()):
            stuck.add_metric([sender], count)
        yield stuck
        yield GaugeMetricFamily(
            "messageservice_db_pool_connections_in_use",
            "Database connections this process has checked out.",
            s.pool_in_use,
        )
