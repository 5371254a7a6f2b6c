"""A store failure at the edges: the REST envelope (503 + Retry-After while storage is unavailable, then
recovery by itself; ERROR_CORE for other database errors) and the console's error page (never a trace)."""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import BACKENDS
from tests.portal import LivePortal, make_settings, start_portal
from tests.postgres import TempPostgres

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def own_postgres() -> Iterator[TempPostgres]:
    """A cluster of this test's own, to stop and start again."""
    if "postgres" not in BACKENDS:
        pytest.skip("stopping PostgreSQL")
    server = TempPostgres(durable=True).start()
    try:
        yield server
    finally:
        server.stop()


def _wait_for_status(call: Callable[[], requests.Response], status: int, timeout: float = 30.0) -> requests.Response:
    """Calls until the status arrives (or the time is up): each call is the event waited for."""
    deadline = time.monotonic() + timeout
    while True:
        answer = call()
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def test_an_unreachable_database_answers_503_with_retry_after_then_recovers(
    own_postgres: TempPostgres, tmp_path: Path
) -> None:
    url = own_postgres.create_database("ms_" + uuid.uuid4().hex[:8])
    portal = start_portal(make_settings(url, tmp_path), "postgres")
    try:
        app = portal.add_app()
        assert portal.call("messageservice.sender.list", token=app.access_token).status_code == 200
        console = requests.Session()
        console.headers["Origin"] = portal.base_url
        login_page = console.get(portal.base_url + "/console/login", timeout=30)
        csrf = CSRF_FIELD.search(login_page.text)
        assert csrf is not None

        own_postgres.halt()

        def send() -> requests.Response:
            body = {"MESSAGE_FROM": f"{app.client_id}|none", "MESSAGE_TO": "+15550000000", "MESSAGE_BODY": "x"}
            return portal.call("messageservice.message.send", body, token=app.access_token)

        for answer in (portal.call("messageservice.sender.list", token=app.access_token), send()):
            assert answer.status_code == 503, answer.text
            assert answer.headers["Retry-After"] == "5"
            assert answer.json()["error"] == "ERROR_CORE"
            assert "try again later" in answer.json()["error_description"]

        # The console answers with its own error page, not a 500 trace.
        page = console.post(
            portal.base_url + "/console/login",
            data={"csrf": csrf.group(1), "login": "nobody", "password": "wrong-password", "next": "/console/"},
            allow_redirects=False,
            timeout=30,
        )
        assert page.status_code == 503, page.text[:300]
        assert page.headers["Retry-After"] == "5"
        assert 'id="error-message"' in page.text and "Traceback" not in page.text

        own_postgres.resume()
        # Pooled connections died with the server: the store reconnects by itself.
        back = _wait_for_status(lambda: portal.call("messageservice.sender.list", token=app.access_token), 200)
        assert back.status_code == 200, back.text
    finally:
        portal.stop()


def test_a_database_error_that_is_not_an_outage_answers_error_core(tmp_path: Path) -> None:
    if "sqlite" not in BACKENDS:
        pytest.skip("breaks the schema of a SQLite file underneath the server")
    portal: LivePortal = start_portal(make_settings(f"sqlite:///{tmp_path}/messageservice.db", tmp_path), "sqlite")
    try:
        app = portal.add_app()
        conn = sqlite3.connect(tmp_path / "messageservice.db")
        conn.execute("ALTER TABLE senders RENAME TO senders_gone")
        conn.commit()
        conn.close()
        answer = portal.call(
            "messageservice.sender.add",
            {"CODE": "c", "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9/h", "NAME": "N"},
            token=app.access_token,
        )
        assert answer.status_code == 500, answer.text
        assert answer.json() == {"error": "ERROR_CORE", "error_description": "SQL query error!"}
        assert "Retry-After" not in answer.headers
    finally:
        portal.stop()
