"""A long-running task of the server process, started and stopped with the app, run under supervision."""

from __future__ import annotations

import asyncio
import contextlib
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

    def mark_active(self) -> None:
        """Cheap: one clock read. Call it once per turn of the loop."""
        self.health.mark_active()

    def start(self) -> None:
        self._task = asyncio.create_task(
            supervise(self.run, self.health, backoff=self._backoff, sleep=self._sleep), name=self.name
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        raise NotImplementedError
