"""/metrics on both engines: after a known set of sends, attempts (a handler answering OK, one answering 500
then OK, one answering 500 until the message is a dead letter), failed calls and app events, every counter
and gauge equals what the database says; parsed with prometheus_client's own parser. Then the guard
(off, loopback, bearer token), the settings, and the worker's own listener."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, func, select
from typer.testing import CliRunner

from messageservice.cli import cli
from messageservice.config import Settings, SettingsError
from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.delivery.decision import Dead, Defer, Done, Retry
from messageservice.delivery.jobs import Job, Result
from messageservice.delivery.origin import origin
from messageservice.delivery.retry import Outcome, Verdict
from messageservice.observability.exposition import MetricsListener, is_loopback
from messageservice.observability.metrics import ProcessMetrics, attempt_outcome
from messageservice.store.tables import app_events, attempts, deliveries, messages, senders, status_reports
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver, Reply
from tests.test_messages import wait_for

FAST = {
    "retry_schedule": "0.1,0.1",  # three attempts, then a dead letter
    "dispatch_sweep_seconds": 0.1,
    "event_sweep_seconds": 0.1,
    "breaker_failures": 3,
    "breaker_cooldown_seconds": 0.1,
}
TOKEN = "metrics-token-" + "0123456789abcdef"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(portal: LivePortal, **headers: str) -> Any:
    return portal.session.get(portal.base_url + "/metrics", headers=headers, timeout=30)


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def of(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def receivers() -> Iterator[dict[str, Receiver]]:
    started = {
        "ok": Receiver(200).start(),
        "flaky": Receiver(200, script=[Reply(500), Reply(500)]).start(),
        "down": Receiver(500).start(),
        "app": Receiver(200).start(),
    }
    yield started
    for receiver in started.values():
        receiver.stop()


def add_sender(portal: LivePortal, app: AppCredentials, handler: str) -> str:
    code = "m" + uuid.uuid4().hex[:8]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": "Provider"}
    answer = portal.call("messageservice.sender.add", params, token=app.access_token)
    assert answer.status_code == 200, answer.text
    return f"{app.client_id}|{code}"


def send(portal: LivePortal, app: AppCredentials, sender: str) -> Any:
    params = {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550001234", "MESSAGE_BODY": "Hello"}
    return portal.call("messageservice.message.send", params, token=app.access_token)


def database_truth(portal: LivePortal) -> dict[str, Any]:
    """What the metrics must say, read straight from the tables."""

    def read(conn: Connection) -> dict[str, Any]:
        # Every applied move in the status history but each message's first entry (its send).
        first = (
            select(func.min(status_reports.c.id))
            .where(status_reports.c.message_id == messages.c.id)
            .correlate(messages)
            .scalar_subquery()
        )
        changes: dict[tuple[str, str], int] = {}
        for sender, status_id, count in conn.execute(
            select(messages.c.message_from, status_reports.c.status_id, func.count())
            .join(messages, messages.c.id == status_reports.c.message_id)
            .where(status_reports.c.applied.is_(True), status_reports.c.id != first)
            .group_by(messages.c.message_from, status_reports.c.status_id)
        ):
            key = (sender, statuses.BY_ID[status_id].name)
            changes[key] = changes.get(key, 0) + count
        accepted = dict(
            conn.execute(select(messages.c.message_from, func.count()).group_by(messages.c.message_from)).all()
        )
        rows = conn.execute(
            select(attempts.c.http_status, senders.c.handler)
            .join(messages, messages.c.id == attempts.c.message_id)
            .join(senders, senders.c.id == messages.c.sender_id)
        ).all()
        states = dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())
        events = dict(
            conn.execute(
                select(app_events.c.state, func.count())
                .where(app_events.c.event == "ONAPPINSTALL")
                .group_by(app_events.c.state)
            ).all()
        )
        return {"changes": changes, "accepted": accepted, "attempts": rows, "states": states, "events": events}

    return portal.run(lambda core: core.store.read(read))


def mismatches(samples: Samples, truth: dict[str, Any], sends_ok: int) -> list[str]:
    wrong = []

    def check(what: str, got: float, expected: float) -> None:
        if got != expected:
            wrong.append(f"{what}: metrics {got}, database {expected}")

    for sender, count in truth["accepted"].items():
        check(f"accepted {sender}", value(samples, "messageservice_messages_accepted_total", sender=sender), count)
    check(
        "accepted, all",
        sum(of(samples, "messageservice_messages_accepted_total").values()),
        sum(truth["accepted"].values()),
    )
    changes_total = "messageservice_message_status_changes_total"
    for (sender, status), count in truth["changes"].items():
        check(f"status changes {sender} {status}", value(samples, changes_total, sender=sender, status=status), count)
    check("status changes, all", sum(of(samples, changes_total).values()), sum(truth["changes"].values()))
    dead = truth["states"].get("dead", 0)
    delivered = sum(1 for status, _ in truth["attempts"] if status is not None and 200 <= status < 300)
    total = len(truth["attempts"])
    attempts_total = "messageservice_delivery_attempts_total"
    check("attempts delivered", value(samples, attempts_total, outcome="delivered_to_handler"), delivered)
    check("attempts dead", value(samples, attempts_total, outcome="dead"), dead)
    check("attempts retry", value(samples, attempts_total, outcome="retry"), total - delivered - dead)
    check("attempts, all", sum(of(samples, attempts_total).values()), total)
    per_origin: dict[str, int] = {}
    for _, handler in truth["attempts"]:
        per_origin[origin(handler)] = per_origin.get(origin(handler), 0) + 1
    for key, count in per_origin.items():
        got = value(samples, "messageservice_delivery_attempt_duration_seconds_count", origin=key)
        check(f"attempt durations {key}", got, count)
    check("dead letters", value(samples, "messageservice_dead_letters"), dead)
    check("queue depth", value(samples, "messageservice_queue_depth"), 0)
    check("pending", truth["states"].get("pending", 0), 0)
    check(
        "sends answered 200",
        value(samples, "messageservice_rest_requests_total", method="messageservice.message.send", status="200"),
        sends_ok,
    )
    events = "messageservice_app_events_total"
    check(
        "ONAPPINSTALL delivered",
        value(samples, events, event="ONAPPINSTALL", outcome="delivered"),
        truth["events"].get("delivered", 0),
    )
    return wrong


@pytest.mark.parametrize("local_fresh_portal", [FAST], indirect=True)
def test_every_counter_equals_what_the_database_says(
    local_fresh_portal: LivePortal, receivers: dict[str, Receiver]
) -> None:
    portal = local_fresh_portal
    app = portal.add_app(url=receivers["app"].url)
    ok = add_sender(portal, app, receivers["ok"].url)
    flaky = add_sender(portal, app, receivers["flaky"].url)
    down = add_sender(portal, app, receivers["down"].url)
    sends_ok = 0
    sent_ids = []
    for sender in (ok, ok, ok, flaky, down):
        answer = send(portal, app, sender)
        assert answer.status_code == 200, answer.text
        sent_ids.append(answer.json()["result"]["MESSAGE_ID"])
        sends_ok += 1
    unknown = send(portal, app, f"{app.client_id}|nosuchsender")
    assert unknown.status_code != 200
    assert portal.call("no.such.method", {}, token=app.access_token).status_code == 404

    truth: dict[str, Any] = {}
    samples: Samples = {}

    def settled() -> bool:
        nonlocal truth, samples
        truth = database_truth(portal)
        done = truth["states"].get("pending", 0) == 0 and truth["events"].get("delivered", 0) == 1
        samples = parse(scrape(portal).text)
        return done and not mismatches(samples, truth, sends_ok)

    try:
        wait_for(settled, timeout=30)
    except AssertionError:
        raise AssertionError(mismatches(samples, truth, sends_ok)) from None
    # The provider reports on the first message: delivered moves it, the same report again does not.
    for _ in range(2):
        params = {"CODE": ok.split("|", 1)[1], "MESSAGE_ID": sent_ids[0], "STATUS": "delivered"}
        report = portal.call("messageservice.message.status.update", params, token=app.access_token)
        assert report.status_code == 200, report.text
    truth, samples = database_truth(portal), parse(scrape(portal).text)
    assert not mismatches(samples, truth, sends_ok)

    # The known story, told by the metrics: 3 + 1 delivered at once or at last, 2 retries of the flaky
    # handler, 2 of the dead one and its dead letter; the unknown sender and method counted as REST calls.
    assert value(samples, "messageservice_delivery_attempts_total", outcome="delivered_to_handler") == 4
    assert value(samples, "messageservice_delivery_attempts_total", outcome="retry") == 4
    assert value(samples, "messageservice_delivery_attempts_total", outcome="dead") == 1
    changes_total = "messageservice_message_status_changes_total"
    assert value(samples, changes_total, sender=down, status="error") == 1
    assert value(samples, changes_total, sender=ok, status="sent") == 3
    assert value(samples, changes_total, sender=ok, status="delivered") == 1
    assert value(samples, changes_total, sender=flaky, status="sent") == 1
    assert value(samples, "messageservice_dead_letters") == 1
    failed_send = {"method": "messageservice.message.send", "status": str(unknown.status_code)}
    assert value(samples, "messageservice_rest_requests_total", **failed_send) == 1
    assert value(samples, "messageservice_rest_requests_total", method="other", status="404") == 1
    assert (
        value(samples, "messageservice_rest_request_duration_seconds_count", method="messageservice.message.send") == 6
    )
    # The dead handler's breaker opened on its third failure; the database knows it, so the metric does.
    down_origin = origin(receivers["down"].url)
    wait_for(lambda: value(parse(scrape(portal).text), "messageservice_breaker_open", origin=down_origin) == 1)
    assert value(samples, "messageservice_breaker_open", origin=origin(receivers["ok"].url)) == 0
    assert ("messageservice_db_pool_connections_in_use", frozenset()) in samples
    assert ("messageservice_queue_oldest_due_age_seconds", frozenset()) in samples


def test_the_page_is_prometheus_text(any_portal: LivePortal) -> None:
    answer = scrape(any_portal)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(answer.text)}
    for name in (
        "messageservice_messages_accepted",
        "messageservice_delivery_attempts",
        "messageservice_delivery_attempt_duration_seconds",
        "messageservice_rest_requests",
        "messageservice_rest_request_duration_seconds",
        "messageservice_app_events",
        "messageservice_message_status_changes",
        "messageservice_queue_depth",
        "messageservice_queue_oldest_due_age_seconds",
        "messageservice_dead_letters",
        "messageservice_breaker_open",
        "messageservice_stuck_messages",
        "messageservice_db_pool_connections_in_use",
    ):
        assert name in names, name


# The guard.


def asgi_get(portal: LivePortal, path: str, client: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request straight to the in-process app, from the client address given."""
    server: Any = portal.server
    answer: dict[str, Any] = {"body": b""}

    async def call() -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
            "client": (client, 50000),
            "server": ("metrics.test", 80),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["body"] += message.get("body", b"")

        await server.app(scope, receive, send)

    server.call(call(), timeout=30)
    return answer["status"], answer["body"]


@pytest.mark.parametrize("any_fresh_portal", [{"metrics": "off"}], indirect=True)
def test_off_is_not_found(any_fresh_portal: LivePortal) -> None:
    answer = scrape(any_fresh_portal)
    assert answer.status_code == 404
    assert answer.json()["error"] == "NOT_FOUND"


def test_loopback_is_open_to_this_machine_only(any_portal: LivePortal) -> None:
    assert asgi_get(any_portal, "/metrics", "127.0.0.1")[0] == 200
    assert asgi_get(any_portal, "/metrics", "::1")[0] == 200
    status, body = asgi_get(any_portal, "/metrics", "203.0.113.7")
    assert status == 403 and b"ACCESS_DENIED" in body and b"messageservice_" not in body


@pytest.mark.parametrize("any_fresh_portal", [{"metrics": "token", "metrics_token": TOKEN}], indirect=True)
def test_a_bearer_token_opens_it_from_anywhere(any_fresh_portal: LivePortal) -> None:
    portal = any_fresh_portal
    assert asgi_get(portal, "/metrics", "203.0.113.7")[0] == 401
    assert asgi_get(portal, "/metrics", "127.0.0.1")[0] == 401  # loopback is no token
    wrong = {"Authorization": "Bearer " + TOKEN[:-1] + "x"}
    assert asgi_get(portal, "/metrics", "203.0.113.7", wrong)[0] == 401
    assert asgi_get(portal, "/metrics", "203.0.113.7", {"Authorization": "Basic " + TOKEN})[0] == 401
    status, body = asgi_get(portal, "/metrics", "203.0.113.7", {"Authorization": "Bearer " + TOKEN})
    assert status == 200 and b"messageservice_queue_depth" in body
    answer = scrape(portal)
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("127.8.9.10") and is_loopback("::1")
    assert is_loopback("::ffff:127.0.0.1")
    for other in ("10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "localhost", "", None):
        assert not is_loopback(other)


def test_the_settings_are_checked_at_start() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings(metrics="token", _env_file=None)  # type: ignore[call-arg]
    assert refused.value.variable == "MESSAGESERVICE_METRICS_TOKEN"
    with pytest.raises(SettingsError) as short:
        Settings(metrics="token", metrics_token="short", _env_file=None)  # type: ignore[call-arg]
    assert "short" not in str(short.value)  # a secret is never echoed
    with pytest.raises(SettingsError) as unknown:
        Settings(metrics="public", _env_file=None)  # type: ignore[call-arg]
    assert unknown.value.variable == "MESSAGESERVICE_METRICS"
    with pytest.raises(SettingsError) as log_format:
        Settings(log_format="xml", _env_file=None)  # type: ignore[call-arg]
    assert log_format.value.variable == "MESSAGESERVICE_LOG_FORMAT"
    assert Settings(_env_file=None).metrics == "loopback"  # type: ignore[call-arg]
    assert Settings(metrics="token", metrics_token=TOKEN, _env_file=None).metrics_token == TOKEN  # type: ignore[call-arg]


# The worker's listener.


def test_the_worker_listener_serves_the_same_page(local_portal: LivePortal) -> None:
    async def work(core: Core) -> tuple[int, str, int]:
        listener = MetricsListener(core, "127.0.0.1", 0)
        listener.start()
        try:
            await asyncio.wait_for(listener.bound.wait(), 10)
            base = f"http://127.0.0.1:{listener.bound_port}"
            async with aiohttp.ClientSession() as session:
                async with session.get(base + "/metrics") as response:
                    status, text = response.status, await response.text()
                async with session.get(base + "/other") as response:
                    other = response.status
            return status, text, other
        finally:
            await listener.stop()

    status, text, other = local_portal.run(work)
    assert status == 200 and other == 404
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {"messageservice_queue_depth", "messageservice_delivery_attempts", "messageservice_dead_letters"} <= names


def test_worker_takes_a_metrics_port() -> None:
    result = CliRunner().invoke(cli, ["worker", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--metrics-port" in result.output and "--metrics-host" in result.output


def test_docs_list_every_metric_on_the_page(any_portal: LivePortal) -> None:
    documented = set(
        re.findall(
            r"^\| `(messageservice_[a-z_]+)`", (Path(__file__).parent.parent / "docs" / "metrics.md").read_text(), re.M
        )
    )
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(scrape(any_portal).text)
    }
    assert documented == exposed


def test_each_decision_is_one_outcome() -> None:
    job = Job(1, 1, 1, 0.0, "http://h.example/x", "", label="ONAPPINSTALL")
    ok, failed = Outcome(Verdict.DELIVERED, 200, None, ""), Outcome(Verdict.RETRY, 500, "HTTP 500", "")
    refused = Outcome(Verdict.FAIL, None, "address not allowed", None)
    assert attempt_outcome(Result(job, ok, 0, 1), Done()) == "delivered_to_handler"
    assert attempt_outcome(Result(job, failed, 0, 1), Done("HTTP 500")) == "failed_ignored"
    assert attempt_outcome(Result(job, failed, 0, 1), Retry(1.0, "HTTP 500")) == "retry"
    assert attempt_outcome(Result(job, failed, 0, 1), Dead("gave up")) == "dead"
    assert attempt_outcome(Result(job, Outcome(Verdict.FAIL, 404, "HTTP 404", ""), 0, 1), Dead("x")) == "dead"
    assert attempt_outcome(Result(job, refused, 0, 1), Dead("refused")) == "refused"
    assert attempt_outcome(Result(job, failed, 0, 1), Defer(1.0, "busy")) is None
    gone = Job(2, 1, 1, 0.0, None, "")
    assert attempt_outcome(Result(gone, Outcome(Verdict.FAIL, None, None, None), 0, 1), Dead("app gone")) is None

    metrics = ProcessMetrics()
    metrics.recorded("event", [Result(job, ok, 0, 1)], {1: Done()})
    metrics.recorded("handler", [Result(job, ok, 0, 250)], {1: Done()})
    samples = parse(prometheus_client_text(metrics))
    assert value(samples, "messageservice_app_events_total", event="ONAPPINSTALL", outcome="delivered") == 1
    assert value(samples, "messageservice_delivery_attempts_total", outcome="delivered_to_handler") == 1
    assert (
        value(
            samples, "messageservice_delivery_attempt_duration_seconds_bucket", origin="http://h.example:80", le="0.25"
        )
        == 1
    )
    silent = ProcessMetrics(enabled=False)
    silent.rest_call("batch", 200, 0.1)
    silent.accepted("a|b")
    assert "messageservice_rest_requests_total{" not in prometheus_client_text(silent)


def prometheus_client_text(metrics: Any) -> str:
    return generate_latest(metrics.registry).decode()


@pytest.mark.parametrize("local_fresh_portal", [{"retry_schedule": "600"}], indirect=True)
def test_messages_failed_by_a_deleted_sender_are_counted_as_errors(local_fresh_portal: LivePortal) -> None:
    portal = local_fresh_portal
    failing = Receiver(500).start()
    try:
        app = portal.add_app()
        sender = add_sender(portal, app, failing.url)
        for _ in range(3):
            assert send(portal, app, sender).status_code == 200
        failing.wait_for(3)

        def tried_and_waiting() -> bool:
            def read(conn: Connection) -> tuple[int, int]:
                row = conn.execute(
                    select(func.count(), func.min(deliveries.c.attempts)).where(deliveries.c.state == "pending")
                ).one()
                return int(row[0]), int(row[1] or 0)

            return portal.run(lambda core: core.store.read(read)) == (3, 1)  # each attempt recorded, retry later

        wait_for(tried_and_waiting)
    finally:
        failing.stop()
    deleted = portal.call("messageservice.sender.delete", {"CODE": sender.split("|", 1)[1]}, token=app.access_token)
    assert deleted.status_code == 200, deleted.text
    samples = parse(scrape(portal).text)
    assert value(samples, "messageservice_message_status_changes_total", sender=sender, status="error") == 3
    assert value(samples, "messageservice_message_status_changes_total", sender=sender, status="sent") == 0
