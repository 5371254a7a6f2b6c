"""What the dispatchers of several processes share through the database: breakers and concurrency.

Once a second (`SYNC_SECONDS`) each dispatcher, in one transaction, writes the breakers that opened
or closed in it, notes its heartbeat, counts the live dispatchers of its kind and reads every
breaker back. From that it takes its share of each handler's concurrency limit,
`max(1, limit // live dispatchers)`, and adopts the breakers other processes opened or closed.

Tolerance (stated, not hidden):

* a breaker opened in one process holds in the others within about one sync (1 s); until then
  each of them may still make calls that count toward its own `breaker_failures`;
* consecutive failures are counted per process: with N dispatchers a breaker opens after at most
  N x `breaker_failures` failures in all, and after a cool-down each process may send one probe;
* a handler gets at most `limit` calls at once from all processes (`max(1, limit // N)` each, so
  more than `limit` only when N > limit), except for up to one sync after a new dispatcher
  starts (the others still use their larger share) and up to `STALE_SECONDS` after one dies (the
  others keep the smaller share: fewer calls, never more).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, Row

from messageservice.core.context import Core
from messageservice.delivery.breaker import BreakerRow, Gates
from messageservice.store.queues import forget_dispatcher, heartbeat, read_breakers, write_breakers

log = logging.getLogger("messageservice.dispatcher")

SYNC_SECONDS = 1.0
STALE_SECONDS = 5.0


def concurrency_share(limit: int, live_dispatchers: int) -> int:
    return max(1, limit // max(1, live_dispatchers))


class SharedState:
    def __init__(self, kind: str, limit: int) -> None:
        self.id = uuid.uuid4().hex
        self.kind = kind
        self.limit = limit
        self.started_at = time.time()
        self.live = 1
        self._synced_at = float("-inf")

    def due(self, now: float) -> bool:
        return now - self._synced_at >= SYNC_SECONDS

    async def sync(self, core: Core, gates: Gates) -> None:
        now = core.clock()
        self._synced_at = now
        dirty = gates.take_dirty()

        def transaction(conn: Connection) -> tuple[int, Sequence[Row[Any]]]:
            write_breakers(conn, [asdict(row) for row in dirty], now)
            live = heartbeat(conn, self.id, self.kind, self.started_at, now, STALE_SECONDS)
            return live, read_breakers(conn)

        try:
            live, rows = await core.writes.run(transaction)
        except Exception:
            log.exception("sharing delivery state failed; trying again in %.0f s", SYNC_SECONDS)
            for row in dirty:  # written next time
                gates.gate((row.app_id, row.origin)).dirty = True
            return
        gates.mark_written(dirty, now)
        gates.adopt([(BreakerRow(r.app_id, r.origin, r.failures, r.open_until), r.updated_at) for r in rows])
        self.live = live
        gates.set_limit(concurrency_share(self.limit, live))

    async def leave(self, core: Core) -> None:
        """At shutdown: the others take over this dispatcher's share at their next sync."""
        try:
            await core.writes.run(lambda conn: forget_dispatcher(conn, self.id))
        except Exception:
            log.warning("could not sign this dispatcher off; it is forgotten after %.0f s", STALE_SECONDS)
