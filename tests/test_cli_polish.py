"""The command line's rough edges, fixed (issue 11): run in this process through Typer's CliRunner."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from messageservice.cli import cli
from messageservice.cli.public_url import for_serve, from_domain
from messageservice.cli.send import line_ranges
from messageservice.cli.serve import getting_started, print_lines
from tests.console_helpers import add_sender
from tests.databases import new_database_url
from tests.portal import LivePortal
from tests.postgres import free_port
from tests.receiver import Receiver


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: str
    stderr: str


def env_of(portal: LivePortal) -> dict[str, str]:
    return {
        "MESSAGESERVICE_DATABASE_URL": portal.settings.database_url,
        "MESSAGESERVICE_DATA_DIR": str(portal.settings.data_dir),
        "MESSAGESERVICE_SECRET_KEY": portal.settings.secret_key or "",
        "COLUMNS": "120",
    }


@functools.cache
def _tree() -> Any:
    return typer.main.get_command(cli)


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None, cwd: Path | None = None) -> Ran:
    """One command in this process; an unmapped exception fails the test where it happens."""
    with (
        contextlib.chdir(cwd or Path(env.get("MESSAGESERVICE_DATA_DIR", "."))),
        mock.patch("typer.testing._get_command", lambda _app: _tree()),
    ):
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def run_json(env: dict[str, str], *args: str) -> Any:
    ran = run_cli(env, *args, "--json")
    assert ran.code == 0, ran.stderr
    return json.loads(ran.stdout)


# --- the public URL follows init ------------------------------------------------------------------


@pytest.fixture
def fresh_env(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> dict[str, str]:
    """The settings of a new, empty database (no portal yet), as the command reads them."""
    return {
        "MESSAGESERVICE_DATABASE_URL": new_database_url(request, backend, tmp_path),
        "MESSAGESERVICE_DATA_DIR": str(tmp_path),
        "MESSAGESERVICE_SECRET_KEY": Fernet.generate_key().decode(),
        "MESSAGESERVICE_PUBLIC_URL": "",
        "COLUMNS": "120",
    }


def app_token(env: dict[str, str]) -> dict[str, Any]:
    """A token for a new app, with the app's client_id beside it."""
    app = run_json(env, "app", "add", "--name", "Script", "--url", "http://127.0.0.1:9/")
    run_json(env, "app", "install", app["client_id"])
    return {**run_json(env, "token", app["client_id"]), "client_id": app["client_id"]}


def test_a_domain_with_a_port_is_where_apps_call_before_the_first_serve(fresh_env: dict[str, str]) -> None:
    port = free_port()
    created = run_json(fresh_env, "init", "--domain", f"127.0.0.1:{port}")
    assert created["client_endpoint"] == f"http://127.0.0.1:{port}/rest/"
    token = app_token(fresh_env)
    assert token["client_endpoint"] == f"http://127.0.0.1:{port}/rest/" and token["domain"] == f"127.0.0.1:{port}"
    # Run again without --public-url: nothing changes; with it, it replaces what was recorded.
    assert run_json(fresh_env, "init", "--domain", f"127.0.0.1:{port}")["client_endpoint"].endswith(f":{port}/rest/")
    moved = run_json(fresh_env, "init", "--domain", f"127.0.0.1:{port}", "--public-url", "https://sms.example.com/")
    assert moved["client_endpoint"] == "https://sms.example.com/rest/"
    # The setting wins over both.
    told = run_json(
        {**fresh_env, "MESSAGESERVICE_PUBLIC_URL": "https://other.example.com"}, "token", token["client_id"]
    )
    assert told["client_endpoint"] == "https://other.example.com/rest/"


def test_a_domain_that_is_a_name_leaves_the_address_to_public_url_or_serve(fresh_env: dict[str, str]) -> None:
    created = run_json(fresh_env, "init", "--domain", "portal.local")
    assert "client_endpoint" not in created  # the first `serve` records where it listens
    bad = run_cli(fresh_env, "init", "--domain", "portal.local", "--public-url", "sms.example.com")
    assert bad.code == 2 and "not a public URL: 'sms.example.com'" in bad.stderr
    chosen = run_json(fresh_env, "init", "--domain", "portal.local", "--public-url", "https://sms.example.com")
    assert chosen["client_endpoint"] == "https://sms.example.com/rest/"
    assert app_token(fresh_env)["client_endpoint"] == "https://sms.example.com/rest/"


@pytest.mark.parametrize(
    ("domain", "url"),
    [
        ("127.0.0.1:18555", "http://127.0.0.1:18555"),
        ("localhost", "http://localhost"),
        ("10.0.0.5", "http://10.0.0.5"),
        ("[::1]:8080", "http://[::1]:8080"),
        ("sms.example.com:8443", "http://sms.example.com:8443"),
        ("messageservice.local", None),
        ("portal.bitrix24.com", None),
    ],
)
def test_which_domains_are_addresses(domain: str, url: str | None) -> None:
    assert from_domain(domain) == url


def test_serve_keeps_an_address_someone_chose() -> None:
    here = "http://127.0.0.1:8000"
    assert for_serve(None, None, here) == (here, here)  # the first serve records where it listens
    assert for_serve(None, "http://127.0.0.1:18555", here) == (here, here)  # a loopback guess is replaced
    assert for_serve(None, "https://sms.example.com", here) == ("https://sms.example.com", None)
    assert for_serve("https://set.example.com", "http://127.0.0.1:1", here) == ("https://set.example.com", None)


def test_the_start_banner_prints_each_command_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch.dict(os.environ, {"COLUMNS": "40"}):
        print_lines(getting_started("http://127.0.0.1:18555"))
    lines = capsys.readouterr().out.splitlines()
    commands = [line for line in lines if line.startswith("  ") and ("curl -s" in line or "messageservice " in line)]
    assert len(commands) == 7
    for line in commands:
        assert line.count("'") % 2 == 0, line  # no quote left open by a break
    add, report = (line for line in lines if "curl -s" in line)
    assert "sender.add.json" in add and "--data-urlencode 'NAME[en]=Demo SMS'" in add
    send = next(line for line in lines if "send a message" in line)
    assert send.endswith("send --from '<client_id>|demo' --to +15550001234 --text Hello")
    assert "message.status.update.json" in report and report.endswith("-d STATUS=delivered")
    assert all("http://127.0.0.1:18555/rest/" in line for line in (add, report))


# --- senders list, the unknown sender, stats ------------------------------------------------------


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def wait_for(portal: LivePortal, token: str, message_id: int, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        got = portal.call("messageservice.message.get", {"ID": message_id}, token=token).json()["result"]
        if got["STATUS"] == status or time.monotonic() > deadline:
            return got  # type: ignore[no-any-return]
        time.sleep(0.05)


def test_senders_list_and_the_unknown_sender(local_fresh_portal: LivePortal, receiver: Receiver) -> None:
    portal = local_fresh_portal
    app = portal.add_app(name="Senders app")
    code = "a_rather_long_sender_code_" + uuid.uuid4().hex[:8]
    sender = add_sender(portal, app, receiver.url, code)
    env = env_of(portal)
    listed = run_json(env, "senders", "list")
    assert [(row["message_from"], row["code"], row["app"], row["handler"]) for row in listed] == [
        (sender, code, app.client_id, receiver.url)
    ]
    assert listed[0]["name"] == "Test SMS" and listed[0]["breaker"] == "closed"
    shown = run_cli(env, "senders", "list")
    assert shown.code == 0 and sender in shown.stdout and "no calls in the last hour" in shown.stdout
    assert "Senders app" in shown.stdout
    assert run_json(env, "senders", "list", "--app", "local.other.1") == []

    unknown = run_cli(env, "send", "--from", f"{app.client_id}|nope", "--to", "+15550001111", "--text", "x")
    assert unknown.code == 1
    assert f"no sender {app.client_id}|nope; the senders are {sender} (" in unknown.stderr
    assert "senders list" in unknown.stderr


def test_stats_keeps_the_sender_whole_and_the_window_as_asked(
    local_fresh_portal: LivePortal, receiver: Receiver
) -> None:
    portal = local_fresh_portal
    app = portal.add_app(name="Stats app")
    sender = add_sender(portal, app, receiver.url, "sender_code_of_some_length_" + uuid.uuid4().hex[:8])
    sent = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550001111", "MESSAGE_BODY": "x"},
        token=app.access_token,
    ).json()["result"]
    assert wait_for(portal, app.access_token, sent["ID"], "sent")["STATUS"] == "sent"
    out = run_cli(env_of(portal), "stats", "--window", "5m")
    assert out.code == 0, out.stderr
    assert len(sender) > 50 and sender in out.stdout  # at 120 columns
    assert "per minute, last 5 min" in out.stdout and "6 min" not in out.stdout


# --- send --idempotency-key -----------------------------------------------------------------------


def test_an_idempotency_key_used_for_another_text_is_refused(local_portal: LivePortal, receiver: Receiver) -> None:
    app = local_portal.add_app(name="Keys app")
    sender = add_sender(local_portal, app, receiver.url)
    env, key = env_of(local_portal), "k-" + uuid.uuid4().hex[:8]
    first = run_json(env, "send", "--from", sender, "--to", "+15550004444", "--text", "first", "--idempotency-key", key)
    again = run_cli(
        env, "send", "--from", sender, "--to", "+1 555 000 4444", "--text", "first", "--idempotency-key", key
    )
    assert again.code == 0 and f"already sent as message {first['ID']} " in again.stdout
    assert "nothing new was queued" in again.stdout
    other = run_cli(env, "send", "--from", sender, "--to", "+15550004444", "--text", "second", "--idempotency-key", key)
    assert other.code == 1 and "queued" not in other.stdout
    assert f"the idempotency key '{key}' was already used by message {first['ID']} " in other.stderr
    assert "'first'), which has another text; nothing was sent" in other.stderr
    stored = local_portal.call("messageservice.message.get", {"ID": first["ID"]}, token=app.access_token).json()
    assert stored["result"]["MESSAGE_BODY"] == "first"


# --- send-bulk recovers after a broken quote -------------------------------------------------------


def test_send_bulk_recovers_at_the_line_after_an_unclosed_quote(
    local_portal: LivePortal, receiver: Receiver, tmp_path: Path
) -> None:
    app = local_portal.add_app(name="Bulk app")
    sender = add_sender(local_portal, app, receiver.url)
    rows = [f"+1555000{i:04d},row {i}" for i in range(2, 10)]
    rows[4] = '+15550000006,"six, with a quote never closed'  # line 6
    rows[6] = '+15550000008,"eight, quoted"'  # a later quote must not close the one on line 6
    csv_file = tmp_path / "bulk.csv"
    csv_file.write_text("to,text\n" + "\n".join(rows) + "\n")
    ran = run_cli(env_of(local_portal), "send-bulk", str(csv_file), "--from", sender, "--json")
    assert ran.code == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["rows"] == 8 and summary["sent"] == 7
    assert [m["line"] for m in summary["messages"]] == [2, 3, 4, 5, 7, 8, 9]
    assert [skip["line"] for skip in summary["skipped"]] == [6]
    assert "quoted value starting on this line runs on to line 8" in summary["skipped"][0]["reason"]

    rows[6] = "+15550000008,eight"  # now the quote on line 6 runs to the end of the file
    csv_file.write_text("to,text\n" + "\n".join(rows) + "\n")
    text = run_cli(env_of(local_portal), "send-bulk", str(csv_file), "--from", sender)
    assert text.code == 0, text.stderr
    assert "sent 7 of 8 rows" in text.stdout and "skipped 1:" in text.stdout
    assert "line 6: a quote opened on this line is never closed" in text.stdout


# --- help names values as Click does ----------------------------------------------------------------


def command_paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from command_paths(sub, (*prefix, name))


def test_help_shows_metavars_not_type_names(tmp_path: Path) -> None:
    env = {"MESSAGESERVICE_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    paths = list(command_paths(_tree()))
    assert ("senders", "list") in paths and len(paths) > 20
    for path in paths:
        shown = run_cli(env, *path, "--help")
        assert shown.code == 0, (path, shown.stderr)
        assert not re.search(r"<(str|bool|int|float|path|list)\b", shown.stdout), (path, shown.stdout)
    send = run_cli(env, "send", "--help").stdout
    assert re.search(r"--to\s+TEXT\s", send) and re.search(r"--user\s+INTEGER RANGE", send)
    assert re.search(r"--json\s+Print JSON", send) and re.search(r"--help\s+Show this message", send)
    bulk = run_cli(env, "send-bulk", "--help").stdout
    assert re.search(r"FILE\s+PATH\s", bulk) and "send-bulk [OPTIONS] {FILE}" in bulk


# --- messages show, replay ----------------------------------------------------------------------------


def test_show_names_bindings_and_replay_says_why_nothing_was(local_portal: LivePortal, receiver: Receiver) -> None:
    app = local_portal.add_app(name="Show app")
    sender = add_sender(local_portal, app, receiver.url)
    env = env_of(local_portal)
    args = ("send", "--from", sender, "--to", "+15550005555", "--text", "hi", "--binding", "contact:1")
    sent = run_json(env, *args, "--binding", "9:4")
    shown = run_cli(env, "messages", "show", str(sent["ID"]))
    assert shown.code == 0 and "crm, bound to contact:1, 9:4" in shown.stdout and "3:1" not in shown.stdout

    wait_for(local_portal, app.access_token, sent["ID"], "sent")
    again = run_cli(env, "replay", str(sent["ID"]))
    assert again.code == 1 and "replayed 0" not in again.stdout
    assert f"nothing replayed: message {sent['ID']}: not a dead letter (delivery done" in again.stdout
    none = run_cli(env, "replay", "--dead", "--sender", sender)
    assert none.code == 0 and none.stdout.strip() == f"nothing replayed: there are no dead letters of {sender}"
    dry = run_cli(env, "replay", "--dead", "--sender", sender, "--dry-run")
    assert dry.stdout.strip() == f"nothing would be replayed: there are no dead letters of {sender}"


# --- make run: the launcher's output ------------------------------------------------------------------


def load_launcher() -> Any:
    path = Path(__file__).resolve().parent.parent / "examples" / "demo_provider" / "launch.py"
    spec = importlib.util.spec_from_file_location("demo_launch", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_run_leaves_out_its_own_noise_and_ends_with_the_console_login(
    capsys: pytest.CaptureFixture[str],
) -> None:
    launch = load_launcher()
    server_output = [
        "2026-12-01 23:22:27,712 INFO alembic.runtime.migration: Context impl SQLiteImpl.\n",
        'INFO:     127.0.0.1:1 - "POST /rest/messageservice.sender.add HTTP/1.1" 400 Bad Request\n',
        'INFO:     127.0.0.1:1 - "POST /rest/messageservice.sender.update HTTP/1.1" 200 OK\n',
        'INFO:     127.0.0.1:1 - "POST /rest/messageservice.message.get HTTP/1.1" 200 OK\n',
        "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)\n",
    ]
    quiet = threading.Event()
    quiet.set()
    launch.pump(io.StringIO("".join(server_output)), quiet)
    shown = capsys.readouterr().out
    assert shown == server_output[2] + server_output[4]
    quiet.clear()  # after the guide: the person's own requests, all of them
    launch.pump(io.StringIO("".join(server_output[1:4])), quiet)
    assert capsys.readouterr().out == "".join(server_output[1:4])

    guide = launch.instructions("http://127.0.0.1:8000", "local.a.1", "local.a.1|demo_sms", "tok", "s3cret-pw")
    tail = guide.strip().splitlines()[-3:]
    assert "login `admin`, password `s3cret-pw`" in tail[0] and tail[0].startswith("Or watch and send in the console")
    again = launch.instructions("http://127.0.0.1:8000", "local.a.1", "local.a.1|demo_sms", "tok")
    assert "user password 1` sets a new one" in again and "password `" not in again


def test_a_long_bulk_summary_still_names_every_line() -> None:
    assert line_ranges([9, 2, 3, 4, 5, 12, 13, 40]) == "2-5, 9, 12-13, 40"
    assert line_ranges([7]) == "7" and line_ranges([]) == ""
