"""Regression tests for the hardening of sign-in and OAuth (issue 9, points 3 to 5), on both engines.

* 9.3 `/oauth/authorize/`: codes only for a signed-in user (anonymous visitors are sent to sign in and come
  back), `redirect_uri` without dot segments and bound to the code, a replayed refresh token revokes its
  family, a code dies with its app's install.
* 9.4 console sessions kept server-side: a captured cookie stops working at logout, a new password, an idle
  timeout or the absolute lifetime; the cookie is an opaque id (the database holds its hash), Secure under
  https, and a session made by one server is valid on another over the same database.
* 9.5 the sign-in brake: X-Forwarded-For believed only from trusted proxies; an attacker's failures from
  one address do not hold the admin up at another.
"""

from __future__ import annotations

import html
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import func, select, update

from messageservice.config import Settings
from messageservice.core import apps as app_service
from messageservice.core import logins
from messageservice.core import portal as portal_service
from messageservice.core.context import Core
from messageservice.core.logins import ACCOUNT_RULE, set_password
from messageservice.core.secrets import hash_secret
from messageservice.session import COOKIE
from messageservice.store import tables
from messageservice.store.limits import DatabaseBrakeStore
from messageservice.store.tables import users
from tests.console_helpers import CSRF_FIELD, ConsoleClient, add_admin
from tests.databases import new_database_url
from tests.portal import (
    AppCredentials,
    InProcessAdapter,
    InProcessServer,
    LivePortal,
    ServerThread,
    make_settings,
)

APP_URL = "https://app.example.com/appA/"


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app(url=APP_URL)


def _authorize(http: requests.Session, portal: LivePortal, client_id: str, **extra: str) -> requests.Response:
    params = {"client_id": client_id, "state": "st", **extra}
    return http.get(portal.base_url + "/oauth/authorize/", params=params, allow_redirects=False, timeout=30)


def _code(answer: requests.Response) -> str:
    assert answer.status_code == 302, answer.text
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def _exchange(portal: LivePortal, app: AppCredentials, code: str, **extra: str) -> requests.Response:
    params = {
        "grant_type": "authorization_code",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "code": code,
        **extra,
    }
    return portal.session.get(portal.base_url + "/oauth/token/", params=params, timeout=30)


def _refresh(portal: LivePortal, app: AppCredentials, refresh_token: str) -> requests.Response:
    params = {
        "grant_type": "refresh_token",
        "client_id": app.client_id,
        "client_secret": app.client_secret,
        "refresh_token": refresh_token,
    }
    return portal.session.post(portal.base_url + "/oauth/token/", data=params, timeout=30)


def _session_cookie(client: ConsoleClient) -> str:
    return next(c.value for c in client.http.cookies if c.name == COOKIE and c.value)


def _plant(client: ConsoleClient, cookie: str) -> None:
    """The cookie in the browser's jar as the server would have set it (same host and path)."""
    client.http.cookies.set(COOKIE, cookie, domain=urlsplit(client.portal.base_url).hostname, path="/")


def _captured(portal: LivePortal, cookie: str) -> ConsoleClient:
    """Another browser (an attacker's) holding a copy of a session cookie."""
    thief = ConsoleClient(portal)
    _plant(thief, cookie)
    return thief


def _signed_in(client: ConsoleClient) -> bool:
    answer = client.get("/messages", allow_redirects=False)
    assert answer.status_code in (200, 303), answer.status_code
    return answer.status_code == 200


# --- 9.3 /oauth/authorize/ -----------------------------------------------------------------------------------


def test_authorize_without_a_session_signs_in_first_and_comes_back(portal: LivePortal, app: AppCredentials) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    first = _authorize(client.http, portal, app.client_id, redirect_uri=APP_URL + "cb")
    # No code for an anonymous visitor: the sign-in page, with the way back.
    assert first.status_code == 303 and "code=" not in first.headers["location"]
    login_url = first.headers["location"]
    assert login_url.startswith("/console/login?next=%2Foauth%2Fauthorize%2F%3F")
    page = client.http.get(portal.base_url + login_url, timeout=30)
    assert page.status_code == 200 and 'id="for-app"' in page.text
    next_url = re.search(r'name="next" value="([^"]+)"', page.text)
    token = CSRF_FIELD.search(page.text)
    assert next_url is not None and token is not None
    back = client.http.post(
        client.url("/login"),
        data={
            "csrf": token.group(1),
            "login": admin.login,
            "password": admin.password,
            "next": html.unescape(next_url.group(1)),
        },
        allow_redirects=False,
        timeout=30,
    )
    assert back.status_code == 303 and back.headers["location"].startswith("/oauth/authorize/?")
    assert parse_qs(urlsplit(back.headers["location"]).query)["client_id"] == [app.client_id]
    answer = client.http.get(portal.base_url + back.headers["location"], allow_redirects=False, timeout=30)
    assert answer.headers["location"].startswith(APP_URL + "cb?")
    assert parse_qs(urlsplit(answer.headers["location"]).query)["state"] == ["st"]
    body = _exchange(portal, app, _code(answer)).json()
    # The code is the signed-in user's, not user 1's.
    assert body["user_id"] == admin.user_id != 1


@pytest.mark.parametrize(
    "redirect_uri",
    [
        APP_URL + "../evil/x",
        APP_URL + "%2e%2e/evil/x",
        APP_URL + ".%2E/evil/x",
        APP_URL + "./x",
        APP_URL + "..%2Fevil",
        APP_URL + "x\\..\\evil",
    ],
    ids=["dots", "encoded-dots", "mixed-dots", "single-dot", "encoded-slash", "backslash"],
)
def test_redirect_uri_with_dot_segments_is_refused(
    any_portal: LivePortal, redirect_uri: str, signed_in_browsers: dict[int, ConsoleClient]
) -> None:
    portal = any_portal
    app = portal.add_app(url=APP_URL)
    client = _browser(portal, signed_in_browsers)
    answer = _authorize(client.http, portal, app.client_id, redirect_uri=redirect_uri)
    assert answer.status_code == 400 and "location" not in answer.headers, answer.headers.get("location")
    body = answer.json()
    assert body["error"] == "invalid_request" and "redirect_uri" in body["error_description"]


@pytest.fixture(scope="module")
def signed_in_browsers() -> dict[int, ConsoleClient]:
    return {}


def _browser(portal: LivePortal, cache: dict[int, ConsoleClient]) -> ConsoleClient:
    if id(portal) not in cache:
        cache[id(portal)] = ConsoleClient(portal).login(add_admin(portal))
    return cache[id(portal)]


def test_a_code_is_bound_to_its_redirect_uri(
    portal: LivePortal, app: AppCredentials, signed_in_browsers: dict[int, ConsoleClient]
) -> None:
    client = _browser(portal, signed_in_browsers)
    code = _code(_authorize(client.http, portal, app.client_id, redirect_uri=APP_URL + "cb"))
    other = _exchange(portal, app, code, redirect_uri=APP_URL + "other")
    assert other.status_code == 400 and other.json()["error"] == "invalid_grant"
    # The same redirect_uri (spelt with an upper-case host: the same URL) gets the tokens.
    same = _exchange(portal, app, code, redirect_uri="https://APP.example.com/appA/cb")
    assert same.status_code == 200, same.text
    # Bitrix24's token request carries no redirect_uri (nor do the SDKs): one left out is accepted.
    code = _code(_authorize(client.http, portal, app.client_id, redirect_uri=APP_URL + "cb"))
    assert _exchange(portal, app, code).status_code == 200


def test_a_replayed_refresh_token_revokes_its_family(portal: LivePortal, app: AppCredentials) -> None:
    first = _refresh(portal, app, app.refresh_token)
    assert first.status_code == 200, first.text
    issued = first.json()
    second = _refresh(portal, app, issued["refresh_token"])
    assert second.status_code == 200, second.text
    latest = second.json()
    assert portal.call("user.admin", token=latest["access_token"]).json()["result"] is True
    # The first refresh token again (a thief's copy, or the owner's after the thief used it): the whole
    # family is revoked, the newest tokens included; both holders must authorize again.
    replay = _refresh(portal, app, app.refresh_token)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert _refresh(portal, app, latest["refresh_token"]).json()["error"] == "invalid_grant"
    for token in (latest["access_token"], issued["access_token"], app.access_token):
        assert portal.call("user.admin", token=token).json()["error"] == "invalid_token"
    # Another family of the same app (another user's tokens) is untouched.
    other = portal.token(app.client_id, 1)
    assert _refresh(portal, app, other["refresh_token"]).status_code == 200


def test_a_code_issued_before_uninstall_dies_with_the_install(
    portal: LivePortal, app: AppCredentials, signed_in_browsers: dict[int, ConsoleClient]
) -> None:
    code = _code(_authorize(_browser(portal, signed_in_browsers).http, portal, app.client_id))
    portal.run(lambda core: app_service.uninstall_app(core, app.client_id))
    portal.run(lambda core: app_service.install_app(core, app.client_id, 1))
    answer = _exchange(portal, app, code)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


# --- 9.4 console sessions --------------------------------------------------------------------------------------


def test_a_cookie_captured_before_logout_stops_working(portal: LivePortal, app: AppCredentials) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    thief = _captured(portal, _session_cookie(client))
    token = thief.csrf("/portal")  # the thief's copy works while the session lives
    assert _signed_in(thief)
    client.post("/logout", {})
    # After logout the same cookie reads nothing, adds no user and gets no OAuth code.
    assert not _signed_in(thief)
    name = "Stolen " + uuid.uuid4().hex[:8]
    added = thief.post("/portal/user-add", {"name": name}, csrf=token, allow_redirects=False)
    assert added.status_code == 303 and added.headers["location"].startswith("/console/login")
    count = portal.run(lambda core: _count(core, select(func.count()).select_from(users).where(users.c.name == name)))
    assert count == 0
    refused = _authorize(thief.http, portal, app.client_id)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/console/login")


async def _count(core: Core, query: Any) -> int:
    async with core.store.connection() as conn:
        return int((await conn.execute(query)).scalar_one())


def test_the_cookie_is_an_opaque_id_and_the_database_keeps_its_hash(portal: LivePortal) -> None:
    admin = add_admin(portal)
    client = ConsoleClient(portal).login(admin)
    cookie = _session_cookie(client)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,64}", cookie), cookie  # no user id, no signed data: a random token

    async def rows(core: Core) -> list[Any]:
        async with core.store.connection() as conn:
            query = select(tables.console_sessions).where(tables.console_sessions.c.user_id == admin.user_id)
            return list((await conn.execute(query)).all())

    stored = portal.run(rows)
    assert [row.token_hash for row in stored] == [hash_secret(cookie)]
    # Signing in again is a new session with a new token: the old token (say, one planted) is worth nothing.
    again = ConsoleClient(portal)
    _plant(again, cookie)
    again.login(admin)
    assert _session_cookie(again) != cookie
    assert not _signed_in(_captured(portal, cookie))
    assert len(portal.run(rows)) == 1


def test_a_new_password_ends_every_session_of_the_user(portal: LivePortal) -> None:
    admin, bystander = add_admin(portal), add_admin(portal)
    laptop, phone = ConsoleClient(portal).login(admin), ConsoleClient(portal).login(admin)
    other = ConsoleClient(portal).login(bystander)
    copies = [_captured(portal, _session_cookie(c)) for c in (laptop, phone)]
    portal.run(lambda core: set_password(core, admin.user_id, "a-new-password-" + uuid.uuid4().hex))
    assert not any(_signed_in(c) for c in (laptop, phone, *copies))
    assert _signed_in(other)

    async def left(core: Core) -> int:
        return await _count(
            core,
            select(func.count())
            .select_from(tables.console_sessions)
            .where(tables.console_sessions.c.user_id == admin.user_id),
        )

    assert portal.run(left) == 0


def _age_session(portal: LivePortal, cookie: str, **columns: float) -> None:
    async def work(core: Core) -> None:
        async with core.store.transaction() as conn:
            values = {name: core.clock() - seconds for name, seconds in columns.items()}
            await conn.execute(
                update(tables.console_sessions)
                .where(tables.console_sessions.c.token_hash == hash_secret(cookie))
                .values(**values)
            )

    portal.run(work)


def test_an_idle_session_ends_and_so_does_an_old_one(portal: LivePortal) -> None:
    settings = portal.settings
    assert settings.console_session_idle_seconds == 1800 and settings.console_session_max_seconds == 8 * 3600
    admin = add_admin(portal)
    idle = ConsoleClient(portal).login(admin)
    _age_session(portal, _session_cookie(idle), last_seen_at=settings.console_session_idle_seconds - 60)
    assert _signed_in(idle)  # used within the idle time: alive, and marked used again
    _age_session(portal, _session_cookie(idle), last_seen_at=settings.console_session_idle_seconds + 1)
    assert not _signed_in(idle)
    # In use all along, but signed in longer ago than the absolute lifetime.
    old = ConsoleClient(portal).login(admin)
    _age_session(portal, _session_cookie(old), created_at=settings.console_session_max_seconds + 1)
    assert not _signed_in(old)


def test_housekeeping_clears_dead_sessions(portal: LivePortal) -> None:
    admin = add_admin(portal)
    alive, idle = ConsoleClient(portal).login(admin), ConsoleClient(portal).login(admin)
    _age_session(portal, _session_cookie(idle), last_seen_at=portal.settings.console_session_idle_seconds + 1)

    async def purge_and_list(core: Core) -> set[str]:
        from messageservice.core.tokens import purge_expired

        await purge_expired(core)
        async with core.store.connection() as conn:
            query = select(tables.console_sessions.c.token_hash).where(
                tables.console_sessions.c.user_id == admin.user_id
            )
            return set((await conn.execute(query)).scalars())

    assert portal.run(purge_and_list) == {hash_secret(_session_cookie(alive))}


def test_a_session_made_by_one_server_holds_on_another(portal: LivePortal) -> None:
    """Two servers over one database (two `serve` processes): sign in on one, browse and sign out on the other."""
    # Its public URL set, so that starting it does not record its own address as the portal's.
    second = InProcessServer(portal.settings.model_copy(update={"public_url": portal.base_url})).start()
    try:
        admin = add_admin(portal)
        client = ConsoleClient(portal).login(admin)
        elsewhere = second.session()
        elsewhere.cookies.set(COOKIE, _session_cookie(client))
        page = elsewhere.get(second.base_url + "/console/messages", allow_redirects=False, timeout=30)
        assert page.status_code == 200 and admin.login in page.text
        csrf = CSRF_FIELD.search(page.text)
        assert csrf is not None
        out = elsewhere.post(
            second.base_url + "/console/logout",
            data={"csrf": csrf.group(1)},
            headers={"Origin": second.base_url},
            allow_redirects=False,
            timeout=30,
        )
        assert out.status_code == 303
        assert not _signed_in(client)  # signed out on the other server: out here too
    finally:
        second.stop()


def test_the_cookie_is_secure_under_https(portal: LivePortal) -> None:
    """Behind a proxy that ends TLS (X-Forwarded-Proto from a trusted proxy) or with TLS of its own, the
    request is https: the cookie must not travel over plain http afterwards."""
    admin = add_admin(portal)
    https_base = portal.base_url.replace("http://", "https://", 1)
    client = ConsoleClient(portal)
    assert isinstance(portal.server, InProcessServer)
    client.http.mount(https_base, InProcessAdapter(portal.server))
    client.http.headers["Origin"] = https_base
    page = client.http.get(https_base + "/console/login", timeout=30)
    token = CSRF_FIELD.search(page.text)
    assert token is not None
    answer = client.http.post(
        https_base + "/console/login",
        data={"csrf": token.group(1), "login": admin.login, "password": admin.password},
        allow_redirects=False,
        timeout=30,
    )
    assert answer.status_code == 303
    cookie = next(c for c in answer.raw.msg.get_all("set-cookie") if c.startswith(COOKIE + "="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
    # Over plain http (local development) the cookie cannot be Secure, or the browser would drop it.
    plain = ConsoleClient(portal).login(admin)
    assert not next(c for c in plain.http.cookies if c.name == COOKIE).secure


# --- 9.5 the sign-in brake -------------------------------------------------------------------------------------


def _try(client: ConsoleClient, token: str, login: str, password: str, address: str | None = None) -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    return client.http.post(
        client.url("/login"),
        data={"csrf": token, "login": login, "password": password},
        headers=headers,
        allow_redirects=False,
        timeout=30,
    ).status_code


def _served_as_serve_does(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, backend: str, trusted_proxies: str
) -> Iterator[LivePortal]:
    """A real server whose uvicorn believes X-Forwarded-For only from MESSAGESERVICE_TRUSTED_PROXIES, as
    `serve` sets it up (cli/serve.py; the other test servers keep uvicorn's default, which trusts loopback)."""
    folder: Path = factory.mktemp(f"proxies-{backend}")
    settings = make_settings(new_database_url(request, backend, folder), folder)
    settings = settings.model_copy(update={"trusted_proxies": trusted_proxies})
    server = ServerThread(settings)
    server.server.config.forwarded_allow_ips = settings.trusted_proxies
    live = LivePortal(settings, server, backend)
    live.run(lambda core: portal_service.init_portal(core, "portal.test"))
    server.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def untrusting_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """The default settings: no trusted proxy."""
    assert Settings.model_fields["trusted_proxies"].default == ""
    yield from _served_as_serve_does(request, tmp_path_factory, backend, "")


@pytest.fixture(scope="module")
def portal_with_proxy(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """Behind a reverse proxy on the same host: MESSAGESERVICE_TRUSTED_PROXIES=127.0.0.1/32."""
    yield from _served_as_serve_does(request, tmp_path_factory, backend, "127.0.0.1/32")


def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_brake(untrusting_portal: LivePortal) -> None:
    portal = untrusting_portal
    admin = add_admin(portal)
    client = ConsoleClient(portal)
    token = client.csrf()
    # Eight wrong passwords from 127.0.0.1, each claiming a new client address: all one address here.
    statuses = [_try(client, token, admin.login, "wrong", f"203.0.113.{i}") for i in range(8)]
    assert statuses == [401] * (ACCOUNT_RULE.free + 1) + [429] * (7 - ACCOUNT_RULE.free)


def test_an_attackers_failures_do_not_hold_the_admin_up_elsewhere(portal_with_proxy: LivePortal) -> None:
    portal = portal_with_proxy
    admin = add_admin(portal)
    attacker = ConsoleClient(portal)
    token = attacker.csrf()
    statuses = [_try(attacker, token, admin.login, "guess", "198.51.100.66") for _ in range(8)]
    assert 429 in statuses  # the attacker is braked...
    # ...but the admin, from another address in a browser that never signed in before, is not.
    own = ConsoleClient(portal)
    assert _try(own, own.csrf(), admin.login, admin.password, "192.0.2.7") == 303
    assert _signed_in(own)
    # Nor are the attacker's failures forgotten because the admin signed in elsewhere.
    pair = logins.pair_key("198.51.100.66", admin.login)  # looked up at run time: main has no such key
    left = portal.run(lambda core: DatabaseBrakeStore(core.store).failures([pair]))
    assert left[pair][0] == ACCOUNT_RULE.free + 1
