"""Per-HANDLER limits: how many calls may be in flight, and a circuit breaker for dead providers.

A job whose handler is busy waits for a free call slot, but only as many jobs as the handler has
slots; beyond that, or while the breaker is open, a job is deferred (not counted as an attempt). So a
slow or dead provider never holds more of the dispatcher's slots than its own limit allows.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# A full handler is asked again this soon; an open breaker when its cool-down ends.
BUSY_RETRY_SECONDS = 0.2


@dataclass
class HandlerGate:
    limit: int
    failures_to_open: int
    cooldown: float
    in_flight: int = 0
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    waiting: int = 0
    freed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def tripped(self) -> bool:
        return self.failures >= self.failures_to_open

    def may_wait(self, now: float) -> bool:
        """A busy but healthy handler: the job may wait for a slot, if not too many already do."""
        return not (self.tripped and now < self.open_until) and self.waiting < self.limit

    async def wait_for_slot(self) -> None:
        self.waiting += 1
        try:
            await self.freed.wait()
        finally:
            self.waiting -= 1

    def blocked(self, now: float) -> bool:
        """Whether a new call would be turned away now (full, open, or half-open with its probe out)."""
        return self.in_flight >= self.limit or (self.tripped and (now < self.open_until or self.probing))

    def state(self, now: float) -> str:
        if not self.tripped:
            return "closed"
        return "open" if now < self.open_until else "half-open"

    def admit(self, now: float) -> float | None:
        """None when a call may start now (and it is counted in); else when to ask again."""
        if self.in_flight >= self.limit:
            return now + BUSY_RETRY_SECONDS
        if self.tripped:
            if now < self.open_until:
                return self.open_until
            if self.probing:
                # Half-open: one probe at a time finds out whether the provider is back.
                return now + BUSY_RETRY_SECONDS
            self.probing = True
        self.in_flight += 1
        return None

    def release(self, now: float, handler_failed: bool) -> None:
        """After a call; `handler_failed` for 5xx, timeouts and refused connections (not for 4xx)."""
        self.in_flight -= 1
        self.probing = False
        # Wake the waiting jobs; they race for the free slot and the losers wait again.
        self.freed.set()
        self.freed.clear()
        if not handler_failed:
            self.failures = 0
            return
        self.failures += 1
        if self.tripped:
            self.open_until = now + self.cooldown


class Gates:
    """One gate per handler origin (scheme, host and port): a provider's URLs share its capacity."""

    def __init__(self, limit: int, failures_to_open: int, cooldown: float) -> None:
        self._limit, self._failures, self._cooldown = limit, failures_to_open, cooldown
        self._gates: dict[str, HandlerGate] = {}
        self._senders: dict[str, set[int]] = {}

    @staticmethod
    def origin(url: str) -> str:
        try:
            parts = urlsplit(url)
            return f"{parts.scheme}://{parts.netloc.lower()}"
        except ValueError:
            return url

    def for_job(self, url: str, sender_id: int | None) -> HandlerGate:
        key = self.origin(url)
        if sender_id is not None:
            self._senders.setdefault(key, set()).add(sender_id)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = HandlerGate(self._limit, self._failures, self._cooldown)
        return gate

    def blocked_senders(self, now: float) -> list[int]:
        """Senders whose handler cannot take a call now: the claim skips their messages, so that a
        dead or saturated provider's backlog is neither claimed nor cycled through."""
        return [s for origin, gate in self._gates.items() if gate.blocked(now) for s in self._senders.get(origin, ())]

    def states(self, now: float) -> dict[str, str]:
        return {origin: gate.state(now) for origin, gate in self._gates.items()}
