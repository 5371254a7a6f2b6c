"""A long-running task of the server process, started and stopped with the app."""

from __future__ import annotations

import asyncio
import contextlib

from messageservice.core.context import Core


class BackgroundLoop:
    name = "background"

    def __init__(self, core: Core) -> None:
        self._core = core
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        raise NotImplementedError
