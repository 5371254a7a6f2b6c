"""The scale-out topology: `serve --no-dispatch` answers the API, `messageservice worker`s deliver.

The workers share the outbox through the database: breakers (the console of the API-only serve
shows a worker's open breaker) and each handler's concurrency limit (two workers, one limit)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import select

from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.store.tables import deliveries, dispatchers
from tests.conftest import new_database_url
from tests.console_helpers import Admin, ConsoleClient
from tests.delivery_helpers import PathServer, serve_in_background
from tests.postgres import free_port
from tests.receiver import Receiver
from tests.test_cli import invoke
from tests.test_messages import wait_for
from tests.test_serve import _wait

COMMAND = [sys.executable, "-m", "messageservice.cli"]


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@dataclass
class Topology:
    """A database with a portal, an installed app and its token; `serve`/`worker` processes on it."""

    env: dict[str, str]
    client_id: str = ""
    token: str = ""
    console_password: str = ""
    port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cli(self, *args: str) -> Any:
        """Setting up runs the commands in this process (their own tests run them as processes)."""
        ours = {k: v for k, v in self.env.items() if k.startswith("MESSAGESERVICE_")}
        done = invoke(ours, *args, "--json", cwd=Path(self.env["MESSAGESERVICE_DATA_DIR"]).parent)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def start(self, *args: str) -> None:
        # Each process's output goes to a file beside the database: what to read when a test fails.
        path = Path(self.env["MESSAGESERVICE_DATA_DIR"]).parent / f"{args[0]}-{len(self.processes)}.log"
        with path.open("wb") as log:
            process = subprocess.Popen([*COMMAND, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)

    def serve_api_only(self) -> str:
        self.port = free_port()
        self.start("serve", "--port", str(self.port), "--log-level", "warning", "--no-dispatch")
        _wait(f"http://127.0.0.1:{self.port}/health")
        return f"http://127.0.0.1:{self.port}/rest/"

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        answer = requests.post(
            f"http://127.0.0.1:{self.port}/rest/{method}", json={**params, "auth": self.token}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def query(self, statement: Any) -> list[Any]:
        settings = Settings(
            database_url=self.env["MESSAGESERVICE_DATABASE_URL"],
            data_dir=Path(self.env["MESSAGESERVICE_DATA_DIR"]),
            secret_key=self.env["MESSAGESERVICE_SECRET_KEY"],
            _env_file=None,  # type: ignore[call-arg]
        )

        async def work() -> list[Any]:
            core = Core.open(settings)
            try:
                async with core.engine.connect() as conn:
                    return list((await conn.execute(statement)).all())
            finally:
                await core.close()

        return asyncio.run(work())

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def topology(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Topology]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_DISPATCH_SWEEP_SECONDS": "0.2",
        **getattr(request, "param", {}),
    }
    setup = Topology(env)
    setup.console_password = setup.cli("init", "--domain", "scale.test")["console_password"]
    setup.client_id = setup.cli(
        "app", "add", "--name", "P", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )["client_id"]
    setup.cli("app", "install", setup.client_id)
    setup.token = setup.cli("token", setup.client_id, "--user", "1")["access_token"]
    try:
        yield setup
    finally:
        setup.stop()


def test_an_api_only_serve_leaves_delivery_to_workers(topology: Topology, handler: Receiver) -> None:
    topology.serve_api_only()
    sender = {"CODE": "scale", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{handler.port}/h", "NAME": "S"}
    assert topology.call("messageservice.sender.add", **sender)["result"] is True
    message = {"MESSAGE_FROM": f"{topology.client_id}|scale", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
    sent = topology.call("messageservice.message.send", **message)
    # The serve's loops are up (its app-event loop beats) and none of them delivers messages.
    wait_for(lambda: topology.query(select(dispatchers).where(dispatchers.c.kind == "event")), 60)
    assert topology.query(select(dispatchers).where(dispatchers.c.kind == "handler")) == []
    (pending,) = topology.query(select(deliveries.c.state, deliveries.c.attempts))
    assert tuple(pending) == ("pending", 0) and handler.requests == []

    for _ in range(2):
        topology.start("worker", "--log-level", "warning")
    call = handler.wait_for(1, timeout=90)[0]
    assert call.form["message_id"] == sent["result"]["MESSAGE_ID"]
    for _ in range(20):
        topology.call("messageservice.message.send", **message)
    calls = handler.wait_for(21, timeout=60)
    assert len({c.form["message_id"] for c in calls}) == 21


@pytest.mark.parametrize(
    "topology",
    [{"MESSAGESERVICE_BREAKER_FAILURES": "2", "MESSAGESERVICE_RETRY_SCHEDULE": "600"}],
    indirect=True,
)
def test_the_console_of_an_api_only_serve_shows_a_workers_open_breaker(topology: Topology) -> None:
    provider = PathServer().start()
    try:
        provider.statuses["/down"] = 503
        topology.serve_api_only()
        sender = {"CODE": "down", "TYPE": "SMS", "HANDLER": provider.url("/down"), "NAME": "Down"}
        assert topology.call("messageservice.sender.add", **sender)["result"] is True
        real_server = SimpleNamespace(base_url=f"http://127.0.0.1:{topology.port}", new_session=requests.Session)
        console = ConsoleClient(real_server)  # type: ignore[arg-type]
        console.login(Admin(1, "admin", topology.console_password))
        assert 'class="breaker-closed">closed<' in console.get("/providers").text

        topology.start("worker", "--log-level", "warning")
        message = {"MESSAGE_FROM": f"{topology.client_id}|down", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        for _ in range(2):
            topology.call("messageservice.message.send", **message)
        assert len(provider.wait_for("/down", 2, timeout=90)) == 2
        page = wait_for(lambda: 'class="breaker-open">open<' in (text := console.get("/providers").text) and text, 60)
        assert provider.url("/down") in page
        assert console.get("/stats.json").json()["open_breakers"] == 1
    finally:
        provider.stop()


@dataclass
class CountingHandler:
    """Answers after `delay` and notes the most calls it ever had at once."""

    delay: float = 0.3
    now: int = 0
    most: int = 0
    served: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> CountingHandler:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.now += 1
                    owner.most = max(owner.most, owner.now)
                time.sleep(owner.delay)
                with owner.lock:
                    owner.now -= 1
                    owner.served += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        self.port = self.httpd.server_address[1]
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("topology", [{"MESSAGESERVICE_HANDLER_CONCURRENCY": "4"}], indirect=True)
def test_two_workers_share_one_handler_concurrency_limit(topology: Topology) -> None:
    provider = CountingHandler().start()
    try:
        topology.serve_api_only()
        sender = {"CODE": "slow", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{provider.port}/h", "NAME": "Slow"}
        assert topology.call("messageservice.sender.add", **sender)["result"] is True
        for _ in range(2):
            topology.start("worker", "--log-level", "warning")
        # Processes start slowly on a busy machine: a generous wait for both heartbeats.
        wait_for(lambda: len(topology.query(select(dispatchers).where(dispatchers.c.kind == "handler"))) == 2, 90)
        time.sleep(1.2)  # one sync: each worker has counted the other and taken its share (4 // 2)
        message = {"MESSAGE_FROM": f"{topology.client_id}|slow", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        for _ in range(24):
            topology.call("messageservice.message.send", **message)
        wait_for(lambda: provider.served >= 24, timeout=60)
        print(f"\nat most {provider.most} calls at once from two workers (limit 4)")
        assert 2 <= provider.most <= 4
    finally:
        provider.stop()
