"""core.stats over real deliveries: one provider answering 200, one answering 500, on both engines
(in-process portals: the providers are real, nothing calls the portal over the wire)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.stats import Stats, collect
from messageservice.store.tables import attempts, messages, status_reports
from tests.portal import LivePortal, open_fresh_portal
from tests.receiver import Receiver
from tests.test_messages import FAST, get, handler_url, register, send, settled, wait_for


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, in-process (settings overrides by indirect parametrization, as usual)."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=True)


@pytest.fixture
def healthy() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def broken() -> Iterator[Receiver]:
    server = Receiver(status=500).start()
    yield server
    server.stop()


def stats_of(portal: LivePortal, window: int = 3600, clock_offset: float = 0.0) -> Stats:
    async def work(core: Core) -> Stats:
        if clock_offset:
            core.clock = lambda: time.time() + clock_offset
        return await collect(core, window)

    return portal.run(work)


def age(portal: LivePortal, message_id: int, seconds: float) -> None:
    """Move a message and its whole history `seconds` into the past."""

    async def work(core: Core) -> None:
        async with core.engine.begin() as conn:
            await conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(created_at=messages.c.created_at - seconds, updated_at=messages.c.updated_at - seconds)
            )
            await conn.execute(
                update(attempts)
                .where(attempts.c.message_id == message_id)
                .values(started_at=attempts.c.started_at - seconds)
            )
            await conn.execute(
                update(status_reports)
                .where(status_reports.c.message_id == message_id)
                .values(reported_at=status_reports.c.reported_at - seconds)
            )

    portal.run(work)


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_stats_over_healthy_and_failing_handlers(fresh_portal: LivePortal, healthy: Receiver, broken: Receiver) -> None:
    portal = fresh_portal
    app = portal.add_app()
    good_from, bad_from = register(portal, app, handler_url(healthy)), register(portal, app, handler_url(broken))
    # Sent and finished two hours ago: outside the window, in every table.
    old = send(portal, app.access_token, good_from)
    settled(portal, app.access_token, old["ID"])
    age(portal, old["ID"], 7200)

    good = [send(portal, app.access_token, good_from)["ID"] for _ in range(6)]
    bad = [send(portal, app.access_token, bad_from)["ID"] for _ in range(2)]
    for message_id in good + bad:
        settled(portal, app.access_token, message_id)

    stats = stats_of(portal)
    assert stats.window_seconds == 3600 and abs(stats.generated_at - time.time()) < 30
    assert len(stats.per_minute) in (60, 61)
    minutes = [m.minute for m in stats.per_minute]
    assert minutes == sorted(minutes) and all(m % 60 == 0 for m in minutes)
    assert minutes[-1] <= stats.generated_at < minutes[-1] + 60
    assert sum(m.created for m in stats.per_minute) == 8
    assert sum(m.delivered for m in stats.per_minute) == 6
    assert sum(m.failed for m in stats.per_minute) == 2
    assert stats.by_status == {"sent": 6, "error": 2}
    assert stats.by_delivery_state == {"done": 6, "dead": 2}
    assert (stats.queue_depth, stats.due_now, stats.oldest_due_at, stats.dead) == (0, 0, None, 2)

    by_code = {h.sender_code: h for h in stats.handlers}
    ok, failing = by_code[good_from.split("|")[1]], by_code[bad_from.split("|")[1]]
    # Busiest first: two dead letters of four attempts each beat six single successes.
    assert stats.handlers[0] is failing
    assert (ok.attempts, ok.succeeded, ok.failed, ok.success_rate, ok.last_error) == (6, 6, 0, 1.0, None)
    assert ok.handler == handler_url(healthy) and ok.app_client_id == app.client_id
    assert ok.p50_ms is not None and ok.p95_ms is not None and 0 < ok.p50_ms <= ok.p95_ms < 5000
    assert (failing.attempts, failing.succeeded, failing.failed, failing.success_rate) == (8, 0, 8, 0.0)
    assert failing.last_error == "HTTP 500"
    last_attempt = get(portal, app.access_token, bad[-1])["ATTEMPTS"][-1]["STARTED_AT"]
    assert failing.last_attempt_at is not None and failing.last_attempt_at >= last_attempt - 0.001

    # A provider's report moves a message to delivered: counted once, still as "delivered".
    form = healthy.wait_for(7)[-1].form
    answer = portal.call(
        "messageservice.message.status.update",
        {"CODE": form["code"], "MESSAGE_ID": form["message_id"], "STATUS": "delivered"},
        token=form["auth[access_token]"],
    )
    assert answer.json()["result"] is True
    again = stats_of(portal)
    assert sum(m.delivered for m in again.per_minute) == 6
    assert again.by_status == {"sent": 5, "delivered": 1, "error": 2}

    # A window long enough to see the old message.
    wide = stats_of(portal, window=3 * 3600)
    assert sum(m.created for m in wide.per_minute) == 9 and wide.by_status["sent"] == 6
    assert {h.sender_code: h.attempts for h in wide.handlers}[ok.sender_code] == 7


@pytest.mark.parametrize("fresh_portal", [{"retry_schedule": "3600", "dispatch_sweep_seconds": 0.2}], indirect=True)
def test_stats_queue_lag(fresh_portal: LivePortal, broken: Receiver) -> None:
    portal = fresh_portal
    app = portal.add_app()
    sent = send(portal, app.access_token, register(portal, app, handler_url(broken)))
    # One failed attempt; the retry waits an hour.
    message = wait_for(lambda: (m := get(portal, app.access_token, sent["ID"]))["ATTEMPTS"] and m)
    next_at = message["DELIVERY"]["NEXT_ATTEMPT_AT"]
    stats = stats_of(portal)
    assert (stats.queue_depth, stats.due_now, stats.oldest_due_at, stats.dead) == (1, 0, None, 0)
    assert stats.by_delivery_state == {"pending": 1} and stats.by_status == {"pending": 1}
    assert [(h.attempts, h.failed, h.last_error) for h in stats.handlers] == [(1, 1, "HTTP 500")]
    # Two hours later (by the clock the stats read), the retry is overdue.
    later = stats_of(portal, window=3 * 3600, clock_offset=7200)
    assert (later.queue_depth, later.due_now) == (1, 1)
    assert later.oldest_due_at == pytest.approx(next_at)


@pytest.mark.parametrize("window", [0, 59, 7 * 86400 + 1, -5])
def test_stats_window_is_checked(any_portal: LivePortal, window: int) -> None:
    with pytest.raises(CoreError) as caught:
        stats_of(any_portal, window=window)
    assert caught.value.description == "The stats window must be 60 to 604800 seconds."


def test_empty_window(fresh_portal: LivePortal) -> None:
    stats = stats_of(fresh_portal, window=60)
    assert len(stats.per_minute) in (1, 2) and all(
        (m.created, m.delivered, m.failed) == (0, 0, 0) for m in stats.per_minute
    )
    assert stats.by_status == {} and stats.handlers == [] and stats.queue_depth == 0 and stats.dead == 0
