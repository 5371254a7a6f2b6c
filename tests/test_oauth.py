"""OAuth 2.0 as Bitrix24 runs it (spec 3.8): authorize, code exchange, refresh with rotation, errors.

In-process; the flows (codes and tokens stored and expired) on both engines, refusals of bad input once."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import update

from messageservice.core.context import Core
from messageservice.core.secrets import hash_secret
from messageservice.store.tables import auth_codes, refresh_tokens
from tests.console_helpers import ConsoleClient, add_admin
from tests.portal import AppCredentials, LivePortal

TOKEN_FIELDS = [
    "access_token",
    "expires",
    "expires_in",
    "scope",
    "domain",
    "server_endpoint",
    "status",
    "client_endpoint",
    "member_id",
    "user_id",
    "refresh_token",
]


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app(url="https://app.example.com/install")


@pytest.fixture
def any_app(any_portal: LivePortal) -> AppCredentials:
    return any_portal.add_app(url="https://app.example.com/install")


_BROWSERS: dict[int, tuple[requests.Session, int]] = {}


def browser(portal: LivePortal) -> tuple[requests.Session, int]:
    """A browser signed in to the console (codes go only to a signed-in user) and its user's id."""
    if id(portal) not in _BROWSERS:
        admin = add_admin(portal)
        _BROWSERS[id(portal)] = (ConsoleClient(portal).login(admin).http, admin.user_id)
    return _BROWSERS[id(portal)]


def authorize(portal: LivePortal, client_id: str, **extra: str) -> dict[str, str]:
    response = browser(portal)[0].get(
        portal.base_url + "/oauth/authorize/",
        params={"client_id": client_id, "state": "xyz", **extra},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 302, response.text
    location = urlsplit(response.headers["location"])
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    query["_target"] = f"{location.scheme}://{location.netloc}{location.path}"
    return query


def token_call(portal: LivePortal, method: str = "GET", **params: str) -> Any:
    url = portal.base_url + "/oauth/token/"
    if method == "GET":
        return portal.session.get(url, params=params, timeout=30)
    return portal.session.post(url, data=params, timeout=30)


@pytest.mark.parametrize("http_method", ["GET", "POST"])
def test_code_flow(portal: LivePortal, app: AppCredentials, http_method: str) -> None:
    redirect = authorize(portal, app.client_id)
    assert redirect["_target"] == "https://app.example.com/install"
    assert redirect["state"] == "xyz" and redirect["domain"] == "portal.test" and redirect["scope"] == "messageservice"
    assert len(redirect["member_id"]) == 32 and redirect["server_domain"] == urlsplit(portal.base_url).netloc
    response = token_call(
        portal,
        http_method,
        grant_type="authorization_code",
        client_id=app.client_id,
        client_secret=app.client_secret,
        code=redirect["code"],
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == TOKEN_FIELDS
    assert body["expires_in"] == 3600 and body["status"] == "L" and body["user_id"] == browser(portal)[1]
    assert body["client_endpoint"] == portal.rest_url and body["server_endpoint"] == portal.rest_url
    assert body["member_id"] == redirect["member_id"]
    assert portal.call("user.admin", token=body["access_token"]).json()["result"] is True


def test_code_is_single_use(portal: LivePortal, app: AppCredentials) -> None:
    code = authorize(portal, app.client_id)["code"]
    params = {"grant_type": "authorization_code", "client_id": app.client_id, "client_secret": app.client_secret}
    assert token_call(portal, code=code, **params).status_code == 200
    again = token_call(portal, code=code, **params)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_code_expires_after_30_seconds(portal: LivePortal, app: AppCredentials) -> None:
    code = authorize(portal, app.client_id)["code"]

    async def age(core: Core) -> float:
        async with core.engine.begin() as conn:
            row = (await conn.execute(auth_codes.select().where(auth_codes.c.code_hash == hash_secret(code)))).one()
            await conn.execute(
                update(auth_codes)
                .where(auth_codes.c.code_hash == hash_secret(code))
                .values(expires_at=core.clock() - 0.1)
            )
        return row.expires_at - core.clock()

    assert 28 < portal.run(age) <= 30
    response = token_call(
        portal, grant_type="authorization_code", client_id=app.client_id, client_secret=app.client_secret, code=code
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_redirect_uri_must_share_the_apps_origin(portal: LivePortal, app: AppCredentials) -> None:
    assert authorize(portal, app.client_id, redirect_uri="https://evil.example.net/steal")["_target"] == (
        "https://app.example.com/install"
    )
    assert authorize(portal, app.client_id, redirect_uri="https://app.example.com/cb")["_target"] == (
        "https://app.example.com/cb"
    )


def test_refresh_rotates(portal: LivePortal, app: AppCredentials) -> None:
    params = {"grant_type": "refresh_token", "client_id": app.client_id, "client_secret": app.client_secret}
    first = token_call(portal, "POST", refresh_token=app.refresh_token, **params)
    assert first.status_code == 200, first.text
    body = first.json()
    assert list(body) == TOKEN_FIELDS
    assert body["refresh_token"] != app.refresh_token and body["access_token"] != app.access_token
    assert portal.call("user.admin", token=body["access_token"]).json()["result"] is True
    reused = token_call(portal, refresh_token=app.refresh_token, **params)
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    # A replay revokes the family (OAuth 2.0 Security BCP): what the first refresh issued is gone too.
    assert token_call(portal, refresh_token=body["refresh_token"], **params).status_code == 400


def test_refresh_token_lifetime_is_180_days(portal: LivePortal, app: AppCredentials) -> None:
    async def remaining(core: Core) -> float:
        async with core.engine.begin() as conn:
            where = refresh_tokens.c.token_hash == hash_secret(app.refresh_token)
            row = (await conn.execute(refresh_tokens.select().where(where))).one()
            await conn.execute(update(refresh_tokens).where(where).values(expires_at=core.clock() - 1))
        return row.expires_at - core.clock()

    assert 180 * 86400 - 120 < portal.run(remaining) <= 180 * 86400
    response = token_call(
        portal,
        grant_type="refresh_token",
        client_id=app.client_id,
        client_secret=app.client_secret,
        refresh_token=app.refresh_token,
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_refresh_token_of_another_app(portal: LivePortal, app: AppCredentials) -> None:
    other = portal.add_app()
    response = token_call(
        portal,
        grant_type="refresh_token",
        client_id=app.client_id,
        client_secret=app.client_secret,
        refresh_token=other.refresh_token,
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"grant_type": "refresh_token", "client_secret": "x", "refresh_token": "y"}, 401, "invalid_client"),
        (
            {"grant_type": "refresh_token", "client_id": "local.nope.1", "client_secret": "x", "refresh_token": "y"},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "{cid}", "client_secret": "wrong", "refresh_token": "y"},
            401,
            "invalid_client",
        ),
        ({"grant_type": "refresh_token", "client_id": "{cid}", "client_secret": "{secret}"}, 400, "invalid_request"),
        ({"grant_type": "password", "client_id": "{cid}", "client_secret": "{secret}"}, 400, "invalid_request"),
        ({"client_id": "{cid}", "client_secret": "{secret}"}, 400, "invalid_request"),
        (
            {"grant_type": "authorization_code", "client_id": "{cid}", "client_secret": "{secret}", "code": "bad"},
            400,
            "invalid_grant",
        ),
        (
            {"grant_type": "refresh_token", "client_id": "{cid}", "client_secret": "{secret}", "refresh_token": "bad"},
            400,
            "invalid_grant",
        ),
    ],
)
def test_token_errors(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, str], status: int, error: str
) -> None:
    portal, app = any_portal, any_app
    filled = {k: v.format(cid=app.client_id, secret=app.client_secret) for k, v in params.items()}
    response = token_call(portal, **filled)
    assert response.status_code == status, response.text
    body = response.json()
    assert (
        body["error"] == error
        and isinstance(body["error_description"], str)
        and set(body) == {"error", "error_description"}
    )


def test_authorize_errors(any_portal: LivePortal) -> None:
    portal = any_portal
    for params in ({}, {"client_id": "local.unknown.1"}):
        response = portal.session.get(
            portal.base_url + "/oauth/authorize/", params=params, allow_redirects=False, timeout=30
        )
        assert response.status_code in (400, 401)
        assert "error" in response.json()


def test_uninstalled_app_tokens_stop_working(portal: LivePortal) -> None:
    app = portal.add_app()
    from messageservice.core.apps import uninstall_app

    portal.run(lambda core: uninstall_app(core, app.client_id))
    assert portal.call("user.admin", token=app.access_token).json()["error"] == "invalid_token"
    response = token_call(
        portal,
        grant_type="refresh_token",
        client_id=app.client_id,
        client_secret=app.client_secret,
        refresh_token=app.refresh_token,
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_secrets_are_not_stored_in_clear(portal: LivePortal, app: AppCredentials) -> None:
    from sqlalchemy import text

    code = authorize(portal, app.client_id)["code"]
    hook = portal.add_webhook(1, "messageservice")
    webhook_secret = hook.rstrip("/").rsplit("/", 1)[1]

    async def dump(core: Core) -> str:
        parts = []
        async with core.engine.connect() as conn:
            for table in ("apps", "access_tokens", "refresh_tokens", "auth_codes", "webhooks", "app_events"):
                rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()
                parts.append(repr(rows))
        return "\n".join(parts)

    stored = portal.run(dump)
    for secret in (app.client_secret, app.access_token, app.refresh_token, app.application_token, code, webhook_secret):
        assert secret not in stored
    assert hash_secret(app.access_token) in stored and hash_secret(code) in stored
