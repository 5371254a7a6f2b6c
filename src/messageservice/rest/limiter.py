"""Bitrix's two request limits, kept in memory per server process (spec 3.7)."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

OPERATING_WINDOW = 600  # ten one-minute buckets


@dataclass
class LeakyBucket:
    """Each request adds 1; the level drains at `rate` per second; over `capacity` is refused."""

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
class OperatingMeter:
    """Seconds spent per (caller, method) over the last ten minutes, in one-minute buckets."""

    limit: float
    _buckets: dict[tuple[str, str], dict[int, float]] = field(default_factory=lambda: defaultdict(dict))

    def _live(self, key: tuple[str, str], now: float) -> dict[int, float]:
        buckets = self._buckets[key]
        oldest = int(now // 60) - OPERATING_WINDOW // 60 + 1
        for minute in [m for m in buckets if m < oldest]:
            del buckets[minute]
        return buckets

    def blocked(self, caller: str, method: str, now: float) -> bool:
        return self.limit > 0 and sum(self._live((caller, method), now).values()) >= self.limit

    def add(self, caller: str, method: str, now: float, seconds: float) -> tuple[float, int]:
        """Record time spent; return (operating seconds, operating_reset_at) for the envelope."""
        buckets = self._live((caller, method), now)
        minute = int(now // 60)
        buckets[minute] = buckets.get(minute, 0.0) + seconds
        reset_at = (min(buckets) + OPERATING_WINDOW // 60) * 60
        return sum(buckets.values()), int(reset_at)
