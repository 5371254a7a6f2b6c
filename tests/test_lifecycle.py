"""Graceful shutdown: SIGTERM in the middle of a burst to a slow HANDLER delivers nothing twice, and the
next process takes what was handed back at once (no wait for a lease).

The real-process tests run `serve` and `worker` as the operator does; the rest are units of the stop
machinery (supervisor, loops, the setting) without a server."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from messageservice.background import BackgroundLoop, stop_loops
from messageservice.config import Settings, SettingsError
from messageservice.store.tables import attempts, deliveries, dispatchers
from messageservice.supervisor import Backoff, LoopHealth, supervise
from tests.conftest import BACKENDS, new_database_url
from tests.delivery_helpers import serve_in_background
from tests.postgres import free_port
from tests.test_messages import wait_for
from tests.test_scale_out import Topology
from tests.test_serve import _wait

BURST = 40
# Seconds per call: with 4 at once the burst takes about 2.5 s, and the SIGTERM (sent once 8 calls are in)
# lands with 2 s of it still to go.
HANDLER_DELAY = 0.25
HANDLER_TIMEOUT = 60.0
LEASE = HANDLER_TIMEOUT * 2 + 10  # delivery/dispatcher.py lease_seconds


class SlowHandler:
    """A real HANDLER on loopback: answers after a delay and counts every message_id it is sent."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.seen: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def start(self) -> SlowHandler:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                time.sleep(owner.delay)
                with owner.lock:
                    owner.seen[parse_qs(body)["message_id"][0]] += 1
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        self.port = self.httpd.server_address[1]
        return self

    def received(self) -> int:
        with self.lock:
            return sum(self.seen.values())

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def slow_handler() -> Iterator[SlowHandler]:
    server = SlowHandler(HANDLER_DELAY).start()
    yield server
    server.stop()


@pytest.fixture
def setup(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[Topology]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_DISPATCH_SWEEP_SECONDS": "0.2",
        # Four calls at once to the one handler: a claim takes twice that, so some jobs wait for a slot.
        "MESSAGESERVICE_HANDLER_CONCURRENCY": "4",
        "MESSAGESERVICE_HANDLER_TIMEOUT_SECONDS": str(HANDLER_TIMEOUT),
        "MESSAGESERVICE_SHUTDOWN_GRACE_SECONDS": "15",
    }
    topology = Topology(env)
    topology.cli("init", "--domain", "lifecycle.test")
    topology.client_id = topology.cli(
        "app", "add", "--name", "L", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )["client_id"]
    topology.cli("app", "install", topology.client_id)
    topology.token = topology.cli("token", topology.client_id, "--user", "1")["access_token"]
    try:
        yield topology
    finally:
        topology.stop()


def send_burst(topology: Topology, handler: SlowHandler) -> set[str]:
    sender = {"CODE": "slow", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{handler.port}/h", "NAME": "Slow"}
    assert topology.call("messageservice.sender.add", **sender)["result"] is True
    message = {"MESSAGE_FROM": f"{topology.client_id}|slow", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
    return {topology.call("messageservice.message.send", **message)["result"]["MESSAGE_ID"] for _ in range(BURST)}


def terminate(process: subprocess.Popen[bytes], timeout: float = 60.0) -> float:
    """SIGTERM, wait for a clean exit; how long the stop took. (uvicorn, once its graceful shutdown is
    done, raises the signal again: `serve` ends as killed by SIGTERM, which systemd counts as a clean stop.)"""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=timeout) in (0, -signal.SIGTERM)
    return time.monotonic() - began


def log_tail(topology: Topology, process: subprocess.Popen[bytes], lines: int = 60) -> str:
    """The last lines a process of the topology wrote (Topology.start names its log by kind and index)."""
    index = topology.processes.index(process)
    kind = "worker" if "worker" in process.args else "serve"  # type: ignore[operator]
    path = Path(topology.env["MESSAGESERVICE_DATA_DIR"]).parent / f"{kind}-{index}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def handler_dispatchers(topology: Topology) -> int:
    return len(topology.query(select(dispatchers.c.id).where(dispatchers.c.kind == "handler")))


def start_delivering(topology: Topology, kind: str) -> subprocess.Popen[bytes]:
    """The process that delivers: a `worker` (beside an API-only serve), or a `serve` that does both."""
    # At info: each attempt's line and the stop's, to read when a stop takes longer than it should.
    if kind == "worker":
        topology.start("worker", "--log-level", "info")
    else:
        topology.port = free_port()
        topology.start("serve", "--port", str(topology.port), "--log-level", "info")
        _wait(f"http://127.0.0.1:{topology.port}/health")
    return topology.processes[-1]


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["worker", "serve"])
def test_sigterm_mid_burst_delivers_each_message_once_and_hands_back_at_once(
    setup: Topology, slow_handler: SlowHandler, kind: str
) -> None:
    if kind == "worker":
        setup.serve_api_only()
        sent = send_burst(setup, slow_handler)
        first = start_delivering(setup, kind)
    else:
        first = start_delivering(setup, kind)
        sent = send_burst(setup, slow_handler)
    # Mid-burst: calls are under way (4 at the handler) and claimed jobs wait for a slot.
    wait_for(lambda: slow_handler.received() >= 8, timeout=90)
    stopped_in = terminate(first)
    at_exit = slow_handler.received()
    assert 8 <= at_exit < BURST, "the SIGTERM should land mid-burst"
    # The calls under way finished; nothing waited for the grace.
    assert stopped_in < HANDLER_DELAY * 4 + 10, f"the stop took {stopped_in:.1f} s:\n{log_tail(setup, first)}"

    rows = setup.query(select(deliveries.c.state, deliveries.c.next_attempt_at, deliveries.c.attempts))
    now = time.time()
    done = [r for r in rows if r.state == "done"]
    pending = [r for r in rows if r.state == "pending"]
    # What the handler answered was written before the exit; the rest is back in the queue, due now, not
    # under a lease, its unstarted claim not counted as an attempt.
    assert len(done) == at_exit and len(pending) == BURST - at_exit
    assert all(r.next_attempt_at < now + 2 for r in pending), "handed-back jobs must not wait for a lease"
    assert all(r.attempts == 0 for r in pending)

    # The stopped dispatcher signed off: the next one gets the handler's whole concurrency at once.
    assert handler_dispatchers(setup) == 0

    start_delivering(setup, kind)
    # Timed from the new dispatcher's first heartbeat: starting a process on a busy machine is not the point.
    wait_for(lambda: handler_dispatchers(setup) == 1, timeout=90)
    began = time.monotonic()
    wait_for(lambda: slow_handler.received() >= BURST, timeout=LEASE)
    took = time.monotonic() - began
    print(f"\n{kind}: stopped in {stopped_in:.1f} s; the next process finished the burst in {took:.1f} s")
    assert took < LEASE / 4, "the next process waited for a lease"

    wait_for(lambda: all(r.state == "done" for r in setup.query(select(deliveries.c.state))), timeout=30)
    assert set(slow_handler.seen) == sent
    assert [m for m, n in slow_handler.seen.items() if n > 1] == [], "a message was delivered twice"
    assert len(setup.query(select(attempts.c.message_id))) == BURST  # one attempt each, none handed back


# Units of the stop machinery: no server.


class Finishing(BackgroundLoop):
    """A loop with work under way: a graceful stop lets it finish within the grace."""

    name = "finishing"

    def __init__(self, work_seconds: float) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.work_seconds = work_seconds
        self.asked = asyncio.Event()
        self.finished = False
        self.runs = 0

    def begin_stop(self) -> bool:
        self.asked.set()
        return True

    async def run(self) -> None:
        self.runs += 1
        await self.asked.wait()
        await asyncio.sleep(self.work_seconds)
        self.finished = True


class Plain(BackgroundLoop):
    name = "plain"

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.cancelled = False

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_a_graceful_stop_lets_work_finish_and_cancels_the_rest() -> None:
    async def main() -> None:
        finishing, plain = Finishing(0.05), Plain()
        for loop in (finishing, plain):
            loop.start()
        await asyncio.sleep(0)
        began = time.monotonic()
        await stop_loops([finishing, plain], grace=10)
        # Finished (not cancelled), not run again by the supervisor; the plain loop did not eat the grace.
        assert finishing.finished and finishing.runs == 1 and finishing.health.state == "stopped"
        assert plain.cancelled and time.monotonic() - began < 5

    asyncio.run(main())


def test_work_longer_than_the_grace_is_cut_off() -> None:
    async def main() -> None:
        loop = Finishing(60)
        loop.start()
        await asyncio.sleep(0)
        began = time.monotonic()
        await loop.stop(grace=0.1)
        assert not loop.finished and time.monotonic() - began < 5 and loop.health.state == "stopped"

    asyncio.run(main())


def test_a_loop_that_returns_while_stopping_is_not_restarted() -> None:
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)

    async def main() -> None:
        health = LoopHealth("x")
        stopping = False

        async def run() -> None:
            if stopping:
                return
            raise RuntimeError("boom")

        async def sleep_then_stop(seconds: float) -> None:
            nonlocal stopping
            await fake_sleep(seconds)
            stopping = True

        await supervise(run, health, backoff=Backoff(first=1), sleep=sleep_then_stop, stopping=lambda: stopping)
        # One crash restarted (after its backoff), then a return while stopping ends supervision.
        assert slept == [1] and health.restarts == 1 and health.state == "stopped"

    asyncio.run(main())


def test_the_grace_setting_is_checked() -> None:
    assert Settings(_env_file=None).shutdown_grace_seconds == 15.0  # type: ignore[call-arg]
    assert Settings(shutdown_grace_seconds=0, _env_file=None).shutdown_grace_seconds == 0  # type: ignore[call-arg]
    for bad in (-1, 4000, "soon"):
        with pytest.raises(SettingsError) as raised:
            Settings(shutdown_grace_seconds=bad, _env_file=None)  # type: ignore[call-arg]
        assert str(raised.value).startswith("MESSAGESERVICE_SHUTDOWN_GRACE_SECONDS")


@pytest.mark.e2e
def test_sigterm_lets_serve_finish_the_request_it_is_answering(setup: Topology, backend: str) -> None:
    if backend != BACKENDS[0]:
        pytest.skip("uvicorn's part: the same on every engine")
    setup.serve_api_only()
    process = setup.processes[-1]
    sender = {"CODE": "late", "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9/h", "NAME": "Late"}
    assert setup.call("messageservice.sender.add", **sender)["result"] is True
    body = json.dumps(
        {
            "auth": setup.token,
            "MESSAGE_FROM": f"{setup.client_id}|late",
            "MESSAGE_TO": "+79990000001",
            "MESSAGE_BODY": "x",
        }
    ).encode()
    with socket.create_connection(("127.0.0.1", setup.port), timeout=60) as conn:
        # A request under way: its headers and half its body sent.
        conn.sendall(
            b"POST /rest/messageservice.message.send.json HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10]
        )
        # The server has read them (nothing left in its receive queue): the request is under way there.
        wait_for(lambda: _read_by_server(setup.port, conn.getsockname()[1]), timeout=60)
        process.send_signal(signal.SIGTERM)
        # The shutdown has begun once the port takes no new connection.
        wait_for(lambda: not _connects(setup.port), timeout=60)
        conn.sendall(body[10:])
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["result"]["MESSAGE_ID"]
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    (row,) = setup.query(select(deliveries.c.state))
    assert row.state == "pending"  # stored, to be delivered by the next process


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def _read_by_server(server_port: int, client_port: int) -> bool:
    """The server's end of our connection is established and has nothing unread (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, queues = fields[1], fields[2], fields[3], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return state == "01" and int(queues.split(":")[1], 16) == 0
    return False
