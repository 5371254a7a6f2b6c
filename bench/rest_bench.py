"""REST throughput and latency against a bare endpoint on the same server, measured in the same run.

    .venv/bin/python bench/rest_bench.py [--seconds 4] [--concurrency 32] [--rounds 5] [--postgres]
                                         [--client raw|aiohttp] [--warmup 1] [--keep]

What runs where (three kinds of process, all started by this one file):

* the orchestrator (this process): builds a throwaway portal with the real `messageservice` CLI,
  starts the server, runs the rounds, prints the table and writes JSON to bench/results/;
* the server: `rest_bench.py _serve ...`, which runs the real `messageservice serve` command (one
  uvicorn worker, uvloop + httptools as the CLI picks them) with one extra route, `/bench/bare`,
  added to the app that `messageservice.app.create_app` builds. The baseline thus shares the process,
  the event loop, the HTTP parser, Starlette's router and the Response class with the REST endpoint,
  and differs only in the work the REST endpoint does (params, auth, database, envelope, encoding);
* the load generator: `rest_bench.py _load ...`, a client in its own process, closed loop at a fixed
  concurrency (one keep-alive connection per request in flight), started anew for each measurement so
  no state leaks between scenarios. By default it is a lean socket client rather than aiohttp: see
  RawConnection for why; `--client aiohttp` is kept to cross-check it.

Scenarios, interleaved round by round (the order rotates so no scenario always runs first):

* bare:    POST /bench/bare, the same JSON body as sender.list, answered with a constant body
           of the size and shape of a sender.list answer;
* list:    POST /rest/messageservice.sender.list with {"auth": token} in a JSON body, as SDKs send it;
* invalid: POST /rest/messageservice.sender.add with CODE="bad code!" -> 400 ERROR_SENDER_VALIDATION_FAILURE.

Every response is checked (status and body) by the load generator; one wrong answer fails the run,
so a fast error can never pass for a fast success. The machine is shared and noisy: each number
reported is the median over rounds, and the ratio is the median of per-round ratios (each scenario
against the bare run of its own round, measured seconds apart).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from messageservice.config import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
BARE_PATH = "/bench/bare"
BARE_TIME_VARIABLE = "REST_BENCH_BARE_TIME"
TARGET_RATIO = 0.60  # the issue's aim: sender.list at 60% of the bare endpoint or better

# Registered before the run so sender.list returns a realistic, non-empty list.
SENDER_CODES = ("bench.sms.1", "bench.sms.2", "bench.sms.3")
BAD_CODE = "bad code!"
INVALID_BODY = b'{"error":"ERROR_SENDER_VALIDATION_FAILURE","error_description":"Wrong sender code!"}'

SCENARIOS = ("bare", "list", "invalid")
LABELS = {
    "bare": f"bare {BARE_PATH}",
    "list": "messageservice.sender.list",
    "invalid": "sender.add, invalid CODE (400)",
}


# --------------------------------------------------------------------------------------------------
# The server: `messageservice serve` itself, plus one bare route in the same app and process.
# --------------------------------------------------------------------------------------------------


def with_bare_route(app: Starlette) -> Starlette:
    """`app` with `/bench/bare` first in its routes: an answer like a real sender.list one (same codes, full
    time block), encoded once, so that the baseline pays for the HTTP stack and the Response only."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from messageservice.rest.endpoint import COMMON_HEADERS, JSON_TYPE
    from messageservice.rest.envelope import Timing, php_json, success_body

    # One time for every API process (the orchestrator sets it), so that each answers the same bytes.
    now = float(os.environ.get(BARE_TIME_VARIABLE) or time.time())
    body = php_json(success_body(list(SENDER_CODES), Timing(now, now + 0.0004, 0.0003).block(0.0003, int(now) + 600)))

    async def bare(request: Request) -> Response:
        await request.body()  # the REST endpoint reads its body too; parsing it is the endpoint's work
        return Response(body, 200, headers=COMMON_HEADERS, media_type=JSON_TYPE)

    # First in the table: the REST route is first too, so neither pays for matching the others.
    app.router.routes.insert(0, Route(BARE_PATH, bare, methods=["GET", "POST"]))
    return app


def child_app_with_bare(settings: Settings, host: str, own_level: str) -> Starlette:
    """One `serve --workers N` child's app, with the bare route (a module-level function: the children are
    spawned interpreters, which find it here by name)."""
    from messageservice.cli.serve_processes import child_app

    return with_bare_route(child_app(settings, host, own_level))


def serve_main(argv: Sequence[str]) -> None:
    """Run the real `messageservice serve ARGV` with `/bench/bare` added to the app(s) it builds.

    `serve` imports `create_app` from `messageservice.app` when it runs (and `serve --workers N` builds
    each child's app with `serve_processes.child_app`), so replacing those module attributes first is
    enough: no file in src/ changes, and uvicorn gets exactly the options the CLI gives it.
    """
    import messageservice.app as app_module
    import messageservice.cli.serve_processes as processes_module
    from messageservice.cli import cli

    original = app_module.create_app
    patched: list[Starlette] = []

    def create_app_with_bare(settings: Settings | None = None, **options: Any) -> Starlette:
        app = with_bare_route(original(settings, **options))
        patched.append(app)
        return app

    app_module.create_app = create_app_with_bare
    processes_module.child_app = child_app_with_bare  # type: ignore[assignment]
    try:
        cli(["serve", *argv], prog_name="messageservice")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    if not patched and "--workers" not in argv:
        # `serve` no longer builds its app through messageservice.app.create_app: fix this wrapper.
        sys.exit("rest_bench: `messageservice serve` did not call messageservice.app.create_app")


# --------------------------------------------------------------------------------------------------
# The load generator: one process, fixed concurrency, every response checked.
# --------------------------------------------------------------------------------------------------


@dataclass
class LoadSpec:
    url: str
    body: str
    status: int
    exact: str | None = None  # the whole body must equal this
    prefix: str | None = None  # or start with this and end with `suffix` (sender.list's time block varies)
    suffix: str | None = None
    concurrency: int = 32
    warmup: float = 1.0
    seconds: float = 4.0
    max_requests: int = 2_000_000
    server_pid: int | None = None
    client: str = "raw"  # or "aiohttp"


@dataclass
class LoadResult:
    requests: int
    elapsed: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    client_cpu: float  # share of one core the load generator used during the window
    server_cpu: float | None  # share of one core the server process used during the window
    server_cpu_us_per_req: float | None
    bad: int
    bad_sample: str | None = None


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a whole process (all threads) from /proc; None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces; it ends at the last ')'
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """The process's children, their children, ... (from /proc: `serve --workers N` runs N children)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of a process and every descendant still running."""
    own = process_cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(process_cpu_seconds(child) or 0.0 for child in descendants(pid))


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class RawConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request in flight, responses framed by Content-Length.

    Why not aiohttp here: on 2 cores the load generator and the server share the machine, and aiohttp's
    client spends more CPU per request than the bare endpoint does, so a bare run measured with it is
    partly client-bound and every ratio looks better than it is. This client only writes prepared bytes
    and frames the answer. uvicorn sends Content-Length and keeps the connection open for these
    responses; anything else (chunked, a closed connection) raises and fails the run, never hangs it.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, so no isinstance check here.
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None or self.waiter.done():
            return
        head = bytes(self.buffer[:end]).lower()
        marker = head.find(b"\r\ncontent-length:")
        if marker < 0:
            self.waiter.set_exception(ConnectionError(f"no Content-Length in {head[:200]!r}"))
            return
        line_end = head.find(b"\r\n", marker + 2)
        length = int(head[marker + 17 : line_end if line_end > 0 else len(head)])
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        self.waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("server closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        if self.lost is not None or self.transport is None:
            raise self.lost or ConnectionError("not connected")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self.waiter


Caller = Callable[[], Awaitable[tuple[int, bytes]]]


@contextlib.asynccontextmanager
async def raw_callers(spec: LoadSpec) -> AsyncIterator[list[Caller]]:
    url = urllib.parse.urlsplit(spec.url)
    body = spec.body.encode()
    payload = (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nUser-Agent: rest_bench\r\nAccept: */*\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    host, port = url.hostname or "127.0.0.1", url.port or 80
    connections = [(await loop.create_connection(RawConnection, host, port))[1] for _ in range(spec.concurrency)]
    try:
        yield [functools.partial(c.request, payload) for c in connections]
    finally:
        for c in connections:
            if c.transport is not None:
                c.transport.close()


@contextlib.asynccontextmanager
async def aiohttp_callers(spec: LoadSpec) -> AsyncIterator[list[Caller]]:
    import aiohttp

    body = spec.body.encode()
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30), cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def call() -> tuple[int, bytes]:
            async with session.post(spec.url, data=body, headers=headers) as response:
                return response.status, await response.read()

        yield [call] * spec.concurrency


async def run_load(spec: LoadSpec) -> LoadResult:
    exact = spec.exact.encode() if spec.exact is not None else None
    prefix = (spec.prefix or "").encode()
    suffix = (spec.suffix or "").encode()
    latencies: list[float] = []
    state = {"count": 0, "bad": 0}
    bad_sample: list[str] = []
    callers = raw_callers if spec.client == "raw" else aiohttp_callers

    async with callers(spec) as calls:

        async def worker(call: Caller, stop_at: float, record: bool) -> None:
            perf = time.perf_counter
            while state["count"] < spec.max_requests:
                started = perf()
                if started >= stop_at:
                    return
                status, data = await call()
                finished = perf()
                ok = status == spec.status and (
                    data == exact if exact is not None else data.startswith(prefix) and data.endswith(suffix)
                )
                if not ok:
                    state["bad"] += 1
                    if not bad_sample:
                        bad_sample.append(f"HTTP {status}: {data[:300].decode('utf-8', 'replace')}")
                if record:
                    state["count"] += 1
                    latencies.append(finished - started)

        # Warm-up on the same connections (they stay open): fills the server's pools and caches;
        # nothing from it is recorded.
        if spec.warmup > 0:
            warm_until = time.perf_counter() + spec.warmup
            await asyncio.gather(*(worker(call, warm_until, False) for call in calls))

        server_cpu_0 = tree_cpu_seconds(spec.server_pid) if spec.server_pid else None
        client_cpu_0 = time.process_time()
        window_start = time.perf_counter()
        stop_at = window_start + spec.seconds
        await asyncio.gather(*(worker(call, stop_at, True) for call in calls))
        elapsed = time.perf_counter() - window_start
        client_cpu = (time.process_time() - client_cpu_0) / elapsed
        server_cpu_1 = tree_cpu_seconds(spec.server_pid) if spec.server_pid else None

    latencies.sort()
    count = len(latencies)
    server_seconds = server_cpu_1 - server_cpu_0 if server_cpu_0 is not None and server_cpu_1 is not None else None
    return LoadResult(
        requests=count,
        elapsed=elapsed,
        rps=count / elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else float("nan")) * 1000,
        client_cpu=client_cpu,
        server_cpu=server_seconds / elapsed if server_seconds is not None else None,
        server_cpu_us_per_req=server_seconds / count * 1e6 if server_seconds is not None and count else None,
        bad=state["bad"],
        bad_sample=bad_sample[0] if bad_sample else None,
    )


def load_main(argv: Sequence[str]) -> None:
    """`_load SPEC_JSON`: run one measurement and print its LoadResult as one JSON line."""
    spec = LoadSpec(**json.loads(argv[0]))
    try:
        import uvloop  # the server runs on uvloop; a cheaper client leaves more of the 2nd core free
    except ImportError:
        result = asyncio.run(run_load(spec))
    else:
        result = uvloop.run(run_load(spec))
    sys.stdout.write(json.dumps(asdict(result)) + "\n")


# --------------------------------------------------------------------------------------------------
# The orchestrator: a throwaway portal, the server, the rounds, the report.
# --------------------------------------------------------------------------------------------------


@dataclass
class Portal:
    base_url: str
    access_token: str
    client_id: str
    backend: str
    server: subprocess.Popen[bytes]
    folder: Path


@dataclass
class Measurement:
    scenario: str
    round: int
    result: LoadResult


@dataclass
class Summary:
    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    server_cpu_us_per_req: float | None
    server_cpu: float | None
    client_cpu: float
    ratio: float | None  # median over rounds of (scenario rps / bare rps of the same round)
    ratio_min: float | None
    ratio_max: float | None
    rounds: list[dict[str, Any]] = field(default_factory=list)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli_json(env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    """Run `messageservice ARGS --json` from the venv this script runs in; parse its output."""
    exe = Path(sys.executable).with_name("messageservice")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "messageservice.cli"]
    done = subprocess.run(
        [*command, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"messageservice {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def http_post(url: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextlib.contextmanager
def database(use_postgres: bool, folder: Path, unsafe: bool = False) -> Iterator[str]:
    """A database URL for a fresh portal: an SQLite file in `folder`, or a throwaway PostgreSQL with its
    stock durability settings (`unsafe`: fsync, synchronous_commit and full_page_writes off)."""
    if not use_postgres:
        yield f"sqlite:///{folder}/messageservice.db"
        return
    sys.path.insert(0, str(REPO_ROOT))
    from tests.postgres import TempPostgres

    server = TempPostgres(durable=not unsafe).start()
    try:
        yield server.create_database("bench")
    finally:
        server.stop()


@contextlib.contextmanager
def running_portal(database_url: str, backend: str, folder: Path, api_processes: int = 1) -> Iterator[Portal]:
    env = {
        **os.environ,
        "MESSAGESERVICE_DATABASE_URL": database_url,
        "MESSAGESERVICE_DATA_DIR": str(folder / "data"),
        # The app URL below is unreachable on purpose; with no retries its ONAPPINSTALL fails once at
        # install time instead of waking the server's event worker in the middle of a measurement.
        "MESSAGESERVICE_EVENT_RETRY_SCHEDULE": "",
        # The per-app leaky bucket still runs on every call (same code path); it is only made deep
        # enough that a fast machine is not refused with QUERY_LIMIT_EXCEEDED mid-run.
        "MESSAGESERVICE_RATE_LIMIT_BURST": "100000000",
        "MESSAGESERVICE_RATE_LIMIT_PER_SECOND": "100000000",
    }
    env.pop("MESSAGESERVICE_PUBLIC_URL", None)
    env[BARE_TIME_VARIABLE] = repr(time.time())
    # cwd is the temp folder so that no .env file of the work tree leaks into the settings.
    cli_json(env, folder, "init", "--domain", "bench.local")
    app = cli_json(
        env, folder, "app", "add", "--name", "B", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )
    client_id = str(app["client_id"])
    cli_json(env, folder, "app", "install", client_id)
    token = str(cli_json(env, folder, "token", client_id, "--user", "1")["access_token"])

    port = free_port()
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "_serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            *(["--workers", str(api_processes)] if api_processes > 1 else []),
        ],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"server exited with {server.returncode}:\n{(folder / 'server.log').read_text()}")
            with contextlib.suppress(OSError), urllib.request.urlopen(base_url + "/health", timeout=2) as response:
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /health within 60 s")
            time.sleep(0.1)
        for code in SENDER_CODES:
            status, body = http_post(
                base_url + "/rest/messageservice.sender.add",
                {
                    "auth": token,
                    "CODE": code,
                    "TYPE": "SMS",
                    "HANDLER": "http://127.0.0.1:9/handler",
                    "NAME": {"en": f"Bench SMS {code}"},
                },
            )
            if status != 200 or json.loads(body).get("result") is not True:
                raise RuntimeError(f"sender.add {code}: HTTP {status} {body[:300]!r}")
        yield Portal(base_url, token, client_id, backend, server, folder)
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn's graceful stop, so the lifespan closes the engine
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def scenario_specs(portal: Portal, args: argparse.Namespace) -> dict[str, LoadSpec]:
    """The three request shapes with the exact answers they must get; each is checked once by hand first."""
    auth_body = json.dumps({"auth": portal.access_token})
    invalid_body = json.dumps(
        {
            "auth": portal.access_token,
            "CODE": BAD_CODE,
            "TYPE": "SMS",
            "HANDLER": "http://127.0.0.1:9/handler",
            "NAME": "Bad",
        }
    )
    list_prefix = '{"result":' + json.dumps(list(SENDER_CODES), separators=(",", ":")) + ',"time":{"start":'

    status, bare = http_post(portal.base_url + BARE_PATH, {"auth": portal.access_token})
    if status != 200 or json.loads(bare).get("result") != list(SENDER_CODES):
        raise RuntimeError(f"{BARE_PATH}: HTTP {status} {bare[:300]!r}")
    status, listed = http_post(portal.base_url + "/rest/messageservice.sender.list", {"auth": portal.access_token})
    decoded = json.loads(listed)
    if status != 200 or decoded.get("result") != list(SENDER_CODES) or not listed.startswith(list_prefix.encode()):
        raise RuntimeError(f"sender.list: HTTP {status} {listed[:300]!r}")
    status, invalid = http_post(portal.base_url + "/rest/messageservice.sender.add", json.loads(invalid_body))
    if status != 400 or invalid != INVALID_BODY:
        raise RuntimeError(f"sender.add with a bad CODE: HTTP {status} {invalid[:300]!r}")

    common = {
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "seconds": args.seconds,
        "max_requests": args.max_requests,
        "server_pid": portal.server.pid,
        "client": args.client,
    }
    return {
        "bare": LoadSpec(url=portal.base_url + BARE_PATH, body=auth_body, status=200, exact=bare.decode(), **common),
        "list": LoadSpec(
            url=portal.base_url + "/rest/messageservice.sender.list",
            body=auth_body,
            status=200,
            prefix=list_prefix,
            suffix="}}",
            **common,
        ),
        "invalid": LoadSpec(
            url=portal.base_url + "/rest/messageservice.sender.add",
            body=invalid_body,
            status=400,
            exact=INVALID_BODY.decode(),
            **common,
        ),
    }


def measure(spec: LoadSpec) -> LoadResult:
    """One measurement in a fresh load-generator process (the orchestrator sleeps meanwhile)."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "_load", json.dumps(asdict(spec))],
        capture_output=True,
        text=True,
        timeout=spec.warmup + spec.seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed:\n{done.stderr}")
    return LoadResult(**json.loads(done.stdout.strip().splitlines()[-1]))


def median_of(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(measurements: list[Measurement], rounds: int) -> list[Summary]:
    bare_by_round = {m.round: m.result.rps for m in measurements if m.scenario == "bare"}
    summaries = []
    for scenario in SCENARIOS:
        runs = [m for m in measurements if m.scenario == scenario]
        ratios = [m.result.rps / bare_by_round[m.round] for m in runs if bare_by_round.get(m.round)]
        summaries.append(
            Summary(
                scenario=scenario,
                rps=statistics.median(m.result.rps for m in runs),
                p50_ms=statistics.median(m.result.p50_ms for m in runs),
                p99_ms=statistics.median(m.result.p99_ms for m in runs),
                server_cpu_us_per_req=median_of([m.result.server_cpu_us_per_req for m in runs]),
                server_cpu=median_of([m.result.server_cpu for m in runs]),
                client_cpu=statistics.median(m.result.client_cpu for m in runs),
                ratio=statistics.median(ratios) if ratios else None,
                ratio_min=min(ratios) if ratios else None,
                ratio_max=max(ratios) if ratios else None,
                rounds=[{"round": m.round, **asdict(m.result)} for m in runs],
            )
        )
    return summaries


def fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def report(summaries: list[Summary], args: argparse.Namespace, backend: str) -> str:
    lines = [
        f"messageservice REST benchmark: {backend}"
        f"{' (fsync, synchronous_commit and full_page_writes off: not durable)' if args.unsafe_postgres else ''}"
        f", {args.api_processes} API process{'es (serve --workers)' if args.api_processes > 1 else ''}, "
        f"{args.client} client, "
        f"concurrency {args.concurrency}, {args.rounds} rounds x {args.seconds:g} s (+{args.warmup:g} s warm-up), "
        "medians over rounds",
        "",
        f"{'scenario':<32}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'srv us/req':>12}{'srv CPU':>9}"
        f"{'cli CPU':>9}{'vs bare':>9}   per-round ratio range",
    ]
    for s in summaries:
        ratio_range = "" if s.scenario == "bare" else f"{fmt(s.ratio_min, '.2f')}..{fmt(s.ratio_max, '.2f')}"
        lines.append(
            f"{LABELS[s.scenario]:<32}{s.rps:>9.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}"
            f"{fmt(s.server_cpu_us_per_req, '.0f'):>12}{fmt(s.server_cpu and s.server_cpu * 100, '.0f') + '%':>9}"
            f"{s.client_cpu * 100:>8.0f}%{fmt(s.ratio, '.2f'):>9}   {ratio_range}"
        )
    listed = next(s for s in summaries if s.scenario == "list")
    verdict = "meets" if listed.ratio is not None and listed.ratio >= TARGET_RATIO else "is BELOW"
    lines += [
        "",
        f"sender.list {verdict} the target of {TARGET_RATIO:.0%} of bare "
        f"(median per-round ratio {fmt(listed.ratio, '.2f')}).",
        "srv/cli CPU: share of one core used by the server / the load generator while measuring; a load",
        "generator near 100% means the bare number is client-bound and the ratios are flattered.",
    ]
    if backend == "postgres":
        lines.append("PostgreSQL's own CPU is not in 'srv': its backends are separate processes on the same 2 cores.")
    return "\n".join(lines)


def git_revision() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per scenario per round")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds before each measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (one connection each)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of bare/list/invalid")
    parser.add_argument("--max-requests", type=int, default=2_000_000, help="cap per measurement")
    parser.add_argument(
        "--client",
        choices=("raw", "aiohttp"),
        default="raw",
        help="load generator: a lean keep-alive socket client (default) or aiohttp (costs more client CPU)",
    )
    parser.add_argument("--postgres", action="store_true", help="run on a throwaway PostgreSQL instead of SQLite")
    parser.add_argument(
        "--unsafe-postgres",
        action="store_true",
        help="PostgreSQL with fsync, synchronous_commit and full_page_writes off (older runs' setting; not durable)",
    )
    parser.add_argument(
        "--api-processes",
        type=int,
        default=1,
        metavar="N",
        help="with --postgres: `serve --workers N`, N API processes on one port (each with the bare route)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (server log, SQLite file)")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--seconds, --rounds and --concurrency must be positive, --warmup not negative")
    if args.api_processes < 1 or (args.api_processes > 1 and not args.postgres):
        parser.error("--api-processes: at least 1, and more than 1 only with --postgres (serve --workers)")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    backend = "postgres" if args.postgres else "sqlite"
    folder = Path(tempfile.mkdtemp(prefix="messageservice-bench-"))
    started = time.time()
    load_before = os.getloadavg()
    measurements: list[Measurement] = []
    try:
        with (
            database(args.postgres, folder, args.unsafe_postgres) as url,
            running_portal(url, backend, folder, args.api_processes) as portal,
        ):
            specs = scenario_specs(portal, args)
            processes = f", {args.api_processes} API processes (serve --workers)" if args.api_processes > 1 else ""
            print(
                f"server pid {portal.server.pid} at {portal.base_url} ({backend}{processes}); measuring...", flush=True
            )
            for round_no in range(args.rounds):
                shift = round_no % len(SCENARIOS)
                for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
                    result = measure(specs[scenario])
                    if result.bad:
                        print(f"{scenario}: {result.bad} wrong answers, e.g. {result.bad_sample}", file=sys.stderr)
                        return 1
                    if portal.server.poll() is not None:
                        print("the server died during the run", file=sys.stderr)
                        return 1
                    measurements.append(Measurement(scenario, round_no + 1, result))
                    print(
                        f"  round {round_no + 1} {scenario:<8} {result.rps:8.0f} req/s  p50 {result.p50_ms:6.2f} ms"
                        f"  p99 {result.p99_ms:6.2f} ms",
                        flush=True,
                    )
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    summaries = summarize(measurements, args.rounds)
    print()
    print(report(summaries, args, backend))

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out = RESULTS_DIR / f"rest_bench-{backend}-{stamp}.json"
    document = {
        "benchmark": "rest_bench",
        "backend": backend,
        "durable": not (args.postgres and args.unsafe_postgres),
        "started": stamp,
        "duration_s": round(time.time() - started, 1),
        "git": git_revision(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "settings": {k: v for k, v in vars(args).items() if k != "keep"},
        "target_ratio": TARGET_RATIO,
        "summary": [asdict(s) for s in summaries],
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nresults: {out.relative_to(REPO_ROOT)}  ({document['duration_s']} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        load_main(sys.argv[2:])
    else:
        sys.exit(main(sys.argv[1:]))
