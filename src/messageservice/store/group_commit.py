"""Group commit: many callers' small write transactions run as one transaction.

While one group's transaction is being committed, new work queues up; the next transaction takes all
of it. A send then costs a share of one transaction's round trips and fsync instead of a whole one,
and a caller still returns only after its own work has committed (ack after commit).

If a group's transaction fails as a whole (a unique key raced with another process, say), each item
is run again alone, so that one item's failure is its own and never its neighbours'.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("messageservice.group_commit")

# Work for a whole group, in one transaction: one result per item, in order. A result that is an
# exception is raised to that item's caller alone (the others' work still commits).
GroupWork = Callable[[Sequence[T]], Awaitable[list[Any]]]

MAX_GROUP = 500  # bounds one transaction's length, and so the wait of the calls queued behind it


class _Queue(Generic[T]):
    def __init__(self) -> None:
        self.items: list[tuple[T, asyncio.Future[Any]]] = []
        self.flushing = False


class GroupCommit:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, kind: str, work: GroupWork[T], item: T) -> Any:
        """Run `work` for `item` in the next group of its kind; returns after that group's transaction commits."""
        queue = self._queues.setdefault(kind, _Queue())
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queue.items.append((item, future))
        if not queue.flushing:
            queue.flushing = True
            task = asyncio.create_task(self._flush(work, queue))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _flush(self, work: GroupWork[T], queue: _Queue[T]) -> None:
        try:
            # Let the callers that are ready in this turn of the loop join the first group.
            await asyncio.sleep(0)
            while queue.items:
                group, queue.items = queue.items[:MAX_GROUP], queue.items[MAX_GROUP:]
                await self._run_group(work, group)
        finally:
            queue.flushing = False

    async def _run_group(self, work: GroupWork[T], group: list[tuple[T, asyncio.Future[Any]]]) -> None:
        items = [item for item, _ in group]
        try:
            results = await work(items)
        except Exception as exc:  # handed to the callers, item by item
            if len(group) == 1:
                _settle(group[0][1], exc)
                return
            log.debug("a group of %d failed (%s); running its items one by one", len(group), exc)
            for item, future in group:
                try:
                    (result,) = await work([item])
                except Exception as alone:
                    result = alone
                _settle(future, result)
            return
        except BaseException as exc:
            # Cancelled (shutdown): nobody's work is known to have committed.
            for _, future in group:
                if not future.done():
                    future.set_exception(asyncio.CancelledError() if isinstance(exc, asyncio.CancelledError) else exc)
            raise
        for (_, future), result in zip(group, results, strict=True):
            _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the caller was cancelled meanwhile; its work committed regardless
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
