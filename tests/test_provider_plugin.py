"""The provider kit's pytest plugin, as a provider's own test suite would use it.

A tiny provider (the standard library's HTTP server and the kit's sync functions) and its tests are written
to a temporary folder and run by a separate pytest, which finds the `messageservice_server` fixture through
the `pytest11` entry point alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

PROVIDER_TESTS = '''
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from messageservice.provider import (
    ONAPPINSTALL, ForeignCall, MalformedCall, SenderSpec, parse_app_event, parse_handler_call,
    register_sender_sync, report_status_sync, verify_application_token,
)

SEEN_SERVERS = []


class TinyProvider:
    """Registers its sender on install; reports every message delivered as soon as it has answered."""

    def __init__(self):
        self.application_token = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, after = owner.handle(self.path, body)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                if after:
                    threading.Thread(target=after).start()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, path, body):
        try:
            if path == "/":
                event = parse_app_event(body)
                if event.event == ONAPPINSTALL:
                    register_sender_sync(event.auth, SenderSpec("tiny", self.url + "/handler", "Tiny SMS"))
                    self.application_token = event.auth.application_token
                return 200, None
            call = parse_handler_call(body)
            verify_application_token(call, self.application_token)
            return 200, lambda: report_status_sync(call, "delivered")
        except MalformedCall:
            return 400, None
        except ForeignCall:
            return 403, None


@pytest.fixture
def provider():
    tiny = TinyProvider()
    yield tiny
    tiny.httpd.shutdown()


def test_a_message_reaches_delivered(messageservice_server, provider):
    SEEN_SERVERS.append(messageservice_server.base_url)
    app = messageservice_server.add_app(provider.url + "/")
    assert app.onappinstall_delivered, app.onappinstall_detail
    assert provider.application_token == app.application_token
    sent = messageservice_server.send(f"{app.client_id}|tiny", "+1 555 000 1234", "Hello")
    message = messageservice_server.wait_for_status(sent["ID"], "delivered")
    # The report may arrive before the server has written the call's attempt (it answers the call first).
    for _ in range(300):
        if message["ATTEMPTS"]:
            break
        time.sleep(0.05)
        message = messageservice_server.get_message(sent["ID"])
    assert message["MESSAGE_TO"] == "+15550001234" and message["ATTEMPTS"][0]["HTTP_STATUS"] == 200
    assert [h["STATUS"] for h in message["HISTORY"]][-1] == "delivered"
    assert messageservice_server.get_message(sent["MESSAGE_ID"])["ID"] == sent["ID"]


def test_each_test_has_a_server_of_its_own(messageservice_server):
    SEEN_SERVERS.append(messageservice_server.base_url)
    assert len(set(SEEN_SERVERS)) == 2
    assert messageservice_server.rest_url == messageservice_server.base_url + "/rest/"


def test_a_message_nobody_reports_on_times_out_with_its_view(messageservice_server, provider):
    app = messageservice_server.add_app(provider.url + "/")
    provider.application_token = "not the one"  # the provider now refuses its HANDLER calls (403)
    sent = messageservice_server.send(f"{app.client_id}|tiny", "+15550001234", "Hello")
    with pytest.raises(AssertionError, match="not delivered"):
        messageservice_server.wait_for_status(sent["ID"], "delivered", timeout=1)
'''

CONFTEST = """
import os

import pytest


@pytest.fixture
def messageservice_settings():
    url = os.environ.get("PLUGIN_TEST_DATABASE_URL")
    return {"database_url": url} if url else {}
"""


def test_the_plugin_serves_a_providers_own_tests(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_tiny_provider.py").write_text(PROVIDER_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESSAGESERVICE_", "PYTEST_"))}
    if backend == "postgres":
        env["PLUGIN_TEST_DATABASE_URL"] = request.getfixturevalue("postgres").create_database(
            "plugin_" + uuid.uuid4().hex[:10]
        )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tiny_provider.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_the_plugins_fixture_is_listed(tmp_path: Path) -> None:
    """`pytest --fixtures` in a provider's folder shows the fixture and where it comes from (once: no engine)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESSAGESERVICE_", "PYTEST_"))}
    fixtures = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "messageservice_server" in fixtures.stdout and "messageservice.provider.testing" in fixtures.stdout
    # The check-provider kit's fixtures come with the same plugin (tests/test_check_provider_kit.py uses them).
    assert "provider_checks" in fixtures.stdout and "provider_check_options" in fixtures.stdout
