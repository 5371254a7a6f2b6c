"""The outbox engine end to end, on both engines: every failure is a recorded attempt that ends in a
dead letter, app events are refused like HANDLER calls, redirects are retried and never followed,
breakers are per app, and one app's hanging handlers do not hold up another app."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from messageservice.core import apps as app_service
from messageservice.core.context import Core
from messageservice.delivery.app_events import EventOutbox, deliver_due, post_event_now
from messageservice.delivery.decision import Decision, Done, Retry
from messageservice.delivery.jobs import Result
from messageservice.delivery.retry import Outcome, Verdict
from messageservice.store.tables import app_events, senders
from tests.delivery_helpers import HangingServer, PathServer, breaker_rows, percentile
from tests.portal import AppCredentials, LivePortal
from tests.test_messages import get, send, settled, wait_for

FAST = {"retry_schedule": "0.2,0.2", "dispatch_sweep_seconds": 0.2, "breaker_failures": 1000}
REFUSED_URL = "http://10.255.255.1:8080/app"  # private, outside the allowed networks (loopback only)


@pytest.fixture
def server() -> Iterator[PathServer]:
    running = PathServer().start()
    yield running
    running.stop()


def add_sender(portal: LivePortal, app: AppCredentials, handler: str, **extra: Any) -> str:
    code = "o" + uuid.uuid4().hex[:8]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": "Provider", **extra}
    answer = portal.call("messageservice.sender.add", params, token=app.access_token)
    assert answer.status_code == 200, answer.text
    return code


def set_handler(portal: LivePortal, app: AppCredentials, code: str, handler: str) -> None:
    """Straight into the table: sender.add may (rightly) refuse such a HANDLER; one stored earlier stays."""

    async def work(core: Core) -> None:
        async with core.engine.begin() as conn:
            await conn.execute(update(senders).where(senders.c.code == code).values(handler=handler))

    portal.run(work)


def test_a_malformed_handler_becomes_a_dead_letter_with_recorded_attempts(portal: LivePortal) -> None:
    app = portal.add_app()
    code = add_sender(portal, app, "http://127.0.0.1:9/h", RETRY_SCHEDULE="0.1,0.1")
    set_handler(portal, app, code, "http://a..b/h")  # aiohttp raises an IDNA UnicodeError on it
    message = settled(portal, app.access_token, send(portal, app.access_token, f"{app.client_id}|{code}")["ID"])
    assert message["DELIVERY"]["STATE"] == "dead" and message["STATUS"] == "error"
    attempts = message["ATTEMPTS"]
    assert len(attempts) == 3, attempts
    assert all(a["HTTP_STATUS"] is None and "UnicodeError" in a["ERROR"] for a in attempts), attempts
    assert "gave up after 3 attempts" in message["EXEC_ERROR"]


def test_an_app_event_to_a_refused_address_is_refused_like_a_handler_call(portal: LivePortal) -> None:
    async def install(core: Core) -> int:
        app, _ = await app_service.add_app(core, "Refused", REFUSED_URL, "messageservice")
        await app_service.install_app(core, app.client_id, 1)
        # This pass posts every due event once; the portal's own event worker may take this one first.
        await deliver_due(core)
        return app.id

    async def event_row(core: Core, app_id: int) -> Any:
        async with core.engine.connect() as conn:
            return (await conn.execute(select(app_events).where(app_events.c.app_id == app_id))).one()

    app_id = portal.run(install)
    row = wait_for(lambda: (r := portal.run(lambda core: event_row(core, app_id))).state == "failed" and r)
    # A dead letter at once, one attempt recorded: the guard's refusal is final, as for a HANDLER.
    assert row.attempts == 1 and "handler address 10.255.255.1 is not allowed" in row.last_error

    app = portal.add_app()
    code = add_sender(portal, app, "http://127.0.0.1:9/h")
    set_handler(portal, app, code, REFUSED_URL)
    message = settled(portal, app.access_token, send(portal, app.access_token, f"{app.client_id}|{code}")["ID"])
    assert message["DELIVERY"]["STATE"] == "dead"
    assert [a["ERROR"] for a in message["ATTEMPTS"]] == [row.last_error]


@pytest.mark.parametrize("local_fresh_portal", [{"event_sweep_seconds": 3600}], indirect=True)
@pytest.mark.parametrize("decision", [Done(), Retry(at=0, error="HTTP 503 busy")], ids=["delivered", "failed"])
def test_posting_an_event_now_takes_the_attempt_of_a_worker_that_claimed_it_first(
    local_fresh_portal: LivePortal, server: PathServer, decision: Decision
) -> None:
    """`app install` (and the test kit's add_app) beside a running server: its event worker may claim the
    ONAPPINSTALL first. Nothing is left due to post then; the answer is the worker's attempt, once it ends."""

    async def work(core: Core) -> Any:
        outbox = EventOutbox()
        jobs: list[Any] = []
        for _ in range(3):
            # The portal's own event worker claims once as it starts (then not for an hour): should that
            # claim come after this install, it has the event, and another app is installed.
            app, _ = await app_service.add_app(core, "Claimed", server.url("/app"), "messageservice")
            await app_service.install_app(core, app.client_id, 1)
            jobs = await outbox.claim(core, 10, 60.0, [], [])  # the server's worker, mid-attempt
            if jobs:
                break
        (job,) = jobs

        async def worker_finishes() -> None:
            await asyncio.sleep(0.3)
            outcome = Outcome(Verdict.RETRY, None, "HTTP 503 busy", None)
            await outbox.record(core, [Result(job, outcome, time.time(), 1.0)], {job.key: decision})

        finishing = asyncio.create_task(worker_finishes())
        started = time.monotonic()
        attempt = await post_event_now(core, app.client_id, "ONAPPINSTALL", wait=10)
        await finishing
        return attempt, time.monotonic() - started

    attempt, waited = local_fresh_portal.run(work)
    assert waited >= 0.3 and attempt is not None
    if isinstance(decision, Done):
        assert attempt.ok and "event worker" in attempt.detail
    else:
        assert not attempt.ok and attempt.detail == "HTTP 503 busy"
    assert len(server.on("/app")) <= 1  # not by us: only (once) by the portal's worker, for an earlier app


@pytest.mark.parametrize(
    "fresh_portal", [{"event_retry_schedule": "0.1,0.1", "event_sweep_seconds": 0.2}], indirect=True
)
def test_the_event_loop_retries_with_the_same_engine_to_a_dead_letter(
    fresh_portal: LivePortal, server: PathServer
) -> None:
    server.statuses["/app"] = 302  # a redirect: a failed attempt, retried, never followed
    server.headers["/app"] = (("Location", server.url("/elsewhere")),)

    async def install(core: Core) -> None:
        app, _ = await app_service.add_app(core, "Moved", server.url("/app"), "messageservice")
        await app_service.install_app(core, app.client_id, 1)

    fresh_portal.run(install)  # no deliver_due: the server's event loop takes it

    async def state(core: Core) -> Any:
        async with core.engine.connect() as conn:
            return (await conn.execute(select(app_events))).one()

    row = wait_for(lambda: (r := fresh_portal.run(state)).state != "pending" and r)
    assert (row.state, row.attempts) == ("failed", 3), row
    assert "HTTP 302 (redirects are not followed)" in row.last_error and "gave up after 3 attempts" in row.last_error
    assert len(server.on("/app")) == 3 and server.on("/elsewhere") == []


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_a_redirect_is_a_failed_attempt_that_is_retried_never_followed(
    fresh_portal: LivePortal, server: PathServer
) -> None:
    app = fresh_portal.add_app()
    server.statuses["/moved"] = 307
    server.headers["/moved"] = (("Location", server.url("/elsewhere")),)
    code = add_sender(fresh_portal, app, server.url("/moved"))
    sent = send(fresh_portal, app.access_token, f"{app.client_id}|{code}")
    server.wait_for("/moved", 1)
    server.statuses["/moved"] = 200  # the provider fixed its URL: the retry delivers
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert message["STATUS"] == "sent" and message["DELIVERY"]["STATE"] == "done"
    first = message["ATTEMPTS"][0]
    assert first["HTTP_STATUS"] == 307 and first["ERROR"] == "HTTP 307 (redirects are not followed)"
    assert message["ATTEMPTS"][-1]["HTTP_STATUS"] == 200
    assert server.on("/elsewhere") == []


@pytest.mark.parametrize(
    "fresh_portal",
    [{"retry_schedule": "60", "breaker_failures": 3, "breaker_cooldown_seconds": 120, "dispatch_sweep_seconds": 0.2}],
    indirect=True,
)
def test_one_apps_failing_handler_opens_its_own_breaker_only(fresh_portal: LivePortal, server: PathServer) -> None:
    a, b = fresh_portal.add_app(name="A"), fresh_portal.add_app(name="B")
    server.statuses["/a"] = 503
    code_a = add_sender(fresh_portal, a, server.url("/a"))
    code_b = add_sender(fresh_portal, b, server.url("/b"))  # the same host and port
    for _ in range(3):
        send(fresh_portal, a.access_token, f"{a.client_id}|{code_a}")
    server.wait_for("/a", 3)

    def a_is_open() -> bool:
        rows = fresh_portal.run(breaker_rows)
        return any(r.failures >= 3 and r.open_until > time.time() for r in rows)

    wait_for(a_is_open)
    (row,) = fresh_portal.run(breaker_rows)
    assert row.origin == f"http://127.0.0.1:{server.port}"

    # A's next message is held back by its open breaker; B, on the same host, keeps delivering.
    held = send(fresh_portal, a.access_token, f"{a.client_id}|{code_a}")
    sent_b = [send(fresh_portal, b.access_token, f"{b.client_id}|{code_b}") for _ in range(5)]
    server.wait_for("/b", 5)
    for message in sent_b:
        assert settled(fresh_portal, b.access_token, message["ID"])["STATUS"] == "sent"
    waiting = get(fresh_portal, a.access_token, held["ID"])
    assert waiting["DELIVERY"]["STATE"] == "pending" and waiting["ATTEMPTS"] == []
    assert len(server.on("/a")) == 3
    assert all(r.app_id != _app_id(fresh_portal, b) for r in fresh_portal.run(breaker_rows))


def _app_id(portal: LivePortal, app: AppCredentials) -> int:
    async def work(core: Core) -> int:
        return (await app_service.get_app(core, app.client_id)).id

    return portal.run(work)


HANGING_SENDERS, PER_SENDER, HEALTHY_MESSAGES = 32, 16, 200


@pytest.mark.alone  # a latency bound: `make test` runs it after the parallel tests, with the machine to itself
@pytest.mark.parametrize(
    "fresh_portal", [{"handler_timeout_seconds": 60.0, "retry_schedule": "60", "breaker_failures": 1000}], indirect=True
)
def test_an_app_with_hanging_handlers_slows_only_itself(fresh_portal: LivePortal, server: PathServer) -> None:
    """32 senders of app A on hanging handlers (4 servers, 8 userinfo spellings each), 16 messages each,
    then app B sends 200 messages to a healthy handler: B's send -> handler p99 stays under 1 s."""
    hanging = [HangingServer().start() for _ in range(4)]
    try:
        a, b = fresh_portal.add_app(name="Hangs"), fresh_portal.add_app(name="Healthy")
        a_senders = [
            add_sender(fresh_portal, a, f"http://u{i}@127.0.0.1:{hanging[i % 4].port}/h")
            for i in range(HANGING_SENDERS)
        ]
        code_b = add_sender(fresh_portal, b, server.url("/ok"))
        rest = fresh_portal.rest_url + "messageservice.message.send"

        def post(token: str, message_from: str) -> dict[str, Any]:
            body = {"MESSAGE_FROM": message_from, "MESSAGE_TO": "+15550001111", "MESSAGE_BODY": "hi", "auth": token}
            answer = requests.post(rest, json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()["result"]

        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda code: post(a.access_token, f"{a.client_id}|{code}"),
                    [code for code in a_senders for _ in range(PER_SENDER)],
                )
            )
        # A's calls now hang and fill its share of the slots.
        wait_for(lambda: sum(len(h.held) for h in hanging) >= 32)

        acked: list[float] = []

        def timed(_: int) -> tuple[float, str]:
            started = time.time()
            message_id = post(b.access_token, f"{b.client_id}|{code_b}")["MESSAGE_ID"]
            acked.append(time.time() - started)
            return started, message_id

        with ThreadPoolExecutor(4) as pool:
            sent = list(pool.map(timed, range(HEALTHY_MESSAGES)))
        arrivals = {a.form["message_id"]: a.at for a in server.wait_for("/ok", HEALTHY_MESSAGES, timeout=60)}
        assert len(arrivals) == HEALTHY_MESSAGES
        latencies = [arrivals[message_id] - started for started, message_id in sent]
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        held = sum(len(h.held) for h in hanging)
        print(
            f"\n[{fresh_portal.backend}] healthy app: {HEALTHY_MESSAGES} messages, send -> handler "
            f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
            f"hanging app: {HANGING_SENDERS * PER_SENDER} messages, {held} calls hanging; "
            f"send acknowledged p50 {percentile(acked, 0.5) * 1000:.0f} ms, p99 {percentile(acked, 0.99) * 1000:.0f} ms"
        )
        assert p99 < 1.0, f"p99 {p99:.3f} s"
    finally:
        for h in hanging:
            h.stop()
