"""Request limits (spec 3.7): the leaky bucket per app or webhook, and the operating-time limit."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from messageservice.rest.limiter import (
    LeakyBucket,
    LimitStore,
    MemoryLimitStore,
    OperatingMeter,
    SharedBucket,
    reserve,
)
from messageservice.store.db import migrate
from messageservice.store.limits import DatabaseLimitStore
from messageservice.store.store import Store
from tests.conftest import new_database_url
from tests.portal import LivePortal


@pytest.mark.parametrize("fresh_portal", [{"rate_limit_burst": 3, "rate_limit_per_second": 0.01}], indirect=True)
def test_query_limit_exceeded_per_app(fresh_portal: LivePortal) -> None:
    first, second = fresh_portal.add_app(), fresh_portal.add_app()
    statuses = [fresh_portal.call("user.admin", token=first.access_token).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 503]
    refused = fresh_portal.call("user.admin", token=first.access_token)
    assert refused.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    # Another app has a bucket of its own.
    assert fresh_portal.call("user.admin", token=second.access_token).status_code == 200


@pytest.mark.parametrize("fresh_portal", [{"operating_limit_seconds": 1e-9}], indirect=True)
def test_operation_time_limit(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    assert fresh_portal.call("messageservice.sender.list", token=app.access_token).status_code == 200
    blocked = fresh_portal.call("messageservice.sender.list", token=app.access_token)
    assert blocked.status_code == 429
    assert blocked.json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit",
    }
    # The limit is per method.
    assert fresh_portal.call("user.admin", token=app.access_token).status_code == 200


def test_bucket_drains() -> None:
    bucket = LeakyBucket(capacity=2, rate=1.0)
    assert bucket.admit("k", 0.0) and bucket.admit("k", 0.0) and not bucket.admit("k", 0.0)
    assert bucket.admit("k", 1.0) and not bucket.admit("k", 1.0)
    assert bucket.admit("other", 1.0)


def test_operating_window_is_ten_minutes() -> None:
    meter = OperatingMeter(limit=1.0)
    total, reset_at = meter.add("app", "m", 600.0, 0.6)
    assert total == pytest.approx(0.6) and reset_at == 1200
    meter.add("app", "m", 660.0, 0.5)
    assert meter.blocked("app", "m", 700.0)
    # Ten minutes after the first bucket it drops out.
    assert not meter.blocked("app", "m", 1200.0)


@pytest.mark.parametrize("fresh_portal", [{"operating_limit_seconds": 1e-9}], indirect=True)
def test_batch_meters_its_sub_calls_not_itself(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    cmd = {"a": "messageservice.sender.list", "b": "messageservice.sender.list"}
    first = fresh_portal.call("batch", {"cmd": cmd}, token=app.access_token)
    assert first.status_code == 200
    result = first.json()["result"]
    assert result["result"] == {"a": []}
    assert result["result_error"]["b"]["error"] == "OPERATION_TIME_LIMIT"
    # The batch call itself is not metered: a second one still runs (and reports the blocked sub-call).
    second = fresh_portal.call("batch", {"cmd": cmd}, token=app.access_token)
    assert second.status_code == 200 and set(second.json()["result"]["result_error"]) == {"a", "b"}


# --- Limits shared by every process: the arithmetic, local buckets settling with one shared level ---


def synchronously(test: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    return functools.wraps(test)(lambda: asyncio.run(test()))


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_reserve_drains_takes_back_and_grants_whole_tokens() -> None:
    # A new key: room for the whole burst.
    assert reserve(0.0, 0.0, 0.0, capacity=3, rate=1.0, returned=0, want=5) == (3.0, 0.0, 3)
    # 1.5 s later 1.5 has drained; one whole token fits (2.5 would go over 3 with a second).
    assert reserve(3.0, 0.0, 1.5, capacity=3, rate=1.0, returned=0, want=5) == (2.5, 1.5, 1)
    # Unspent tokens come back before the grant; a negative return is a debt that raises the level.
    assert reserve(3.0, 0.0, 0.0, capacity=3, rate=1.0, returned=2, want=1) == (2.0, 0.0, 1)
    assert reserve(1.0, 0.0, 0.0, capacity=3, rate=1.0, returned=-1, want=0) == (2.0, 0.0, 0)
    # A clock behind the row's (another machine) neither drains nor moves the time back.
    assert reserve(2.0, 10.0, 9.0, capacity=3, rate=1.0, returned=0, want=1) == (3.0, 10.0, 1)


def _bucket(store: LimitStore, clock: FakeClock, capacity: float = 3, rate: float = 0.01) -> SharedBucket:
    return SharedBucket(store, capacity, rate, clock=clock, settle_seconds=0.25)


@synchronously
async def test_one_process_admits_the_burst_then_refuses_from_memory() -> None:
    store, clock = MemoryLimitStore(), FakeClock()
    bucket = _bucket(store, clock)
    assert [await bucket.admit("app:1") for _ in range(4)] == [True, True, True, False]
    calls = store.calls
    assert [await bucket.admit("app:1") for _ in range(50)] == [False] * 50
    assert store.calls == calls, "refusals within a settle interval must not ask the database"
    assert await bucket.admit("app:2"), "another key has a bucket of its own"


@synchronously
async def test_a_busy_key_asks_the_store_about_once_per_settle() -> None:
    store, clock = MemoryLimitStore(), FakeClock()
    bucket = _bucket(store, clock, capacity=1_000_000, rate=1_000_000)
    for _ in range(20):  # five seconds at 400 requests per settle interval
        for _ in range(400):
            assert await bucket.admit("app:1")
        clock.now += 0.25
        await bucket.settle()
    assert store.calls < 20 * 2 + 10, store.calls


@synchronously
async def test_two_processes_share_one_burst() -> None:
    store, clock = MemoryLimitStore(), FakeClock()
    first, second = _bucket(store, clock), _bucket(store, clock)
    answers = []
    for i in range(10):
        answers.append(await (first if i % 2 else second).admit("app:1"))
    assert answers.count(True) == 3, answers
    # Unspent reservations go back at the settle; 100 s later one token has drained (0.01/s).
    clock.now += 100.0
    await first.settle()
    await second.settle()
    answers = [await (first if i % 2 else second).admit("app:1") for i in range(10)]
    assert answers.count(True) == 1, answers


@synchronously
async def test_two_processes_hold_the_rate_over_time() -> None:
    # 10 deep, 20/s: over 5 s two processes hammering one key admit 10 + 5 * 20 = 110, give or take one
    # settle's worth (the stated tolerance).
    store, clock = MemoryLimitStore(), FakeClock()
    processes = [_bucket(store, clock, capacity=10, rate=20.0), _bucket(store, clock, capacity=10, rate=20.0)]
    admitted = 0
    for step in range(500):  # 10 ms steps
        for process in processes:
            admitted += sum([await process.admit("app:1") for _ in range(3)])
        clock.now += 0.01
        if step % 25 == 24:
            for process in processes:
                await process.settle()
    assert 100 <= admitted <= 110, admitted


@synchronously
async def test_the_store_unreachable_falls_back_to_a_bucket_per_process() -> None:
    class Down:
        async def reserve(self, *args: object, **kwargs: object) -> list[int]:
            raise ConnectionError("database down")

    clock = FakeClock()
    bucket = _bucket(Down(), clock)
    assert [await bucket.admit("app:1") for _ in range(4)] == [True, True, True, False]


@pytest.fixture
def limit_store(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[DatabaseLimitStore]:
    url = new_database_url(request, backend, tmp_path)
    migrate(url)
    store = Store(url, 4)
    yield DatabaseLimitStore(store)
    asyncio.run(store.close())


def test_the_database_store_does_the_same_arithmetic(limit_store: DatabaseLimitStore) -> None:
    asks = [
        (0.0, [("app:1", 0, 5), ("app:2", 0, 1)]),
        (1.5, [("app:1", 0, 5)]),
        (1.5, [("app:1", 1, 1), ("app:1", -1, 0)]),
        (1.0, [("app:1", 0, 2)]),  # a clock behind the row's
        (100.0, [("app:1", 0, 0), ("app:2", 1, 2)]),
    ]
    memory = MemoryLimitStore()

    async def run() -> None:
        for now, batch in asks:
            expected = await memory.reserve(batch, capacity=3, rate=1.0, now=now)
            assert await limit_store.reserve(batch, capacity=3, rate=1.0, now=now) == expected, (now, batch)

    asyncio.run(run())


def test_two_local_buckets_settle_against_one_database(limit_store: DatabaseLimitStore) -> None:
    async def run() -> None:
        clock = FakeClock(time.time())
        first, second = _bucket(limit_store, clock), _bucket(limit_store, clock)
        answers = [await (first if i % 2 else second).admit("webhook:1") for i in range(10)]
        assert answers.count(True) == 3, answers
        clock.now += 100.0
        await first.settle()
        await second.settle()
        answers = [await (first if i % 2 else second).admit("webhook:1") for i in range(10)]
        assert answers.count(True) == 1, answers

    asyncio.run(run())


@synchronously
async def test_operating_time_adds_up_across_processes() -> None:
    store = MemoryLimitStore()
    first, second = OperatingMeter(1.0, store), OperatingMeter(1.0, store)
    first.add("app:1", "m", 600.0, 0.6)
    await first.settle(601.0)
    # A process learns a key's shared minutes at its first settle after using it (within the tolerance).
    assert not second.blocked("app:1", "m", 601.0)
    assert second.add("app:1", "m", 602.0, 0.5) == (pytest.approx(0.5), 1200)
    await second.settle(602.0)
    assert second.add("app:1", "m", 602.0, 0.0) == (pytest.approx(1.1), 1200)
    await first.settle(602.0)
    assert first.blocked("app:1", "m", 603.0) and second.blocked("app:1", "m", 603.0)
    assert not first.blocked("app:1", "other", 603.0)
    # Ten minutes after the first minute it drops out, here and in the store.
    await first.settle(1200.0)
    assert not first.blocked("app:1", "m", 1200.0)


def test_the_database_adds_operating_time_for_every_process(limit_store: DatabaseLimitStore) -> None:
    async def run() -> None:
        key = ("app:1", "messageservice.sender.list")
        assert await limit_store.add_operating([(*key, 10, 0.25)], [key], 1) == {key: {10: 0.25}}
        both = await limit_store.add_operating([(*key, 10, 0.5), (*key, 11, 1.0)], [key, ("app:2", "m")], 1)
        assert both == {key: {10: 0.75, 11: 1.0}}
        # Minutes before the window are gone.
        assert await limit_store.add_operating([], [key], 11) == {key: {11: 1.0}}

    asyncio.run(run())
