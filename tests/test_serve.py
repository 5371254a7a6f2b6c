"""`messageservice serve` as a newcomer meets it: migrations, the portal, the guide on screen, https."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.postgres import free_port
from tests.test_cli import invoke

COMMAND = [sys.executable, "-m", "messageservice.cli"]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    # The defaults: SQLite in ./var of the working folder.
    return env


def _cli(folder: Path, *args: str) -> Any:
    """Run a command with --json in the folder, with the defaults, as a newcomer's shell would; in this process
    (the same group and runner as the script): the commands that must run as processes are `init` and `serve`."""
    # None takes a variable out of the command's environment: no setting of ours leaks in.
    unset: Any = {k: None for k in os.environ if k.startswith("MESSAGESERVICE_")}
    result = invoke(unset, *args, "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait(url: str, verify: str | bool = True, timeout: float = 90.0) -> requests.Response:
    deadline = time.time() + timeout
    while True:
        try:
            return requests.get(url, timeout=2, verify=verify, headers={"Connection": "close"})
        except requests.ConnectionError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)


def _serve(folder: Path, *extra: str) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [*COMMAND, "serve", "--port", str(port), "--log-level", "warning", *extra],
        cwd=folder,
        env=_env(folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return process, port


def _stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGINT)
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out


def test_first_run_guides_the_newcomer(tmp_path: Path) -> None:
    init = subprocess.run(
        [*COMMAND, "init", "--domain", "newcomer.local", "--json"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(init.stdout)["created"] is True
    assert (tmp_path / "var" / "messageservice.db").exists()
    process, port = _serve(tmp_path)
    try:
        assert _wait(f"http://127.0.0.1:{port}/health").json()["status"] == "ok"
        # The guide's own steps work: app, install, token, first call.
        app = _cli(
            tmp_path, "app", "add", "--name", "My SMS app", "--url", "http://127.0.0.1:9/", "--scope", "messageservice"
        )
        _cli(tmp_path, "app", "install", app["client_id"])
        token = _cli(tmp_path, "token", app["client_id"], "--user", "1")
        assert token["client_endpoint"] == f"http://127.0.0.1:{port}/rest/"
        listed = requests.get(
            f"http://127.0.0.1:{port}/rest/messageservice.sender.list.json",
            params={"auth": token["access_token"]},
            timeout=10,
        ).json()
        assert listed["result"] == []
    finally:
        out = _stop(process)
    for step in ("create an app", "install it", "get a token", "first call", "NAME[en]=Demo SMS"):
        assert step in out, out


def test_serve_without_init_says_what_to_do(tmp_path: Path) -> None:
    process, _ = _serve(tmp_path)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "messageservice init --domain" in out and "Traceback" not in out


def test_tls_serves_https_and_the_access_log_keeps_secrets_out(tmp_path: Path) -> None:
    """One server for both (a start is the costly part): https with its own certificate, and an access log
    at info level that names every request without a secret in it."""
    _cli(tmp_path, "init", "--domain", "tls.local")
    app = _cli(tmp_path, "app", "add", "--name", "Logged", "--url", "http://127.0.0.1:9/")
    _cli(tmp_path, "app", "install", app["client_id"])
    token = _cli(tmp_path, "token", app["client_id"])
    hook = _cli(tmp_path, "webhook", "add", "--user", "1")["url"]
    process, port = _serve(tmp_path, "--tls", "--log-level", "info")
    cert = tmp_path / "var" / "tls" / "cert.pem"
    try:
        deadline = time.time() + 30
        while not cert.exists() and time.time() < deadline:
            time.sleep(0.1)
        base = f"https://127.0.0.1:{port}"
        assert _wait(base + "/health", verify=str(cert)).status_code == 200
        assert _wait(f"https://localhost:{port}/health", verify=str(cert)).status_code == 200

        secret = hook.rstrip("/").rsplit("/", 1)[1]
        hook = hook.replace("http://127.0.0.1:8000", base)
        close = {"Connection": "close"}
        assert requests.get(hook + "user.admin", timeout=10, headers=close, verify=str(cert)).ok
        assert requests.get(
            base + "/rest/user.admin",
            params={"auth": token["access_token"]},
            timeout=10,
            headers=close,
            verify=str(cert),
        ).ok
        refreshed = requests.get(
            base + "/oauth/token/",
            timeout=10,
            headers=close,
            verify=str(cert),
            params={
                "grant_type": "refresh_token",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "refresh_token": token["refresh_token"],
            },
        )
        assert refreshed.ok
    finally:
        out = _stop(process)
    assert f"REQUESTS_CA_BUNDLE={cert.relative_to(tmp_path)}" in out or f"REQUESTS_CA_BUNDLE={cert}" in out
    assert "/rest/1/***/user.admin" in out and "/oauth/token/" in out
    for leaked in (secret, token["access_token"], token["refresh_token"], app["client_secret"]):
        assert leaked not in out
