"""Sending messages end to end (REST `batch` -> queue -> dispatcher -> HANDLER) against a bare aiohttp
client posting the same bodies to the same handler, measured in the same run.

    .venv/bin/python bench/send_bench.py [--sizes 10000,100000] [--postgres] [--workers N] [--rounds 3]
                                         [--paced-rate 1000] [--paced-seconds 10] [--no-paced] [--keep]

What runs where (all started by this one file, all on 127.0.0.1):

* the orchestrator (this process): a fresh portal per size built with the real `messageservice` CLI
  (`init`, `app add`, `app install`, `token`, all `--json`), one sender whose HANDLER is the handler
  below, the server(s), the measurements, the report, JSON in bench/results/;
* the server(s): the real `messageservice serve` command, unpatched. `--workers N` runs N of them on N
  ports against the same database (each has its own dispatcher; on PostgreSQL their claims share the
  queue with FOR UPDATE SKIP LOCKED); the sender alternates batches between them;
* the handler: `send_bench.py _handler PORT`, an aiohttp server in its own process that answers 200
  and records, per `message_id` form field, the wall-clock time each POST arrived;
* the load processes, fresh for every measurement: `_send` (the REST client: `batch` requests of 50
  `messageservice.message.send` commands, or single sends at a fixed rate) and `_baseline` (a bare
  aiohttp client posting prebuilt bodies, built with the server's own `handler_body`, to the handler
  at the dispatcher's concurrency: the ceiling).

Each measurement, server or baseline:

* burst: N messages as fast as they go. msg/s = messages acknowledged and delivered / (last handler
  arrival - first send). Latency = handler arrival - the time the client sent the request that carried
  the message (for a burst this is mostly time spent waiting in the queue behind the others);
  `commit->handler` = arrival - the `result_time.finish` the server returned for that command;
* paced: a fixed offered rate (default 1,000 messages/s for 10 s), open loop: latency is measured from
  the time each request was due, so a client or server that falls behind is not hidden.

Every acknowledged MESSAGE_ID must reach the handler; missing, duplicate and unexpected ids are
counted and any of them fails the run. Clocks: the client, the server and the handler all use
time.time() on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rest_bench import cli_json, free_port, git_revision, http_post, percentile, process_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HANDLER_PATH = "/h"
SENDER_CODE = "bench.sms"
DISPATCH_CONCURRENCY = 64  # the server's default (MESSAGESERVICE_DISPATCH_CONCURRENCY); the baseline uses it too
TARGETS = {"sqlite": 1_000.0, "postgres": 2_000.0}  # messages/s, from the issue
TARGET_PACED_P99_MS = 50.0
MESSAGE_TEXT = "Your confirmation code is {code}. It expires in 10 minutes. Message {index}."


def now() -> float:
    return time.time()


def run_async(main: Any) -> Any:
    """Run a coroutine on uvloop (as the server and its dispatcher do) when it is installed."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def wait_for_go() -> None:
    """Load processes prepare their bodies first, then say `ready` and wait, so that several start together."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()


def message_to(index: int) -> str:
    return f"+7999{index % 10_000_000:07d}"


def message_text(index: int) -> str:
    return MESSAGE_TEXT.format(code=f"{(index * 7919) % 1_000_000:06d}", index=index)


# --------------------------------------------------------------------------------------------------
# The handler: an aiohttp server that answers 200 and records when each message_id arrived.
# --------------------------------------------------------------------------------------------------


def handler_main(argv: Sequence[str]) -> None:
    from aiohttp import web

    port = int(argv[0])
    ids: list[bytes] = []
    times: list[float] = []
    sample: list[bytes] = []
    marker = b"&message_id="

    async def receive(request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        start = body.find(marker)
        if start >= 0:
            start += len(marker)
            end = body.find(b"&", start)
            message_id = body[start : end if end >= 0 else len(body)]
        else:  # not where the server puts it: parse the whole form
            found = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("message_id", [""])
            message_id = found[0].encode()
        ids.append(message_id)
        times.append(arrived)
        if not sample:
            sample.append(body)
        return web.Response(body=b"OK")

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": len(ids)})

    async def dump(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ids": [i.decode("ascii", "replace") for i in ids],
                "times": times,
                "sample": sample[0].decode("utf-8", "replace") if sample else None,
            }
        )

    async def reset(request: web.Request) -> web.Response:
        ids.clear()
        times.clear()
        sample.clear()
        return web.json_response({"arrivals": 0})

    async def main() -> None:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(HANDLER_PATH, receive)
        app.router.add_get("/count", count)
        app.router.add_get("/dump", dump)
        app.router.add_post("/reset", reset)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        run_async(main())


# --------------------------------------------------------------------------------------------------
# The REST client: batch sends (burst) or single sends at a fixed rate (paced).
# --------------------------------------------------------------------------------------------------


@dataclass
class SendSpec:
    urls: list[str]  # server base URLs; batches alternate between them
    token: str
    message_from: str
    count: int
    out: str  # where the per-message records go (JSON)
    batch_size: int = 50
    concurrency: int = 4  # requests in flight (burst)
    rate: float | None = None  # messages/s offered (paced); None: burst
    first_index: int = 0


@dataclass
class LoadOutcome:
    requests: int
    acknowledged: int
    failed: int
    failed_sample: str | None
    first_send: float
    last_ack: float
    client_cpu_s: float
    late_ms_p99: float = 0.0  # paced: how late the client itself issued requests


def send_main(argv: Sequence[str]) -> None:
    spec = SendSpec(**json.loads(argv[0]))
    outcome = run_async(run_send(spec))
    sys.stdout.write(json.dumps(asdict(outcome)) + "\n")


async def run_send(spec: SendSpec) -> LoadOutcome:
    import aiohttp

    size = spec.batch_size
    indices = range(spec.first_index, spec.first_index + spec.count)
    chunks = [list(indices[i : i + size]) for i in range(0, spec.count, size)]

    def command(index: int) -> str:
        query = urllib.parse.urlencode(
            {"MESSAGE_FROM": spec.message_from, "MESSAGE_TO": message_to(index), "MESSAGE_BODY": message_text(index)}
        )
        return "messageservice.message.send?" + query

    # Request bodies are encoded before the clock starts: JSON, as the SDKs send them.
    if size == 1:
        requests = [
            (
                "/rest/messageservice.message.send",
                json.dumps(
                    {
                        "auth": spec.token,
                        "MESSAGE_FROM": spec.message_from,
                        "MESSAGE_TO": message_to(chunk[0]),
                        "MESSAGE_BODY": message_text(chunk[0]),
                    }
                ).encode(),
            )
            for chunk in chunks
        ]
    else:
        requests = [
            ("/rest/batch", json.dumps({"auth": spec.token, "halt": 0, "cmd": [command(i) for i in chunk]}).encode())
            for chunk in chunks
        ]

    records: list[tuple[str, float, float, float]] = []  # message_id, sent (or due), acknowledged, committed
    failures: list[str] = []
    late: list[float] = []
    headers = {"Content-Type": "application/json"}
    limit = spec.concurrency if spec.rate is None else 512
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
    timeout = aiohttp.ClientTimeout(total=300)

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def post(number: int, sent: float) -> None:
            path, body = requests[number]
            url = spec.urls[number % len(spec.urls)] + path
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    status = response.status
                    raw = await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"request {number}: {type(exc).__name__}: {exc}")
                return
            acknowledged = time.time()
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if status != 200 or not isinstance(data, dict) or "result" not in data:
                failures.append(f"request {number}: HTTP {status} {raw[:300]!r}")
                return
            if size == 1:
                records.append((data["result"]["MESSAGE_ID"], sent, acknowledged, data["time"]["finish"]))
                return
            outer = data["result"]
            results, timings, errors = outer["result"], outer["result_time"], outer["result_error"]
            keys = range(len(results)) if isinstance(results, list) else list(results)
            for key in keys:
                records.append((results[key]["MESSAGE_ID"], sent, acknowledged, timings[key]["finish"]))
            if errors:
                failures.append(f"request {number}: {json.dumps(errors)[:300]}")

        cpu_0 = time.process_time()
        wait_for_go()
        cpu_1 = time.process_time()
        first = time.time()
        if spec.rate is None:
            queue = iter(range(len(requests)))

            async def worker() -> None:
                for number in queue:
                    await post(number, time.time())

            await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        else:
            interval = size / spec.rate
            tasks = []
            start = time.time() + 0.05
            first = start
            for number in range(len(requests)):
                due = start + number * interval
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                late.append(max(0.0, time.time() - due))
                tasks.append(asyncio.create_task(post(number, due)))
            await asyncio.gather(*tasks)
        last = time.time()
        cpu = time.process_time() - cpu_1 + (cpu_1 - cpu_0) * 0  # the wait for `go` costs nothing

    Path(spec.out).write_text(json.dumps(records))
    late.sort()
    return LoadOutcome(
        requests=len(requests),
        acknowledged=len(records),
        failed=spec.count - len(records),
        failed_sample=failures[0] if failures else None,
        first_send=first,
        last_ack=last,
        client_cpu_s=cpu,
        late_ms_p99=percentile(late, 99) * 1000 if late else 0.0,
    )


# --------------------------------------------------------------------------------------------------
# The baseline: a bare aiohttp client posting the same kind of bodies to the same handler.
# --------------------------------------------------------------------------------------------------


@dataclass
class BaselineSpec:
    url: str
    count: int
    out: str
    concurrency: int = DISPATCH_CONCURRENCY
    rate: float | None = None
    first_index: int = 0
    # Field values the server's bodies carry, so the bodies are the same size and shape.
    auth: dict[str, Any] = field(default_factory=dict)


def baseline_main(argv: Sequence[str]) -> None:
    spec = BaselineSpec(**json.loads(argv[0]))
    outcome = run_async(run_baseline(spec))
    sys.stdout.write(json.dumps(asdict(outcome)) + "\n")


async def run_baseline(spec: BaselineSpec) -> LoadOutcome:
    import aiohttp

    from messageservice.delivery.dispatcher import RESPONSE_HEAD_BYTES, USER_AGENT
    from messageservice.delivery.payload import HandlerMessage, handler_body

    created = int(time.time())
    ids = [secrets.token_hex(16) for _ in range(spec.count)]
    bodies = []
    for offset, message_id in enumerate(ids):
        index = spec.first_index + offset
        message = HandlerMessage(
            module_id="crm",
            headers={},
            sender_type="SMS",
            sender_code=SENDER_CODE,
            message_id=message_id,
            message_to=message_to(index),
            message_body=message_text(index),
            ts=created,
        )
        auth = {**spec.auth, "access_token": secrets.token_hex(35)}
        bodies.append(handler_body(message, auth).encode())

    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT}
    records: list[tuple[str, float, float, float]] = []
    failures: list[str] = []
    late: list[float] = []
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=60)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(number: int, sent: float) -> None:
            # As the dispatcher posts: no redirects, only the head of the answer read.
            try:
                async with session.post(spec.url, data=bodies[number], headers=headers, allow_redirects=False) as r:
                    await r.content.read(RESPONSE_HEAD_BYTES)
                    status = r.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"post {number}: {type(exc).__name__}: {exc}")
                return
            if status != 200:
                failures.append(f"post {number}: HTTP {status}")
                return
            done = time.time()
            records.append((ids[number], sent, done, sent))

        wait_for_go()
        cpu_0 = time.process_time()
        first = time.time()
        if spec.rate is None:
            queue = iter(range(spec.count))

            async def worker() -> None:
                for number in queue:
                    await post(number, time.time())

            await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        else:
            interval = 1 / spec.rate
            tasks = []
            start = time.time() + 0.05
            first = start
            for number in range(spec.count):
                due = start + number * interval
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                late.append(max(0.0, time.time() - due))
                tasks.append(asyncio.create_task(post(number, due)))
            await asyncio.gather(*tasks)
        last = time.time()
        cpu = time.process_time() - cpu_0

    Path(spec.out).write_text(json.dumps(records))
    late.sort()
    return LoadOutcome(
        requests=spec.count,
        acknowledged=len(records),
        failed=spec.count - len(records),
        failed_sample=failures[0] if failures else None,
        first_send=first,
        last_ack=last,
        client_cpu_s=cpu,
        late_ms_p99=percentile(late, 99) * 1000 if late else 0.0,
    )


# --------------------------------------------------------------------------------------------------
# The orchestrator.
# --------------------------------------------------------------------------------------------------


def http_json(url: str, method: str = "GET") -> dict[str, Any]:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")
        time.sleep(0.1)


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 15) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Handler:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.log_path = folder / "handler.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_handler", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(self.base + "/count", self.process, self.log_path)

    @property
    def url(self) -> str:
        return self.base + HANDLER_PATH

    def count(self) -> int:
        return int(http_json(self.base + "/count")["arrivals"])

    def reset(self) -> None:
        http_json(self.base + "/reset", "POST")

    def dump(self) -> dict[str, Any]:
        return http_json(self.base + "/dump")

    def wait_for(self, expected: int, stall_seconds: float = 30.0) -> int:
        """Poll until `expected` arrivals or no progress for `stall_seconds`; the count reached."""
        seen, last_change = -1, time.monotonic()
        while True:
            current = self.count()
            if current >= expected:
                return current
            if current != seen:
                seen, last_change = current, time.monotonic()
            elif time.monotonic() - last_change > stall_seconds:
                return current
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


@dataclass
class Servers:
    urls: list[str]
    processes: list[subprocess.Popen[bytes]]
    token: str
    message_from: str
    auth_sample: dict[str, Any]  # the non-secret auth fields of a handler body (for the baseline's bodies)
    pg_data: Path | None = None


def postgres_pids(data: Path | None) -> list[int]:
    """The postmaster and its children (the backends serving our servers)."""
    if data is None:
        return []
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: Sequence[int]) -> float:
    return sum(process_cpu_seconds(pid) or 0.0 for pid in pids)


@contextlib.contextmanager
def running_servers(database_url: str, folder: Path, workers: int, handler: Handler) -> Iterator[Servers]:
    """A fresh portal in `database_url`, one sender pointing at `handler`, `workers` serve processes."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MESSAGESERVICE_DATABASE_URL": database_url,
        "MESSAGESERVICE_DATA_DIR": str(folder / "data"),
        # The app URL is unreachable on purpose; no retries, so its ONAPPINSTALL fails once at install.
        "MESSAGESERVICE_EVENT_RETRY_SCHEDULE": "",
        # The limiter still runs on every call; its bucket is only made deep enough not to refuse.
        "MESSAGESERVICE_RATE_LIMIT_BURST": "100000000",
        "MESSAGESERVICE_RATE_LIMIT_PER_SECOND": "100000000",
    }
    for name in ("MESSAGESERVICE_PUBLIC_URL", "MESSAGESERVICE_DISPATCH_CONCURRENCY"):
        env.pop(name, None)
    cli_json(env, folder, "init", "--domain", "bench.local")
    app = cli_json(
        env, folder, "app", "add", "--name", "B", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )
    client_id = str(app["client_id"])
    cli_json(env, folder, "app", "install", client_id)
    token = str(cli_json(env, folder, "token", client_id, "--user", "1")["access_token"])

    exe = Path(sys.executable).with_name("messageservice")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "messageservice.cli"]
    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    urls = []
    try:
        # One after another: each `serve` runs the migrations before it listens.
        for number in range(workers):
            port = free_port()
            log_path = folder / f"server-{number + 1}.log"
            log = log_path.open("wb")
            logs.append(log)
            process = subprocess.Popen(
                [*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                env=env,
                cwd=folder,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            processes.append(process)
            urls.append(f"http://127.0.0.1:{port}")
            wait_http(urls[-1] + "/health", process, log_path)
        status, body = http_post(
            urls[0] + "/rest/messageservice.sender.add",
            {"auth": token, "CODE": SENDER_CODE, "TYPE": "SMS", "HANDLER": handler.url, "NAME": "Bench SMS"},
        )
        if status != 200 or json.loads(body).get("result") is not True:
            raise RuntimeError(f"sender.add: HTTP {status} {body[:300]!r}")
        servers = Servers(urls, processes, token, f"{client_id}|{SENDER_CODE}", {})
        yield servers
    finally:
        for process in processes:  # uvicorn's graceful stop, so the lifespan closes the engine
            process.send_signal(signal.SIGINT)
        for process in processes:
            stop_process(process)
        for log in logs:
            log.close()


@dataclass
class Run:
    kind: str  # "server" or "baseline"
    mode: str  # "burst" or "paced"
    size: int
    round: int
    messages_per_s: float
    delivered: int
    acknowledged: int
    failed: int
    missing: int
    duplicates: int
    unexpected: int
    elapsed_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    commit_p50_ms: float | None  # arrival - the server's finish time of the send (server runs)
    commit_p99_ms: float | None
    server_us_per_msg: float | None
    handler_us_per_msg: float
    client_us_per_msg: float
    postgres_us_per_msg: float | None
    body_bytes: int | None
    client_late_p99_ms: float
    failed_sample: str | None = None


def start_load(kind: str, spec: Any) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), kind, json.dumps(asdict(spec))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise RuntimeError(f"{kind} did not start: {line!r}")
    return process


def measure(
    kind: str,
    mode: str,
    size: int,
    round_no: int,
    specs: list[Any],
    handler: Handler,
    server_pids: list[int],
    pg_data: Path | None,
) -> Run:
    """Start the load processes, let them go together, wait for every arrival, and score the run."""
    handler.reset()
    loads = [start_load("_send" if kind == "server" else "_baseline", spec) for spec in specs]
    pg_pids = postgres_pids(pg_data)
    cpu_before = (cpu_of(server_pids), cpu_of([handler.process.pid]), cpu_of(pg_pids))
    for load in loads:
        assert load.stdin is not None
        load.stdin.write("go\n")
        load.stdin.flush()
    outcomes = []
    for load in loads:
        stdout, _ = load.communicate(timeout=3600)
        if load.returncode != 0:
            raise RuntimeError(f"{kind} load process failed with {load.returncode}")
        outcomes.append(LoadOutcome(**json.loads(stdout.strip().splitlines()[-1])))
    records: list[list[Any]] = []
    for spec in specs:
        records += json.loads(Path(spec.out).read_text())
        Path(spec.out).unlink()
    handler.wait_for(len(records))
    cpu_after = (cpu_of(server_pids), cpu_of([handler.process.pid]), cpu_of(pg_pids))
    dump = handler.dump()

    arrivals: dict[str, list[float]] = {}
    for message_id, arrived in zip(dump["ids"], dump["times"], strict=True):
        arrivals.setdefault(message_id, []).append(arrived)
    sent = {r[0]: r for r in records}
    delivered = [(sent[m], min(times)) for m, times in arrivals.items() if m in sent]
    missing = len(sent) - len(delivered)
    duplicates = sum(len(times) - 1 for m, times in arrivals.items() if m in sent)
    unexpected = sum(len(times) for m, times in arrivals.items() if m not in sent)
    first_send = min(o.first_send for o in outcomes)
    last_arrival = max((t for _, t in delivered), default=first_send)
    elapsed = max(last_arrival - first_send, 1e-9)
    latencies = sorted(arrived - record[1] for record, arrived in delivered)
    commits = sorted(arrived - record[3] for record, arrived in delivered) if kind == "server" else []
    count = max(len(delivered), 1)
    server_cpu = cpu_after[0] - cpu_before[0]
    failed = sum(o.failed for o in outcomes)
    return Run(
        kind=kind,
        mode=mode,
        size=size,
        round=round_no,
        messages_per_s=len(delivered) / elapsed,
        delivered=len(delivered),
        acknowledged=len(sent),
        failed=failed,
        missing=missing,
        duplicates=duplicates,
        unexpected=unexpected,
        elapsed_s=elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else math.nan) * 1000,
        commit_p50_ms=percentile(commits, 50) * 1000 if commits else None,
        commit_p99_ms=percentile(commits, 99) * 1000 if commits else None,
        server_us_per_msg=server_cpu / count * 1e6 if kind == "server" else None,
        handler_us_per_msg=(cpu_after[1] - cpu_before[1]) / count * 1e6,
        client_us_per_msg=sum(o.client_cpu_s for o in outcomes) / count * 1e6,
        postgres_us_per_msg=(cpu_after[2] - cpu_before[2]) / count * 1e6 if pg_pids else None,
        body_bytes=len(dump["sample"].encode()) if dump.get("sample") else None,
        client_late_p99_ms=max(o.late_ms_p99 for o in outcomes),
        failed_sample=next((o.failed_sample for o in outcomes if o.failed_sample), None),
    )


