"""The supervisor of background loops: crash logging, restart with backoff, health for /ready (no server)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from messageservice.background import BackgroundLoop
from messageservice.supervisor import Backoff, LoopHealth, supervise


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run on a fresh event loop (pytest here has no asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Script:
    """A loop body that follows a script: each run raises, returns, or waits (advancing the fake clock first)."""

    def __init__(self, clock: FakeClock, health: LoopHealth, steps: list[tuple[float, BaseException | None]]) -> None:
        self.clock, self.health, self.steps = clock, health, steps
        self.runs = 0
        self.parked = asyncio.Event()

    async def __call__(self) -> None:
        self.runs += 1
        if not self.steps:
            self.health.mark_active()
            self.parked.set()
            await asyncio.Event().wait()  # a healthy loop: runs until cancelled
        duration, error = self.steps.pop(0)
        self.health.mark_active()
        self.clock.now += duration
        if error is not None:
            raise error


async def run_script(
    steps: list[tuple[float, BaseException | None]], backoff: Backoff
) -> tuple[list[float], LoopHealth, Script]:
    clock = FakeClock()
    health = LoopHealth("test", quiet_seconds=5.0, clock=clock)
    script = Script(clock, health, steps)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert health.state == "backing-off"
        assert not health.ready()
        clock.now += seconds

    task = asyncio.create_task(supervise(script, health, backoff=backoff, sleep=sleep))
    await asyncio.wait_for(script.parked.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return waits, health, script


BACKOFF = Backoff(first=1.0, factor=2.0, cap=5.0, healthy_after=30.0)


@run_async
async def test_backoff_doubles_up_to_the_cap() -> None:
    crash = (0.1, RuntimeError("boom"))
    waits, health, script = await run_script([crash] * 5, BACKOFF)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert script.runs == 6
    assert health.restarts == 5
    assert health.failures == 5
    assert health.last_error == "RuntimeError: boom"
    assert health.state == "stopped"


@run_async
async def test_a_healthy_run_resets_the_backoff() -> None:
    crash = (0.1, ValueError("x"))
    long_run_then_crash = (31.0, ValueError("after a long run"))
    waits, health, _ = await run_script([crash, crash, crash, long_run_then_crash, crash], BACKOFF)
    assert waits == [1.0, 2.0, 4.0, 1.0, 2.0]
    assert health.last_error == "ValueError: x"


@run_async
async def test_a_loop_that_returns_is_restarted_too() -> None:
    waits, health, script = await run_script([(0.0, None)], BACKOFF)
    assert waits == [1.0]
    assert script.runs == 2
    assert health.last_error == "the loop returned"


@run_async
async def test_the_crash_is_logged_at_once_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="messageservice.supervisor")
    logged_before_sleep: list[bool] = []
    clock = FakeClock()
    health = LoopHealth("crashy", clock=clock)
    resumed = asyncio.Event()
    calls = 0

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError("the cause")
        resumed.set()
        await asyncio.Event().wait()

    async def sleep(seconds: float) -> None:
        logged_before_sleep.append(any(r.exc_info for r in caplog.records))

    task = asyncio.create_task(supervise(body, health, backoff=BACKOFF, sleep=sleep))
    await asyncio.wait_for(resumed.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert logged_before_sleep == [True]
    [record] = caplog.records
    assert "crashy" in record.getMessage() and "restarting in 1.0 s" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], KeyError)
    assert "the cause" in caplog.text and "Traceback" in caplog.text


@run_async
async def test_cancellation_is_not_a_crash() -> None:
    clock = FakeClock()
    health = LoopHealth("quiet", clock=clock)
    sleeps: list[float] = []
    started = asyncio.Event()

    async def body() -> None:
        started.set()
        await asyncio.Event().wait()

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    task = asyncio.create_task(supervise(body, health, sleep=sleep))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sleeps == [] and health.last_error is None and health.state == "stopped"


def test_health_is_ready_only_when_running_and_recently_active() -> None:
    clock = FakeClock()
    health = LoopHealth("loop", quiet_seconds=10.0, clock=clock)
    assert not health.ready()  # starting
    health.state, health.started_at = "running", clock.now
    assert not health.ready()  # running, but no turn yet
    health.mark_active()
    assert health.ready()
    clock.now += health.stale_after
    assert health.ready()
    clock.now += 1
    assert not health.ready()  # silent for too long: stuck
    report = health.report()
    assert report["ready"] is False and report["last_active_seconds_ago"] == health.stale_after + 1
    health.mark_active()
    assert health.ready()
    # Restarted after a crash: the activity before the restart does not count.
    clock.now += 1
    health.started_at = clock.now
    assert not health.ready()


def test_backoff_delays() -> None:
    backoff = Backoff(first=0.5, factor=2, cap=15)
    assert [backoff.delay(n) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 15, 15]


class CrashingLoop(BackgroundLoop):
    name = "crashing"

    def __init__(self, core: Any, **kwargs: Any) -> None:
        super().__init__(core, **kwargs)
        self.runs = 0
        self.third_run = asyncio.Event()

    async def run(self) -> None:
        self.runs += 1
        self.mark_active()
        if self.runs >= 3:
            self.third_run.set()
            await asyncio.Event().wait()
        raise RuntimeError(f"crash {self.runs}")


@run_async
async def test_background_loop_runs_under_the_supervisor() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    loop = CrashingLoop(object(), backoff=BACKOFF, sleep=sleep)
    loop.start()
    await asyncio.wait_for(loop.third_run.wait(), 5)
    assert waits == [1.0, 2.0]
    assert loop.health.restarts == 2 and loop.health.last_error == "RuntimeError: crash 2"
    assert loop.health.ready()
    await loop.stop()
    assert loop.health.state == "stopped" and not loop.health.ready()
