"""The demo provider (examples/demo_provider) as a real process: installed, sent to, and reporting back.

The full loop runs on both backends: the server (a live portal) POSTs ONAPPINSTALL, the demo registers its
sender with the installer's token, a message is sent, the demo answers the HANDLER call and reports queued,
sent and delivered. The launcher behind `make run` is run twice over one database and stopped with Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import bindparam, select

from messageservice.core import apps as app_service
from messageservice.core.context import Core
from messageservice.core.payload import HandlerMessage, handler_body
from messageservice.delivery.app_events import deliver_due
from messageservice.phpquery import http_build_query
from messageservice.store import tables
from tests.conftest import BACKENDS, _session_portal
from tests.portal import LivePortal
from tests.postgres import free_port
from tests.test_cli import invoke

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
WAIT = 30.0


class Process:
    """A child process whose output is collected line by line, for waiting on what it prints."""

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path | None = None) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, as a terminal gives `make run`
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    @property
    def output(self) -> str:
        with self.changed:
            return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = WAIT) -> str:
        with self.changed:
            found = self.changed.wait_for(
                lambda: any(text in line for line in self.lines) or self.popen.poll() is not None, timeout=timeout
            )
            output = "\n".join(self.lines)
        assert found and text in output, f"{text!r} not printed; output:\n{output}"
        return output

    def interrupt(self) -> int:
        """Ctrl-C as a terminal sends it: SIGINT to the whole process group."""
        self._signal(signal.SIGINT)
        return self.popen.wait(timeout=WAIT)

    def kill(self) -> None:
        """Whatever is left of the group, after a failed test."""
        self._signal(signal.SIGKILL)
        self.popen.wait(timeout=WAIT)

    def _signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
            os.killpg(self.popen.pid, number)


def example_env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def wait_answer(url: str, timeout: float = WAIT) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"nothing answers at {url}"
            time.sleep(0.1)


@pytest.fixture
def demo(portal: LivePortal) -> Iterator[tuple[Process, str]]:
    """The demo provider serving the live portal, with short delays; yields it and its base URL."""
    yield from serve_demo(portal)


@pytest.fixture
def one_engine_portal(request: pytest.FixtureRequest) -> LivePortal:
    """The session's real server on the first engine only: for what the provider does whatever the engine."""
    return _session_portal(request, BACKENDS[0], "portal")


@pytest.fixture
def one_engine_demo(one_engine_portal: LivePortal) -> Iterator[tuple[Process, str]]:
    yield from serve_demo(one_engine_portal)


def serve_demo(portal: LivePortal) -> Iterator[tuple[Process, str]]:
    port = free_port()
    args = ["--port", str(port), "--portal", portal.base_url, "--delays", "0.2,0.3,0.3", "--code", "demo_sms"]
    process = Process([sys.executable, "-m", "demo_provider", *args], env=example_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_answer(url + "/health")
        yield process, url
        assert process.interrupt() == 0
    finally:
        process.kill()


def install(portal: LivePortal, url: str) -> tuple[str, str, str]:
    """Add and install an app at `url` (ONAPPINSTALL goes out now). Returns client_id, app token, delivery detail."""

    async def work(core: Core) -> tuple[str, str, str]:
        app, _ = await app_service.add_app(core, "Demo SMS provider", url, "messageservice")
        token = await app_service.install_app(core, app.client_id, 1)
        # The portal's store is shared with other tests, whose events may be due too: ours goes to `url`.
        ours = select(tables.app_events.c.id).where(tables.app_events.c.url == bindparam("url"))
        event_ids = {row[0] for row in await core.store.fetch(ours, {"url": url})}
        (attempt,) = [attempt for attempt in await deliver_due(core) if attempt.event_id in event_ids]
        return app.client_id, token, attempt.detail

    return portal.run(work)


def get(portal: LivePortal, token: str, message_id: int) -> dict[str, Any]:
    answer = portal.call("messageservice.message.get", {"ID": message_id}, token=token)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def wait_delivered(portal: LivePortal, token: str, message_id: int) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT
    while True:
        message = get(portal, token, message_id)
        if message["STATUS"] == "delivered" and message["DELIVERY"]["STATE"] == "done":
            return message
        assert time.monotonic() < deadline, f"not delivered: {message}"
        time.sleep(0.05)


def test_the_demo_provider_takes_a_message_all_the_way_to_delivered(
    portal: LivePortal, demo: tuple[Process, str]
) -> None:
    process, url = demo
    client_id, application_token, detail = install(portal, url + "/")
    assert detail.startswith("HTTP 200"), detail
    process.wait_for("ONAPPINSTALL: sender 'demo_sms' added")
    health = requests.get(url + "/health", timeout=5).json()
    assert health["installed"] is True and health["handler"] == url + "/handler"

    author = portal.add_user("Author")
    token = portal.token(client_id, author)["access_token"]
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": f"{client_id}|demo_sms", "MESSAGE_TO": "+1 555 000 1234", "MESSAGE_BODY": "Hi from a test"},
        token=token,
    )
    assert answer.status_code == 200, answer.text
    sent = answer.json()["result"]
    message = wait_delivered(portal, token, sent["ID"])

    assert message["STATUS_ID"] == 14 and message["STATUS_SEMANTIC"] == "success"
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [200]
    history = message["HISTORY"]
    assert history[0]["STATUS"] == "pending" and history[0]["USER_ID"] == author
    # The provider's own reports, with the token its HANDLER call carried (acting for the author), in order.
    reports = [h for h in history[1:] if h["USER_ID"] is not None]
    assert [h["STATUS"] for h in reports] == ["queued", "sent", "delivered"], history
    assert all(h["USER_ID"] == author and h["APP_ID"] == history[0]["APP_ID"] for h in reports)
    assert reports[-1]["APPLIED"] is True and history[-1]["STATUS"] == "delivered"
    # The configured delays lie between the reports.
    assert reports[1]["DATE"] - reports[0]["DATE"] >= 0.25 and reports[2]["DATE"] - reports[1]["DATE"] >= 0.25

    output = process.wait_for(f"message {sent['MESSAGE_ID']} delivered")
    assert f"message {sent['MESSAGE_ID']} to +15550001234: 'Hi from a test'" in output
    for status in ("queued", "sent", "delivered"):
        assert f"message {sent['MESSAGE_ID']}: reported {status}" in output
    assert application_token not in output


def test_the_demo_provider_refuses_what_it_should(
    one_engine_portal: LivePortal, one_engine_demo: tuple[Process, str]
) -> None:
    """The provider's own refusals: once, on one engine (the portal only installs it and sends nothing)."""
    portal, (process, url) = one_engine_portal, one_engine_demo
    # An install that names another portal, and one whose token the portal does not accept.
    forged_auth = {
        "access_token": "0" * 70,
        "client_endpoint": "http://127.0.0.1:9/rest/",
        "application_token": uuid.uuid4().hex,
    }
    event = {"event": "ONAPPINSTALL", "data": {"VERSION": 1}, "auth": forged_auth}
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elsewhere = requests.post(url + "/", data=http_build_query(event), headers=headers, timeout=10)
    assert elsewhere.status_code == 403
    event["auth"] = {**forged_auth, "client_endpoint": portal.rest_url}
    fake_token = requests.post(url + "/", data=http_build_query(event), headers=headers, timeout=10)
    assert fake_token.status_code == 502 and "sender registration failed" in fake_token.text
    assert requests.get(url + "/health", timeout=5).json()["installed"] is False
    assert requests.post(url + "/", data="event=ONAPPINSTALL", headers=headers, timeout=10).status_code == 400

    # The real install; then HANDLER calls: malformed, with a wrong token, right, and the right one again.
    client_id, application_token, _ = install(portal, url + "/")
    message = HandlerMessage("crm", {}, "SMS", "demo_sms", uuid.uuid4().hex, "+15550001234", "Hi", int(time.time()))
    auth = {"access_token": "1" * 70, "client_endpoint": portal.rest_url, "application_token": application_token}
    assert requests.post(url + "/handler", data="code=demo_sms", headers=headers, timeout=10).status_code == 400
    wrong = handler_body(message, {**auth, "application_token": forged_auth["application_token"]})
    assert requests.post(url + "/handler", data=wrong, headers=headers, timeout=10).status_code == 403
    right = handler_body(message, auth)
    assert requests.post(url + "/handler", data=right, headers=headers, timeout=10).status_code == 200
    assert requests.post(url + "/handler", data=right, headers=headers, timeout=10).status_code == 200
    too_large = requests.post(url + "/handler", data=b"x" * 1_100_000, headers=headers, timeout=10)
    assert too_large.status_code == 413

    # That message was never sent through the portal: the provider's report is refused, and it says so.
    output = process.wait_for(f"message {message.message_id}: the portal refused queued")
    assert "refused ONAPPINSTALL from 'http://127.0.0.1:9/rest/'" in output
    assert "ONAPPINSTALL: could not register the sender" in output
    assert "refused a HANDLER call with an unknown application_token" in output
    assert f"message {message.message_id} again (a retried delivery)" in output
    assert output.count(f"message {message.message_id} to +15550001234") == 1

    # ONAPPUNINSTALL with the right token: HANDLER calls are refused from then on.
    async def uninstall(core: Core) -> None:
        await app_service.uninstall_app(core, client_id)
        await deliver_due(core)

    portal.run(uninstall)
    process.wait_for("uninstalled")
    again = handler_body(HandlerMessage("crm", {}, "SMS", "demo_sms", uuid.uuid4().hex, "+1555", "Hi", 1), auth)
    assert requests.post(url + "/handler", data=again, headers=headers, timeout=10).status_code == 403


def check_run(process: Process, output: str, first: bool, message_id: int, server_port: int) -> None:
    """One `make run`: installed, a first message delivered, the printed curl works, Ctrl-C stops it all."""
    registration = "added" if first else "updated"
    assert f"ONAPPINSTALL: sender 'demo_sms' {registration}" in output
    assert f"message {message_id} is delivered; its history: pending (you)" in output
    assert "queued (provider) -> sent (provider) -> delivered (provider)" in output
    assert ("added the app 'Demo SMS provider'" in output) == first

    # The printed curl works: send with it and watch the provider report delivered.
    lines = output.splitlines()
    token = next(line for line in lines if "message.send.json" in line).split("auth=")[1].split()[0]
    message_from = next(line for line in lines if "MESSAGE_FROM=" in line).split("MESSAGE_FROM=")[1].split("'")[0]
    answer = requests.post(
        f"http://127.0.0.1:{server_port}/rest/messageservice.message.send.json",
        data={"auth": token, "MESSAGE_FROM": message_from, "MESSAGE_TO": "+15550001234", "MESSAGE_BODY": "More"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    process.wait_for(f"message {answer.json()['result']['MESSAGE_ID']} delivered")


def test_make_run_delivers_a_first_message_and_is_idempotent(tmp_path: Path) -> None:
    """The launcher behind `make run`, twice over one SQLite database, each time stopped with Ctrl-C."""
    env = example_env(
        MESSAGESERVICE_DATABASE_URL=f"sqlite:///{tmp_path}/messageservice.db",
        MESSAGESERVICE_DATA_DIR=str(tmp_path),
    )
    env.pop("MESSAGESERVICE_PUBLIC_URL", None)
    # `make run` runs `messageservice init` first; here in this process (the launcher is what runs for real).
    settings = {k: v for k, v in env.items() if k.startswith("MESSAGESERVICE_")}
    assert invoke(settings, "init", "--domain", "demo.local", cwd=tmp_path).returncode == 0
    server_port, provider_port = free_port(), free_port()
    launch = [sys.executable, "-m", "demo_provider.launch", "--port", str(server_port)]
    launch += ["--provider-port", str(provider_port), "--delays", "0.1,0.1,0.1"]

    for run in range(2):
        process = Process(launch, env=env, cwd=tmp_path)
        try:
            # ~12 s on a quiet 2-core machine; each of the launcher's CLI calls is a Python start of ~2 s of
            # CPU, and beside the parallel suite a run has taken over 60 s.
            output = process.wait_for("Ctrl-C stops the server and the demo provider.", timeout=180)
            # The first message of each run, then the one sent with the printed curl: 1, 2 then 3, 4.
            check_run(process, output, run == 0, 2 * run + 1, server_port)
            assert process.interrupt() == 130
            assert "stopping the demo provider and the server" in process.output
        finally:
            process.kill()
        for port in (server_port, provider_port):
            with pytest.raises(requests.ConnectionError):
                requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
        assert "Traceback" not in process.output
        assert "the server exited" not in process.output  # Ctrl-C ended the run, not a dying server

    listed = invoke(settings, "app", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    apps = json.loads(listed.stdout)
    assert [(a["name"], a["url"], a["installed"]) for a in apps] == [
        ("Demo SMS provider", f"http://127.0.0.1:{provider_port}/", True)
    ]


def test_make_run_says_which_port_is_taken(tmp_path: Path) -> None:
    env = example_env(MESSAGESERVICE_DATABASE_URL=f"sqlite:///{tmp_path}/messageservice.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        launch = [sys.executable, "-m", "demo_provider.launch", "--port", str(free_port())]
        done = subprocess.run(
            [*launch, "--provider-port", str(port)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"port {port} for the demo provider is taken" in done.stdout and "PROVIDER_PORT=" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
