"""The readers' side: before a cached value is used, is the cache still right? And the cached read itself.

- PostgreSQL: nothing to ask per request: other processes' changes arrive as notices on the listener's
  connection (cache/changes.py), and while it is down the cache is bypassed.
- SQLite: `PRAGMA data_version` on the read connection (it moves when any other connection commits, a
  microsecond-cheap check), and only when it moved, the `cache_generations` counter row: changed, the
  cache is dropped. Unrelated commits (sends, limits) cost that one extra indexed read, no more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text

if TYPE_CHECKING:
    from messageservice.core.context import Core

T = TypeVar("T")

_DATA_VERSION = text("PRAGMA data_version")
_COUNTER = text("SELECT generation FROM cache_generations WHERE id = 1")


async def current_generation(core: Core) -> int | None:
    """The generation to read the cache under; None: read the database and keep nothing."""
    cache, store = core.cache, core.store
    if store.features.listen_notify:
        return cache.generation(needs_listener=True)
    version = (await store.fetch(_DATA_VERSION, {}))[0][0]
    if version != cache.data_version:
        # data_version first, then the counter: a change landing between them is seen by the counter
        # now, or makes data_version differ again next time.
        rows = await store.fetch(_COUNTER, {})
        counter = rows[0][0] if rows else None
        if counter is None:
            return None
        cache.data_version = version
        if counter != cache.counter:
            cache.counter = counter
            cache.invalidate()
    return cache.generation()


async def cached(core: Core, key: Hashable, read: Callable[[], Awaitable[T | None]]) -> T | None:
    """The value under `key`, or `read()` from the database (kept when found and nothing changed meanwhile)."""
    generation = await current_generation(core)
    if generation is not None:
        value = core.cache.get(key)
        if value is not None:
            return value
    value = await read()
    if value is not None:
        core.cache.put(key, value, generation)
    return value
