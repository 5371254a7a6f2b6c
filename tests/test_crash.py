"""Crash test: 600 sends, the server SIGKILLed mid-flight and restarted, every acknowledged message delivered.

The real server runs as `messageservice serve` in a subprocess over a real database (a SQLite file, or a fresh
database in the run's PostgreSQL). Clients send with `batch` (50 `messageservice.message.send` each, with an
IDEMPOTENCY_KEY, so a batch cut off by a kill is simply sent again) from a few threads while a real HANDLER in this
process records every call. The server is killed with SIGKILL at random moments while sends and deliveries are in
flight, and restarted on the same port each time. At the end every acknowledged message must have reached the
handler at least once, intact, and ended with delivery state "done" and status "sent"; the number of duplicate
deliveries (at-least-once, not exactly-once) is reported and written to test-artifacts/crash-<backend>.json.

MESSAGESERVICE_CRASH_SEED=<n> replays the kill moments of an earlier run (the seed is printed and saved).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
import requests
from cryptography.fernet import Fernet
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from messageservice.config import normalize_database_url
from messageservice.core import statuses
from messageservice.store.tables import attempts, deliveries, messages
from tests.loopback_http import serve_in_background
from tests.postgres import TempPostgres, free_port
from tests.test_cli import invoke

COMMAND = [sys.executable, "-m", "messageservice.cli"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

# Enough that every kill lands amid sends and deliveries in flight (1,500 showed nothing more than 600 does:
# each kill still finds dozens of jobs under lease, and the test's time is mostly the last lease running out).
TOTAL = 600
PER_BATCH = 50
CLIENTS = 4
# Kills land once this many sends are acknowledged (one draw from each range), each while a delivery is in flight.
KILL_WINDOWS = ((40, 170), (220, 380), (430, 540))
# The handler answers in 5-20 ms; the timeout sets the lease (2 x timeout + 10 s) that the end waits out.
HANDLER_TIMEOUT = 1.0
# The dispatcher's lease on a claimed job (dispatcher.py): what a killed server held is claimed again after it.
# Its margin is shortened from the production 10 s: the end of the test waits for the last kill's leases.
LEASE_MARGIN = 4.0
LEASE = HANDLER_TIMEOUT * 2 + LEASE_MARGIN
START_DEADLINE = 90.0  # seconds for a (re)started server to answer /health, on a busy machine too
SEND_DEADLINE = 120.0  # seconds for every send to be acknowledged, restarts included
SETTLE_DEADLINE = 120.0  # seconds after the last restart for every acknowledged message to be done
REST_SAMPLE = 100  # messages read back through messageservice.message.get at the end
SERVER_ENV = {
    "MESSAGESERVICE_HANDLER_TIMEOUT_SECONDS": str(HANDLER_TIMEOUT),
    "MESSAGESERVICE_LEASE_MARGIN_SECONDS": str(LEASE_MARGIN),
    # Many short retries: a slow answer on a busy machine must not use up a message's attempts.
    "MESSAGESERVICE_RETRY_SCHEDULE": ",".join(["0.2", "0.5"] + ["1"] * 30),
    "MESSAGESERVICE_DISPATCH_SWEEP_SECONDS": "0.5",
    "MESSAGESERVICE_RATE_LIMIT_BURST": "10000000",
    "MESSAGESERVICE_RATE_LIMIT_PER_SECOND": "10000000",
    "MESSAGESERVICE_OPERATING_LIMIT_SECONDS": "0",
}


# --- the HANDLER ------------------------------------------------------------------------------------------------


@dataclass
class Handler:
    """A provider's HANDLER on a loopback port: answers 200 after 5-20 ms and records every message_id it gets."""

    calls: collections.Counter[str] = field(default_factory=collections.Counter)
    bodies: dict[str, set[str]] = field(default_factory=lambda: collections.defaultdict(set))
    inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Handler:
        owner = self

        class Request(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
                recorded = self.path == "/h" and "message_id" in form
                with owner.lock:
                    if recorded:
                        # Reached the handler: counted now, whether or not the answer gets back to the server.
                        owner.calls[form["message_id"]] += 1
                        owner.bodies[form["message_id"]].add(form.get("message_body", ""))
                    owner.inflight += 1
                try:
                    time.sleep(random.uniform(0.005, 0.02))
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the server was killed while waiting for the answer
                finally:
                    with owner.lock:
                        owner.inflight -= 1

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Request)
        self.port = self.httpd.server_address[1]
        return self

    def snapshot(self) -> tuple[collections.Counter[str], int]:
        with self.lock:
            return collections.Counter(self.calls), self.inflight

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the server under test --------------------------------------------------------------------------------------


class Servers:
    """`messageservice serve` on one port, started again after every kill; all of them killed in teardown."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    @property
    def current(self) -> subprocess.Popen[bytes]:
        return self.started[-1][0]

    def start(self) -> None:
        log = self.folder / f"server-{len(self.started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*COMMAND, "serve", "--port", str(self.port), "--log-level", "warning"],
                cwd=self.folder,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append((process, log))
        deadline = time.time() + START_DEADLINE
        while True:
            if process.poll() is not None:
                raise AssertionError(f"server exited with {process.returncode} on start:\n{self.log_tail()}")
            try:
                if requests.get(self.base_url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise AssertionError(f"server did not come up in {START_DEADLINE:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def kill(self) -> None:
        os.kill(self.current.pid, signal.SIGKILL)
        self.current.wait(timeout=10)

    def stop(self) -> int | None:
        """Stop the current server as an operator would (SIGINT); its exit code."""
        process = self.current
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def kill_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()

    def log_tail(self, lines: int = 40) -> str:
        _, log = self.started[-1]
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """ERROR lines and tracebacks any server printed (a killed one prints nothing about its death)."""
        found = []
        for index, (_, log) in enumerate(self.started):
            for line in log.read_text(errors="replace").splitlines():
                if "ERROR" in line or "Traceback" in line or "CRITICAL" in line:
                    found.append(f"server-{index}: {line}")
        return found


def cli(env: dict[str, str], folder: Path, *args: str) -> Any:
    """Setting up runs the commands in this process: the server's process is what this test kills."""
    result = invoke({k: v for k, v in env.items() if k.startswith("MESSAGESERVICE_")}, *args, "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --- clients ----------------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What the clients were told: idempotency key -> MESSAGE_ID, for every acknowledged send."""

    acked: dict[str, str] = field(default_factory=dict)
    bodies: dict[str, str] = field(default_factory=dict)  # MESSAGE_ID -> the body sent
    conflicts: list[str] = field(default_factory=list)  # one key acknowledged with two MESSAGE_IDs
    failed_requests: int = 0  # batch requests that got no answer (server down) and were sent again
    command_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)  # the test is over: clients give up

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def body_of(number: int) -> str:
    return f"crash test message {number} — ü & <b>"


def send_batches(base_url: str, token: str, message_from: str, numbers: list[int], ledger: Ledger, run: str) -> None:
    """Send `numbers` in batches of 50; a batch is sent again (same keys) until every command is acknowledged."""
    session = requests.Session()
    deadline = time.time() + SEND_DEADLINE
    for start in range(0, len(numbers), PER_BATCH):
        pending = {f"m{n}": n for n in numbers[start : start + PER_BATCH]}
        while pending:
            if ledger.stop.is_set():
                return
            if time.time() > deadline:
                raise AssertionError(f"sends not acknowledged in {SEND_DEADLINE} s: {sorted(pending)[:5]}")
            cmd = {
                key: "messageservice.message.send?"
                + urlencode(
                    {
                        "MESSAGE_FROM": message_from,
                        "MESSAGE_TO": f"+7999{n:07d}",
                        "MESSAGE_BODY": body_of(n),
                        "IDEMPOTENCY_KEY": f"{run}-{n}",
                    }
                )
                for key, n in pending.items()
            }
            try:
                response = session.post(
                    base_url + "/rest/batch", json={"auth": token, "halt": 0, "cmd": cmd}, timeout=30
                )
                result = response.json()["result"] if response.status_code == 200 else None
            except (requests.RequestException, ValueError, KeyError):
                result = None
            if result is None:
                # Not acknowledged: the server is down or was killed during the request. Send it again.
                with ledger.lock:
                    ledger.failed_requests += 1
                session.close()
                session = requests.Session()
                time.sleep(0.1)
                continue
            answers = result["result"] if isinstance(result["result"], dict) else {}
            errors = result["result_error"] if isinstance(result["result_error"], dict) else {}
            with ledger.lock:
                for key, answer in answers.items():
                    if key not in pending or not isinstance(answer, dict) or "MESSAGE_ID" not in answer:
                        continue
                    idempotency_key = f"{run}-{pending[key]}"
                    earlier = ledger.acked.setdefault(idempotency_key, answer["MESSAGE_ID"])
                    if earlier != answer["MESSAGE_ID"]:
                        ledger.conflicts.append(f"{idempotency_key}: {earlier} then {answer['MESSAGE_ID']}")
                    ledger.bodies[answer["MESSAGE_ID"]] = body_of(pending[key])
                    del pending[key]
                for error in errors.values():
                    ledger.command_errors[str(error.get("error") if isinstance(error, dict) else error)] += 1
            if errors:
                time.sleep(0.05)  # the failed commands are sent again
    session.close()


# --- the database, read directly --------------------------------------------------------------------------------


def read_outcomes(database_url: str) -> dict[str, dict[str, Any]]:
    """Every message with its delivery row and recorded attempts, keyed by MESSAGE_ID."""

    async def main() -> dict[str, dict[str, Any]]:
        # A plain engine (no BEGIN IMMEDIATE): a reader beside the running server, not a writer.
        engine = create_async_engine(normalize_database_url(database_url))
        try:
            async with engine.connect() as conn:
                recorded = (
                    select(attempts.c.message_id, func.count().label("recorded"))
                    .group_by(attempts.c.message_id)
                    .subquery()
                )
                ok = (
                    select(attempts.c.message_id, func.count().label("ok"))
                    .where(attempts.c.http_status == 200)
                    .group_by(attempts.c.message_id)
                    .subquery()
                )
                rows = (
                    await conn.execute(
                        select(
                            messages.c.message_id,
                            messages.c.message_body,
                            messages.c.status_id,
                            deliveries.c.state,
                            deliveries.c.attempts,
                            func.coalesce(recorded.c.recorded, 0).label("recorded"),
                            func.coalesce(ok.c.ok, 0).label("ok"),
                        )
                        .outerjoin(deliveries, deliveries.c.message_id == messages.c.id)
                        .outerjoin(recorded, recorded.c.message_id == messages.c.id)
                        .outerjoin(ok, ok.c.message_id == messages.c.id)
                    )
                ).all()
        finally:
            await engine.dispose()
        return {row.message_id: dict(row._mapping) for row in rows}

    return asyncio.run(main())


def leased(database_url: str) -> set[str]:
    """MESSAGE_IDs whose delivery a server has claimed and not yet recorded (its lease lies ahead)."""

    async def main() -> set[str]:
        engine = create_async_engine(normalize_database_url(database_url))
        try:
            async with engine.connect() as conn:
                query = (
                    select(messages.c.message_id)
                    .join(deliveries, deliveries.c.message_id == messages.c.id)
                    # Retries here wait at most ~1.2 s; anything further out is a lease.
                    .where(deliveries.c.state == "pending", deliveries.c.next_attempt_at > time.time() + 1.5)
                )
                return set((await conn.execute(query)).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(main())


def settled(outcomes: dict[str, dict[str, Any]]) -> bool:
    return all(o["state"] == "done" and o["status_id"] == statuses.SENT.id for o in outcomes.values())


def read_through_api(base_url: str, token: str, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """messageservice.message.get for each MESSAGE_ID, 50 to a batch."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(message_ids), PER_BATCH):
        part = message_ids[start : start + PER_BATCH]
        cmd = {f"g{i}": "messageservice.message.get?" + urlencode({"MESSAGE_ID": m}) for i, m in enumerate(part)}
        response = requests.post(base_url + "/rest/batch", json={"auth": token, "halt": 0, "cmd": cmd}, timeout=30)
        assert response.status_code == 200, response.text
        result = response.json()["result"]
        assert not result["result_error"], result["result_error"]
        for message in result["result"].values():
            found[message["MESSAGE_ID"]] = message
    return found


# --- the test ---------------------------------------------------------------------------------------------------


@pytest.fixture
def handler() -> Iterator[Handler]:
    server = Handler().start()
    yield server
    server.stop()


def database_for(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder}/messageservice.db"
    pg: TempPostgres = request.getfixturevalue("postgres")
    return pg.create_database("crash_" + uuid.uuid4().hex[:12])


def test_sigkill_mid_flight_loses_no_acknowledged_message(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path: Path,
    handler: Handler,
    record_property: Any,
) -> None:
    began = time.time()
    seed = int(os.environ.get("MESSAGESERVICE_CRASH_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    kill_points = [rng.randint(low, high) for low, high in KILL_WINDOWS]
    database_url = database_for(request, backend, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": database_url,
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "var"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        **SERVER_ENV,
    }
    handler_base = f"http://127.0.0.1:{handler.port}"

    # The portal, by script, as an operator sets it up.
    cli(env, tmp_path, "init", "--domain", "crash.test")
    app = cli(env, tmp_path, "app", "add", "--name", "Crash SMS", "--url", handler_base + "/app/")
    cli(env, tmp_path, "app", "install", app["client_id"])
    token = cli(env, tmp_path, "token", app["client_id"], "--user", "1")["access_token"]

    servers = Servers(tmp_path, env)
    ledger = Ledger()
    kills: list[dict[str, Any]] = []
    try:
        servers.start()
        code = "crash" + uuid.uuid4().hex[:6]
        added = requests.post(
            servers.base_url + "/rest/messageservice.sender.add",
            json={"auth": token, "CODE": code, "TYPE": "SMS", "HANDLER": handler_base + "/h", "NAME": "Crash"},
            timeout=30,
        )
        assert added.status_code == 200 and added.json()["result"] is True, added.text
        message_from = f"{app['client_id']}|{code}"

        run = uuid.uuid4().hex[:8]
        numbers = list(range(TOTAL))
        failures: list[BaseException] = []

        def client(part: list[int]) -> None:
            try:
                send_batches(servers.base_url, token, message_from, part, ledger, run)
            except BaseException as exc:
                failures.append(exc)

        threads = [threading.Thread(target=client, args=(numbers[i::CLIENTS],), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()

        # Kill at each point, while the handler holds a delivery in flight, and start again at once.
        for point in kill_points:
            deadline = time.time() + SEND_DEADLINE
            while ledger.count() < point and any(t.is_alive() for t in threads) and time.time() < deadline:
                time.sleep(0.002)
            wait_inflight = time.time() + 3
            while handler.snapshot()[1] == 0 and time.time() < wait_inflight:
                time.sleep(0.001)
            calls, inflight = handler.snapshot()
            at = time.time() - began
            servers.kill()
            held = leased(database_url)
            kills.append(
                {
                    "at_s": round(at, 2),
                    "acked": ledger.count(),
                    "handled": sum(calls.values()),
                    "inflight": inflight,
                    # Jobs the dead server held: sent again when its lease runs out, as duplicates if they
                    # had reached the handler already (the answer was not yet recorded).
                    "leased": len(held),
                    "leased_already_handled": len(held & set(calls)),
                }
            )
            time.sleep(rng.uniform(0, 0.5))  # down for a moment: clients' requests fail and are sent again
            servers.start()
        last_restart = time.time()

        for thread in threads:
            thread.join(timeout=SEND_DEADLINE)
        assert not failures, failures
        assert not any(t.is_alive() for t in threads), "clients did not finish"
        sending_done = time.time() - began
        acked = dict(ledger.acked)
        assert not ledger.conflicts, ledger.conflicts[:5]
        assert len(acked) == TOTAL

        # Every acknowledged message reaches the handler and is recorded done; leases of killed servers run out.
        wanted = set(acked.values())
        deadline = last_restart + SETTLE_DEADLINE
        while True:
            calls, _ = handler.snapshot()
            missing = wanted - set(calls)
            # The database is read (every message, joined with its attempts) only once the handler has seen
            # them all: reading it while deliveries go on only slowed them down.
            outcomes = read_outcomes(database_url) if not missing or time.time() > deadline else {}
            if not missing and settled(outcomes):
                break
            if time.time() > deadline:
                break
            time.sleep(0.5 if not missing else 0.1)
        settled_at = time.time() - began
        calls_when_settled = sum(calls.values())
        # The API agrees with the store: a sample read back with messageservice.message.get.
        sample = rng.sample(sorted(wanted), min(REST_SAMPLE, len(wanted)))
        through_api = read_through_api(servers.base_url, token, sample)
        exit_code = servers.stop()
        # Counted once the server has exited: whatever it sent after all was done is in this count.
        calls, _ = handler.snapshot()
    finally:
        ledger.stop.set()
        servers.kill_all()

    duplicates = sum(calls[m] for m in wanted) - len(wanted & set(calls))
    stray = sorted(set(calls) - wanted)
    spread = collections.Counter(calls[m] for m in wanted)
    not_done = {m: o for m, o in outcomes.items() if o["state"] != "done" or o["status_id"] != statuses.SENT.id}
    summary = {
        "backend": backend,
        "seed": seed,
        "messages": TOTAL,
        "acknowledged": len(wanted),
        "delivered_distinct": len(wanted & set(calls)),
        "handler_calls": sum(calls.values()),
        "duplicates": duplicates,
        "calls_per_message": {str(k): v for k, v in sorted(spread.items())},
        "missing": len(missing),
        "not_done_in_db": len(not_done),
        "calls_after_settled": sum(calls.values()) - calls_when_settled,
        "claims": sum(o["attempts"] or 0 for o in outcomes.values()),
        "recorded_attempts": sum(o["recorded"] for o in outcomes.values()),
        "recorded_failed_attempts": sum(o["recorded"] - o["ok"] for o in outcomes.values()),
        "kills": kills,
        "failed_batch_requests": ledger.failed_requests,
        "command_errors": dict(ledger.command_errors),
        "lease_s": LEASE,
        "sending_done_s": round(sending_done, 1),
        "settled_s": round(settled_at, 1),
        "runtime_s": round(time.time() - began, 1),
        "final_exit_code": exit_code,
        "server_log_problems": servers.log_problems()[:20],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / f"crash-{backend}.json").write_text(json.dumps(summary, indent=2) + "\n")
    record_property("crash", summary)
    print(f"\ncrash test [{backend}]: " + json.dumps(summary))

    # Every acknowledged message reached the handler at least once, with the body it was sent with.
    assert not missing, f"{len(missing)} acknowledged messages never reached the handler, e.g. {sorted(missing)[:5]}"
    corrupted = [m for m in wanted if handler.bodies[m] != {ledger.bodies[m]}]
    assert not corrupted, [(m, handler.bodies[m], ledger.bodies[m]) for m in corrupted[:5]]
    # Only what was sent is delivered: every message in the store was acknowledged, once (idempotency held).
    assert not stray, stray[:5]
    assert set(outcomes) == wanted, (len(outcomes), len(wanted))
    assert all(outcomes[m]["message_body"] == ledger.bodies[m] for m in wanted)
    # ...and ended done and sent, with the successful attempt on record.
    assert not not_done, list(not_done.items())[:5]
    assert all(o["ok"] >= 1 and o["attempts"] >= o["recorded"] >= 1 for o in outcomes.values()), [
        o for o in outcomes.values() if not (o["ok"] >= 1 and o["attempts"] >= o["recorded"] >= 1)
    ][:5]
    wrong = {
        m: (v["STATUS"], v["DELIVERY"])
        for m, v in through_api.items()
        if v["STATUS"] != "sent" or v["DELIVERY"]["STATE"] != "done" or v["MESSAGE_BODY"] != ledger.bodies[m]
    }
    assert set(through_api) == set(sample) and not wrong, list(wrong.items())[:5]
    assert summary["calls_after_settled"] == 0, "deliveries went on after every message was done"
    assert len(kills) == len(KILL_WINDOWS)
    assert exit_code == 0, servers.log_tail()
