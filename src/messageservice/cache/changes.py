"""The writers' side: every transaction that changes what the REST cache holds says so, in the transaction.

Cached are access tokens (with their app's scopes and install state and their user's admin and active
flags), webhooks (with their user's) and each app's sender codes. So `changing(core)` opens the write
transaction of anything that deletes or changes access or refresh tokens, apps, senders and their
languages, webhooks, or users' flags:

- SQLite: the shared-memory counter beside the database file (store/change_signal.py) moves before the
  transaction and again after it commits; every process compares it before using its cache
  (freshness.py). The `cache_generations` row moves in the transaction too, so a change is seen (within
  a second) even when the second move never happens: a process killed right after its COMMIT;
- PostgreSQL: a NOTIFY on `CHANNEL`, delivered to every process's listener when the change commits
  (delivery/wakeups.py), which drops that process's cache;
- and in this process, at once: the cache is held (bypassed) while the transaction is open and dropped
  when it ends, so the next request here reads what was committed without waiting for the notice.

Inserting a token or a webhook needs no notice (the cache keeps only what was found), but passes through
here too where it shares a transaction with a change.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from sqlalchemy import text

from messageservice.store.connection import StoreConnection

if TYPE_CHECKING:
    from messageservice.core.context import Core

CHANNEL = "messageservice_cache"
_NOTIFY = text(f"NOTIFY {CHANNEL}")
# An upsert: a database whose row went missing still counts (and never leaves a change unseen).
_BUMP = text(
    "INSERT INTO cache_generations (id, generation) VALUES (1, 1) "
    "ON CONFLICT (id) DO UPDATE SET generation = cache_generations.generation + 1"
)


async def announce_change(conn: StoreConnection) -> None:
    """Inside a write transaction: every process drops its REST cache when it commits."""
    await conn.execute(_NOTIFY if conn.features.listen_notify else _BUMP)


@contextlib.asynccontextmanager
async def changing(core: Core) -> AsyncIterator[StoreConnection]:
    """`core.store.transaction()` for a change to cached objects (see the module's docstring)."""
    signal = core.store.change_signal
    core.cache.hold()
    try:
        if signal is not None:
            signal.move()
        async with core.store.transaction() as conn:
            await announce_change(conn)
            yield conn
    finally:
        # After the COMMIT: a process that sees this move and reads again reads the change.
        if signal is not None:
            signal.move()
        core.cache.release()
