"""Circuit breakers as every dispatcher shares them through the database: the same view from any process,
an API-only `serve --no-dispatch` included."""

from __future__ import annotations

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
