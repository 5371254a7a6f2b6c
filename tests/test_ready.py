"""/ready and supervised loops in a live server: a crash is logged and survived, an outage is reported."""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core
from messageservice.delivery.dispatcher import Dispatcher
from messageservice.housekeeping import Housekeeper
from tests.conftest import BACKENDS, new_database_url
from tests.portal import AppCredentials, LivePortal, make_settings, start_portal
from tests.postgres import TempPostgres
from tests.receiver import Receiver

FAST = {"dispatch_sweep_seconds": 0.2, "db_max_connections": 4}


def wait_for(probe: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s")
        time.sleep(0.05)


def ready(portal: LivePortal) -> requests.Response:
    return requests.get(portal.base_url + "/ready", timeout=10)


def wait_ready(
    portal: LivePortal, status: int, until: Callable[[dict[str, Any]], bool] = bool, timeout: float = 20.0
) -> dict[str, Any]:
    """The body of /ready once it answers `status` and `until(body)` holds."""

    def probe() -> list[dict[str, Any]] | None:
        answer = ready(portal)
        return [answer.json()] if answer.status_code == status and until(answer.json()) else None

    return wait_for(probe, timeout, f"/ready {status}")[0]


def loops_of(portal: LivePortal) -> dict[str, BackgroundLoop]:
    app = portal.server.server.config.app
    return {loop.name: loop for loop in app.state.loops}


def register(portal: LivePortal, app: AppCredentials, receiver: Receiver) -> str:
    code = "p" + uuid.uuid4().hex[:8]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{receiver.port}/handler", "NAME": "Provider"}
    response = portal.call("messageservice.sender.add", params, token=app.access_token)
    assert response.status_code == 200, response.text
    return f"{app.client_id}|{code}"


def send(portal: LivePortal, app: AppCredentials, message_from: str, body: str) -> requests.Response:
    params = {"MESSAGE_FROM": message_from, "MESSAGE_TO": "+79990000000", "MESSAGE_BODY": body}
    return portal.call("messageservice.message.send", params, token=app.access_token)


def received_bodies(receiver: Receiver) -> list[str]:
    return [r.form.get("message_body", "") for r in receiver.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def own_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Callable[[], LivePortal]]:
    """Starts a portal when the test asks (after it has patched what it needs); stops it after the test."""
    started: list[LivePortal] = []

    def start() -> LivePortal:
        settings = make_settings(new_database_url(request, backend, tmp_path), tmp_path).model_copy(update=FAST)
        started.append(start_portal(settings, backend))
        return started[-1]

    yield start
    for live in started:
        live.stop()


def test_ready_reports_database_schema_and_every_loop(portal: LivePortal) -> None:
    body = wait_ready(portal, 200)
    assert body["ready"] is True and body["database"] == {"ok": True}
    assert body["schema"]["ok"] is True and body["schema"]["database"] == body["schema"]["code"]
    expected = {"app-event-worker", "housekeeping", "dispatcher", "limits"}
    if portal.backend == "postgres":
        expected.add("listener")  # LISTEN/NOTIFY wake-ups
    assert set(body["loops"]) == expected
    for name, loop in body["loops"].items():
        assert loop["ready"] is True and loop["state"] == "running", name
        assert loop["last_active_seconds_ago"] is not None
    # /health stays the plain liveness answer.
    assert requests.get(portal.base_url + "/health", timeout=10).json()["status"] == "ok"


def test_an_old_schema_is_not_ready(own_portal: Callable[[], LivePortal]) -> None:
    portal = own_portal()
    wait_ready(portal, 200)

    async def set_version(core: Core, version: str) -> None:
        async with core.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version})

    head = ready(portal).json()["schema"]["code"][0]
    portal.run(lambda core: set_version(core, "0001"))
    answer = ready(portal)
    assert answer.status_code == 503
    assert answer.json()["schema"] == {"ok": False, "database": ["0001"], "code": [head]}
    assert answer.json()["database"] == {"ok": True}
    portal.run(lambda core: set_version(core, head))
    assert ready(portal).status_code == 200


class InjectedFault(RuntimeError):
    pass


def test_a_crash_in_the_dispatcher_is_logged_and_delivery_goes_on(
    own_portal: Callable[[], LivePortal], receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="messageservice.supervisor")
    portal = own_portal()
    app = portal.add_app()
    message_from = register(portal, app, receiver)
    dispatcher = loops_of(portal)["dispatcher"]
    assert isinstance(dispatcher, Dispatcher)
    wait_ready(portal, 200)

    # The next claim (a sweep comes within dispatch_sweep_seconds) raises once, inside the running loop.
    original = dispatcher._claim_more
    calls = 0

    async def claim_more_failing_once(session: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise InjectedFault("injected into the dispatcher")
        await original(session)

    dispatcher._claim_more = claim_more_failing_once  # type: ignore[method-assign]
    crash = wait_for(
        lambda: [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], InjectedFault)],
        what="the crash in the log",
    )[0]
    assert "dispatcher" in crash.getMessage() and "crashed" in crash.getMessage()
    assert "Traceback" in caplog.text and "claim_more_failing_once" in caplog.text

    # Restarted after its backoff: ready again, and a message sent now reaches the HANDLER.
    wait_for(lambda: dispatcher.health.restarts == 1 and ready(portal).status_code == 200, what="restart")
    loop = ready(portal).json()["loops"]["dispatcher"]
    assert loop["restarts"] == 1 and loop["last_error"] == "InjectedFault: injected into the dispatcher"
    answer = send(portal, app, message_from, "after the crash")
    assert answer.status_code == 200, answer.text
    wait_for(lambda: "after the crash" in received_bodies(receiver), what="delivery after the restart")
    assert calls >= 2


def test_a_loop_that_keeps_crashing_is_not_ready(
    own_portal: Callable[[], LivePortal], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="messageservice.supervisor")

    async def broken(self: Housekeeper) -> None:
        raise InjectedFault("housekeeping is broken")

    with monkeypatch.context() as patch:
        patch.setattr(Housekeeper, "run", broken)
        portal = own_portal()  # its housekeeper runs `broken` from now on
    body = wait_ready(portal, 503, until=lambda body: body["loops"]["housekeeping"]["restarts"] >= 2)
    assert body["ready"] is False and body["database"] == {"ok": True} and body["schema"]["ok"] is True
    housekeeping = body["loops"]["housekeeping"]
    assert housekeeping["ready"] is False
    assert housekeeping["last_error"] == "InjectedFault: housekeeping is broken"
    assert body["loops"]["dispatcher"]["ready"] is True
    assert len([r for r in caplog.records if "housekeeping" in r.getMessage()]) >= 2


@pytest.fixture
def restartable_postgres() -> Iterator[TempPostgres]:
    """A PostgreSQL of this test's own, which it stops and starts again on the same port and data."""
    server = TempPostgres(durable=True)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped by a failed test
            server.stop()


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not in MESSAGESERVICE_TEST_BACKENDS")
def test_ready_follows_a_postgresql_outage(
    restartable_postgres: TempPostgres, receiver: Receiver, tmp_path: Path
) -> None:
    settings = make_settings(restartable_postgres.create_database("ms_outage"), tmp_path).model_copy(update=FAST)
    portal = start_portal(settings, "postgres")
    try:
        app = portal.add_app()
        message_from = register(portal, app, receiver)
        wait_ready(portal, 200)
        assert send(portal, app, message_from, "before").status_code == 200
        wait_for(lambda: "before" in received_bodies(receiver), what="delivery before the outage")

        restartable_postgres.halt()
        body = wait_ready(portal, 503)
        assert body["ready"] is False and body["database"]["ok"] is False and body["database"]["error"]
        assert body["schema"]["ok"] is False
        # Nothing can be stored: a send is refused with an error, never acknowledged.
        for attempt in range(3):
            answer = send(portal, app, message_from, f"during {attempt}")
            assert answer.status_code != 200, answer.text
            assert "error" in answer.json()

        restartable_postgres.resume()
        up = wait_ready(portal, 200, timeout=60)
        assert all(loop["ready"] for loop in up["loops"].values())
        answer = send(portal, app, message_from, "after")
        assert answer.status_code == 200, answer.text
        wait_for(lambda: "after" in received_bodies(receiver), what="delivery after the outage")
        assert not any(body.startswith("during") for body in received_bodies(receiver))
    finally:
        portal.stop()
