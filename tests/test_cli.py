"""The scripting contract: `messageservice` commands against a live portal's database, with --json."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, text

from messageservice.core.context import Core
from messageservice.store.tables import app_events
from tests.portal import LivePortal
from tests.receiver import Receiver

COMMAND = [sys.executable, "-m", "messageservice.cli"]
HANDLER = "http://127.0.0.1:9000/handler"


def ms(portal: LivePortal, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*COMMAND, *args], env=portal.env, capture_output=True, text=True, timeout=120, cwd=portal.settings.data_dir
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def ms_json(portal: LivePortal, *args: str) -> Any:
    return json.loads(ms(portal, *args, "--json").stdout)


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
