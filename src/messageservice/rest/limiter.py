"""Bitrix's two request limits (spec 3.7): the leaky bucket per app or webhook, and operating time.

The leaky bucket holds for the whole installation, whichever process serves a request, without a database
round trip per call. The bucket itself is one row per key in the database (`store.limits`); each process
reserves tokens from it and spends them from memory:

- a request spends one local token; a process with none asks the database for more at once (one round
  trip, shared by every request waiting on that key), asking for twice what it saw since its last settle;
- every `settle_seconds` (0.25 s) a background turn gives back what each key did not spend and reserves
  again for the keys that were busy; keys left idle are forgotten;
- when the database has no room left for a key, the process refuses it from memory until its next settle.

Tolerance: the shared level never goes over the burst, so N processes admit no more than one bucket does,
except for requests that spend tokens while their settle is in flight (at most what one process admits
during one database round trip). The error is the other way: a process holds back at most twice what it
admitted in the last settle interval, so a request at another process may be refused early by up to that,
for at most one interval. While the database cannot be reached, each process falls back to a bucket of its
own (as before: N processes, N times the limit) and logs it.

Operating time (off by default, as on a Bitrix box) is settled the same way when a limit is set: each
process adds the method time it spent to shared per-minute rows and reads back everyone's. It is a meter,
not a reservation: N processes may together overshoot by what they spend in one settle interval.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core

log = logging.getLogger("messageservice.limits")

OPERATING_WINDOW = 600  # ten one-minute buckets
SETTLE_SECONDS = 0.25
Minutes = dict[int, float]


def reserve(
    level: float, updated_at: float, now: float, *, capacity: float, rate: float, returned: int, want: int
) -> tuple[float, float, int]:
    """One key's shared bucket: drain it to `now`, take back `returned` tokens (negative: spent beyond the
    last reservation), then grant up to `want` whole tokens within the room left. Returns the new level,
    the new time and the grant. `store.limits` runs the same arithmetic in SQL."""
    elapsed = max(0.0, now - updated_at)
    base = max(0.0, level - elapsed * rate - returned)
    granted = min(want, math.floor(max(0.0, capacity - base)))
    return base + granted, max(updated_at, now), granted


class LimitStore(Protocol):
    """Where the buckets live for the whole installation: `store.limits.DatabaseLimitStore`."""

    async def reserve(
        self, asks: Sequence[tuple[str, int, int]], *, capacity: float, rate: float, now: float
    ) -> list[int]:
        """For each (key, returned, want), the tokens granted."""
        ...

    async def add_operating(
        self, spent: Sequence[tuple[str, str, int, float]], keys: Sequence[tuple[str, str]], oldest_minute: int
    ) -> dict[tuple[str, str], Minutes]:
        """Add (key, method, minute, seconds) spent; every process's minutes since `oldest_minute` for `keys`."""
        ...


@dataclass
class MemoryLimitStore:
    """A `LimitStore` in one process's memory, for unit tests."""

    rows: dict[str, tuple[float, float]] = field(default_factory=dict)
    operating: dict[tuple[str, str], Minutes] = field(default_factory=dict)
    calls: int = 0

    async def reserve(
        self, asks: Sequence[tuple[str, int, int]], *, capacity: float, rate: float, now: float
    ) -> list[int]:
        self.calls += 1
        grants = []
        for key, returned, want in asks:
            level, updated_at = self.rows.get(key, (0.0, now))
            level, updated_at, granted = reserve(
                level, updated_at, now, capacity=capacity, rate=rate, returned=returned, want=want
            )
            self.rows[key] = (level, updated_at)
            grants.append(granted)
        return grants

    async def add_operating(
        self, spent: Sequence[tuple[str, str, int, float]], keys: Sequence[tuple[str, str]], oldest_minute: int
    ) -> dict[tuple[str, str], Minutes]:
        self.calls += 1
        for key, method, minute, seconds in spent:
            minutes = self.operating.setdefault((key, method), {})
            minutes[minute] = minutes.get(minute, 0.0) + seconds
        return {
            key: {m: s for m, s in self.operating[key].items() if m >= oldest_minute}
            for key in keys
            if key in self.operating
        }


@dataclass
class LeakyBucket:
    """Each request adds 1; the level drains at `rate` per second; over `capacity` is refused. One process
    only: the fallback while the database cannot be reached."""

    capacity: float
    rate: float
    _levels: dict[str, tuple[float, float]] = field(default_factory=dict)

    def admit(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        level, last = self._levels.get(key, (0.0, now))
        level = max(0.0, level - (now - last) * self.rate)
        if level + 1 > self.capacity:
            self._levels[key] = (level, now)
            return False
        self._levels[key] = (level + 1, now)
        return True


@dataclass
class _Local:
    tokens: int = 0  # reserved from the shared bucket and not yet spent (negative: spent while settling)
    demand: int = 0  # requests seen since the last settle, admitted or not
    exhausted: bool = False  # the shared bucket had no room at the last ask: refuse until the next settle
    settling: asyncio.Future[None] | None = None


class SharedBucket:
    """One process's side of the installation-wide leaky buckets (see the module's docstring)."""

    def __init__(
        self,
        store: LimitStore,
        capacity: float,
        rate: float,
        *,
        clock: Callable[[], float] = time.time,
        settle_seconds: float = SETTLE_SECONDS,
    ) -> None:
        self.store = store
        self.capacity = capacity
        self.rate = rate
        self.clock = clock
        self.settle_seconds = settle_seconds
        self._keys: dict[str, _Local] = {}
        self._fallback = LeakyBucket(capacity, rate)
        self._unreachable = False

    async def admit(self, key: str) -> bool:
        local = self._keys.get(key)
        if local is None:
            local = self._keys[key] = _Local()
        local.demand += 1
        while True:
            if local.tokens > 0:
                local.tokens -= 1
                return True
            if self._unreachable:
                return self._fallback.admit(key, self.clock())
            if local.exhausted:
                return False
            if local.settling is not None:
                await asyncio.shield(local.settling)
                continue
            # Out of tokens before the next settle: ask now, for twice what this key saw lately.
            await self._settle([key], urgent=True)

    async def settle(self) -> None:
        """The background turn: give back what was not spent, reserve again for the keys that were busy."""
        await self._settle([key for key, local in self._keys.items() if local.settling is None], urgent=False)
        for key in [key for key, local in self._keys.items() if self._idle(local)]:
            del self._keys[key]

    @staticmethod
    def _idle(local: _Local) -> bool:
        return local.settling is None and local.demand == 0 and local.tokens == 0 and not local.exhausted

    async def _settle(self, keys: list[str], *, urgent: bool) -> None:
        if not keys:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        asks: list[tuple[str, int, int]] = []
        for key in keys:
            local = self._keys[key]
            local.settling = future
            asks.append((key, local.tokens, 2 * local.demand))
            if not urgent:
                local.demand = 0
        try:
            grants = await self.store.reserve(asks, capacity=self.capacity, rate=self.rate, now=self.clock())
        except Exception:
            if not self._unreachable:
                log.exception("the shared rate limits cannot be reached; each process limits on its own meanwhile")
            self._unreachable = True
        else:
            self._unreachable = False
            for (key, returned, want), granted in zip(asks, grants, strict=True):
                local = self._keys[key]
                # Tokens spent while the ask was in flight came out of the ones given back: they stay owed.
                local.tokens += granted - returned
                local.exhausted = granted < want
        finally:
            # Also when cancelled (shutdown, a client gone): nobody may wait on this ask forever.
            for key in keys:
                self._keys[key].settling = None
            future.set_result(None)


class LimitSettler(BackgroundLoop):
    """Settles this process's buckets with the shared ones every `settle_seconds`; each turn is one short
    transaction over the keys that were busy."""

    name = "limits"

    def __init__(self, core: Core, bucket: SharedBucket, meter: OperatingMeter) -> None:
        super().__init__(core)
        self.bucket = bucket
        self.meter = meter

    async def run(self) -> None:
        while True:
            self.mark_active()
            await asyncio.sleep(self.bucket.settle_seconds)
            try:
                await self.bucket.settle()
                await self.meter.settle(self.bucket.clock())
            except Exception:  # a failed turn must not end the limits: the next one starts from what is known
                log.exception("settling the shared limits failed")


@dataclass
class OperatingMeter:
    """Seconds spent per (caller, method) over the last ten minutes, in one-minute buckets. With a `store` and
    a limit, for the whole installation: what every process had spent at this process's last settle, plus
    what this one spent since (other processes' last quarter second is not seen: at most N x 0.25 s over)."""

    limit: float
    store: LimitStore | None = None
    _shared: dict[tuple[str, str], Minutes] = field(default_factory=dict)
    _pending: dict[tuple[str, str], Minutes] = field(default_factory=lambda: defaultdict(dict))
    # What a settle in flight is adding to the shared minutes: still counted here until the answer arrives.
    _settling: dict[tuple[str, str], Minutes] = field(default_factory=dict)

    @staticmethod
    def _oldest(now: float) -> int:
        return int(now // 60) - OPERATING_WINDOW // 60 + 1

    def _live(self, key: tuple[str, str], now: float) -> Minutes:
        oldest = self._oldest(now)
        merged: Minutes = {}
        for source in (self._shared.get(key), self._settling.get(key), self._pending.get(key)):
            if not source:
                continue  # the common case for two of the three: nothing to prune or add
            if min(source) < oldest:
                for minute in [m for m in source if m < oldest]:
                    del source[minute]
            for minute, seconds in source.items():
                merged[minute] = merged.get(minute, 0.0) + seconds
        return merged

    def blocked(self, caller: str, method: str, now: float) -> bool:
        return self.limit > 0 and sum(self._live((caller, method), now).values()) >= self.limit

    def add(self, caller: str, method: str, now: float, seconds: float) -> tuple[float, int]:
        """Record time spent; return (operating seconds, operating_reset_at) for the envelope."""
        pending = self._pending[(caller, method)]
        minute = int(now // 60)
        pending[minute] = pending.get(minute, 0.0) + seconds
        buckets = self._live((caller, method), now)
        reset_at = (min(buckets) + OPERATING_WINDOW // 60) * 60
        return sum(buckets.values()), int(reset_at)

    async def settle(self, now: float) -> None:
        """Add what this process spent to the shared minutes and read back everyone's (only with a limit)."""
        if self.store is None or self.limit <= 0:
            return
        oldest = self._oldest(now)
        pending, self._pending = self._pending, defaultdict(dict)
        spent = [(k[0], k[1], m, s) for k, minutes in pending.items() for m, s in minutes.items() if m >= oldest and s]
        keys = [key for key in {*pending, *self._shared} if self._live(key, now) or pending.get(key)]
        if not keys:
            return
        self._settling = pending
        try:
            totals = await self.store.add_operating(spent, keys, oldest)
        except Exception:
            log.exception("operating time could not be shared; kept here until the next settle")
            for key, minutes in pending.items():
                for minute, seconds in minutes.items():
                    self._pending[key][minute] = self._pending[key].get(minute, 0.0) + seconds
            return
        finally:
            self._settling = {}
        self._shared = totals
