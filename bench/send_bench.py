"""Sending messages end to end (REST `batch` -> queue -> dispatcher -> HANDLER) against a bare aiohttp
client posting the same bodies to the same handler, measured in the same run.

    .venv/bin/python bench/send_bench.py [--sizes 10000,100000] [--postgres] [--workers N] [--rounds 3]
                                         [--send-concurrency 4] [--paced-rate 1000] [--paced-seconds 5]
                                         [--no-paced] [--py-spy /tmp/pyspy/bin/py-spy] [--keep]

What runs where (all started by this one file, all on 127.0.0.1):

* the orchestrator (this process): a fresh portal per size built with the real `messageservice` CLI
  (`init`, `app add`, `app install`, `token`, all `--json`), one sender whose HANDLER is the handler
  below, the server(s), the measurements, the report, JSON in bench/results/;
* the server: the real `messageservice serve` command, unpatched, with its settings at their defaults
  except the rate limiter's bucket (made deep) and app-event retries (off). `--workers N` runs N
  dispatcher processes on one database: one `serve` and N-1 `messageservice worker` (where the
  checkout has that command; else, or with --all-serve, N `serve`s on N ports, sends alternating);
  on PostgreSQL their claims share the queue with FOR UPDATE SKIP LOCKED;
* the handler: `send_bench.py _handler PORT`, an aiohttp server in its own process that answers 200
  and records, per `message_id` form field, the wall-clock time each POST arrived;
* the load processes, fresh for every measurement: `_send` (the REST client: `batch` requests of 50
  `messageservice.message.send` commands, or single sends at a fixed rate) and `_baseline` (a bare
  aiohttp client posting prebuilt bodies, built with the server's own `handler_body`, to the handler:
  the ceiling). The bare clients post as many at once in all as the server may send to one handler
  (the smaller of the server's `dispatch_concurrency` and `handler_concurrency` settings; the handler
  limit holds for the whole installation), split over one client process per server process, with
  their connections opened before the clock starts.

Each measurement, server or baseline:

* burst: N messages as fast as they go. msg/s = messages acknowledged and delivered / (last handler
  arrival - first send). Latency = handler arrival - the time the client sent the request that carried
  the message (for a burst this is mostly time spent waiting in the queue behind the others);
  `done->handler` = arrival - the `finish` time the server returned for that send (`result_time` in a
  batch, the envelope's `time` for a single call; it is stamped after the commit, so a negative value
  means the dispatcher had posted before the server finished answering the send);
* paced: a fixed offered rate (default 1,000 messages/s as single message.send calls, 3 rounds of 5 s),
  open loop: latency is measured from the time each request was due, so a client or a server that
  falls behind is not hidden.

Every acknowledged MESSAGE_ID must reach the handler: failed sends, missing and unexpected ids make
the run exit 1; duplicates are counted and printed (delivery is at least once). Each size runs on a
fresh database, after an unmeasured warm-up of 500 messages. Clocks: the client, the server and the
handler all use time.time() on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rest_bench import cli_json, free_port, git_revision, http_post, percentile, process_cpu_seconds, tree_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
HANDLER_PATH = "/h"
SENDER_CODE = "bench.sms"
TARGETS = {"sqlite": 1_000.0, "postgres": 2_000.0}  # messages/s, from the issue
TARGET_PACED_P99_MS = 50.0
# The dispatcher's lease is handler_timeout_seconds * 2 + 30 = 50 s at the defaults.
STALL_SECONDS = 90.0
MESSAGE_TEXT = "Your confirmation code is {code}. It expires in 10 minutes. Message {index}."


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
    distinct: set[bytes] = set()
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
        distinct.add(message_id)
        if not sample:
            sample.append(body)
        return web.Response(body=b"OK")

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": len(ids), "distinct": len(distinct)})

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
        distinct.clear()
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


async def open_loop(
    count: int, interval: float, post: Callable[[int, float], Awaitable[None]], late: list[float]
) -> float:
    """Start `post(number, due)` every `interval` seconds, open loop (never waiting for answers); returns
    the first due time. How late each start was goes to `late`: the load generator's own lag."""
    tasks = []
    start = time.time() + 0.05
    for number in range(count):
        due = start + number * interval
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(0.0, time.time() - due))
        tasks.append(asyncio.create_task(post(number, due)))
    await asyncio.gather(*tasks)
    return start


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

    records: list[tuple[str, float, float, float]] = []  # message_id, sent (or due), acknowledged, server's finish
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

        wait_for_go()
        cpu_0 = time.process_time()
        first = time.time()
        if spec.rate is None:
            queue = iter(range(len(requests)))

            async def worker() -> None:
                for number in queue:
                    await post(number, time.time())

            await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
        else:
            interval = size / spec.rate
            first = await open_loop(len(requests), interval, post, late)
        last = time.time()
        cpu = time.process_time() - cpu_0

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
    concurrency: int = 64
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

    from messageservice.core.payload import HandlerMessage, handler_body
    from messageservice.delivery.dispatcher import RESPONSE_HEAD_BYTES, USER_AGENT

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
        # The dispatchers' connections are open when they are measured (the warm-up); open these too.
        count_url = spec.url.rsplit("/", 1)[0] + "/count"

        async def touch() -> None:
            async with session.get(count_url) as response:
                await response.read()

        await asyncio.gather(*(touch() for _ in range(spec.concurrency)))

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
            first = await open_loop(spec.count, interval, post, late)
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


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 15, signalled: bool = False
) -> None:
    """Stop gracefully, or kill after `timeout`; `signalled`: the signal went out already (a second SIGINT
    would make uvicorn skip its shutdown and log a traceback)."""
    if process.poll() is not None:
        return
    if not signalled:
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
        """Distinct message ids received (a duplicate must not stand in for a message still missing)."""
        return int(http_json(self.base + "/count")["distinct"])

    def reset(self) -> None:
        http_json(self.base + "/reset", "POST")

    def dump(self) -> dict[str, Any]:
        return http_json(self.base + "/dump")

    def wait_for(self, expected: int, stall_seconds: float) -> int:
        """Poll until `expected` distinct ids or no progress for `stall_seconds`; the count reached."""
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
    urls: list[str]  # the `serve` processes, which take the sends
    processes: list[subprocess.Popen[bytes]]  # every process that runs a dispatcher (serve and worker)
    token: str
    message_from: str
    auth_sample: dict[str, Any]  # the auth fields of a real handler body (for the baseline's bodies)
    pg_data: Path | None = None
    database_url: str = ""  # for --pg-statements


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


def rss_mb(pid: int) -> float | None:
    """A process's resident memory now, in MB (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@contextlib.contextmanager
def sampling_rss(pids: Sequence[int], every: float = 1.0) -> Iterator[list[list[float]]]:
    """Each process's RSS (MB) at the start, every `every` seconds, and at the end: one list per process."""
    samples: list[list[float]] = [[] for _ in pids]
    stop = threading.Event()

    def sample() -> None:
        for taken, pid in zip(samples, pids, strict=True):
            value = rss_mb(pid)
            if value is not None:
                taken.append(value)

    def loop() -> None:
        while not stop.wait(every):
            sample()

    sample()
    thread = threading.Thread(target=loop, name="rss", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join(timeout=10)
        sample()


def rss_points(samples: list[float]) -> list[float]:
    """[start, middle, end, max] of one process's RSS samples."""
    if not samples:
        return []
    return [samples[0], samples[len(samples) // 2], samples[-1], max(samples)]


def ms_command() -> list[str]:
    exe = Path(sys.executable).with_name("messageservice")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "messageservice.cli"]


def has_worker_command() -> bool:
    """Whether this checkout has `messageservice worker` (dispatchers without HTTP)."""
    done = subprocess.run([*ms_command(), "worker", "--help"], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


def per_handler_concurrency() -> tuple[int, str]:
    """Calls one dispatcher process keeps in flight to one HANDLER, from the server's own settings.

    `dispatch_concurrency` bounds a process; a `handler_concurrency` setting, where the checkout has
    one, bounds each handler origin. The baseline posts at the smaller of the two, per process."""
    from messageservice.config import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    dispatch = int(settings.dispatch_concurrency)
    per_handler = getattr(settings, "handler_concurrency", None)
    if per_handler is not None and int(per_handler) < dispatch:
        return int(per_handler), f"handler_concurrency {per_handler} (dispatch_concurrency {dispatch})"
    return dispatch, f"dispatch_concurrency {dispatch}"


def portal_env(database_url: str, folder: Path) -> dict[str, str]:
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
    # Everything else at the server's defaults, whatever the calling shell has set.
    for name in list(env):
        if name.startswith("MESSAGESERVICE_") and name not in (
            "MESSAGESERVICE_DATABASE_URL",
            "MESSAGESERVICE_DATA_DIR",
            "MESSAGESERVICE_EVENT_RETRY_SCHEDULE",
            "MESSAGESERVICE_RATE_LIMIT_BURST",
            "MESSAGESERVICE_RATE_LIMIT_PER_SECOND",
        ):
            del env[name]
    return env | SERVER_ENV


# What --metrics-off adds to the servers' settings (the cost of observing: run with and without).
SERVER_ENV: dict[str, str] = {}
# With metrics on, every process's /metrics is read this often, as a Prometheus would (--scrape-seconds).
SCRAPE: dict[str, float] = {"seconds": 15.0}


def metrics_on() -> bool:
    return SERVER_ENV.get("MESSAGESERVICE_METRICS") != "off"


@contextlib.contextmanager
def scraping(urls: list[str]) -> Iterator[list[float]]:
    """Read every URL's /metrics each SCRAPE seconds in a thread; yields the scrapes' durations."""
    took: list[float] = []
    stop = threading.Event()

    def scrape() -> None:
        while not stop.wait(SCRAPE["seconds"]):
            for url in urls:
                began = time.monotonic()
                with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=30) as answer:
                    answer.read()
                    took.append(time.monotonic() - began)

    thread = threading.Thread(target=scrape, name="scraper", daemon=True)
    if urls and SCRAPE["seconds"] > 0:
        thread.start()
    try:
        yield took
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=60)


def wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while text not in path.read_text(errors="replace"):
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{path.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args!r} did not print {text!r} within {seconds:.0f} s")
        time.sleep(0.1)


PREFILL_AGE_DAYS = 2.0  # older than the 1-day retention --purge gives the servers


def prefill_database(database_url: str, folder: Path, client_id: str, count: int) -> None:
    """--prefill: `count` finished messages PREFILL_AGE_DAYS old in the portal's database (bench/prefill.py)."""
    from prefill import prefill
    from sqlalchemy import select

    from messageservice.config import Settings
    from messageservice.core.context import Core
    from messageservice.store.tables import apps

    async def fill() -> None:
        core = Core.open(Settings(database_url=database_url, data_dir=str(folder / "data")))
        try:
            async with core.store.connection() as conn:
                app_id = (await conn.execute(select(apps.c.id).where(apps.c.client_id == client_id))).scalar_one()
            created_at = time.time() - PREFILL_AGE_DAYS * 86400
            message_from = f"{client_id}|{SENDER_CODE}"
            await prefill(core, count, app_id=app_id, message_from=message_from, created_at=created_at)
        finally:
            await core.close()

    began = time.monotonic()
    asyncio.run(fill())
    print(f"  prefilled {count:,} finished messages in {time.monotonic() - began:.1f} s", flush=True)


class PurgeWatch:
    """With --prefill: how many prefilled messages are left, and when the servers' retention purge (at their
    start, with --purge) removed the last of them. Polls a cheap EXISTS on the created_at index."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.database_url, self.folder = database_url, folder
        self.began = time.monotonic()
        self.done_after: float | None = None
        self.left: list[int] = []  # at the start, and at the end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), name="purge-watch", daemon=True)
        self._thread.start()

    async def _watch(self) -> None:
        from sqlalchemy import exists, func, select

        from messageservice.config import Settings
        from messageservice.core.context import Core
        from messageservice.store.tables import messages

        old = messages.c.created_at < time.time() - (PREFILL_AGE_DAYS - 0.5) * 86400
        core = Core.open(Settings(database_url=self.database_url, data_dir=str(self.folder / "data")))
        try:
            async with core.store.connection() as conn:
                self.left.append(int((await conn.execute(select(func.count()).where(old))).scalar_one()))
            while not self._stop.is_set():
                async with core.store.connection() as conn:
                    any_left = (await conn.execute(select(exists().where(old)))).scalar_one()
                if not any_left:
                    self.done_after = time.monotonic() - self.began
                    break
                await asyncio.sleep(0.5)
            async with core.store.connection() as conn:
                self.left.append(int((await conn.execute(select(func.count()).where(old))).scalar_one()))
        finally:
            await core.close()

    def report(self) -> str:
        self._stop.set()
        self._thread.join(timeout=120)
        first = self.left[0] if self.left else 0
        if self.done_after is not None:
            rate = first / self.done_after if self.done_after else 0.0
            return (
                f"  purge: {first:,} prefilled messages gone {self.done_after:.1f} s after the servers were up "
                f"({rate:,.0f} messages/s)"
            )
        last = self.left[-1] if len(self.left) > 1 else first
        return f"  purge: {last:,} of {first:,} prefilled messages left at the end"


@contextlib.contextmanager
def running_servers(
    database_url: str,
    folder: Path,
    serves: int,
    workers: int,
    handler: Handler,
    api_only: bool = False,
    prefill: int = 0,
    api_processes: int = 1,
) -> Iterator[Servers]:
    """A fresh portal, one sender whose HANDLER is `handler`, `serves` x `serve` and `workers` x `worker`.

    `api_only`: the `serve`s do not deliver (`serve --no-dispatch`); the workers do. `prefill`: that many
    finished messages in the database before the servers start. `api_processes`: `serve --workers N`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    env = portal_env(database_url, folder)
    cli_json(env, folder, "init", "--domain", "bench.local")
    app = cli_json(
        env, folder, "app", "add", "--name", "B", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )
    client_id = str(app["client_id"])
    cli_json(env, folder, "app", "install", client_id)
    token = str(cli_json(env, folder, "token", client_id, "--user", "1")["access_token"])
    if prefill:
        prefill_database(database_url, folder, client_id, prefill)

    processes: list[subprocess.Popen[bytes]] = []
    logs = []
    urls = []
    metrics_urls = []
    try:
        # One after another: each process runs the migrations before it starts.
        for number in range(serves + workers):
            log_path = folder / f"process-{number + 1}.log"
            log = log_path.open("wb")
            logs.append(log)
            if number < serves:
                port = free_port()
                args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
                if api_only:
                    args.append("--no-dispatch")
                if api_processes > 1:
                    args += ["--workers", str(api_processes)]
            else:
                args = ["worker", "--log-level", "warning"]
                if metrics_on():
                    metrics_port = free_port()
                    args += ["--metrics-port", str(metrics_port)]
                    metrics_urls.append(f"http://127.0.0.1:{metrics_port}/metrics")
            process = subprocess.Popen(
                [*ms_command(), *args], env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT
            )
            processes.append(process)
            if number < serves:
                urls.append(f"http://127.0.0.1:{port}")
                wait_http(urls[-1] + "/health", process, log_path)
                if metrics_on():
                    metrics_urls.append(urls[-1] + "/metrics")
            else:
                wait_for_text(log_path, "worker running", process)
        status, body = http_post(
            urls[0] + "/rest/messageservice.sender.add",
            {"auth": token, "CODE": SENDER_CODE, "TYPE": "SMS", "HANDLER": handler.url, "NAME": "Bench SMS"},
        )
        if status != 200 or json.loads(body).get("result") is not True:
            raise RuntimeError(f"sender.add: HTTP {status} {body[:300]!r}")
        with scraping(metrics_urls) as scrapes:
            yield Servers(urls, processes, token, f"{client_id}|{SENDER_CODE}", {})
        if scrapes:
            print(f"  /metrics read {len(scrapes)} times, median {statistics.median(scrapes) * 1000:.1f} ms")
    finally:
        for process in processes:  # SIGINT: a graceful stop, so the lifespan closes the engine
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in processes:
            stop_process(process, signalled=True)
        for log in logs:
            log.close()


@dataclass
class Run:
    kind: str  # "server" or "baseline"
    mode: str  # "burst" or "paced"
    size: int
    round: int
    messages_per_s: float
    acknowledged_per_s: float  # intake: acknowledged / (last acknowledgement - first send)
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
    done_p50_ms: float | None  # arrival - the server's finish time of the send (server runs)
    done_p99_ms: float | None
    server_us_per_msg: float | None
    process_us_per_msg: list[float]  # each dispatcher process (serve first, then workers)
    handler_us_per_msg: float
    client_us_per_msg: float
    postgres_us_per_msg: float | None
    body_bytes: int | None
    client_late_p99_ms: float
    failed_sample: str | None = None
    profiles: list[str] = field(default_factory=list)
    rss_mb: list[list[float]] = field(default_factory=list)  # per server process: start, middle, end, max


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


def start_profilers(py_spy: str | None, pids: list[int], stem: Path) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """py-spy on every dispatcher process, GIL holder only (idle driver threads would look busy)."""
    if not py_spy:
        return []
    profilers = []
    for number, pid in enumerate(pids, 1):
        out = stem.with_name(f"{stem.name}-p{number}.raw")
        command = [py_spy, "record", "-p", str(pid), "-r", "100", "--gil", "--nonblocking", "-f", "raw", "-o", str(out)]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        profilers.append((process, out))
    time.sleep(0.5)  # attached before the load starts
    return profilers


def stop_profilers(profilers: list[tuple[subprocess.Popen[bytes], Path]]) -> list[str]:
    for process, _ in profilers:
        stop_process(process, timeout=60)
    return [str(out) for _, out in profilers if out.exists()]


def profile_summary(path: str, top: int = 12) -> str:
    """Self and inclusive shares of the hottest functions in a py-spy raw (collapsed) profile."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + samples
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + samples
    if not total:
        return f"{path}: no samples"
    lines = [f"{path}: {total} samples with the GIL held"]
    lines += ["  self:"] + [
        f"    {n * 100 / total:5.1f}%  {frame}" for frame, n in sorted(own.items(), key=lambda i: -i[1])[:top]
    ]
    interesting = [(f, n) for f, n in inclusive.items() if "messageservice/" in f or "sqlalchemy/" in f]
    lines += ["  inclusive (messageservice, sqlalchemy):"] + [
        f"    {n * 100 / total:5.1f}%  {frame}" for frame, n in sorted(interesting, key=lambda i: -i[1])[:top]
    ]
    return "\n".join(lines)


def measure(
    kind: str,
    mode: str,
    size: int,
    round_no: int,
    specs: list[Any],
    handler: Handler,
    server_pids: list[int],
    pg_data: Path | None,
    py_spy: str | None = None,
    profile_stem: Path | None = None,
) -> Run:
    """Start the load processes, let them go together, wait for every arrival, and score the run."""
    handler.reset()
    loads = [start_load("_send" if kind == "server" else "_baseline", spec) for spec in specs]
    profilers = start_profilers(py_spy, server_pids, profile_stem) if profile_stem is not None else []
    pg_pids = postgres_pids(pg_data)
    each_before = [tree_cpu_seconds(pid) or 0.0 for pid in server_pids]
    cpu_before = (sum(each_before), cpu_of([handler.process.pid]), cpu_of(pg_pids))
    with sampling_rss(server_pids if kind == "server" else []) as rss:
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
        # Longer than a claim's lease: a message claimed by a dispatcher that never posted it is claimed and
        # sent again when the lease runs out; it is late then, not lost.
        handler.wait_for(len({r[0] for r in records}), stall_seconds=STALL_SECONDS)
    each_after = [tree_cpu_seconds(pid) or 0.0 for pid in server_pids]
    cpu_after = (sum(each_after), cpu_of([handler.process.pid]), cpu_of(pg_pids))
    profiles = stop_profilers(profilers)
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
    dones = sorted(arrived - record[3] for record, arrived in delivered) if kind == "server" else []
    count = max(len(delivered), 1)
    server_cpu = cpu_after[0] - cpu_before[0]
    failed = sum(o.failed for o in outcomes)
    return Run(
        kind=kind,
        mode=mode,
        size=size,
        round=round_no,
        messages_per_s=len(delivered) / elapsed,
        acknowledged_per_s=len(sent) / max(max(o.last_ack for o in outcomes) - first_send, 1e-9),
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
        done_p50_ms=percentile(dones, 50) * 1000 if dones else None,
        done_p99_ms=percentile(dones, 99) * 1000 if dones else None,
        server_us_per_msg=server_cpu / count * 1e6 if kind == "server" else None,
        process_us_per_msg=[(b - a) / count * 1e6 for a, b in zip(each_before, each_after, strict=True)],
        handler_us_per_msg=(cpu_after[1] - cpu_before[1]) / count * 1e6,
        client_us_per_msg=sum(o.client_cpu_s for o in outcomes) / count * 1e6,
        postgres_us_per_msg=(cpu_after[2] - cpu_before[2]) / count * 1e6 if pg_pids else None,
        body_bytes=len(dump["sample"].encode()) if dump.get("sample") else None,
        client_late_p99_ms=max(o.late_ms_p99 for o in outcomes),
        failed_sample=next((o.failed_sample for o in outcomes if o.failed_sample), None),
        profiles=profiles,
        rss_mb=[rss_points(taken) for taken in rss],
    )


def auth_sample(handler: Handler) -> dict[str, Any]:
    """The auth[...] fields of a real handler body (from the warm-up), for the baseline's bodies.

    The baseline replaces access_token with a fresh one per body, as the server does."""
    sample = handler.dump().get("sample") or ""
    fields = dict(urllib.parse.parse_qsl(sample, keep_blank_values=True))
    return {key[5:-1]: value for key, value in fields.items() if key.startswith("auth[") and key.endswith("]")}


def split(count: int, parts: int) -> list[int]:
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


class Bench:
    """Builds the load specs for one run and keeps the message indices distinct across the whole run."""

    def __init__(self, args: argparse.Namespace, folder: Path, handler: Handler, pg: Any) -> None:
        self.args = args
        self.folder = folder
        self.handler = handler
        self.pg = pg
        self.portals = 0
        self.index = 0

    def new_portal(self) -> tuple[str, Path]:
        self.portals += 1
        place = self.folder / f"portal-{self.portals}"
        if self.pg is None:
            return f"sqlite:///{place}/messageservice.db", place
        return str(self.pg.create_database(f"bench{self.portals}")), place

    def take(self, count: int) -> int:
        first, self.index = self.index, self.index + count
        return first

    def run(
        self, kind: str, mode: str, size: int, round_no: int, servers: Servers, rate: float | None, batch: int
    ) -> Run:
        specs: list[Any]
        if kind == "server":
            specs = [
                SendSpec(
                    urls=servers.urls,
                    token=servers.token,
                    message_from=servers.message_from,
                    count=size,
                    out=str(self.folder / f"send-{self.index}.json"),
                    batch_size=batch,
                    concurrency=self.args.send_concurrency,
                    rate=rate,
                    first_index=self.take(size),
                )
            ]
        else:
            # One client process per dispatcher process, each posting as many at once as a dispatcher does.
            workers = len(servers.processes)
            specs = [
                BaselineSpec(
                    url=self.handler.url,
                    count=part,
                    out=str(self.folder / f"baseline-{self.index}-{number}.json"),
                    # The handler limit holds for the whole installation: the clients share it.
                    concurrency=max(1, self.args.post_concurrency // workers),
                    rate=rate / workers if rate is not None else None,
                    first_index=self.take(part),
                    auth=servers.auth_sample,
                )
                for number, part in enumerate(split(size, workers))
            ]
        pids = [p.pid for p in servers.processes]
        stem = self.folder / f"profile-{mode}-{size}-r{round_no}" if kind == "server" and mode != "warm-up" else None
        statements = self.args.pg_statements and kind == "server" and mode != "warm-up" and servers.database_url
        before = statement_times(servers.database_url) if statements else {}
        result = measure(kind, mode, size, round_no, specs, self.handler, pids, servers.pg_data, self.args.py_spy, stem)
        if statements:
            print_statements(before, statement_times(servers.database_url), result.delivered)
        for process in servers.processes:
            if process.poll() is not None:
                raise RuntimeError(f"a server died during the run (exit {process.returncode})")
        return result

    def warm_up(self, servers: Servers) -> None:
        """Unmeasured: opens the pools and the dispatchers' connections, and gives a real body to copy."""
        run = self.run("server", "warm-up", self.args.warmup, 0, servers, None, self.args.batch_size)
        if failed(run):
            raise RuntimeError(f"warm-up: {', '.join(problems(run))}; {run.failed_sample}")
        servers.auth_sample = auth_sample(self.handler)


def problems(run: Run) -> list[str]:
    """What went wrong in a run: sends not acknowledged, acknowledged messages that never arrived,
    arrivals nobody sent. Duplicates are listed too, but delivery is at least once: they fail nothing."""
    return [
        f"{value} {name}"
        for name, value in (
            ("failed sends", run.failed),
            ("missing", run.missing),
            ("unexpected", run.unexpected),
            ("duplicates (not an error)", run.duplicates),
        )
        if value
    ]


def failed(run: Run) -> bool:
    return bool(run.failed or run.missing or run.unexpected)


def check(run: Run) -> None:
    found = problems(run)
    if found:
        detail = f"; first failure: {run.failed_sample}" if run.failed_sample else ""
        print(f"    !! {run.kind} {run.mode} {run.size:,}: {', '.join(found)}{detail}", flush=True)


def progress(run: Run) -> None:
    done = f"  done->handler p99 {run.done_p99_ms:8.1f} ms" if run.done_p99_ms is not None else ""
    each = "+".join(f"{v:.0f}" for v in run.process_us_per_msg) if len(run.process_us_per_msg) > 1 else ""
    cpu = f"  srv {run.server_us_per_msg:5.0f}{f' ({each})' if each else ''} us/msg" if run.kind == "server" else ""
    pg = f"  pg {run.postgres_us_per_msg:4.0f} us/msg" if run.postgres_us_per_msg and run.kind == "server" else ""
    print(
        f"  {run.mode:<5} {run.size:>7,} round {run.round} {run.kind:<8} {run.messages_per_s:7.0f} msg/s"
        f"  ({run.elapsed_s:6.1f} s, acked {run.acknowledged_per_s:6.0f}/s)"
        f"  p50 {run.p50_ms:8.1f} ms  p99 {run.p99_ms:8.1f} ms{done}{cpu}{pg}",
        flush=True,
    )
    if run.rss_mb:
        each = "; ".join("/".join(f"{v:.0f}" for v in points) for points in run.rss_mb if points)
        print(f"    RSS MB per server process (start/middle/end/max): {each}", flush=True)


@dataclass
class Summary:
    mode: str
    size: int
    rounds: int
    server_mps: float
    server_acked_per_s: float  # intake: how fast the sends were acknowledged
    baseline_mps: float
    ratio: float  # median of per-round ratios (server msg/s / baseline msg/s of the same round)
    ratio_min: float
    ratio_max: float
    server_p50_ms: float
    server_p99_ms: float
    done_p50_ms: float | None
    done_p99_ms: float | None
    baseline_p50_ms: float
    baseline_p99_ms: float
    server_us_per_msg: float | None
    process_us_per_msg: list[float]  # median per dispatcher process (serve first)
    postgres_us_per_msg: float | None
    handler_us_per_msg: float
    failed_sends: int  # totals over the server and baseline runs of this row
    missing: int
    unexpected: int
    duplicates: int
    server_body_bytes: int | None
    baseline_body_bytes: int | None
    runs: list[dict[str, Any]] = field(default_factory=list)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: list[Run]) -> list[Summary]:
    summaries = []
    for mode, size in dict.fromkeys((r.mode, r.size) for r in runs):
        group = [r for r in runs if r.mode == mode and r.size == size]
        server = [r for r in group if r.kind == "server"]
        baseline = [r for r in group if r.kind == "baseline"]
        base_by_round = {r.round: r.messages_per_s for r in baseline}
        ratios = [r.messages_per_s / base_by_round[r.round] for r in server if base_by_round.get(r.round)]
        summaries.append(
            Summary(
                mode=mode,
                size=size,
                rounds=len(server),
                server_mps=statistics.median(r.messages_per_s for r in server),
                server_acked_per_s=statistics.median(r.acknowledged_per_s for r in server),
                baseline_mps=statistics.median(r.messages_per_s for r in baseline),
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
                server_p50_ms=statistics.median(r.p50_ms for r in server),
                server_p99_ms=statistics.median(r.p99_ms for r in server),
                done_p50_ms=median([r.done_p50_ms for r in server]),
                done_p99_ms=median([r.done_p99_ms for r in server]),
                baseline_p50_ms=statistics.median(r.p50_ms for r in baseline),
                baseline_p99_ms=statistics.median(r.p99_ms for r in baseline),
                server_us_per_msg=median([r.server_us_per_msg for r in server]),
                process_us_per_msg=[
                    statistics.median(each) for each in zip(*(r.process_us_per_msg for r in server), strict=True)
                ],
                postgres_us_per_msg=median([r.postgres_us_per_msg for r in server]),
                handler_us_per_msg=statistics.median(r.handler_us_per_msg for r in server),
                failed_sends=sum(r.failed for r in group),
                missing=sum(r.missing for r in group),
                unexpected=sum(r.unexpected for r in group),
                duplicates=sum(r.duplicates for r in group),
                server_body_bytes=server[0].body_bytes,
                baseline_body_bytes=baseline[0].body_bytes,
                runs=[asdict(r) for r in group],
            )
        )
    return summaries


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, pattern)


def report(summaries: list[Summary], args: argparse.Namespace, backend: str) -> str:
    processes = f"{args.serves} serve" + (" (API only)" if args.api_serve else "")
    processes += f" in {args.api_processes} processes (serve --workers)" if args.api_processes > 1 else ""
    processes += f" + {args.worker_processes} worker" if args.worker_processes else ""
    paced = "single message.send calls" if args.paced_batch == 1 else f"batches of {args.paced_batch}"
    lines = [
        f"messageservice send benchmark: {backend}{DURABILITY[args.unsafe_postgres and args.postgres]}, {processes} "
        "process(es); medians over rounds",
        f"server: batches of {args.batch_size}, {args.send_concurrency} in flight (burst); {args.paced_rate:g} msg/s "
        f"offered as {paced} (paced). bare: {args.post_concurrency} posts in flight in all "
        f"({args.concurrency_source})",
        "",
        f"{'run':<16}{'rounds':>7}{'server msg/s':>14}{'acked/s':>9}{'bare msg/s':>12}{'ratio':>7}  {'range':<12}"
        f"{'srv us/msg':>11}  {'per process':<14}{'pg us/msg':>10}{'hdl us/msg':>11}",
    ]
    for s in summaries:
        each = "+".join(f"{v:.0f}" for v in s.process_us_per_msg) if len(s.process_us_per_msg) > 1 else ""
        lines.append(
            f"{s.mode + ' ' + format(s.size, ','):<16}{s.rounds:>7}{s.server_mps:>14,.0f}{s.server_acked_per_s:>9,.0f}"
            f"{s.baseline_mps:>12,.0f}{s.ratio:>7.2f}  {f'{s.ratio_min:.2f}..{s.ratio_max:.2f}':<12}"
            f"{fmt(s.server_us_per_msg, ',.0f'):>11}  {each:<14}{fmt(s.postgres_us_per_msg, ',.0f'):>10}"
            f"{s.handler_us_per_msg:>11,.0f}"
        )
    lines += [
        "",
        f"{'run':<16}{'send->handler p50 / p99 ms':>30}{'done->handler p50 / p99':>26}{'bare p50 / p99 ms':>22}"
        f"   failed/missing/unexpected/duplicate",
    ]
    for s in summaries:
        lines.append(
            f"{s.mode + ' ' + format(s.size, ','):<16}{s.server_p50_ms:>19,.1f} / {s.server_p99_ms:<8,.1f}"
            f"{fmt(s.done_p50_ms, ',.1f'):>15} / {fmt(s.done_p99_ms, '<8,.1f')}"
            f"{s.baseline_p50_ms:>12,.1f} / {s.baseline_p99_ms:<8,.1f}"
            f"   {s.failed_sends}/{s.missing}/{s.unexpected}/{s.duplicates}"
        )
    target = TARGETS[backend]
    lines.append("")
    for s in summaries:
        if s.mode == "burst":
            verdict = "meets" if s.server_mps >= target else "MISSES"
            lines.append(f"burst {s.size:,}: {s.server_mps:,.0f} msg/s {verdict} the target of {target:,.0f} msg/s.")
        else:
            verdict = "meets" if s.server_p99_ms < TARGET_PACED_P99_MS else "MISSES"
            lines.append(
                f"paced at {args.paced_rate:g} msg/s offered: send->first attempt p99 {s.server_p99_ms:,.1f} ms "
                f"{verdict} the target of < {TARGET_PACED_P99_MS:g} ms (delivered {s.server_mps:,.0f} msg/s)."
            )
    if any(s.failed_sends or s.missing or s.unexpected for s in summaries):
        lines.append("CORRECTNESS: some acknowledged messages did not arrive, or sends failed (see the counts above).")
    else:
        lines.append("Every acknowledged message reached the handler.")
    bodies = sorted({f"{s.server_body_bytes}/{s.baseline_body_bytes}" for s in summaries})
    lines += [
        "",
        "msg/s: messages acknowledged and delivered / (last handler arrival - first send); acked/s: the same for",
        "the acknowledgements of the sends; ratio: server / bare of the same round (median, and range over rounds).",
        "send->handler: handler arrival - when the client sent (burst) or was due to send (paced) the request that",
        "carried the message; done->handler: arrival - the finish time the server returned for that send.",
        "us/msg: CPU per delivered message of the server processes (and each of them), of PostgreSQL's processes",
        f"and of the handler; all share the machine's {os.cpu_count()} cores. Handler body bytes, server/bare: "
        f"{', '.join(bodies)}.",
    ]
    return "\n".join(lines)


DURABILITY = {False: "", True: " (fsync, synchronous_commit and full_page_writes off: not durable)"}


STATEMENTS_OPTIONS = "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"


@contextlib.contextmanager
def postgres(enabled: bool, unsafe: bool = False, statements: bool = False) -> Iterator[Any]:
    """A throwaway PostgreSQL: with its stock fsync, synchronous_commit and full_page_writes (what
    production runs), or with all three off (`unsafe`: faster, loses commits on a crash).
    `statements`: with pg_stat_statements, to see which statements PostgreSQL's time goes to."""
    if not enabled:
        yield None
        return
    sys.path.insert(0, str(REPO_ROOT))
    from tests.postgres import TempPostgres

    server = TempPostgres(durable=not unsafe, extra_options=STATEMENTS_OPTIONS if statements else "").start()
    try:
        yield server
    finally:
        server.stop()


def statement_times(database_url: str) -> dict[str, tuple[int, float]]:
    """pg_stat_statements for the bench's database: statement -> (calls, total execution ms)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)

    async def read() -> dict[str, tuple[int, float]]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            rows = await conn.fetch(
                "SELECT query, calls, total_exec_time FROM pg_stat_statements"
                " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        finally:
            await conn.close()
        times: dict[str, tuple[int, float]] = {}
        for row in rows:  # one statement may be listed once per role: add them up
            calls, total = times.get(row["query"], (0, 0.0))
            times[row["query"]] = (calls + row["calls"], total + row["total_exec_time"])
        return times

    return asyncio.run(read())


def print_statements(before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], messages: int) -> None:
    """The statements PostgreSQL spent the most time executing during one run, per delivered message."""
    spent = []
    for query, (calls, total) in after.items():
        calls_before, total_before = before.get(query, (0, 0.0))
        if total - total_before > 0:
            spent.append((total - total_before, calls - calls_before, query))
    spent.sort(reverse=True)
    all_ms = sum(ms for ms, _, _ in spent)
    print(f"    PostgreSQL statements: {all_ms * 1000 / max(1, messages):.0f} us/msg executing, the top ones:")
    for ms, calls, query in spent[:8]:
        text = " ".join(query.split())[:110]
        print(f"    {ms * 1000 / max(1, messages):7.1f} us/msg {calls:8,} calls  {text}")


SETUP_SECONDS = 20.0  # a fresh portal, the processes and the warm-up


def over_budget(
    args: argparse.Namespace, runs: list[Run], mode: str, size: int, rounds: int, elapsed: float
) -> str | None:
    """Why a burst would not fit in --budget (from the server's rate so far), or None to run it."""
    done = [r for r in runs if r.kind == "server" and r.mode == "burst"]
    if args.budget <= 0 or mode != "burst" or not done:
        return None
    rate = statistics.median(r.messages_per_s for r in done)
    bare = statistics.median(r.messages_per_s for r in runs if r.kind == "baseline" and r.mode == "burst")
    need = SETUP_SECONDS + rounds * (size / rate + size / bare)
    reserve = 0.0
    if not args.no_paced:
        paced = args.paced_rate * args.paced_seconds
        reserve = SETUP_SECONDS + args.paced_rounds * (paced / min(args.paced_rate, rate) + args.paced_seconds)
    if elapsed + need + reserve <= args.budget:
        return None
    return (
        f"at {rate:,.0f} msg/s a burst of {size:,} would take about {need:,.0f} s; with {elapsed:,.0f} s spent and "
        f"{reserve:,.0f} s kept for the paced rounds that overruns --budget {args.budget:g} s "
        f"(run it with --sizes {size} or --budget 0)"
    )


def log_errors(folder: Path) -> list[str]:
    """ERROR lines the server and worker processes logged (timestamps cut, repeats counted); for a
    traceback, the exceptions it ends in."""
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("process-*.log")):
        lines = path.read_text(errors="replace").splitlines()
        for number, line in enumerate(lines):
            if " ERROR " not in line and not line.startswith("ERROR:"):
                continue
            text = line.split(" ERROR ", 1)[-1].strip()
            exceptions = []
            for following in lines[number + 1 : number + 200]:
                if re.match(r"^\d{4}-\d\d-\d\d ", following) or following.startswith(("ERROR:", "INFO:", "WARNING:")):
                    break  # the next log record
                if not following or following[:1].isspace():
                    continue
                if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit|Cancelled)\b", following):
                    exceptions.append(following.strip()[:160])
            if exceptions:
                text += " -> " + " / ".join(exceptions)
            key = f"{path.name}: {text[:400]}"
            counts[key] = counts.get(key, 0) + 1
    return [f"{n} x {text}" for text, n in sorted(counts.items(), key=lambda item: -item[1])]


def git_dirty() -> list[str]:
    """Files that differ from the commit: the numbers are for the working tree as it was."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain"], capture_output=True, text=True, timeout=10
        )
        if done.returncode == 0:
            return [line.strip() for line in done.stdout.splitlines()]
    return []


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--sizes", default="10000,100000", help="messages per burst, comma-separated ('none': paced rounds only)"
    )
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    parser.add_argument(
        "--unsafe-postgres",
        action="store_true",
        help="PostgreSQL with fsync, synchronous_commit and full_page_writes off (older runs' setting; not durable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="dispatcher processes on one database (default: 1 SQLite, 2 PostgreSQL). With --api-serve (the "
        "PostgreSQL default) all are `messageservice worker`s beside one API-only `serve`; else one `serve` and the "
        "rest workers where the checkout has that command, else more `serve`s (sends alternate)",
    )
    parser.add_argument("--all-serve", action="store_true", help="run --workers `serve` processes, no `worker`")
    parser.add_argument(
        "--api-serve",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one `serve --no-dispatch` for the API and --workers `worker`s deliver (default on PostgreSQL: the "
        "scale-out topology); --no-api-serve: the serve delivers too and counts as one of --workers",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds for bursts up to --big (each a fresh process)")
    parser.add_argument("--big", type=int, default=20_000, help="bursts larger than this run --big-rounds times")
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=50, help="commands per batch request (Bitrix's max: 50)")
    parser.add_argument("--send-concurrency", type=int, default=4, help="batch requests in flight (burst)")
    parser.add_argument("--warmup", type=int, default=500, help="unmeasured messages after each server start")
    parser.add_argument("--paced-rate", type=float, default=1000.0, help="messages/s offered in the paced run")
    parser.add_argument("--paced-seconds", type=float, default=5.0, help="length of each paced round")
    parser.add_argument("--paced-batch", type=int, default=1, help="1: single message.send calls; more: batch")
    parser.add_argument("--paced-rounds", type=int, default=3)
    parser.add_argument("--no-paced", action="store_true", help="skip the paced run")
    parser.add_argument(
        "--budget",
        type=float,
        default=360.0,
        help="seconds for the whole run: a burst that the rates measured so far say would overrun it (keeping "
        "time for the paced rounds) is skipped and reported; 0: no limit",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (server and handler logs)")
    parser.add_argument(
        "--metrics-off", action="store_true", help="MESSAGESERVICE_METRICS=off: nothing counted (default: on)"
    )
    parser.add_argument(
        "--pg-statements",
        action="store_true",
        help="with --postgres: load pg_stat_statements and print where PostgreSQL's time went in each server run",
    )
    parser.add_argument(
        "--scrape-seconds",
        type=float,
        default=15.0,
        help="with metrics on, read every process's /metrics this often, as Prometheus would (0: never)",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        metavar="N",
        help="with --postgres: the API `serve` runs N processes on its port (`serve --workers N`)",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        metavar="N",
        help="N finished messages, two days old, in each database before its servers start (a big table)",
    )
    parser.add_argument(
        "--purge",
        action="store_true",
        help="with --prefill: the servers keep messages 1 day (MESSAGESERVICE_RETENTION_DAYS=1), so their "
        "retention purge deletes the prefilled ones beside the measured sends; prints when it finished",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        help="profile every dispatcher process during server runs with this py-spy (implies --keep); "
        "prints the hottest functions",
    )
    args = parser.parse_args(argv)
    try:
        parts = [] if args.sizes.strip().lower() == "none" else args.sizes.split(",")
        args.size_list = [int(part.replace("_", "")) for part in parts if part.strip()]
    except ValueError:
        parser.error("--sizes: comma-separated integers, or none")
    if args.workers is None:
        args.workers = 2 if args.postgres else 1
    if args.api_serve is None:
        args.api_serve = args.postgres and not args.all_serve
    if (
        (not args.size_list and args.no_paced)
        or min(args.size_list, default=1) < 1
        or args.workers < 1
        or args.rounds < 1
        or args.big_rounds < 1
        or not 1 <= args.batch_size <= 50
        or args.send_concurrency < 1
        or args.paced_rate <= 0
        or args.paced_rounds < 1
        or not 1 <= args.paced_batch <= 50
        or args.prefill < 0
        or args.api_processes < 1
        or (args.api_processes > 1 and not (args.postgres and args.api_serve))
        or (args.purge and not args.prefill)
    ):
        parser.error(
            "sizes, workers, rounds and rates must be positive; batch sizes 1..50; --purge needs --prefill; "
            "--api-processes needs --postgres"
        )
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.metrics_off:
        SERVER_ENV["MESSAGESERVICE_METRICS"] = "off"
    if args.purge:
        SERVER_ENV["MESSAGESERVICE_RETENTION_DAYS"] = "1"
    SCRAPE["seconds"] = args.scrape_seconds
    backend = "postgres" if args.postgres else "sqlite"
    folder = Path(tempfile.mkdtemp(prefix="messageservice-send-bench-"))
    started = time.time()
    load_before = os.getloadavg()
    # The processes import the code at their start: the tree as it is now is what gets measured.
    git_before = (git_revision(), git_dirty())
    runs: list[Run] = []
    errors: dict[str, list[str]] = {}
    skipped: list[str] = []
    plan: list[tuple[str, int, int, float | None, int]] = [
        ("burst", size, args.rounds if size <= args.big else args.big_rounds, None, args.batch_size)
        for size in args.size_list
    ]
    if not args.no_paced:
        paced_size = max(1, round(args.paced_rate * args.paced_seconds))
        plan.append(("paced", paced_size, args.paced_rounds, args.paced_rate, args.paced_batch))
    if args.api_serve:
        args.serves, args.worker_processes = 1, args.workers
    elif args.workers > 1 and not args.all_serve and has_worker_command():
        args.serves, args.worker_processes = 1, args.workers - 1
    else:
        args.serves, args.worker_processes = args.workers, 0
    args.post_concurrency, args.concurrency_source = per_handler_concurrency()
    if args.py_spy:
        args.keep = True
    handler: Handler | None = None
    try:
        with postgres(args.postgres, args.unsafe_postgres, args.pg_statements) as pg:
            handler = Handler(folder)
            bench = Bench(args, folder, handler, pg)
            print(
                f"{backend}: {args.serves} serve{' (API only)' if args.api_serve else ''}"
                f"{f' in {args.api_processes} processes' if args.api_processes > 1 else ''} + "
                f"{args.worker_processes} worker process(es); handler at "
                f"{handler.url}; bare client(s): {args.post_concurrency} in flight ({args.concurrency_source})",
                flush=True,
            )
            for mode, size, rounds, rate, batch in plan:
                reason = over_budget(args, runs, mode, size, rounds, time.time() - started)
                if reason:
                    skipped.append(reason)
                    print(f"{mode} {size:,}: skipped, {reason}", flush=True)
                    continue
                # A fresh database for every size, so each size starts from an empty queue and empty tables.
                url, place = bench.new_portal()
                watch: PurgeWatch | None = None
                with running_servers(
                    url,
                    place,
                    args.serves,
                    args.worker_processes,
                    handler,
                    args.api_serve,
                    args.prefill,
                    args.api_processes,
                ) as servers:
                    if args.prefill:
                        watch = PurgeWatch(url, place)
                    servers.pg_data = pg.data if pg is not None else None
                    servers.database_url = url if pg is not None else ""
                    bench.warm_up(servers)
                    pids = ", ".join(str(p.pid) for p in servers.processes)
                    print(f"{mode} {size:,}: server pid(s) {pids} at {', '.join(servers.urls)}", flush=True)
                    for round_no in range(1, rounds + 1):
                        order = ("baseline", "server") if round_no % 2 else ("server", "baseline")
                        for kind in order:
                            run = bench.run(kind, mode, size, round_no, servers, rate, batch)
                            progress(run)
                            check(run)
                            runs.append(run)
                    if watch is not None:
                        print(watch.report(), flush=True)
                found = log_errors(place)
                if found:
                    errors[f"{mode} {size}"] = found
                    print(f"    server logs: {len(found)} kinds of ERROR line, e.g. {found[0]}", flush=True)
    finally:
        if handler is not None:
            handler.stop()
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    summaries = summarize(runs)
    print()
    print(report(summaries, args, backend))
    for reason in skipped:
        print(f"SKIPPED: {reason}")
    correct = not any(failed(run) for run in runs)
    for run in runs:
        for path in run.profiles:
            print()
            print(profile_summary(path))

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out = RESULTS_DIR / f"send_bench-{backend}-{stamp}.json"
    document = {
        "benchmark": "send_bench",
        "backend": backend,
        "durable": not (args.postgres and args.unsafe_postgres),
        "workers": args.workers,
        "started": stamp,
        "duration_s": round(time.time() - started, 1),
        "git": git_before[0],
        "git_dirty": git_before[1],
        "git_changed_during_run": (git_revision(), git_dirty()) != git_before,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("keep", "size_list")},
        "targets": {"messages_per_s": TARGETS[backend], "paced_p99_ms": TARGET_PACED_P99_MS},
        "summary": [asdict(s) for s in summaries],
        "server_log_errors": errors,
        "skipped": skipped,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    dirty = f", {len(git_before[1])} file(s) changed from it" if git_before[1] else ""
    print(f"\nresults: {out.relative_to(REPO_ROOT)}  ({document['duration_s']} s; commit {git_before[0]}{dirty})")
    if document["git_changed_during_run"]:
        print("note: the working tree changed during the run (processes started later may have run newer code)")
    return 0 if correct else 1


if __name__ == "__main__":
    commands = {"_handler": handler_main, "_send": send_main, "_baseline": baseline_main}
    if len(sys.argv) > 1 and sys.argv[1] in commands:
        commands[sys.argv[1]](sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
