"""A throwaway PostgreSQL for the test run, started from the installed server binaries."""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A port that is free now and that no socket bound to port 0 (another test's server) or opened to
    connect out can take before the caller binds it: one below the system's ephemeral range, at random.
    A port from bind(0) itself could be handed to the next process that asks, in the seconds a server
    takes to start, and that server's answers mistaken for ours."""
    low, _ = _ephemeral_ports()
    if low > 11_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.insert(0, str(Path(os.path.realpath(on_path)).parent))
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


class TempPostgres:
    """initdb + pg_ctl in a temporary folder, on a free loopback port; `stop()` removes it all."""

    def __init__(self, *, durable: bool = False, extra_options: str = "") -> None:
        # Durable: PostgreSQL's stock fsync and synchronous_commit, for tests that stop it the hard way and
        # must find every acknowledged commit again. Otherwise the test run trades them for speed.
        self.durable = durable
        self.extra_options = extra_options  # more `-c name=value` for the server (bench/send_bench.py)
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found; install postgresql")
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="messageservice-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        # PostgreSQL refuses to run as root; run it as the 'postgres' system user then.
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self.run_as, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> TempPostgres:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        for attempt in range(3):
            try:
                self.resume()
                return self
            except subprocess.CalledProcessError:
                # Another process (a parallel test worker) may have bound the free port first: take another.
                if attempt == 2:
                    raise
                self.port = free_port()
        return self

    def resume(self) -> None:
        """Start the server (again) on its data folder. max_connections stays at the stock 100."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if self.extra_options:
            options += " " + self.extra_options
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def halt(self) -> None:
        """Stop the server as a crash or an outage would, keeping its data for resume()."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        deadline = time.time() + 30
        while True:
            try:
                self._run(
                    str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name
                )
                return self.url(name)
            except subprocess.CalledProcessError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
