"""`serve --workers N`: several API processes on one port (PostgreSQL), refused on SQLite."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography.fernet import Fernet

from tests.conftest import BACKENDS, new_database_url
from tests.postgres import free_port
from tests.test_cli import invoke
from tests.test_scale_out import Topology


def test_more_than_one_api_process_is_refused_on_sqlite(tmp_path: Path) -> None:
    env = {
        "MESSAGESERVICE_DATABASE_URL": f"sqlite:///{tmp_path / 'one.db'}",
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
    }
    ran = invoke(env, "serve", "--workers", "2", "--port", "9", cwd=tmp_path)
    assert ran.returncode == 2
    (line,) = ran.stderr.strip().splitlines()
    assert "--workers 2 needs PostgreSQL" in line and "SQLite has one writer" in line


def children(pid: int) -> list[int]:
    """The API processes a `serve --workers` parent runs (not multiprocessing's resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"multiprocessing.spawn" in command and b"resource_tracker" not in command:
            found.append(int(entry.name))
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def answers(port: int, count: int = 5) -> bool:
    """`count` requests, each on a new connection, all answered."""
    for _ in range(count):
        reply = requests.get(f"http://127.0.0.1:{port}/health", timeout=30, headers={"Connection": "close"})
        if reply.status_code != 200:
            return False
    return True


@pytest.fixture
def postgres_topology(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Topology]:
    if "postgres" not in BACKENDS:
        pytest.skip("PostgreSQL is not among MESSAGESERVICE_TEST_BACKENDS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, "postgres", tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_SHUTDOWN_GRACE_SECONDS": "5",
    }
    topology = Topology(env)
    topology.cli("init", "--domain", "workers.test")
    try:
        yield topology
    finally:
        for process in topology.processes:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.e2e
def test_two_api_processes_answer_on_one_port_and_stop_on_sigterm(postgres_topology: Topology) -> None:
    topology = postgres_topology
    topology.port = free_port()
    topology.start("serve", "--port", str(topology.port), "--workers", "2", "--no-dispatch", "--log-level", "warning")
    parent = topology.processes[-1]
    deadline = time.time() + 180  # a busy machine starts three interpreters
    while True:
        try:
            # Once the parent listens, a request waits in the backlog until a child answers it.
            requests.get(f"http://127.0.0.1:{topology.port}/health", timeout=(5, 120))
            break
        except requests.ConnectionError:
            assert time.time() < deadline and parent.poll() is None, "serve --workers 2 never answered"
            time.sleep(0.2)
    while len(pids := children(parent.pid)) < 2 or not answers(topology.port, 1):
        assert time.time() < deadline, f"two API processes expected, found {pids}"
        time.sleep(0.2)
    assert len(pids) == 2
    # libuv in each child accepts one connection at a time, so connections opened together spread.
    assert all(b"UV_TCP_SINGLE_ACCEPT=1" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in pids)

    # Each process answers alone while the other is frozen: both serve the port.
    for frozen, other in ((pids[0], pids[1]), (pids[1], pids[0])):
        os.kill(frozen, signal.SIGSTOP)
        try:
            assert answers(topology.port), f"process {other} did not answer while {frozen} was stopped"
        finally:
            os.kill(frozen, signal.SIGCONT)

    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=60) == 0
    assert not any(alive(pid) for pid in pids), "an API process outlived its parent"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{topology.port}/health", timeout=5)
