"""The scripting contract: `messageservice` commands against a live portal's database, with --json.

Commands run in this process through Typer's CliRunner (the same group, runner and error mapping as
the installed script); a few run as real processes, where the process itself is the point: the
console script, exit codes, one end to end.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer.main
from sqlalchemy import select, text
from typer.testing import CliRunner

from messageservice.cli import cli, runner
from messageservice.core.context import Core
from messageservice.store.tables import app_events
from tests.portal import LivePortal
from tests.receiver import Receiver

COMMAND = [sys.executable, "-m", "messageservice.cli"]
SCRIPT = Path(sys.executable).parent / "messageservice"
HANDLER = "http://127.0.0.1:9000/handler"
runner_migrate = runner.migrate
# The terminal width commands see: wide enough that no table column of a test is squeezed into two lines.
WIDTH = "400"


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def portal_env(portal: LivePortal) -> dict[str, str]:
    """The settings a command needs to reach this portal's database (as `messageservice` reads them)."""
    return {
        "MESSAGESERVICE_DATABASE_URL": portal.settings.database_url,
        "MESSAGESERVICE_DATA_DIR": str(portal.settings.data_dir),
        "MESSAGESERVICE_SECRET_KEY": portal.settings.secret_key or "",
        "COLUMNS": WIDTH,
    }


@functools.cache
def _command_tree() -> Any:
    return typer.main.get_command(cli)


_MIGRATED: set[tuple[str, str]] = set()


def _migrate_once(settings: Any) -> None:
    """Every command brings the schema up to date first (Alembic loads every revision script: most of an
    in-process command's time). A database this process has migrated once is current: it is not asked again.
    The `migrate` command itself always runs for real."""
    key = (settings.database_url, os.getcwd())  # a relative SQLite path names another file in another folder
    if key not in _MIGRATED:
        runner_migrate(settings)
        _MIGRATED.add(key)


def invoke(env: dict[str, str], *args: str, stdin: bytes | None = None, cwd: Path | None = None) -> Ran:
    """One command in this process; a traceback (an unmapped exception) fails the test where it happens."""
    from messageservice.cli import output

    # Rich sizes its consoles from COLUMNS when they are made (at import, whatever the environment was then):
    # every invocation gets the width it asks for, or WIDTH.
    width = int(env.get("COLUMNS", WIDTH))
    with (
        contextlib.chdir(cwd or Path(env.get("MESSAGESERVICE_DATA_DIR", "."))),
        # Typer builds the command tree (every option's validator) on each invoke: once is enough here.
        mock.patch("typer.testing._get_command", lambda _app: _command_tree()),
        mock.patch.object(output.console, "_width", width),
        mock.patch.object(output.err_console, "_width", width),
        mock.patch.object(runner, "migrate", runner_migrate if args[:1] == ("migrate",) else _migrate_once),
    ):
        result = CliRunner().invoke(cli, list(args), env=env, input=stdin, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)


def ms(portal: LivePortal, *args: str, check: bool = True, stdin: bytes | None = None) -> Ran:
    result = invoke(portal_env(portal), *args, stdin=stdin)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ms_json(portal: LivePortal, *args: str) -> Any:
    return json.loads(ms(portal, *args, "--json").stdout)


def run_process(env: dict[str, str], *args: str, command: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a real process (the console script by default), with `env` over ours."""
    argv = [*(command or [str(SCRIPT)]), *args]
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    return subprocess.run(argv, env={**base, **env}, capture_output=True, text=True, timeout=120)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_init_is_idempotent(portal: LivePortal) -> None:
    first = ms_json(portal, "init", "--domain", "other.domain")
    assert first["created"] is False and first["domain"] == "portal.test" and len(first["member_id"]) == 32
    assert ms_json(portal, "init", "--domain", "portal.test")["member_id"] == first["member_id"]


def test_user_add_prints_id(portal: LivePortal) -> None:
    plain = int(ms(portal, "user", "add", "--name", "Carol").stdout.strip())
    admin = ms_json(portal, "user", "add", "--name", "Dave", "--admin")
    assert admin["id"] == plain + 1 and admin["admin"] is True
    listed = {u["id"]: u for u in ms_json(portal, "user", "list")}
    assert listed[plain]["admin"] is False and listed[admin["id"]]["name"] == "Dave"


def test_app_lifecycle_with_onappinstall(portal: LivePortal, receiver: Receiver) -> None:
    added = ms_json(portal, "app", "add", "--name", "Scripted", "--url", receiver.url, "--scope", "messageservice")
    assert added["client_id"].startswith("local.") and len(added["client_secret"]) == 50
    installed = ms_json(portal, "app", "install", added["client_id"])
    assert len(installed["application_token"]) == 32 and installed["onappinstall_delivered"] is True

    event = receiver.wait_for(1)[0]
    assert event.path == "/app/"
    assert event.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert event.headers["User-Agent"] == "Bitrix24 Webhook Engine"
    form = event.form
    assert list(form) == [
        "event",
        "data[VERSION]",
        "data[ACTIVE]",
        "data[INSTALLED]",
        "data[LANGUAGE_ID]",
        "ts",
        "auth[access_token]",
        "auth[expires]",
        "auth[expires_in]",
        "auth[scope]",
        "auth[domain]",
        "auth[server_endpoint]",
        "auth[status]",
        "auth[client_endpoint]",
        "auth[member_id]",
        "auth[user_id]",
        "auth[refresh_token]",
        "auth[application_token]",
    ]
    assert form["event"] == "ONAPPINSTALL" and form["data[VERSION]"] == "1" and form["data[INSTALLED]"] == "Y"
    assert form["auth[application_token]"] == installed["application_token"]
    assert form["auth[client_endpoint]"] == portal.rest_url
    assert b"auth%5Baccess_token%5D=" in event.body  # PHP's http_build_query escapes the brackets
    # The token that came with the event works, as it does in Bitrix.
    access = form["auth[access_token]"]
    add = portal.call(
        "messageservice.sender.add",
        {"CODE": "cli1", "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "N"},
        token=access,
    )
    assert add.status_code == 200, add.text
    # The event body is kept for retries, but encrypted: its tokens are not in the database in clear.
    dump = portal.run(_dump_events)
    assert access not in dump and form["auth[refresh_token]"] not in dump

    # A new version wipes the senders (spec 1.9) and sends ONAPPUPDATE with a new application_token.
    updated = ms_json(portal, "app", "update", added["client_id"], "--version", "2")
    assert updated["version"] == 2
    update_event = receiver.wait_for(2)[1].form
    assert update_event["event"] == "ONAPPUPDATE"
    assert update_event["data[VERSION]"] == "2" and update_event["data[PREVIOUS_VERSION]"] == "1"
    assert update_event["auth[application_token]"] != installed["application_token"]
    assert portal.call("messageservice.sender.list", token=access).json()["result"] == []

    token = ms_json(portal, "token", added["client_id"], "--user", "1")
    assert list(token)[:2] == ["access_token", "expires"] and token["client_endpoint"] == portal.rest_url
    assert portal.call(
        "messageservice.sender.add",
        {"CODE": "cli2", "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "N"},
        token=token["access_token"],
    ).ok

    ms_json(portal, "app", "uninstall", added["client_id"])
    uninstall = receiver.wait_for(3)[2].form
    assert uninstall["event"] == "ONAPPUNINSTALL" and uninstall["data[CLEAN]"] == "0"
    assert sorted(k for k in uninstall if k.startswith("auth[")) == [
        "auth[application_token]",
        "auth[client_endpoint]",
        "auth[domain]",
        "auth[member_id]",
        "auth[server_endpoint]",
    ]
    assert portal.call("messageservice.sender.list", token=token["access_token"]).json()["error"] == "invalid_token"

    async def sender_count(core: Core) -> int:
        async with core.engine.connect() as conn:
            return int(
                (await conn.execute(text("SELECT COUNT(*) FROM senders WHERE code IN ('cli1','cli2')"))).scalar()
            )

    assert portal.run(sender_count) == 0


async def _dump_events(core: Core) -> str:
    async with core.engine.connect() as conn:
        return repr((await conn.execute(select(app_events))).all())


def test_unreachable_app_url_does_not_fail_install(portal: LivePortal) -> None:
    added = ms_json(portal, "app", "add", "--name", "Offline", "--url", "http://127.0.0.1:9/nothing-here/")
    result = ms(portal, "app", "install", added["client_id"], "--json")
    body = json.loads(result.stdout)
    assert body["onappinstall_delivered"] is False and "application_token" in body

    async def state(core: Core) -> tuple[str, int, str]:
        async with core.engine.connect() as conn:
            row = (
                await conn.execute(select(app_events).where(app_events.c.url == "http://127.0.0.1:9/nothing-here/"))
            ).one()
        return row.state, row.attempts, row.last_error

    pending, attempts, error = portal.run(state)
    assert pending == "pending" and attempts == 1 and "Connect" in error


@pytest.mark.parametrize(
    "fresh_portal", [{"event_retry_schedule": "0.2,0.2,0.2", "event_sweep_seconds": 0.2}], indirect=True
)
def test_server_retries_onappinstall(fresh_portal: LivePortal, receiver: Receiver) -> None:
    receiver.status = 503
    added = ms_json(fresh_portal, "app", "add", "--name", "Flaky", "--url", receiver.url)
    assert ms_json(fresh_portal, "app", "install", added["client_id"])["onappinstall_delivered"] is False
    receiver.wait_for(1)
    receiver.status = 200
    # The running server (not the CLI) picks the event up and delivers it.
    received = receiver.wait_for(2)
    assert len(received) >= 2 and received[0].body == received[1].body

    async def state(core: Core) -> tuple[str, int]:
        async with core.engine.connect() as conn:
            row = (await conn.execute(select(app_events.c.state, app_events.c.attempts))).one()
        return row.state, row.attempts

    deadline = time.time() + 10
    while portal_state := fresh_portal.run(state):
        if portal_state[0] == "delivered" or time.time() > deadline:
            break
        time.sleep(0.1)
    assert portal_state == ("delivered", 2)


def test_webhook_add_prints_working_url(portal: LivePortal) -> None:
    url = ms(portal, "webhook", "add", "--user", "1", "--scope", "messageservice").stdout.strip()
    assert url.startswith(portal.rest_url + "1/")
    assert portal.session.get(url + "user.admin.json", timeout=30).json()["result"] is True
    described = ms_json(portal, "webhook", "add", "--user", "1", "--scope", "messageservice,crm")
    assert described["scope"] == "messageservice,crm" and described["url"] != url


def test_errors_are_messages_not_tracebacks(portal: LivePortal) -> None:
    for args in (
        ["token", "local.nope.1", "--user", "1"],
        ["app", "install", "local.nope.1"],
        ["webhook", "add", "--user", "999999"],
        ["app", "add", "--name", "X", "--url", "ftp://x"],
        ["app", "add", "--name", "X", "--url", "http://x/", "--scope", "bad scope!"],
        ["app", "add", "--name", "N" * 300, "--url", "http://x/"],
        ["app", "add", "--name", "X", "--url", "http://x/" + "p" * 1000],
        ["user", "add", "--name", "U" * 300],
    ):
        result = ms(portal, *args, check=False)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr and "error:" in result.stderr


# --- real processes ----------------------------------------------------------------------------


def test_console_script_end_to_end(any_portal: LivePortal) -> None:
    """The installed `messageservice` script, as an operator runs it: output, --json and exit codes. On one
    engine: what the process adds (the script, its exit codes) does not depend on it; the commands' work on
    each engine is tested in this process."""
    portal = any_portal
    env = portal_env(portal)
    added = run_process(env, "user", "add", "--name", "Scripted", "--json")
    assert added.returncode == 0, added.stderr
    user_id = json.loads(added.stdout)["id"]
    assert {"id": user_id, "name": "Scripted", "last_name": "", "admin": False} in ms_json(portal, "user", "list")
    refused = run_process(env, "token", "local.nope.1")
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
    usage = run_process(env, "user", "password", "abc", command=COMMAND)  # python -m messageservice.cli
    assert usage.returncode == 2 and "Invalid value" in usage.stderr


def test_help_and_early_refusals_do_not_load_the_server_stack() -> None:
    """`--help` and input refused before the database is opened import neither the store nor the server."""
    probe = (
        "import sys\n"
        "from messageservice.cli import main\n"
        "sys.argv = ['messageservice', *sys.argv[1:]]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        "heavy = ('sqlalchemy', 'starlette', 'uvicorn', 'aiohttp', 'asyncpg', 'alembic', 'pydantic_settings')\n"
        "print('loaded:', sorted(m for m in heavy if m in sys.modules), 'exit:', code, file=sys.stderr)\n"
    )
    for args, code in (
        (["--help"], 0),
        (["send", "--from", "a|b", "--to", "abc", "--text", "x"], 2),
        (["stats", "--window", "10s"], 2),
    ):
        result = run_process({}, *args, command=[sys.executable, "-c", probe])
        assert f"loaded: [] exit: {code}" in result.stderr, (args, result.stderr)


# --- one line and an exit code for every command -----------------------------------------------

EVERY_COMMAND = [
    ["init", "--domain", "x.test"],
    ["migrate"],
    ["user", "add", "--name", "U"],
    ["user", "list"],
    ["user", "password", "1", "--password", "long-enough-1"],
    ["app", "add", "--name", "A", "--url", "http://127.0.0.1:9/"],
    ["app", "install", "local.x.1"],
    ["app", "update", "local.x.1", "--name", "B"],
    ["app", "uninstall", "local.x.1"],
    ["app", "signing-secret", "local.x.1"],
    ["app", "list"],
    ["token", "local.x.1"],
    ["webhook", "add", "--user", "1"],
    ["send", "--from", "a|b", "--to", "+15550001111", "--text", "x"],
    ["send-bulk", "{csv}", "--from", "a|b"],
    ["messages", "list"],
    ["messages", "show", "1"],
    ["messages", "follow", "--timeout", "1"],
    ["replay", "--dead"],
    ["stats"],
    ["worker"],
    ["serve", "--port", "1"],
]


def _each_command(tmp_path: Path) -> Iterator[list[str]]:
    csv_file = tmp_path / "one.csv"
    csv_file.write_text("to,text\n+15550001111,x\n")
    for args in EVERY_COMMAND:
        yield [str(csv_file) if arg == "{csv}" else arg for arg in args]


def _refused_port() -> int:
    from tests.postgres import free_port

    return free_port()  # free a moment ago: nothing listens there


def test_unreachable_postgres_is_one_line_from_every_command(tmp_path: Path) -> None:
    port = _refused_port()
    env = {
        "MESSAGESERVICE_DATABASE_URL": f"postgresql://nobody:s3cret@127.0.0.1:{port}/none",
        "MESSAGESERVICE_DATA_DIR": str(tmp_path),
        "COLUMNS": WIDTH,
    }
    expected = f"error: cannot reach the database at postgresql://nobody@127.0.0.1:{port}/none (connection refused)"
    for args in _each_command(tmp_path):
        result = invoke(env, *args)
        assert result.returncode == 1, (args, result)
        assert result.stderr.strip().splitlines()[-1] == expected, (args, result.stderr)
        assert "s3cret" not in result.stderr + result.stdout
    # And as a real process: `user list` printed a traceback here.
    process = run_process(env, "user", "list")
    assert (process.returncode, process.stderr.strip()) == (1, expected)


def test_a_bad_setting_is_one_line_and_exit_2_from_every_command(tmp_path: Path) -> None:
    env = {
        "MESSAGESERVICE_DATABASE_URL": f"sqlite:///{tmp_path}/never.db",
        "MESSAGESERVICE_DATA_DIR": str(tmp_path),
        "MESSAGESERVICE_DB_MAX_CONNECTIONS": "abc",
        "COLUMNS": WIDTH,
    }
    for args in _each_command(tmp_path):
        result = invoke(env, *args)
        assert result.returncode == 2, (args, result)
        line = result.stderr.strip()
        assert line.startswith("error: MESSAGESERVICE_DB_MAX_CONNECTIONS: ") and "'abc'" in line, (args, line)
        assert "\n" not in line
    assert not (tmp_path / "never.db").exists()
    for args in (["serve", "--port", "1"], ["worker"]):
        process = run_process(env, *args)
        assert process.returncode == 2 and process.stderr.startswith("error: MESSAGESERVICE_DB_MAX_CONNECTIONS: "), (
            process
        )
        assert len(process.stderr.strip().splitlines()) == 1, process.stderr


def test_a_malformed_database_url_is_a_setting_error(tmp_path: Path) -> None:
    result = invoke({"MESSAGESERVICE_DATABASE_URL": "nosuch://x/y", "MESSAGESERVICE_DATA_DIR": str(tmp_path)}, "stats")
    assert result.returncode == 2 and result.stderr.startswith("error: MESSAGESERVICE_DATABASE_URL: ")


# --- the error mapping, without a database --------------------------------------------------------


def test_database_errors_name_the_database_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from asyncpg.exceptions import InvalidPasswordError
    from sqlalchemy.exc import OperationalError

    from messageservice.cli import errors
    from messageservice.store.errors import StoreError, StoreUnavailable

    monkeypatch.setattr(errors, "_database_url", "postgresql://ops:pa55@db.example:5433/ms")
    at = "the database at postgresql://ops@db.example:5433/ms"
    refused = ConnectionRefusedError(111, "Connect call failed")
    wrapped = OperationalError("SELECT 1", {}, refused)
    assert errors.describe(wrapped) == errors.Failure(f"cannot reach {at} (connection refused)", 1)
    try:
        raise StoreUnavailable("the database is read-only") from None
    except StoreUnavailable as exc:
        assert errors.describe(exc) == errors.Failure(f"cannot reach {at} (the database is read-only)", 1)
    try:
        raise StoreError("insert failed") from refused
    except StoreError as exc:
        assert errors.describe(exc) == errors.Failure(f"cannot reach {at} (connection refused)", 1)
    denied = InvalidPasswordError('password authentication failed for user "ops"')
    expected = f"database at postgresql://ops@db.example:5433/ms: InvalidPasswordError: {denied}"
    assert errors.describe(denied) == errors.Failure(expected, 1)
    assert errors.describe(TimeoutError()) == errors.Failure(f"cannot reach {at} (timed out)", 1)
    assert "pa55" not in repr([errors.describe(e) for e in (wrapped, denied)])


def test_other_errors_map_to_their_exit_codes() -> None:
    from messageservice.cli import errors
    from messageservice.config import SettingsError
    from messageservice.core.errors import CoreError
    from messageservice.core.tokens import OAuthError

    assert errors.describe(CoreError("ERROR_X", "Nope")) == errors.Failure("Nope", 1)
    assert errors.describe(OAuthError("invalid_client", "Unknown")) == errors.Failure("invalid_client: Unknown", 1)
    bad = SettingsError("MESSAGESERVICE_DELIVERY_PROFILE", "one of reliable, strict; got 'bogus'")
    assert errors.describe(bad) == errors.Failure(str(bad), 2)
    assert errors.describe(errors.InputError("not a phone number")) == errors.Failure("not a phone number", 2)
    denied = PermissionError(13, "Permission denied", "/srv/ms/secret.key")
    assert errors.describe(denied) == errors.Failure("Permission denied: /srv/ms/secret.key", 1)
    assert errors.describe(KeyError("a bug")) is None  # a bug keeps its traceback


def test_shown_url() -> None:
    from messageservice.cli.errors import shown_url

    assert shown_url("postgresql://u:p%40ss@[::1]:5432/db?x=1") == "postgresql://u@[::1]:5432/db?x=1"
    assert shown_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert shown_url("sqlite:///var/messageservice.db") == "sqlite:///var/messageservice.db"


def test_limits_repeated_in_the_cli_match_the_core() -> None:
    """The CLI repeats a few core limits to check input without loading the store; they must agree."""
    from messageservice.cli import acting, input, messages
    from messageservice.core import messages as core_messages
    from messageservice.core import stats

    assert input.MAX_BODY == core_messages.MAX_BODY
    assert acting.MAX_ID == core_messages.MAX_ID
    assert (messages.MIN_WINDOW, messages.MAX_WINDOW) == (stats.MIN_WINDOW, stats.MAX_WINDOW)
