"""The readers' side: before a cached value is used, is the cache still right? And the cached read itself.

- PostgreSQL: nothing to ask per request: other processes' changes arrive as notices on the listener's
  connection (cache/changes.py), and while it is down the cache is bypassed.
- SQLite: the shared-memory change counter beside the database file (store/change_signal.py), read at
  every look: moved since the last look, the cache is dropped. It costs a memory load, where reading
  the database's counter row cost a read transaction, as much as the read the cache saves.
- SQLite, as a backstop: the `cache_generations` counter row, read on the read connection at most once
  a second (and at every request where the shared counter cannot be mapped), so a change whose writer
  died before moving the shared counter is still seen. At most once per REST request (`RequestScope`):
  a change committed before a request began is seen by all of it.

Why the counter row and not `PRAGMA data_version`: both cost one read transaction, and data_version
moves on every unrelated commit (every send, every limit settle), which would then cost a second read.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import text

from messageservice.store.errors import StoreError

if TYPE_CHECKING:
    from messageservice.core.context import Core

T = TypeVar("T")

_COUNTER = text("SELECT generation FROM cache_generations WHERE id = 1")
# How long the shared counter alone is trusted before the database's counter row is read as well.
BACKSTOP_SECONDS = 1.0


class _Checked:
    """One request's look at the counter: the cache's epoch right after it, while the request runs."""

    __slots__ = ("epoch", "open")

    def __init__(self) -> None:
        self.epoch: int | None = None
        self.open = True


_REQUEST: ContextVar[_Checked | None] = ContextVar("rest_cache_request", default=None)


class RequestScope:
    """`with RequestScope():` around one REST request: the SQLite counter is read once in it. Tasks the
    request starts inherit the scope but check again once it has ended."""

    __slots__ = ("_checked", "_token")

    def __enter__(self) -> None:
        self._checked = _Checked()
        self._token: Token[_Checked | None] = _REQUEST.set(self._checked)

    def __exit__(self, *_: object) -> None:
        self._checked.open = False
        _REQUEST.reset(self._token)


async def current_generation(core: Core) -> int | None:
    """The generation to read the cache under; None: read the database and keep nothing."""
    cache, store = core.cache, core.store
    if store.features.listen_notify:
        return cache.generation(needs_listener=True)
    signal = store.change_signal
    if signal is not None:
        cache.saw_signal(signal.read())
        if time.monotonic() < cache.row_read_due:
            return cache.generation()
    checked = _REQUEST.get()
    if checked is not None and checked.open and checked.epoch == cache.epoch:
        return cache.generation()  # looked once in this request, and this process changed nothing since
    try:
        rows = await store.fetch(_COUNTER, {})
    except StoreError:
        return None  # a schema before migration 0011 (/ready says so): read everything, keep nothing
    if not rows:
        return None  # no counter row: a change could go unseen
    counter = rows[0][0]
    cache.row_read_due = time.monotonic() + BACKSTOP_SECONDS
    if counter != cache.counter:
        cache.counter = counter
        cache.invalidate()
    if checked is not None and checked.open:
        checked.epoch = cache.epoch
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
