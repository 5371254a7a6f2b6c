"""The REST cache's memory: entries under one generation, dropped all at once.

The objects it holds (access tokens with their app and user, webhooks, an app's sender codes) change
rarely, and every change drops everything: there is nothing to keep consistent between entries, and a
change seen late can never leave one entry stale beside a fresh one.

When it may be used (`generation()` is not None):
- no write transaction of this process that changes cached objects is open (`hold`/`release`): a
  read during one may see the state before it, and must not be kept;
- on PostgreSQL, only while the LISTEN connection is up (`listening`): without it, other processes'
  changes would go unseen, so every read goes to the database;
- on SQLite, whenever: freshness.py compares the shared change counter first (at every look).

A value read from the database is kept only under the generation taken before the read (`put`): a
change that lands between the two moves the generation and the value is dropped, not kept stale.
Only what was found is kept; an unknown token or webhook is asked of the database every time, so a new
one works at once without any notice.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

# Enough for every live token of a busy installation; past it the oldest entry goes.
MAX_ENTRIES = 20_000


class RestCache:
    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: dict[Hashable, Any] = {}
        self._generation = 0
        self._holds = 0
        # PostgreSQL: set by the listener while its LISTEN is up.
        self._listening = False
        # SQLite: the last change counter read from the database, the last value of the shared counter,
        # and when the database's counter is to be read again (freshness.py).
        self.counter: int | None = None
        self._signal: int | None = None
        self.row_read_due = 0.0

    def generation(self, *, needs_listener: bool = False) -> int | None:
        """The generation a read may be kept under; None: bypass the cache (read, do not keep).
        `needs_listener`: other processes' changes arrive only through the listener (PostgreSQL)."""
        if self._holds or (needs_listener and not self._listening):
            return None
        return self._generation

    def get(self, key: Hashable) -> Any:
        return self._entries.get(key)

    def put(self, key: Hashable, value: Any, generation: int | None) -> None:
        """Keep `value`, read after `generation()` answered `generation`, unless anything changed since."""
        if generation is None or generation != self._generation or self._holds:
            return
        entries = self._entries
        if key not in entries and len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = value

    def invalidate(self) -> None:
        """Something changed (here or in another process): forget everything."""
        self._generation += 1
        self._entries.clear()

    def hold(self) -> None:
        """A write transaction that changes cached objects begins in this process."""
        self._holds += 1
        self.invalidate()

    def release(self) -> None:
        """That transaction ended (committed or not): what is read from now on is the new state."""
        self._holds -= 1
        self.invalidate()

    def saw_signal(self, value: int) -> None:
        """SQLite: the shared change counter reads `value`; moved since the last look, drop everything."""
        if value != self._signal:
            self._signal = value
            self.invalidate()

    def listening(self, up: bool) -> None:
        """PostgreSQL's listener connected (up) or lost: either way what is held may have missed a notice."""
        self._listening = up
        self.invalidate()

    @property
    def epoch(self) -> int:
        """How many times everything was dropped: moves on every change this process learns of."""
        return self._generation

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries
