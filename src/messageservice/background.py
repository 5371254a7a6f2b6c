"""A long-running task of the server process, started and stopped with the app, run under supervision.

A stop is graceful when given a grace: a loop with work under way (the outbox engine) is asked to
finish it (`begin_stop`) and given until the grace runs out; then, or at once for the others, it is
cancelled. `stop_loops` stops a process's loops with one grace for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from messageservice.supervisor import DEFAULT_BACKOFF, Backoff, LoopHealth, Sleep, supervise

if TYPE_CHECKING:
    from messageservice.core.context import Core


class BackgroundLoop:
    """Subclasses implement `run()` as a loop that calls `mark_active()` on each turn.

    If `run()` raises, the supervisor logs it with its traceback and runs it again after a backoff;
    `health` tells `/ready` whether the loop is running and recently active.
    """

    name = "background"
    # The longest `run()` waits between two turns when idle; a loop silent much longer is stuck.
    quiet_seconds = 60.0

    def __init__(self, core: Core, *, backoff: Backoff = DEFAULT_BACKOFF, sleep: Sleep = asyncio.sleep) -> None:
        self._core = core
        self._task: asyncio.Task[None] | None = None
        self._backoff = backoff
        self._sleep = sleep
        self.health = LoopHealth(self.name, quiet_seconds=self.quiet_seconds)
        self.stopping = False  # a stop was asked for: the supervisor restarts nothing any more
        self._finishing = False  # ... and the loop is finishing its work under way (begin_stop)

    def mark_active(self) -> None:
        """Cheap: one clock read. Call it once per turn of the loop."""
        self.health.mark_active()

    def start(self) -> None:
        self.stopping = self._finishing = False
        self._task = asyncio.create_task(
            supervise(self.run, self.health, backoff=self._backoff, sleep=self._sleep, stopping=lambda: self.stopping),
            name=self.name,
        )

    def begin_stop(self) -> bool:
        """Ask `run()` to finish its work under way and return; False (the default): nothing to finish,
        the loop is simply cancelled. A loop that says True must return from `run()` once done."""
        return False

    def ask_to_stop(self) -> None:
        """From now on the loop takes no new work (once; `stop` then waits for it or cancels it)."""
        if self._task is not None and not self.stopping:
            self.stopping = True
            self._finishing = self.begin_stop()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop the loop: with a grace, let it finish its work under way for at most `grace` seconds."""
        if self._task is None:
            return
        self.ask_to_stop()
        if self._finishing and grace > 0 and not self._task.done():
            await asyncio.wait({self._task}, timeout=grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def cancel(self) -> None:
        """Stop now, whatever is under way (a second signal during a graceful stop)."""
        if self._task is not None:
            self.stopping = True
            self._task.cancel()

    async def run(self) -> None:
        raise NotImplementedError


async def stop_loops(loops: Sequence[BackgroundLoop], grace: float = 0.0) -> None:
    """Stop a process's loops, the last started first, within one grace for all: every loop that has
    work under way starts finishing it at once, then each is stopped in turn with what is left of it."""
    deadline = time.monotonic() + grace
    for loop in loops:
        loop.ask_to_stop()
    for loop in reversed(loops):
        await loop.stop(max(0.0, deadline - time.monotonic()))
