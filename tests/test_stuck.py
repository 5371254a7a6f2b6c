"""Stuck messages: the HANDLER accepted them but no final status came in the sender's time (core/stuck.py).

A real HANDLER on a loopback port accepts every message; one provider reports nothing that counts (its
report omits CODE, so the message stays "sent"), the other reports "delivered". Time is moved by asking
the core at a later `now` (its clock), and for the CLI and the console, which read the real clock, by
dating the accepted messages back: nothing here sleeps.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from messageservice.config import Settings, SettingsError
from messageservice.core.context import Core
from messageservice.core.stuck import (
    set_stuck_after,
    shortest_after,
    stuck_counts,
    stuck_per_sender,
    stuck_per_sender_id,
)
from messageservice.store.tables import deliveries, messages, senders
from tests.console_helpers import ConsoleClient, add_admin
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver
from tests.test_cli import invoke, portal_env
from tests.test_messages import get, handler_url, send, settled
from tests.test_metrics import of, parse, scrape

SHORT = 30.0  # the sender's own time in these tests, in seconds


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def app(local_portal: LivePortal) -> AppCredentials:
    return local_portal.add_app()


def register(portal: LivePortal, app: AppCredentials, url: str) -> tuple[str, str]:
    code = "s" + uuid.uuid4().hex[:8]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": url, "NAME": "Provider"}
    response = portal.call("messageservice.sender.add", params, token=app.access_token)
    assert response.status_code == 200, response.text
    return f"{app.client_id}|{code}", code


def report(portal: LivePortal, app: AppCredentials, params: dict[str, Any]) -> Any:
    return portal.call("messageservice.message.status.update", params, token=app.access_token).json()


def date_back(portal: LivePortal, ids: list[int], seconds: float) -> None:
    """As if the HANDLER had accepted these messages (and they became "sent") `seconds` earlier."""

    async def work(core: Core) -> None:
        async with core.store.transaction() as conn:
            await conn.execute(
                update(messages).where(messages.c.id.in_(ids)).values(updated_at=messages.c.updated_at - seconds)
            )
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id.in_(ids))
                .values(next_attempt_at=deliveries.c.next_attempt_at - seconds)
            )

    portal.run(work)


def cli(portal: LivePortal, *args: str, code: int = 0) -> Any:
    result = invoke(portal_env(portal), *args)
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


@pytest.fixture
def accepted(local_portal: LivePortal, app: AppCredentials, handler: Receiver) -> dict[str, Any]:
    """Two senders, each with one message the HANDLER accepted: one never gets a final status, one is delivered."""
    silent_from, silent_code = register(local_portal, app, handler_url(handler))
    honest_from, honest_code = register(local_portal, app, handler_url(handler))
    silent = send(local_portal, app.access_token, silent_from)
    honest = send(local_portal, app.access_token, honest_from)
    for sent in (silent, honest):
        assert settled(local_portal, app.access_token, sent["ID"])["DELIVERY"]["STATE"] == "done"
    # The silent provider's report omits CODE: refused, so its message stays "sent".
    refused = report(local_portal, app, {"MESSAGE_ID": silent["MESSAGE_ID"], "STATUS": "delivered"})
    assert refused["error"] == "ERROR_SENDER_VALIDATION_FAILURE"
    answer = report(local_portal, app, {"CODE": honest_code, "MESSAGE_ID": honest["MESSAGE_ID"], "STATUS": "delivered"})
    assert answer["result"] is True
    assert get(local_portal, app.access_token, silent["ID"])["STATUS"] == "sent"
    assert get(local_portal, app.access_token, honest["ID"])["STATUS"] == "delivered"
    return {
        "silent": silent,
        "honest": honest,
        "silent_from": silent_from,
        "honest_from": honest_from,
        "silent_code": silent_code,
        "honest_code": honest_code,
    }


def test_the_core_counts_a_message_stuck_once_the_senders_time_has_passed(
    local_portal: LivePortal, app: AppCredentials, accepted: dict[str, Any]
) -> None:
    silent_from, honest_from = accepted["silent_from"], accepted["honest_from"]
    for message_from in (silent_from, honest_from):
        client_id, _, code = message_from.partition("|")
        assert local_portal.run(lambda core, c=client_id, s=code: set_stuck_after(core, c, s, SHORT))

    def counts(later: float) -> dict[str, int]:
        async def work(core: Core) -> dict[str, int]:
            return await stuck_per_sender(core, core.clock() + later)

        found = local_portal.run(work)
        return {k: v for k, v in found.items() if k in (silent_from, honest_from)}

    assert counts(0) == {}  # accepted just now
    assert counts(SHORT - 5) == {}
    assert counts(SHORT + 5) == {silent_from: 1}  # the delivered one never
    assert counts(10 * 86400) == {silent_from: 1}

    # Back to the setting (an hour by default): not stuck after the sender's short time any more.
    client_id, _, code = silent_from.partition("|")
    assert local_portal.run(lambda core: set_stuck_after(core, client_id, code, None))
    assert counts(SHORT + 5) == {}
    assert counts(local_portal.settings.stuck_after_seconds + 5) == {silent_from: 1}
    # 0: this sender's messages are never stuck.
    assert local_portal.run(lambda core: set_stuck_after(core, client_id, code, 0))
    assert counts(10 * 86400) == {}


def test_a_message_still_waiting_for_its_handler_is_not_stuck(
    local_portal: LivePortal, app: AppCredentials, handler: Receiver
) -> None:
    """Only what the HANDLER accepted: a message the HANDLER refused (and that waits to retry) is not."""
    handler.status = 503
    message_from, code = register(local_portal, app, handler_url(handler))
    client_id = app.client_id
    assert local_portal.run(lambda core: set_stuck_after(core, client_id, code, SHORT))
    sent = send(local_portal, app.access_token, message_from)
    # The provider says "sent" itself while its HANDLER keeps failing: sent, but not accepted.
    report(local_portal, app, {"CODE": code, "MESSAGE_ID": sent["MESSAGE_ID"], "STATUS": "sent"})
    assert get(local_portal, app.access_token, sent["ID"])["STATUS"] == "sent"
    date_back(local_portal, [sent["ID"]], 10 * SHORT)

    async def work(core: Core) -> list[Any]:
        return [c for c in await stuck_counts(core, core.clock() + 10 * SHORT) if c.message_from == message_from]

    found = local_portal.run(work)
    state = get(local_portal, app.access_token, sent["ID"])["DELIVERY"]["STATE"]
    assert state in ("pending", "dead") and found == []


def test_stuck_messages_in_the_cli_the_console_and_the_providers_page(
    local_portal: LivePortal, app: AppCredentials, accepted: dict[str, Any]
) -> None:
    silent, honest = accepted["silent"], accepted["honest"]
    silent_from, honest_from = accepted["silent_from"], accepted["honest_from"]
    for message_from in (silent_from, honest_from):
        shown = cli(local_portal, "senders", "stuck-after", message_from, str(SHORT), "--json")
        assert '"stuck_after_seconds": 30.0' in shown.stdout and '"own": true' in shown.stdout

    def cli_stuck(sender: str) -> list[int]:
        import json

        listed = json.loads(cli(local_portal, "messages", "list", "--stuck", "--sender", sender, "--json").stdout)
        return [m["ID"] for m in listed["messages"]]

    # Accepted a moment ago: nothing is stuck yet.
    assert cli_stuck(silent_from) == [] and cli_stuck(honest_from) == []

    date_back(local_portal, [silent["ID"], honest["ID"]], SHORT + 5)

    assert cli_stuck(silent_from) == [silent["ID"]]
    assert cli_stuck(honest_from) == []
    text = cli(local_portal, "messages", "list", "--stuck", "--sender", honest_from).stdout
    assert "no stuck messages" in text

    # The metrics' function, per sender key.
    found = local_portal.run(stuck_per_sender)
    assert found.get(silent_from) == 1 and honest_from not in found
    gauge = of(parse(scrape(local_portal).text), "messageservice_stuck_messages")
    assert gauge == {frozenset({("sender", silent_from)}): 1.0}

    console = ConsoleClient(local_portal).login(add_admin(local_portal))
    page = console.get("/messages", params={"stuck": "1", "sender": silent_from})
    assert page.status_code == 200
    assert f'/messages/{silent["ID"]}"' in page.text
    assert re.search(r'<input type="checkbox" name="stuck" value="1"\s+checked>', page.text)  # the box stays ticked
    page = console.get("/messages", params={"stuck": "1", "sender": honest_from})
    assert f'/messages/{honest["ID"]}"' not in page.text and "No messages match." in page.text
    # Without the filter the delivered one is listed: the filter, not the sender, left it out.
    assert f'/messages/{honest["ID"]}"' in console.get("/messages", params={"sender": honest_from}).text

    providers = console.get("/providers")
    assert providers.status_code == 200
    assert stuck_cell(providers.text, accepted["silent_code"]) == "1"
    assert stuck_cell(providers.text, accepted["honest_code"]) == "0"
    ids = local_portal.run(stuck_per_sender_id)
    sender_ids = local_portal.run(lambda core: sender_id_of(core, accepted["silent_code"]))
    assert ids.get(sender_ids) == 1


async def sender_id_of(core: Core, code: str) -> int:
    from sqlalchemy import select

    async with core.store.connection() as conn:
        return int((await conn.execute(select(senders.c.id).where(senders.c.code == code))).scalar_one())


def stuck_cell(html: str, code: str) -> str:
    """The Stuck column of the Providers row of sender `code`: the count, linked when it is not 0."""
    row = re.search(rf"<tr>\s*<td>{code}</td>.*?</tr>", html, re.S)
    assert row is not None, code
    cell = re.search(r'<td class="stuck" title="after 30 s">(?:<a href="[^"]*">)?(\d+)(?:</a>)?</td>', row.group(0))
    assert cell is not None, row.group(0)
    return cell.group(1)


def test_senders_stuck_after_refuses_what_it_cannot_use(local_portal: LivePortal, app: AppCredentials) -> None:
    missing = f"{app.client_id}|nosuch{uuid.uuid4().hex[:6]}"
    assert "no sender" in cli(local_portal, "senders", "stuck-after", missing, code=2).stderr
    assert "not a sender" in cli(local_portal, "senders", "stuck-after", "nobar", "5", code=2).stderr
    assert "not a number" in cli(local_portal, "senders", "stuck-after", missing, "soon", code=2).stderr
    assert "from 0 to" in cli(local_portal, "senders", "stuck-after", missing, "1e12", code=2).stderr


@pytest.mark.parametrize("bad", [-1, 366 * 86400 + 1, "soon"])
def test_the_setting_is_checked_at_start(bad: object) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(stuck_after_seconds=bad, _env_file=None)  # type: ignore[call-arg]
    assert caught.value.variable == "MESSAGESERVICE_STUCK_AFTER_SECONDS"


def test_the_setting_defaults_to_an_hour_and_zero_switches_it_off() -> None:
    assert Settings(_env_file=None).stuck_after_seconds == 3600  # type: ignore[call-arg]
    assert Settings(stuck_after_seconds=0, _env_file=None).stuck_after_seconds == 0  # type: ignore[call-arg]


# --- the rule itself, without a server: every case on a bare SQLite database, at a chosen `now` ---------------


def stuck_ids(rows: list[dict[str, Any]], now: float, default_after: float) -> set[int]:
    """Which of these (message, delivery, sender time) rows the rule calls stuck at `now`."""
    from sqlalchemy import create_engine, insert, select

    from messageservice.core.stuck import condition
    from messageservice.store.tables import apps, metadata

    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        app = {"id": 1, "client_id": "c", "client_secret_hash": "h", "name": "a", "url": "u", "scopes": ""}
        conn.execute(insert(apps), {**app, "created_at": 0})
        for row in rows:
            sender_id = None
            if row.get("own", "none") != "deleted":
                sender_id = conn.execute(
                    insert(senders).returning(senders.c.id),
                    {
                        "app_id": 1,
                        "code": f"s{row['id']}",
                        "type": "SMS",
                        "handler": "h",
                        "stuck_after_seconds": row.get("own") if row.get("own") != "none" else None,
                        "author_id": 1,
                        "created_at": 0,
                        "updated_at": 0,
                    },
                ).scalar_one()
            conn.execute(
                insert(messages),
                {
                    "id": row["id"],
                    "message_id": f"{row['id']:032x}",
                    "app_id": 1,
                    "sender_id": sender_id,
                    "sender_code": "s",
                    "message_from": "c|s",
                    "author_id": 1,
                    "module_id": "crm",
                    "headers": "{}",
                    "message_to": "1",
                    "message_body": "b",
                    "status_id": row["status"],
                    "created_at": 0,
                    "updated_at": row["sent_at"],
                },
            )
            conn.execute(
                insert(deliveries),
                {
                    "message_id": row["id"],
                    "state": row["delivery"],
                    "attempts": 1,
                    "next_attempt_at": row["accepted_at"],
                    "created_at": 0,
                },
            )
        found = set(conn.execute(select(messages.c.id).where(condition(now, default_after))).scalars())
    engine.dispose()
    return found


def test_the_rule_case_by_case() -> None:
    sent, delivered, undelivered, failed, error = 13, 14, 15, 16, 1
    base = {"status": sent, "delivery": "done", "sent_at": 100.0, "accepted_at": 100.0}
    rows = [
        {"id": 1, **base},  # sent and accepted long ago: stuck (the setting's 50 s)
        {"id": 2, **base, "status": delivered},
        {"id": 3, **base, "status": undelivered},
        {"id": 4, **base, "status": failed},
        {"id": 5, **base, "status": error},  # the dispatcher gave up: dead, not stuck
        {"id": 6, **base, "delivery": "pending"},  # "sent" by the provider, HANDLER not done yet
        {"id": 7, **base, "delivery": "dead"},
        {"id": 8, **base, "accepted_at": 190.0},  # the HANDLER accepted it 10 s ago
        {"id": 9, **base, "sent_at": 190.0},  # became "sent" 10 s ago
        {"id": 10, **base, "own": 200.0},  # its sender waits longer
        {"id": 11, **base, "own": 5.0, "accepted_at": 190.0},  # its sender waits 5 s: stuck
        {"id": 12, **base, "own": 0.0},  # its sender's messages are never stuck
        {"id": 13, **base, "own": "deleted"},  # the sender is gone: the setting applies
    ]
    assert stuck_ids(rows, now=200.0, default_after=50.0) == {1, 11, 13}
    assert stuck_ids(rows, now=149.0, default_after=50.0) == set()  # 49 s after: not yet
    assert stuck_ids(rows, now=200.0, default_after=0.0) == {11}  # the setting off; a sender's own time still counts


@pytest.mark.parametrize(
    ("shortest_own", "default_after", "expected"),
    [
        (None, 3600.0, 3600.0),  # no sender has its own time: the default
        (600.0, 3600.0, 600.0),  # a sender's own, shorter time
        (7200.0, 3600.0, 3600.0),  # the default is shorter (senders without their own use it)
        (600.0, 0.0, 600.0),  # the default is off: only that sender's messages can be stuck
        (None, 0.0, None),  # nobody's messages can be stuck: nothing to read
    ],
)
def test_only_messages_sent_longer_ago_than_the_shortest_stuck_time_are_read(
    shortest_own: float | None, default_after: float, expected: float | None
) -> None:
    assert shortest_after(shortest_own, default_after) == expected
