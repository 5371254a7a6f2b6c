"""Console sign-in over plain HTTP: who may sign in, the brake on guessing, sessions, CSRF and Origin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from messageservice.console import auth as console_auth
from messageservice.core.logins import (
    ACCOUNT_RULE,
    FORGET_SECONDS,
    SPREAD_RULE,
    BrakeRule,
    LoginBrake,
    MemoryBrakeStore,
)
from messageservice.core.passwords import hash_password, password_matches
from messageservice.store.db import migrate
from messageservice.store.limits import DatabaseBrakeStore
from messageservice.store.store import Store
from tests.conftest import SIGN_IN_FAILURE_DELAY, new_database_url
from tests.console_helpers import CSRF_FIELD, ConsoleClient, add_admin
from tests.portal import AppCredentials, LivePortal


def test_password_hash_is_salted_scrypt() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first.startswith("scrypt$") and first != second
    assert "correct horse" not in first
    assert password_matches("correct horse", first)
    assert not password_matches("correct hors", first)
    assert not password_matches("x", "garbage") and not password_matches("x", None)


def test_pages_need_a_session(portal: LivePortal) -> None:
    client = ConsoleClient(portal)
    for path in ("/", "/messages", "/send", "/apps", "/providers", "/portal", "/messages/1"):
        answer = client.get(path, allow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/login?next=")
    assert client.get("/stats.json").status_code == 401


def test_admin_signs_in_and_out(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    cookie = next(c for c in client.http.cookies if c.name == "messageservice_console")
    assert cookie.path == "/"
    assert cookie.has_nonstandard_attr("HttpOnly") or "httponly" in str(cookie._rest).lower()
    page = client.get("/messages")
    assert page.status_code == 200 and admin.login in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    client.post("/logout", {})
    assert client.get("/messages", allow_redirects=False).status_code == 303


def test_wrong_password_non_admin_and_inactive_are_refused(portal: LivePortal, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console_auth, "FAILURE_DELAY_SECONDS", SIGN_IN_FAILURE_DELAY)  # the product's pause
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    token = client.csrf()
    started = time.monotonic()
    wrong = client.http.post(
        client.url("/login"), data={"csrf": token, "login": admin.login, "password": "nope"}, timeout=30
    )
    assert wrong.status_code == 401 and "Wrong login or password" in wrong.text
    assert time.monotonic() - started >= 0.4  # failures are slowed down
    clerk = add_admin(portal, admin=False)
    answer = client.http.post(
        client.url("/login"), data={"csrf": token, "login": clerk.login, "password": clerk.password}, timeout=30
    )
    assert answer.status_code == 401


def _try(client: ConsoleClient, token: str, login: str, password: str) -> requests.Response:
    return client.http.post(
        client.url("/login"),
        data={"csrf": token, "login": login, "password": password},
        timeout=30,
        allow_redirects=False,
    )


def test_repeated_failures_are_braked_then_the_right_password_works(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    token = client.csrf()
    # Eight wrong passwords from one address: three free tries, a fourth that starts the wait, then 429s.
    # (With a new X-Forwarded-For each, on a server that trusts no proxy: tests/test_security_auth.py.)
    statuses = [_try(client, token, admin.login, "x").status_code for _ in range(8)]
    assert statuses == [401] * (ACCOUNT_RULE.free + 1) + [429] * (7 - ACCOUNT_RULE.free)
    # Even the right password is refused while the brake holds...
    answer = _try(client, token, admin.login, admin.password)
    assert answer.status_code == 429 and "Too many failed sign-ins" in answer.text
    wait = int(answer.headers["retry-after"])
    assert 0 < wait <= ACCOUNT_RULE.first_delay
    # ...and works once the wait is over: a brake, not a lock-out.
    time.sleep(wait)
    assert _try(client, token, admin.login, admin.password).status_code == 303


def test_a_browser_that_signed_in_before_is_not_held_by_its_accounts_brake(portal: LivePortal) -> None:
    admin = add_admin(portal)
    own = ConsoleClient(portal).login(admin)
    own.post("/logout", {})
    attacker = ConsoleClient(portal)
    token = attacker.csrf()
    for _ in range(ACCOUNT_RULE.free + 2):
        _try(attacker, token, admin.login, "guess")
    assert _try(attacker, token, admin.login, admin.password).status_code == 429
    # The admin's own browser carries the device cookie of its last sign-in.
    assert _try(own, own.csrf(), admin.login, admin.password).status_code == 303


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_the_wait_doubles_past_the_free_tries_up_to_a_cap() -> None:
    rule = BrakeRule(free=3, first_delay=2.0, max_delay=60.0)
    assert [rule.delay(n) for n in range(1, 11)] == [0, 0, 0, 2, 4, 8, 16, 32, 60, 60]
    assert rule.delay(10_000) == 60


def test_the_brake_holds_per_account_and_per_address_and_fades() -> None:
    clock = FakeClock()
    brake = LoginBrake(MemoryBrakeStore(), clock, BrakeRule(3, 2.0, 60.0), BrakeRule(4, 2.0, 300.0))

    async def run() -> None:
        for _ in range(4):
            await brake.failed("198.51.100.1", "Admin")
        # The account from that address, in any case; not from another address, not another account.
        assert await brake.wait_seconds("198.51.100.1", "admin") == 2
        assert await brake.wait_seconds("198.51.100.7", "admin") == 0
        assert await brake.wait_seconds("198.51.100.1", "other") == 0
        clock.now += 1.5
        assert await brake.wait_seconds("198.51.100.1", "admin") == 1
        clock.now += 0.5
        assert await brake.wait_seconds("198.51.100.1", "admin") == 0
        # A trusted browser is not held by the account's brake; the address's still holds.
        await brake.failed("198.51.100.1", "Admin")
        assert await brake.wait_seconds("198.51.100.1", "admin") == 4
        assert await brake.wait_seconds("198.51.100.1", "admin", trusted_device=True) == 2
        # One address adds at most free + 1 = 4 failures to the account's count over all addresses
        # (SPREAD_RULE, 10 free): seven more addresses, one failure each, brake the account everywhere.
        for i in range(7):
            await brake.failed(f"192.0.2.{i + 10}", "admin")
        assert SPREAD_RULE.free == 10
        assert await brake.wait_seconds("198.51.100.99", "admin") == 2
        assert await brake.wait_seconds("198.51.100.99", "admin", trusted_device=True) == 0
        clock.now += 60
        # One address trying many logins; an IPv6 client counts by its /64.
        for i in range(6):
            await brake.failed("2001:db8:0:1::" + str(i + 1), f"login{i}")
        assert await brake.wait_seconds("2001:db8:0:1::ffff", "fresh") == 4
        assert await brake.wait_seconds("2001:db8:0:2::1", "fresh") == 0
        # A sign-in clears its address (and the account from it), not the account's count over all addresses.
        await brake.succeeded("198.51.100.1", "admin")
        assert await brake.wait_seconds("198.51.100.1", "admin") == 0
        await brake.failed("192.0.2.30", "admin")
        assert await brake.wait_seconds("198.51.100.1", "admin") == 4
        # An hour without failures forgets them.
        clock.now += FORGET_SECONDS
        assert await brake.wait_seconds("198.51.100.7", "admin") == 0

    asyncio.run(run())


def test_a_brake_set_by_one_process_holds_in_another(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> None:
    url = new_database_url(request, backend, tmp_path)
    migrate(url)

    async def run() -> None:
        stores = [Store(url, 4), Store(url, 4)]
        try:
            clock = FakeClock()
            first, second = (LoginBrake(DatabaseBrakeStore(store), clock) for store in stores)
            for _ in range(ACCOUNT_RULE.free + 2):
                await first.failed("192.0.2.1", "admin")
            assert await second.wait_seconds("192.0.2.1", "admin") == 4
            clock.now += 4
            assert await second.wait_seconds("192.0.2.1", "admin") == 0
            await second.failed("192.0.2.1", "admin")
            assert await first.wait_seconds("192.0.2.1", "ADMIN") == 8
            await first.succeeded("192.0.2.1", "admin")
            assert await second.wait_seconds("192.0.2.1", "someone") == 0
            # Failures older than the forget window are pruned from the table at the next failure.
            clock.now += FORGET_SECONDS + 1
            await second.failed("192.0.2.2", "other")
            assert await DatabaseBrakeStore(stores[0]).failures(["login:admin", "login:other"]) == {
                "login:other": (1, clock.now)
            }
        finally:
            for store in stores:
                await store.close()

    asyncio.run(run())


def test_post_without_csrf_or_from_another_site_is_refused(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    no_token = client.post("/logout", {}, csrf="forged")
    assert no_token.status_code == 403 and "CSRF check failed" in no_token.text
    other = client.http.post(
        client.url("/logout"),
        data={"csrf": client.csrf("/messages")},
        headers={"Origin": "http://evil.example"},
        timeout=30,
    )
    assert other.status_code == 403 and "Origin check failed" in other.text
    assert client.get("/messages").status_code == 200  # still signed in: neither POST did anything


def test_a_new_password_ends_older_sessions(portal: LivePortal) -> None:
    from messageservice.core.logins import set_password

    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    portal.run(lambda core: set_password(core, admin.user_id, "another-password-1"))
    assert client.get("/messages", allow_redirects=False).status_code == 303


def test_login_page_escapes_and_never_redirects_off_site(portal: LivePortal) -> None:
    client = ConsoleClient(portal)
    page = client.get("/login?next=https://evil.example/")
    assert 'value="/console/"' in page.text
    token = CSRF_FIELD.search(page.text)
    assert token is not None
    answer = client.http.post(
        client.url("/login"),
        data={"csrf": token.group(1), "login": "<script>alert(1)</script>", "password": "x"},
        timeout=30,
    )
    assert "<script>alert(1)</script>" not in answer.text
    assert "&lt;script&gt;" in answer.text


def _authorize(http: requests.Session, portal: LivePortal, client_id: str, **extra: str) -> requests.Response:
    params = {"client_id": client_id, **extra}
    return http.get(portal.base_url + "/oauth/authorize/", params=params, allow_redirects=False, timeout=30)


def _token_user(portal: LivePortal, app: AppCredentials, answer: requests.Response) -> int:
    assert answer.status_code == 302, answer.text
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    token = portal.session.get(
        portal.base_url + "/oauth/token/",
        params={
            "grant_type": "authorization_code",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "code": code,
        },
        timeout=30,
    ).json()
    return int(token["user_id"])


def test_oauth_authorize_issues_codes_for_the_signed_in_admin(portal: LivePortal) -> None:
    app = portal.add_app()  # installed by user 1
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    assert _token_user(portal, app, _authorize(client.http, portal, app.client_id)) == admin.user_id
    assert _token_user(portal, app, _authorize(client.http, portal, app.client_id, user_id=str(admin.user_id))) == (
        admin.user_id
    )
    # Someone else's id is still refused; without a session there is no code, only the sign-in page.
    other = _authorize(client.http, portal, app.client_id, user_id=str(portal.add_user("Bystander")))
    assert other.status_code == 403 and other.json()["error"] == "access_denied"
    assert _authorize(portal.new_session(), portal, app.client_id).headers["location"].startswith("/console/login")
    # A forged or tampered cookie is no session.
    forged = portal.new_session()
    forged.cookies.set("messageservice_console", "eyJ1c2VyX2lkIjogMn0=.forged.sig")
    assert _authorize(forged, portal, app.client_id).headers["location"].startswith("/console/login")
    # Signed out: no more.
    client.post("/logout", {})
    assert _authorize(client.http, portal, app.client_id).headers["location"].startswith("/console/login")
