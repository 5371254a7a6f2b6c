"""The console's own core reads and actions, on SQLite and PostgreSQL (portals in-process)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from messageservice.core import console_queries as queries
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.logins import authenticate, current_operator, ensure_admin_login, set_password
from messageservice.store.tables import deliveries, users
from tests.console_helpers import add_sender
from tests.portal import AppCredentials, LivePortal, open_fresh_portal
from tests.receiver import Receiver, Reply


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, in-process."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=True)


@pytest.fixture
def handler() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def send(portal: LivePortal, app: AppCredentials, sender: str, to: str, body: str) -> int:
    answer = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": to, "MESSAGE_BODY": body},
        token=app.access_token,
    ).json()
    return int(answer["result"]["ID"])


def search(portal: LivePortal, page: int = 1, **chosen: object) -> queries.MessagePage:
    return portal.run(lambda core: queries.search_messages(core, queries.MessageFilter(**chosen), page))  # type: ignore[arg-type]


def test_search_filters_combine(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    code = sender.split("|")[1]
    marker = uuid.uuid4().hex[:8]
    first = send(portal, app, sender, "+1 555 010 7001", f"Hello {marker} 100% off_now")
    second = send(portal, app, sender, "+15550107002", f"hello {marker} plain")
    assert [r.id for r in search(portal, text=marker).rows] == [second, first]
    assert [r.id for r in search(portal, text=marker.upper()).rows] == [second, first]  # any case
    # LIKE's wildcards are taken literally.
    assert [r.id for r in search(portal, text=f"{marker} 100%").rows] == [first]
    assert [r.id for r in search(portal, text="100%_off").rows] == []
    assert [r.id for r in search(portal, text="off_now").rows] == [first]
    assert [r.id for r in search(portal, text=marker, recipient="7002").rows] == [second]
    assert [r.id for r in search(portal, text=marker, recipient="+1 555 010 7001").rows] == [first]
    assert [r.id for r in search(portal, sender=sender).rows] == [second, first]
    assert [r.id for r in search(portal, sender=code).rows] == [second, first]
    assert search(portal, sender=sender + "x").total == 0
    handler.wait_for(2)
    deadline = time.time() + 20
    while time.time() < deadline and search(portal, sender=sender, delivery="done").total < 2:
        time.sleep(0.1)
    assert search(portal, sender=sender, delivery="done").total == 2
    assert search(portal, sender=sender, delivery="pending").total == 0
    assert search(portal, sender=sender, status="sent").total == 2
    assert search(portal, sender=sender, status="delivered").total == 0
    now = time.time()
    assert search(portal, sender=sender, since=now - 600, until=now + 600).total == 2
    assert search(portal, sender=sender, since=now + 600).total == 0
    row = search(portal, text=marker).rows[-1]
    assert row.message_to == "+15550107001" and row.status == "sent" and row.attempts == 1


def test_search_pages(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    ids = [send(portal, app, sender, "+15550107003", f"page {i}") for i in range(queries.PAGE_SIZE + 3)]
    first = search(portal, 1, sender=sender)
    assert first.total == len(ids) and first.pages == 2 and [r.id for r in first.rows] == ids[::-1][: queries.PAGE_SIZE]
    second = search(portal, 2, sender=sender)
    assert [r.id for r in second.rows] == ids[::-1][queries.PAGE_SIZE :]
    assert search(portal, 99, sender=sender).page == 2  # past the end: the last page


def test_handler_call_rebuilds_the_body(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    message_id = send(portal, app, sender, "+15550107004", "exact & body = yes")
    received = handler.wait_for(1)[0].form
    url, fields, body = portal.run(lambda core: queries.handler_call(core, message_id))  # type: ignore[misc]
    assert url == handler.url
    shown = dict(fields)
    for key, value in received.items():
        if key in ("auth[access_token]", "auth[application_token]", "auth[expires]"):
            continue
        assert shown[key] == value, key
    assert [k for k, _ in fields] == list(received)  # same fields, same order
    assert shown["auth[access_token]"] == queries.NOT_KEPT and received["auth[access_token]"] not in body
    assert shown["auth[application_token]"] == queries.SECRET and app.application_token not in body
    assert portal.run(lambda core: queries.handler_call(core, 10**12)) is None


def test_retry_now_only_for_a_waiting_retry(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    handler.script = [Reply(503, (("Retry-After", "3600"),))]
    message_id = send(portal, app, sender, "+15550107005", "wait")
    handler.wait_for(1)

    async def next_at(core: Core) -> float:
        async with core.engine.connect() as conn:
            return float(
                (
                    await conn.execute(
                        select(deliveries.c.next_attempt_at).where(deliveries.c.message_id == message_id)
                    )
                ).scalar_one()
            )

    deadline = time.time() + 20
    while time.time() < deadline and portal.run(next_at) < time.time() + 1000:
        time.sleep(0.05)
    assert portal.run(next_at) > time.time() + 1000
    assert portal.run(lambda core: queries.retry_now(core, message_id)) is True
    assert len(handler.wait_for(2)) == 2
    # Done now: nothing to retry.
    deadline = time.time() + 20
    while time.time() < deadline and search(portal, sender=sender, delivery="done").total < 1:
        time.sleep(0.05)
    assert portal.run(lambda core: queries.retry_now(core, message_id)) is False
    assert portal.run(lambda core: queries.retry_now(core, 10**12)) is False


def test_in_flight_job_is_not_retried_early(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    release = threading.Event()
    handler.script = [Reply(200, hold=release)]  # the call is still running while we ask
    try:
        message_id = send(portal, app, sender, "+15550107006", "slow")
        handler.wait_for(1)
        assert portal.run(lambda core: queries.retry_now(core, message_id)) is False
    finally:
        release.set()


def test_sender_choices_only_installed_apps(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app(name="Chooser")
    sender = add_sender(portal, app, handler.url)
    choices = {c.message_from: c.label for c in portal.run(queries.sender_choices)}
    assert choices[sender] == f"Chooser: {sender.split('|')[1]}"

    from messageservice.core.apps import uninstall_app

    portal.run(lambda core: uninstall_app(core, app.client_id))
    assert sender not in {c.message_from for c in portal.run(queries.sender_choices)}


def test_reset_client_secret(portal: LivePortal) -> None:
    app = portal.add_app()
    secret = portal.run(lambda core: queries.reset_client_secret(core, app.client_id))
    assert secret and secret != app.client_secret
    old = portal.session.get(
        portal.base_url + "/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "refresh_token": app.refresh_token,
        },
        timeout=30,
    )
    assert old.status_code in (400, 401)
    new = portal.session.get(
        portal.base_url + "/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": secret,
            "refresh_token": app.refresh_token,
        },
        timeout=30,
    )
    assert new.status_code == 200 and new.json()["access_token"]
    assert portal.run(lambda core: queries.reset_client_secret(core, "local.nope.1")) is None


def test_webhooks_and_user_flags(portal: LivePortal) -> None:
    user_id = portal.add_user("Hooky")
    url = portal.add_webhook(user_id)
    hook = next(w for w in portal.run(queries.list_webhooks) if w.user_id == user_id)
    assert hook.user_name == "Hooky" and hook.active
    assert portal.run(lambda core: queries.set_webhook_active(core, hook.id, False))
    assert portal.session.get(url + "profile.json", timeout=30).status_code == 401
    assert portal.run(lambda core: queries.set_webhook_active(core, hook.id, True))
    assert portal.session.get(url + "profile.json", timeout=30).status_code == 200
    assert not portal.run(lambda core: queries.set_webhook_active(core, 10**9, True))
    assert portal.run(lambda core: queries.set_user_flags(core, user_id, is_admin=True, active=False))
    assert portal.session.get(url + "profile.json", timeout=30).status_code == 401


def test_passwords_and_who_may_sign_in(portal: LivePortal) -> None:
    user_id = portal.add_user("Signer", admin=True)
    login = f"signer{uuid.uuid4().hex[:6]}"
    portal.run(lambda core: set_password(core, user_id, "first-password", login=login))
    operator = portal.run(lambda core: authenticate(core, login, "first-password"))
    assert operator is not None and operator.id == user_id
    assert portal.run(lambda core: authenticate(core, login, "wrong-password")) is None
    assert portal.run(lambda core: authenticate(core, "nobody-" + login, "first-password")) is None
    assert portal.run(lambda core: current_operator(core, user_id, operator.stamp)) is not None

    async def stored(core: Core) -> str:
        async with core.engine.connect() as conn:
            return str((await conn.execute(select(users.c.password_hash).where(users.c.id == user_id))).scalar_one())

    assert "first-password" not in portal.run(stored) and portal.run(stored).startswith("scrypt$")
    with pytest.raises(CoreError, match="taken"):
        other = portal.add_user("Other", admin=True)
        portal.run(lambda core: set_password(core, other, "other-password", login=login))

    async def demote(core: Core) -> None:
        async with core.engine.begin() as conn:
            await conn.execute(update(users).where(users.c.id == user_id).values(is_admin=False))

    portal.run(demote)
    assert portal.run(lambda core: authenticate(core, login, "first-password")) is None
    assert portal.run(lambda core: current_operator(core, user_id, operator.stamp)) is None


def test_init_gives_the_admin_a_login_once(fresh_portal: LivePortal) -> None:
    password = fresh_portal.run(lambda core: ensure_admin_login(core, None))
    assert password and len(password) >= 16
    assert fresh_portal.run(lambda core: authenticate(core, "admin", password)) is not None
    assert fresh_portal.run(lambda core: ensure_admin_login(core, "another-one")) is None  # not changed again
    assert fresh_portal.run(lambda core: authenticate(core, "admin", password)) is not None
