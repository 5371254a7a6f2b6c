"""JSON log lines (MESSAGESERVICE_LOG_FORMAT=json): one object per line, parsed back line by line. A message's
id is carried from its send (the access line), through its HANDLER attempt, to its status report; secrets
stay masked; the request id a client sends comes back and is in its line."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messageservice.config import LogFormat
from messageservice.observability.context import LOG_CONTEXT, LogContext, note_message
from messageservice.observability.jsonlog import JsonFormatter, configure_logging, uvicorn_log_config
from tests.portal import LivePortal
from tests.postgres import free_port
from tests.receiver import Receiver
from tests.test_messages import wait_for
from tests.test_metrics import add_sender, send
from tests.test_serve import COMMAND, _cli, _env, _wait


class Captured:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """The server's lines (access, delivery) as JSON, at INFO, for the length of a test."""
    capture = Captured()
    handler = logging.StreamHandler(capture.stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("messageservice")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture
def handler() -> Iterator[Receiver]:
    receiver = Receiver(200).start()
    yield receiver
    receiver.stop()


def test_a_message_id_is_carried_from_send_through_attempt_to_status(
    local_portal: LivePortal, handler: Receiver, captured: Captured
) -> None:
    portal = local_portal
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    answer = send(portal, app, sender)
    assert answer.status_code == 200, answer.text
    message_id = answer.json()["result"]["MESSAGE_ID"]

    def attempt_line() -> dict[str, Any] | None:
        found = [line for line in captured.lines() if line.get("outcome") and line.get("message_id") == message_id]
        return found[0] if found else None

    attempt = wait_for(attempt_line)
    code = sender.split("|", 1)[1]
    report = portal.session.get(
        portal.rest_url + "messageservice.message.status.update",
        params={"CODE": code, "MESSAGE_ID": message_id, "STATUS": "delivered", "auth": app.access_token},
        headers={"X-Request-ID": "trace-42"},
        timeout=30,
    )
    assert report.status_code == 200, report.text
    assert report.headers["x-request-id"] == "trace-42"

    lines = captured.lines()  # every line parses: one JSON object per line
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    mine = [line for line in lines if line.get("message_id") == message_id]
    sent = [line for line in mine if line.get("rest_method") == "messageservice.message.send"]
    reported = [line for line in mine if line.get("rest_method") == "messageservice.message.status.update"]
    assert len(sent) == 1 and len(reported) == 1, mine
    assert sent[0]["logger"] == "messageservice.access" and sent[0]["status"] == 200
    assert sent[0]["sender"] == sender and sent[0]["app"] == app.client_id
    assert sent[0]["request_id"] and sent[0]["duration_ms"] >= 0
    assert attempt["logger"] == "messageservice.delivery" and attempt["outcome"] == "delivered_to_handler"
    assert attempt["sender"] == sender and attempt["app"] == app.client_id and attempt["http_status"] == 200
    assert attempt["attempt"] == 1
    assert reported[0]["request_id"] == "trace-42" and reported[0]["app"] == app.client_id
    # The token went in the query string: masked in the line, as in text.
    assert app.access_token not in captured.text()
    assert "auth=%2A%2A%2A" in reported[0]["path"]


def test_every_rest_call_has_one_access_line(any_portal: LivePortal, captured: Captured) -> None:
    answer = any_portal.session.get(any_portal.rest_url + "no.such.method", timeout=30)
    request_id = answer.headers["x-request-id"]
    lines = [line for line in captured.lines() if line.get("request_id") == request_id]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["logger"] == "messageservice.access" and line["status"] == answer.status_code == 404
    assert line["method"] == "GET" and line["rest_method"] == "other" and line["level"] == "info"


def test_a_request_id_that_is_not_a_plain_token_is_replaced(any_portal: LivePortal, captured: Captured) -> None:
    answer = any_portal.session.get(any_portal.base_url + "/health", headers={"X-Request-ID": 'a "b"'}, timeout=30)
    assert answer.headers["x-request-id"] != 'a "b"' and len(answer.headers["x-request-id"]) == 16


def test_the_formatter_takes_the_context_and_extras() -> None:
    formatter = JsonFormatter()
    request = LOG_CONTEXT.set(LogContext("r1"))
    try:
        note_message("m" * 32, "client|code")
        record = logging.LogRecord("messageservice.x", logging.WARNING, __file__, 1, "a %s", ("b",), None)
        record.outcome = "retry"
        line = json.loads(formatter.format(record))
    finally:
        LOG_CONTEXT.reset(request)
    assert line["message"] == "a b" and line["level"] == "warning" and line["logger"] == "messageservice.x"
    assert line["request_id"] == "r1" and line["message_id"] == "m" * 32 and line["outcome"] == "retry"
    assert line["time"].endswith("Z")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed\nbadly", (), sys.exc_info())
    line = json.loads(formatter.format(record))
    assert "ValueError: boom" in line["exception"] and line["message"] == "failed\nbadly"


def test_text_stays_uvicorns_own_and_json_goes_through_the_root() -> None:
    import uvicorn.config

    assert uvicorn_log_config(LogFormat.TEXT) is uvicorn.config.LOGGING_CONFIG
    config = uvicorn_log_config(LogFormat.JSON)
    assert config["loggers"]["uvicorn.access"]["propagate"] and not config["loggers"]["uvicorn"]["handlers"]


def test_configure_logging_in_json(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    access = logging.getLogger("messageservice.access")
    monkeypatch.setattr(access, "level", access.level)
    configure_logging(LogFormat.JSON, logging.INFO, access_level="warning")
    assert isinstance(root.handlers[0].formatter, JsonFormatter)
    assert access.level == logging.WARNING


@pytest.mark.e2e
def test_serve_and_worker_log_json_and_serve_metrics(tmp_path: Path) -> None:
    """Real processes: every line `serve` logs is JSON (uvicorn's own too); `worker --metrics-port` answers."""
    env = {**_env(tmp_path), "MESSAGESERVICE_LOG_FORMAT": "json"}
    _cli(tmp_path, "init", "--domain", "json.local")  # in this process: the logs of `serve` and `worker` are the point
    port, metrics_port = free_port(), free_port()
    serve = subprocess.Popen(
        [*COMMAND, "serve", "--port", str(port), "--log-level", "info"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    worker = subprocess.Popen(
        [*COMMAND, "worker", "--metrics-port", str(metrics_port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _wait(f"http://127.0.0.1:{port}/health").status_code == 200
        page = _wait(f"http://127.0.0.1:{port}/metrics")
        assert page.status_code == 200 and "messageservice_queue_depth" in page.text
        from_worker = _wait(f"http://127.0.0.1:{metrics_port}/metrics")
        assert from_worker.status_code == 200 and "messageservice_dead_letters" in from_worker.text
    finally:
        for process in (serve, worker):
            process.send_signal(signal.SIGINT)
        logged = {name: p.communicate(timeout=30)[1] for name, p in (("serve", serve), ("worker", worker))}
    lines = [json.loads(line) for line in logged["serve"].splitlines() if line.strip()]
    assert any(line["logger"].startswith("uvicorn") for line in lines), lines
    access = [line for line in lines if line["logger"] == "messageservice.access" and line["path"] == "/metrics"]
    assert access and access[0]["status"] == 200 and access[0]["request_id"]
    worker_lines = [json.loads(line) for line in logged["worker"].splitlines() if line.strip()]
    assert any("metrics on http://127.0.0.1:" in line["message"] for line in worker_lines), worker_lines
