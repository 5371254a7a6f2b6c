"""Per (app, handler origin) limits: how many calls may be in flight, and a circuit breaker for dead providers.

A job whose handler is busy waits for a free call slot, but only as many jobs as the handler has
slots; beyond that, or while the breaker is open, a job is deferred (not counted as an attempt). So a
slow or dead provider never holds more of the dispatcher's slots than its own limit allows. A gate
counts the jobs the dispatcher holds for it from their claim on (`hold`, `let_go`), not from when they
first ask for a slot: a claim right after another one sees the first one's jobs, and takes none that
would only be deferred.

Gates are keyed by app AND origin: app A's handler answering 503 opens A's breaker only, and app B's
sender on the same host keeps delivering. Several processes share a breaker through the database
(see `delivery/shared.py`): a gate whose breaker opens or closes is marked `dirty` and written; what
other processes wrote is adopted with `adopt`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from messageservice.delivery.origin import origin

# A full handler is asked again this soon; an open breaker when its cool-down ends.
BUSY_RETRY_SECONDS = 0.2

GateKey = tuple[int, str]  # (app id, normalised origin)


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
    held: int = 0  # jobs claimed for this handler and not yet finished (running, waiting, about to ask)
    freed: asyncio.Event = field(default_factory=asyncio.Event)
    # The breaker opened or closed here and the database does not know yet.
    dirty: bool = False
    # The `updated_at` of the shared row this gate last wrote or adopted.
    seen_version: float = 0.0

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
        """Whether a claim should leave this handler's jobs alone: more jobs are held than it has call
        slots (a claim of up to `limit` more then fills the calls and the waiting room, no further), or
        the breaker is open (or half-open with its probe out)."""
        return self.held > self.limit or (self.tripped and (now < self.open_until or self.probing))

    def hold(self) -> None:
        self.held += 1

    def let_go(self) -> None:
        self.held = max(0, self.held - 1)

    def state(self, now: float) -> str:
        return breaker_state(self.failures, self.open_until, self.failures_to_open, now)

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
        """After a call; `handler_failed` for 5xx, 3xx, timeouts and refused connections (not for 4xx)."""
        self.in_flight = max(0, self.in_flight - 1)
        self.probing = False
        # Wake the waiting jobs; they race for the free slot and the losers wait again.
        self.freed.set()
        self.freed.clear()
        if not handler_failed:
            if self.tripped:
                self.dirty = True  # closed again: tell the other processes
            self.failures = 0
            return
        self.failures += 1
        if self.tripped:
            self.open_until = now + self.cooldown
            self.dirty = True

    def adopt(self, failures: int, open_until: float, version: float) -> None:
        """Take the breaker state another process wrote (newer than what this gate has seen)."""
        if self.dirty or version <= self.seen_version:
            return
        self.failures, self.open_until, self.seen_version = failures, open_until, version
        self.freed.set()
        self.freed.clear()


def breaker_state(failures: int, open_until: float, failures_to_open: int, now: float) -> str:
    """closed | open | half-open; the one rule the dispatcher and the console both use."""
    if failures < failures_to_open:
        return "closed"
    return "open" if now < open_until else "half-open"


@dataclass(frozen=True)
class BreakerRow:
    """A gate's breaker as it is written to (and read from) the database."""

    app_id: int
    origin: str
    failures: int
    open_until: float


class Gates:
    """One gate per (app, handler origin): an app's URLs on one provider share its capacity and breaker."""

    def __init__(self, limit: int, failures_to_open: int, cooldown: float) -> None:
        self._limit, self._failures, self._cooldown = limit, failures_to_open, cooldown
        self._gates: dict[GateKey, HandlerGate] = {}
        # The claim's skip keys (sender ids, or app ids for app events) seen for each gate.
        self._members: dict[GateKey, set[int]] = {}

    @property
    def limit(self) -> int:
        return self._limit

    def set_limit(self, limit: int) -> None:
        """This process's share of each handler's concurrency (it changes as dispatchers come and go)."""
        self._limit = max(1, limit)
        for gate in self._gates.values():
            gate.limit = self._limit

    def gate(self, key: GateKey) -> HandlerGate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = HandlerGate(self._limit, self._failures, self._cooldown)
        return gate

    def for_job(self, app_id: int, url: str, member: int | None) -> HandlerGate:
        key = (app_id, origin(url))
        if member is not None:
            self._members.setdefault(key, set()).add(member)
        return self.gate(key)

    def wake_all(self) -> None:
        """Wake every job waiting for a slot (a graceful stop hands them back)."""
        for gate in self._gates.values():
            gate.freed.set()
            gate.freed.clear()

    def blocked_members(self, now: float) -> list[int]:
        """Skip keys whose handler cannot take a call now: the claim skips their jobs, so that a dead
        or saturated provider's backlog is neither claimed nor cycled through."""
        return [m for key, gate in self._gates.items() if gate.blocked(now) for m in self._members.get(key, ())]

    def states(self, now: float) -> dict[GateKey, str]:
        return {key: gate.state(now) for key, gate in self._gates.items()}

    def take_dirty(self) -> list[BreakerRow]:
        """Breakers that opened or closed here since the last call; they are written to the database."""
        rows = []
        for (app_id, key_origin), gate in self._gates.items():
            if gate.dirty:
                gate.dirty = False
                rows.append(BreakerRow(app_id, key_origin, gate.failures, gate.open_until))
        return rows

    def mark_written(self, rows: list[BreakerRow], version: float) -> None:
        for row in rows:
            self.gate((row.app_id, row.origin)).seen_version = version

    def adopt(self, rows: list[tuple[BreakerRow, float]]) -> None:
        """Breaker states from the database (row, version): an open breaker applies here too at once."""
        for row, version in rows:
            key = (row.app_id, row.origin)
            gate = self._gates.get(key)
            if gate is None and row.failures >= self._failures:
                gate = self.gate(key)
            if gate is not None:
                gate.adopt(row.failures, row.open_until, version)
