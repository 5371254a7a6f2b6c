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
    # One loop and one Core for every look at the database (a test polls it while processes start).
    _runner: asyncio.Runner | None = None
    _core: Core | None = None

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
        if self._runner is None:
            settings = Settings(
                database_url=self.env["MESSAGESERVICE_DATABASE_URL"],
                data_dir=Path(self.env["MESSAGESERVICE_DATA_DIR"]),
                secret_key=self.env["MESSAGESERVICE_SECRET_KEY"],
                db_max_connections=3,
                _env_file=None,  # type: ignore[call-arg]
            )
            self._runner = asyncio.Runner()

            async def open_core() -> Core:
                return Core.open(settings)

            self._core = self._runner.run(open_core())
        core = self._core
        assert core is not None

        async def work() -> list[Any]:
            async with core.engine.connect() as conn:
                return list((await conn.execute(statement)).all())

        return self._runner.run(work())

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self._runner is not None:
            assert self._core is not None
            self._runner.run(self._core.close())
            self._runner.close()


# One topology serves every scenario below: the scenarios differ in their handlers, not in the processes.
# Their settings side by side: two failures open a breaker, a failed call waits 10 minutes (so the breaker
# scenario's messages are not retried), and 4 calls at once per handler for the whole installation.
SETTINGS = {
    "MESSAGESERVICE_DISPATCH_SWEEP_SECONDS": "0.2",
    "MESSAGESERVICE_BREAKER_FAILURES": "2",
    "MESSAGESERVICE_RETRY_SCHEDULE": "600",
    "MESSAGESERVICE_HANDLER_CONCURRENCY": "4",
}


@pytest.fixture
def topology(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Topology]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        **SETTINGS,
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


def test_the_scale_out_topology(topology: Topology, handler: Receiver) -> None:
    """An API-only `serve` and `worker`s, each process started once (a start is the costly part), through the
    scenarios in turn: delivery is the workers' alone; the serve's console shows a breaker a worker opened;
    two workers share one handler's concurrency limit."""
    message = an_api_only_serve_queues_and_does_not_deliver(topology, handler)
    topology.start("worker", "--log-level", "warning")
    first = handler.wait_for(1, timeout=90)[0]
    assert first.form["message_id"] == message
    the_console_of_an_api_only_serve_shows_a_workers_open_breaker(topology)
    topology.start("worker", "--log-level", "warning")
    for _ in range(20):
        topology.call("messageservice.message.send", **healthy_message(topology))
    calls = handler.wait_for(21, timeout=60)
    assert len({c.form["message_id"] for c in calls}) == 21
    two_workers_share_one_handler_concurrency_limit(topology)


def handlers_beating(topology: Topology) -> int:
    return len(topology.query(select(dispatchers).where(dispatchers.c.kind == "handler")))


def healthy_message(topology: Topology) -> dict[str, str]:
    return {"MESSAGE_FROM": f"{topology.client_id}|scale", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}


def an_api_only_serve_queues_and_does_not_deliver(topology: Topology, handler: Receiver) -> str:
    """The serve acknowledges a send and leaves it queued; its MESSAGE_ID."""
    topology.serve_api_only()
    sender = {"CODE": "scale", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{handler.port}/h", "NAME": "S"}
    assert topology.call("messageservice.sender.add", **sender)["result"] is True
    sent = topology.call("messageservice.message.send", **healthy_message(topology))
    # The serve's loops are up (its app-event loop beats) and none of them delivers messages.
    wait_for(lambda: topology.query(select(dispatchers).where(dispatchers.c.kind == "event")), 60)
    assert handlers_beating(topology) == 0
    (pending,) = topology.query(select(deliveries.c.state, deliveries.c.attempts))
    assert tuple(pending) == ("pending", 0) and handler.requests == []
    return str(sent["result"]["MESSAGE_ID"])


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


def two_workers_share_one_handler_concurrency_limit(topology: Topology) -> None:
    provider = CountingHandler().start()
    try:
        sender = {"CODE": "slow", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{provider.port}/h", "NAME": "Slow"}
        assert topology.call("messageservice.sender.add", **sender)["result"] is True
        # Processes start slowly on a busy machine: a generous wait for both heartbeats.
        wait_for(lambda: handlers_beating(topology) == 2, 90)
        time.sleep(1.2)  # one sync: each worker has counted the other and taken its share (4 // 2)
        message = {"MESSAGE_FROM": f"{topology.client_id}|slow", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        for _ in range(24):
            topology.call("messageservice.message.send", **message)
        wait_for(lambda: provider.served >= 24, timeout=60)
        print(f"\nat most {provider.most} calls at once from two workers (limit 4)")
        assert 2 <= provider.most <= 4
    finally:
        provider.stop()


def the_console_of_an_api_only_serve_shows_a_workers_open_breaker(topology: Topology) -> None:
    provider = PathServer().start()
    try:
        provider.statuses["/down"] = 503
        sender = {"CODE": "down", "TYPE": "SMS", "HANDLER": provider.url("/down"), "NAME": "Down"}
        assert topology.call("messageservice.sender.add", **sender)["result"] is True
        real_server = SimpleNamespace(base_url=f"http://127.0.0.1:{topology.port}", new_session=requests.Session)
        console = ConsoleClient(real_server)  # type: ignore[arg-type]
        console.login(Admin(1, "admin", topology.console_password))
        page = console.get("/providers").text
        assert 'class="breaker-closed">closed<' in page and 'class="breaker-open">open<' not in page

        message = {"MESSAGE_FROM": f"{topology.client_id}|down", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        for _ in range(2):
            topology.call("messageservice.message.send", **message)
        assert len(provider.wait_for("/down", 2, timeout=90)) == 2
        page = wait_for(lambda: 'class="breaker-open">open<' in (text := console.get("/providers").text) and text, 60)
        assert provider.url("/down") in page
        assert console.get("/stats.json").json()["open_breakers"] == 1
    finally:
        provider.stop()
