"""The scale-out topology: `serve --no-dispatch` answers the API, `messageservice worker`s deliver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.fernet import Fernet

from tests.conftest import new_database_url
from tests.postgres import free_port
from tests.receiver import Receiver
from tests.test_serve import _wait

COMMAND = [sys.executable, "-m", "messageservice.cli"]


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_an_api_only_serve_leaves_delivery_to_workers(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, handler: Receiver
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path / "data"),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_DISPATCH_SWEEP_SECONDS": "0.2",
    }

    def cli(*args: str) -> Any:
        done = subprocess.run([*COMMAND, *args, "--json"], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cli("init", "--domain", "scale.test")
    client_id = cli("app", "add", "--name", "P", "--url", "http://127.0.0.1:9/", "--scope", "messageservice")[
        "client_id"
    ]
    cli("app", "install", client_id)
    token = cli("token", client_id, "--user", "1")["access_token"]

    port = free_port()
    processes = [
        subprocess.Popen(
            [*COMMAND, "serve", "--port", str(port), "--log-level", "warning", "--no-dispatch"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
    ]
    try:
        rest = f"http://127.0.0.1:{port}/rest/"
        _wait(f"http://127.0.0.1:{port}/health")
        sender = {"CODE": "scale", "TYPE": "SMS", "HANDLER": f"http://127.0.0.1:{handler.port}/h", "NAME": "S"}
        assert requests.post(rest + "messageservice.sender.add", json={**sender, "auth": token}, timeout=30).ok
        message = {"MESSAGE_FROM": f"{client_id}|scale", "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "hi"}
        sent = requests.post(rest + "messageservice.message.send", json={**message, "auth": token}, timeout=30)
        assert sent.status_code == 200, sent.text
        time.sleep(1.5)
        assert handler.requests == [], "the API-only serve delivered"

        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [*COMMAND, "worker", "--log-level", "warning"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.STDOUT,
                )
            )
        call = handler.wait_for(1, timeout=30)[0]
        assert call.form["message_id"] == sent.json()["result"]["MESSAGE_ID"]
        more = [
            requests.post(rest + "messageservice.message.send", json={**message, "auth": token}, timeout=30)
            for _ in range(20)
        ]
        assert all(answer.ok for answer in more)
        calls = handler.wait_for(21, timeout=30)
        assert len({c.form["message_id"] for c in calls}) == 21
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
