"""The provider examples in Python, PHP and JavaScript (examples/*_provider), each against a live portal.

Each runs as its own process on a loopback port, as a provider would: the portal POSTs ONAPPINSTALL, the
example registers its sender, a message sent through the portal reaches its HANDLER and the example reports
`sent` and `delivered`; ONAPPUPDATE (which drops the app's senders) makes it register again, and after
ONAPPUNINSTALL it refuses HANDLER calls. PHP and Node are required, not optional: .ci/run installs them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from messageservice.core import apps as app_service
from messageservice.core.context import Core
from messageservice.delivery.app_events import deliver_due
from tests.portal import LivePortal
from tests.postgres import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WAIT = 30.0
LANGUAGES = ("python", "php", "javascript")
INSTALL_HINT = "run .ci/run, or: apt-get install -y php-cli php-curl nodejs"


def require(program: str) -> str:
    """The program's path; a clear failure (not a skip) when it is missing, so CI cannot pass without it."""
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed; the {program} provider example cannot run ({INSTALL_HINT})")
    return path


class Process:
    """A child process in its own process group, its output collected for waiting on what it prints."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.popen = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        with self.changed:
            self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.popen.poll() is not None, timeout=timeout
            )
            output = "\n".join(self.lines)
        assert text in output, f"{text!r} not printed; output:\n{output}"
        return output

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


@dataclass
class Example:
    process: Process
    url: str
    code: str


def launch(language: str, tmp_path: Path) -> Example:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    code = f"{language}_sms"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if language == "python":
        script = EXAMPLES / "python_provider" / "provider.py"
        args = [sys.executable, str(script), "--port", str(port), "--code", code]
    elif language == "php":
        php = require("php")
        curl = subprocess.run([php, "-r", "exit(function_exists('curl_init') ? 0 : 1);"], check=False)
        if curl.returncode != 0:
            pytest.fail(f"PHP's curl extension is missing ({INSTALL_HINT})")
        env |= {
            "PROVIDER_PUBLIC_URL": url,
            "PROVIDER_CODE": code,
            "PROVIDER_STATE_FILE": str(tmp_path / "php_state.json"),
        }
        args = [php, "-S", f"127.0.0.1:{port}", str(EXAMPLES / "php_provider" / "index.php")]
    else:
        node = require("node")
        env |= {"PORT": str(port), "PUBLIC_URL": url, "PROVIDER_CODE": code}
        args = [node, str(EXAMPLES / "js_provider" / "provider.mjs")]
    process = Process(args, env)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            requests.get(url + "/", timeout=2)
            return Example(process, url, code)
        except requests.ConnectionError:
            if process.popen.poll() is not None or time.monotonic() > deadline:
                process.stop()
                output = "\n".join(process.lines)
                raise AssertionError(f"the {language} example did not start; output:\n{output}") from None
            time.sleep(0.05)


@pytest.fixture(params=LANGUAGES)
def example(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Example]:
    started = launch(str(request.param), tmp_path)
    try:
        yield started
    finally:
        started.process.stop()


def deliver_events(portal: LivePortal) -> None:
    """Post due app events now (the server's own worker may take them first; either way they go)."""
    portal.run(deliver_due)


def send_and_wait(portal: LivePortal, client_id: str, code: str, author: int) -> dict[str, Any]:
    token = portal.token(client_id, author)["access_token"]
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": f"{client_id}|{code}", "MESSAGE_TO": "+1 555 000 1234", "MESSAGE_BODY": "Hi from a test"},
        token=token,
    )
    assert answer.status_code == 200, answer.text
    sent = answer.json()["result"]
    deadline = time.monotonic() + WAIT
    while True:
        got = portal.call("messageservice.message.get", {"ID": sent["ID"]}, token=token)
        assert got.status_code == 200, got.text
        message = got.json()["result"]
        reports = [h["STATUS"] for h in message["HISTORY"][1:] if h["USER_ID"] == author]
        if message["STATUS"] == "delivered" and reports[-1:] == ["delivered"]:
            return message
        assert time.monotonic() < deadline, f"not delivered: {message}"
        time.sleep(0.05)


def test_the_example_takes_messages_to_delivered_through_install_update_and_uninstall(
    portal: LivePortal, example: Example
) -> None:
    process, code = example.process, example.code

    async def add_and_install(core: Core) -> str:
        app, _ = await app_service.add_app(core, f"Example {code}", example.url + "/", "messageservice")
        await app_service.install_app(core, app.client_id, 1)
        return app.client_id

    client_id = portal.run(add_and_install)
    deliver_events(portal)
    process.wait_for(f"ONAPPINSTALL: sender '{code}' added, HANDLER {example.url}/handler")
    assert requests.get(example.url + "/", timeout=5).json()["installed"] is True

    author = portal.add_user("Author")
    message = send_and_wait(portal, client_id, code, author)
    # The provider's own reports, in order, with the token its HANDLER call carried (acting for the author).
    assert message["HISTORY"][0]["STATUS"] == "pending"
    reports = [h for h in message["HISTORY"][1:] if h["USER_ID"] == author]
    assert [h["STATUS"] for h in reports] == ["sent", "delivered"], message["HISTORY"]
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [200]
    process.wait_for(f"message {message['MESSAGE_ID']} to +15550001234: 'Hi from a test'")
    process.wait_for(f"message {message['MESSAGE_ID']}: reported delivered")

    # A HANDLER call that does not carry the installation's application_token is refused.
    forged = {"message_id": uuid.uuid4().hex, "code": code, "type": "SMS", "message_to": "+1555", "message_body": "x"}
    forged["auth[application_token]"] = uuid.uuid4().hex
    assert requests.post(example.url + "/handler", data=forged, timeout=10).status_code == 403

    # A new version: the portal drops the app's senders and sends ONAPPUPDATE; the example registers again.
    portal.run(lambda core: app_service.update_app(core, client_id, version=2))
    deliver_events(portal)
    process.wait_for(f"ONAPPUPDATE: sender '{code}' added")
    second = send_and_wait(portal, client_id, code, author)
    assert second["MESSAGE_ID"] != message["MESSAGE_ID"]

    # ONAPPUNINSTALL: the example forgets the installation.
    portal.run(lambda core: app_service.uninstall_app(core, client_id))
    deliver_events(portal)
    process.wait_for("ONAPPUNINSTALL: uninstalled")
    assert requests.get(example.url + "/", timeout=5).json()["installed"] is False
