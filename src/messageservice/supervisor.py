"""Supervision of background loops: a crash is logged at once and the loop restarts with backoff.

A loop's body runs forever; if it raises, the supervisor logs the traceback, waits (exponential
backoff, reset after a healthy run) and runs it again. Each loop's `LoopHealth` records its state,
restarts, last error and when it last called `mark_active()`, so that `/ready` can tell a loop that
is alive and working from one that is crashing, backing off or stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("messageservice.supervisor")

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True)
class Backoff:
    """Waits between restarts: `first`, doubling, at most `cap`; a run of `healthy_after` seconds resets it."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 15.0
    healthy_after: float = 30.0

    def delay(self, failures: int) -> float:
        """The wait after the `failures`-th crash in a row (1-based)."""
        return min(self.cap, self.first * self.factor ** max(0, failures - 1))


@dataclass
class LoopHealth:
    """What `/ready` knows about one loop. Times are from `clock` (monotonic unless a test injects one)."""

    name: str
    # The longest a working loop may go between two `mark_active()` calls (its longest idle wait).
    quiet_seconds: float = 60.0
    clock: Clock = time.monotonic
    state: str = "starting"  # running | backing-off | stopped
    started_at: float | None = None  # the current run's start
    last_active: float | None = None
    restarts: int = 0
    failures: int = 0  # crashes in a row, reset after a healthy run
    last_error: str | None = None
    last_error_at: float | None = None

    @property
    def stale_after(self) -> float:
        # Room for a slow turn (a database call, a batch of writes) beyond the longest idle wait.
        return self.quiet_seconds * 2 + 30.0

    def mark_active(self) -> None:
        self.last_active = self.clock()

    def ready(self) -> bool:
        """Running, active since its last (re)start, and not silent for longer than it ever should be."""
        if self.state != "running" or self.last_active is None or self.started_at is None:
            return False
        return self.last_active >= self.started_at and self.clock() - self.last_active <= self.stale_after

    def report(self) -> dict[str, Any]:
        now = self.clock()
        return {
            "ready": self.ready(),
            "state": self.state,
            "last_active_seconds_ago": None if self.last_active is None else round(now - self.last_active, 3),
            "restarts": self.restarts,
            "last_error": self.last_error,
            "last_error_seconds_ago": None if self.last_error_at is None else round(now - self.last_error_at, 3),
        }


DEFAULT_BACKOFF = Backoff()


def describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:500]


async def supervise(
    run: Callable[[], Awaitable[None]],
    health: LoopHealth,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    sleep: Sleep = asyncio.sleep,
    stopping: Callable[[], bool] = lambda: False,
) -> None:
    """Run `run()` until cancelled, restarting it after every crash (or return, which a loop never should).

    Once `stopping()` is true (a graceful stop asked the loop to finish its work), the loop's return
    ends supervision, and so does a crash (logged): a process on its way out starts nothing again."""
    try:
        while True:
            health.state = "running"
            health.started_at = health.clock()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if stopping():
                    log.error("background loop %s crashed while stopping", health.name, exc_info=exc)
                    return
                health.last_error = describe(exc)
                failure = "crashed"
                exc_info: BaseException | None = exc
            else:
                if stopping():
                    return
                health.last_error = "the loop returned"
                failure, exc_info = "returned", None
            now = health.clock()
            health.last_error_at = now
            if now - health.started_at >= backoff.healthy_after:
                health.failures = 0
            health.failures += 1
            delay = backoff.delay(health.failures)
            log.error(
                "background loop %s %s (%d in a row); restarting in %.1f s",
                health.name,
                failure,
                health.failures,
                delay,
                exc_info=exc_info,
            )
            health.state = "backing-off"
            await sleep(delay)
            health.restarts += 1
    finally:
        health.state = "stopped"
