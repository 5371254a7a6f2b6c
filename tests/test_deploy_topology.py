"""The documented deployment (docs/deploy.md), run for real: the systemd units' `ExecStart` commands, not
systemd itself, against PostgreSQL, with the settings of deploy/messageservice.env.example (the test's
database, ports and folders substituted through the EnvironmentFile the units name).

migrate (oneshot) -> the API (`serve --no-dispatch`) -> /ready -> two `worker@` instances -> a burst to a
slow HANDLER -> one worker restarted with SIGTERM mid-burst -> every message delivered exactly once."""

from __future__ import annotations

import configparser
import functools
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from messageservice.store.tables import attempts, deliveries, messages
from tests.conftest import BACKENDS, new_database_url
from tests.portal import LivePortal
from tests.postgres import free_port
from tests.test_lifecycle import SlowHandler
from tests.test_messages import wait_for
from tests.test_metrics import scrape
from tests.test_scale_out import Topology

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DOCS = DEPLOY.parent / "docs"
PREFIX = "/opt/messageservice/bin/"  # where the units expect the installation's scripts
BURST = 60


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser["Service"]


def env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def command(service: configparser.SectionProxy, env: dict[str, str], instance: str = "") -> list[str]:
    """`ExecStart` as systemd runs it: ${VAR} from the EnvironmentFile, %i the instance."""
    line = service["ExecStart"].replace("%i", instance)
    line = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], line)
    words = shlex.split(line)
    assert words[0].startswith(PREFIX), words[0]
    return [str(Path(sys.executable).parent / words[0][len(PREFIX) :]), *words[1:]]


class Deployment:
    def __init__(self, env: dict[str, str], folder: Path) -> None:
        self.env, self.folder = env, folder
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                args, env=self.env, cwd=self.env["MESSAGESERVICE_DATA_DIR"], stdout=log, stderr=subprocess.STDOUT
            )
        self.processes[name] = process
        return process

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    if "postgres" not in BACKENDS:
        pytest.skip("the deployment runs on PostgreSQL")
    services = [unit(name) for name in ("messageservice-migrate.service", "messageservice-api.service")]
    assert {s["EnvironmentFile"] for s in services} == {"/etc/messageservice/messageservice.env"}
    data = tmp_path / "data"
    data.mkdir()
    values = env_file(DEPLOY / "messageservice.env.example") | {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, "postgres", tmp_path),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_DATA_DIR": str(data),
        "MESSAGESERVICE_API_PORT": str(free_port()),
        # Lean: one API process (the units' default is 2); four calls at once to the handler, so that a
        # burst is still under way when a worker is restarted.
        "MESSAGESERVICE_API_PROCESSES": "1",
        "MESSAGESERVICE_HANDLER_CONCURRENCY": "4",
    }
    # The EnvironmentFile the units name, here in the test's folder.
    (tmp_path / "messageservice.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= env_file(tmp_path / "messageservice.env")
    setup = Deployment(env, tmp_path)
    try:
        yield setup
    finally:
        setup.stop()


@pytest.mark.e2e
def test_the_documented_topology_delivers_each_message_once_across_a_worker_restart(deployment: Deployment) -> None:
    env = deployment.env
    admin = Topology(env)
    admin.cli("init", "--domain", "sms.example.com")  # once, by hand (docs/deploy.md)

    migrate = command(unit("messageservice-migrate.service"), env)
    assert subprocess.run(migrate, env=env, cwd=env["MESSAGESERVICE_DATA_DIR"], timeout=180).returncode == 0

    api = start_api(deployment)
    admin.port = int(env["MESSAGESERVICE_API_PORT"])
    admin.client_id = admin.cli(
        "app", "add", "--name", "Provider", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
    )["client_id"]
    admin.cli("app", "install", admin.client_id)
    admin.token = admin.cli("token", admin.client_id, "--user", "1")["access_token"]

    worker = unit("messageservice-worker@.service")
    for instance in ("1", "2"):
        deployment.start(f"worker-{instance}", command(worker, env, instance))

    handler = SlowHandler(0.3).start()
    try:
        sender = {"CODE": "sms", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{handler.port}/h", "NAME": "SMS"}
        assert admin.call("messageservice.sender.add", **sender)["result"] is True
        message = {"MESSAGE_FROM": f"{admin.client_id}|sms", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        sent = {admin.call("messageservice.message.send", **message)["result"]["MESSAGE_ID"] for _ in range(BURST)}

        wait_for(lambda: handler.received() >= 10, timeout=180)
        first = deployment.processes["worker-1"]
        first.send_signal(signal.SIGTERM)  # systemctl restart messageservice-worker@1
        assert first.wait(timeout=60) == 0
        assert handler.received() < BURST, "the restart should land mid-burst"
        deployment.start("worker-1", command(worker, env, "1"))

        wait_for(lambda: handler.received() >= BURST, timeout=180)
        wait_for(lambda: all(r.state == "done" for r in admin.query(select(deliveries.c.state))), timeout=60)
        assert set(handler.seen) == sent
        assert [m for m, n in handler.seen.items() if n > 1] == [], "a message was delivered twice"
        assert len(admin.query(select(attempts.c.message_id))) == BURST
    finally:
        handler.stop()

    check_metrics(api, admin)


def start_api(deployment: Deployment) -> str:
    """The API unit's command, ready, and answering on its port itself.

    The port was free when the fixture picked it, but the API binds it seconds later: another test's server
    (another xdist worker binds port 0 all the time) may have taken it meanwhile. The API then exits
    ("address already in use") while /ready is answered by that other server, which knows none of this
    test's tokens (the REST calls fail with invalid_token). So the answer counts only while this process
    holds the listening socket; on a lost port, start it again on another one."""
    env = deployment.env
    for _ in range(5):
        port = int(env["MESSAGESERVICE_API_PORT"])
        api = deployment.start("api", command(unit("messageservice-api.service"), env))
        if wait_for(functools.partial(_ready_or_gone, api, port), timeout=180) == "ready":
            return f"http://127.0.0.1:{port}"
        log = (deployment.folder / "api.log").read_text(errors="replace")
        assert api.returncode == 3 and "address already in use" in log, log[-2000:]  # uvicorn's STARTUP_FAILURE
        env["MESSAGESERVICE_API_PORT"] = str(free_port())
    raise AssertionError("no free port for the API in five tries")


def _ready_or_gone(api: subprocess.Popen[bytes], port: int) -> str | None:
    if api.poll() is not None:
        return "gone"
    ready = listens_on(api.pid, port) and _get(f"http://127.0.0.1:{port}/ready")
    return "ready" if ready and ready.status_code == 200 else None


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` holds a socket listening on TCP `port` (Linux: /proc/net/tcp*, /proc/PID/fd)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in descriptors:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:  # closed meanwhile
            continue
    return False


def samples(url: str) -> dict[str, float]:
    """A /metrics page's samples summed by name (over every label set)."""
    reply = requests.get(url, timeout=30)
    assert reply.status_code == 200, reply.text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


def check_metrics(api: str, admin: Topology) -> None:
    """The API's accepted counter and every process's view of the store equal what the database holds."""
    (stored,) = admin.query(select(func.count()).select_from(messages))
    api_metrics = samples(f"{api}/metrics")
    assert api_metrics["messageservice_messages_accepted_total"] == stored[0] == BURST
    # The workers' metrics ports, as the unit gives them (910N for instance N): state read from the database,
    # so the restarted worker tells the same truth; its own counters restarted with it, so the two workers'
    # moves to "sent" add up to at most the burst (exact counting: tests/test_metrics.py).
    moved = 0.0
    for instance in ("1", "2"):
        url = f"http://127.0.0.1:910{instance}/metrics"
        wait_for(lambda url=url: _get(url), timeout=120)  # the restarted worker may still be starting (busy box)
        worker_metrics = samples(url)
        assert worker_metrics["messageservice_dead_letters"] == 0
        assert worker_metrics["messageservice_queue_depth"] == 0
        moved += worker_metrics.get("messageservice_message_status_changes_total", 0.0)
    assert 0 < moved <= BURST


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(url, timeout=30)
    except requests.ConnectionError:
        return None


def test_the_prometheus_files_use_only_metrics_a_live_page_has(any_portal: LivePortal) -> None:
    """The scrape config and the alert rules parse, they alert on what docs/deploy.md promises, and every metric
    an alert (or the rules docs/metrics.md shows) names is on a live /metrics page: a renamed metric would
    otherwise leave an alert that never fires."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert {job["job_name"] for job in config["scrape_configs"]} == {"messageservice-api", "messageservice-worker"}
    rules = yaml.safe_load((DEPLOY / "prometheus" / config["rule_files"][0]).read_text())
    exprs = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    stuck = exprs["MessageserviceMessagesStuck"]
    assert "messageservice_stuck_messages" in stuck and "by (sender)" in stuck
    documented = re.search(r"```yaml\n(groups:.*?)```", (DOCS / "metrics.md").read_text(), re.S)
    assert documented, "docs/metrics.md shows its alert rules"
    shown = [rule["expr"] for group in yaml.safe_load(documented.group(1))["groups"] for rule in group["rules"]]
    used = {name for expr in [*exprs.values(), *shown] for name in re.findall(r"messageservice_\w+", expr)}
    assert "messageservice_stuck_messages" in used
    missing = used - exposed_names(scrape(any_portal).text)
    assert not missing, f"alerts name metrics that /metrics does not have: {sorted(missing)}"


def exposed_names(page: str) -> set[str]:
    """Every series name a page can have, including a labelled family that has no rows yet (HELP and TYPE only)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names = set()
    for family in text_string_to_metric_families(page):
        names |= {family.name, *(family.name + end for end in suffixes.get(family.type, ()))}
        names |= {sample.name for sample in family.samples}
    return names
