"""The queue table vacuumed on PostgreSQL as often as its churn needs, not once per autovacuum round.

Every claim moves a delivery's `next_attempt_at` (its lease) and every finished call its `state`: each a
new row version and a new entry in the due index, while the old entries stay where every claim starts
reading, at the head of the index, until a vacuum removes them. Autovacuum visits a database once per
`autovacuum_naptime` (a minute by default); at 4,000 messages a second some 500,000 dead rows gathered
between its visits, and a claim cost twice as much per message at a million messages as at 100,000
(bench/README.md). So a busy dispatcher looks every `CHECK_SECONDS` and, once the table's dead rows pass
autovacuum's own threshold (the server's `autovacuum_vacuum_threshold` + `autovacuum_vacuum_scale_factor`
x live rows), vacuums it: autovacuum's rule on a shorter clock. SKIP_LOCKED leaves the table to a vacuum
already under way (autovacuum's, or another process's); a role that does not own the table gets a
warning from PostgreSQL and nothing happens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from messageservice.store.store import Store

log = logging.getLogger("messageservice.vacuum")

CHECK_SECONDS = 5.0
TABLE = "deliveries"

_DUE_FOR_VACUUM = """
SELECT n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
    + current_setting('autovacuum_vacuum_scale_factor')::float8 * n_live_tup AS due,
    n_dead_tup AS dead
FROM pg_stat_user_tables WHERE relid = $1::regclass
"""


class _HasStore(Protocol):
    store: Store


class QueueVacuum:
    """At most one check (and vacuum) at a time, started no more often than every CHECK_SECONDS."""

    def __init__(self) -> None:
        self._checked_at = float("-inf")
        self._task: asyncio.Task[bool] | None = None

    def maybe_start(self, core: _HasStore, now: float | None = None) -> None:
        """Off the caller's path: the dispatcher's claims never wait for a vacuum."""
        # Called after every claim that took jobs: the clock first, the store (an object per look) after.
        now = time.monotonic() if now is None else now
        if now - self._checked_at < CHECK_SECONDS or core.store.direct is None:
            return
        if self._task is not None and not self._task.done():
            return
        self._checked_at = now
        self._task = asyncio.create_task(self._check(core))

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _check(self, core: _HasStore) -> bool:
        try:
            return await vacuum_if_due(core)
        except Exception:
            log.exception("vacuuming %s failed", TABLE)
            return False


async def vacuum_if_due(core: _HasStore) -> bool:
    """Vacuum the queue table if its dead rows pass autovacuum's threshold; whether it did."""
    direct = core.store.direct
    if direct is None:
        return False
    rows = await direct.fetch_sql(_DUE_FOR_VACUUM, TABLE)
    if not rows or not rows[0]["due"]:
        return False
    started = time.perf_counter()
    await direct.execute_sql(f"VACUUM (SKIP_LOCKED) {TABLE}")  # a constant, not input
    log.debug("vacuumed %s: %d dead rows, %.0f ms", TABLE, rows[0]["dead"], (time.perf_counter() - started) * 1000)
    return True
