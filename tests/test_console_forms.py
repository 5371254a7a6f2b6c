"""Bad input in every console form: a clear message on the page, no trace, nothing escaped wrongly,
and nothing changed in the database. Plain HTTP with a signed-in session (cookies, Origin, CSRF token),
in-process; the form cases, refused before any write, run once (`any_portal`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from messageservice.core.context import Core
from messageservice.store.tables import apps, messages, users, webhooks
from messageservice.store.tables import portal as portal_table
from tests.console_helpers import Admin, ConsoleClient, add_admin, add_sender
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver

SCRIPT = "<script>alert(1)</script>"
HUGE = "x" * 5000


@dataclass
class Signed:
    """A signed-in operator on a portal, with an app and a sender to name in forms."""

    portal: LivePortal
    admin: Admin
    client: ConsoleClient
    app: AppCredentials
    sender: str


def sign_in(portal: LivePortal, handler: Receiver) -> Signed:
    admin = add_admin(portal)
    app = portal.add_app(name="Forms app")
    return Signed(portal, admin, ConsoleClient(portal).login(admin), app, add_sender(portal, app, handler.url))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    """The senders' HANDLER (never called)."""
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture(scope="module")
def signed(portal: LivePortal, receiver: Receiver) -> Signed:
    return sign_in(portal, receiver)


@pytest.fixture(scope="module")
def any_signed(any_portal: LivePortal, receiver: Receiver) -> Signed:
    """Form validation does not depend on the engine: the bad-input cases run once."""
    return sign_in(any_portal, receiver)


@pytest.fixture(scope="module")
def admin(signed: Signed) -> Admin:
    return signed.admin


@pytest.fixture(scope="module")
def client(signed: Signed) -> ConsoleClient:
    return signed.client


@pytest.fixture(scope="module")
def app(signed: Signed) -> AppCredentials:
    return signed.app


@pytest.fixture(scope="module")
def sender(signed: Signed) -> str:
    return signed.sender


def snapshot(portal: LivePortal) -> dict[str, Any]:
    """Everything a console form could change."""

    async def read(core: Core) -> dict[str, Any]:
        async with core.engine.connect() as conn:
            return {
                "apps": [tuple(r) for r in (await conn.execute(select(apps).order_by(apps.c.id))).all()],
                "users": [tuple(r) for r in (await conn.execute(select(users).order_by(users.c.id))).all()],
                "webhooks": [tuple(r) for r in (await conn.execute(select(webhooks).order_by(webhooks.c.id))).all()],
                "messages": (await conn.execute(select(func.count()).select_from(messages))).scalar_one(),
                "portal": tuple((await conn.execute(select(portal_table))).one()),
            }

    return portal.run(read)


def cases(sender_placeholder: str = "{sender}") -> list[tuple[str, dict[str, str], str]]:
    crm = {"mode": "crm", "sender": sender_placeholder, "recipient": "+15550100000", "text": "hi", "owner_type": "2"}
    bizproc = {**crm, "mode": "bizproc", "workflow_id": "w1"}
    for i in range(3):
        bizproc[f"document_id_{i}"] = "crm"
        bizproc[f"document_type_{i}"] = "crm"
    return [
        # The send form.
        ("/send", {"mode": "crm"}, "Sender is required."),
        ("/send", {**crm, "mode": "sql"}, "Send as: choose one of the offered values."),
        ("/send", {**crm, "sender": "local.nope|x"}, "Sender: choose one of the offered senders."),
        ("/send", {**crm, "recipient": ""}, "Recipient is required."),
        ("/send", {**crm, "recipient": SCRIPT}, "Recipient must not contain HTML tags."),
        ("/send", {**crm, "recipient": "1" * 300}, "Recipient is too long"),
        ("/send", {**crm, "text": "   "}, "Text is required."),
        ("/send", {**crm, "text": "y" * 70_000}, "Text is too long (at most 65535 characters)."),
        ("/send", {**crm, "owner_id": "abc"}, "Entity id must be a whole number."),
        ("/send", {**crm, "owner_id": ""}, "Entity id is required."),
        ("/send", {**crm, "owner_id": "0"}, "Entity id must be between 1 and"),
        ("/send", {**crm, "owner_id": "1", "owner_type": "99"}, "Bound to: choose one of the offered values."),
        ("/send", {**bizproc, "workflow_id": ""}, "Workflow id is required."),
        ("/send", {**bizproc, "document_id_2": ""}, "Document id part 3 is required."),
        ("/send", {**bizproc, "document_type_1": SCRIPT}, "Document type part 2 must not contain HTML tags."),
        # Apps.
        ("/apps", {"name": "", "url": "http://127.0.0.1:9/", "scopes": "messageservice"}, "Name is required."),
        ("/apps", {"name": HUGE, "url": "http://127.0.0.1:9/", "scopes": "x"}, "Name is too long"),
        ("/apps", {"name": SCRIPT, "url": "http://127.0.0.1:9/", "scopes": "x"}, "Name must not contain HTML tags."),
        ("/apps", {"name": "A", "url": "javascript:alert(1)", "scopes": "x"}, "app URL must be an http(s) URL"),
        ("/apps", {"name": "A", "url": "http://127.0.0.1:9/", "scopes": "a b"}, "invalid scope name"),
        ("/apps", {"name": "A", "url": "http://127.0.0.1:9/", "scopes": ""}, "Scopes is required."),
        ("/apps/{client_id}/update", {"version": "two"}, "Version must be a whole number."),
        ("/apps/{client_id}/update", {"version": "1"}, "version must be greater than 1"),
        ("/apps/{client_id}/update", {"name": SCRIPT}, "Name must not contain HTML tags."),
        ("/apps/{client_id}/update", {"url": "ftp://x.example/"}, "app URL must be an http(s) URL"),
        ("/apps/{client_id}/update", {}, "nothing to update"),
        ("/apps/{client_id}/token", {"user_id": "me"}, "User must be a whole number."),
        ("/apps/{client_id}/token", {"user_id": "999999"}, "User 999999 does not exist or is inactive"),
        ("/apps/{client_id}/signing-secret", {"do": "explode"}, "Signing secret: choose one of the offered values."),
        # Portal.
        ("/portal/user-add", {"name": ""}, "Name is required."),
        ("/portal/user-add", {"name": HUGE}, "Name is too long"),
        ("/portal/user-add", {"name": SCRIPT}, "Name must not contain HTML tags."),
        ("/portal/user-add", {"name": "Eve", "last_name": "a\nb"}, "Last name must be one line"),
        ("/portal/user-flags", {"user_id": "x"}, "User must be a whole number."),
        ("/portal/user-flags", {"user_id": "99999999999999999999"}, "User must be between 1 and"),
        ("/portal/user-flags", {"user_id": "{self}"}, "You cannot take away your own admin rights"),
        ("/portal/user-flags", {"user_id": "999999", "admin": "on", "active": "on"}, "There is no such user."),
        ("/portal/user-password", {"user_id": "{self}", "password": "short"}, "at least 8 characters"),
        ("/portal/user-password", {"user_id": "{self}", "password": "p" * 2000}, "Password is too long"),
        ("/portal/user-password", {"user_id": "{self}", "login": SCRIPT, "password": "longenough"}, "must not contain"),
        ("/portal/user-password", {"user_id": "{self}", "login": "a b", "password": "longenough"}, "A login has"),
        ("/portal/user-password", {"user_id": "999999", "password": "longenough"}, "user 999999 does not exist"),
        ("/portal/webhook-add", {"user_id": "1", "scopes": SCRIPT}, "Scopes must not contain HTML tags."),
        ("/portal/webhook-add", {"user_id": "999999", "scopes": "messageservice"}, "user 999999 does not exist"),
        ("/portal/webhook-add", {"user_id": "", "scopes": "messageservice"}, "User is required."),
        ("/portal/webhook-active", {"webhook_id": "abc"}, "Webhook must be a whole number."),
        ("/portal/public-url", {"public_url": "javascript:alert(1)"}, "Public URL must be an http(s) URL"),
        ("/portal/public-url", {"public_url": ""}, "Public URL is required."),
        ("/portal/public-url", {"public_url": "http://" + SCRIPT}, "Public URL must not contain HTML tags."),
    ]


@pytest.mark.parametrize(("path", "data", "expected"), cases(), ids=lambda v: str(v)[:40] if isinstance(v, str) else "")
def test_bad_input_is_explained_and_changes_nothing(
    any_signed: Signed, path: str, data: dict[str, str], expected: str
) -> None:
    portal, client, admin, app, sender = (
        any_signed.portal,
        any_signed.client,
        any_signed.admin,
        any_signed.app,
        any_signed.sender,
    )
    filled = {k: v.replace("{sender}", sender).replace("{self}", str(admin.user_id)) for k, v in data.items()}
    before = snapshot(portal)
    answer = client.post(path.replace("{client_id}", app.client_id), filled)
    assert answer.status_code == 400, answer.text[:300]
    assert expected in answer.text.replace("&#39;", "'"), answer.text[-2000:]
    assert "Traceback" not in answer.text
    assert SCRIPT not in answer.text  # typed markup comes back escaped, if at all
    assert snapshot(portal) == before


def test_forms_that_cannot_be_read_are_refused(portal: LivePortal, client: ConsoleClient) -> None:
    before = snapshot(portal)
    token = client.csrf("/send")
    too_big = client.http.post(
        client.url("/portal/user-add"), data={"csrf": token, "name": "x" * 2_000_000}, timeout=30
    )
    assert too_big.status_code == 400 and "The form is too large." in too_big.text
    not_utf8 = client.http.post(
        client.url("/portal/user-add"),
        data=f"csrf={token}&name=%ff%fe".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert not_utf8.status_code == 400 and "could not be read" in not_utf8.text
    as_json = client.http.post(client.url("/portal/user-add"), json={"csrf": token, "name": "J"}, timeout=30)
    assert as_json.status_code == 400 and "application/x-www-form-urlencoded" in as_json.text
    twice = client.http.post(
        client.url("/portal/user-add"), data=[("csrf", token), ("name", "A"), ("name", "B")], timeout=30
    )
    assert twice.status_code == 400 and "give one value only" in twice.text
    assert snapshot(portal) == before


def test_unknown_pages_and_records_are_plain_404s(client: ConsoleClient) -> None:
    for path in (
        "/nope",
        "/messages/999999999",
        "/messages/99999999999",
        "/messages/abc",
        "/apps/local.nope.1",
        f"/apps/{uuid.uuid4()}",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "Traceback" not in answer.text and 'id="error-message"' in answer.text
    assert client.post("/apps/local.nope.1/install", {}).status_code == 404
    assert client.post("/portal/explode", {}).status_code == 404
    replay = client.post("/messages/99999999999/replay", {})
    assert replay.status_code == 200 and "Nothing to replay" in replay.text


def test_replay_and_retry_of_a_message_that_cannot_are_explained(
    portal: LivePortal, client: ConsoleClient, app: AppCredentials, sender: str
) -> None:
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550100001", "MESSAGE_BODY": "fine"},
        token=app.access_token,
    ).json()
    message_id = answer["result"]["ID"]
    replayed = client.post(f"/messages/{message_id}/replay", {})
    assert replayed.status_code == 200 and "Nothing to replay" in replayed.text
    retried = client.post(f"/messages/{message_id}/retry", {})
    assert retried.status_code == 200 and "Nothing to retry now" in retried.text
