"""Real client libraries, unchanged from PyPI, against a running portal.

* b24pysdk (the official Python SDK) speaks only https, so it talks to `https_portal`, trusting the server's
  own self-signed certificate through REQUESTS_CA_BUNDLE (the SDK has no TLS setting of its own).
* fast_bitrix24 sends every `call()` through `batch` and reads `get_all()` directly; it talks to the plain
  http portal, and once over https with an SSL context built from the portal's certificate.

Every test makes its own app (so its own senders and its own rate-limit bucket) and unique sender codes, and
cross-checks what the client reported against the server's state, read with raw requests or the core services.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import pytest
import requests
from b24pysdk import BitrixAppLocal, BitrixTokenLocal, BitrixWebhook, Client
from b24pysdk.api.requesters.bitrix_oauth_requester import BitrixOAuthRequester
from b24pysdk.errors import BitrixAPIAccessDenied, BitrixAPIError, BitrixAPIExpiredToken
from fast_bitrix24 import BitrixAsync
from fast_bitrix24.server_response import ErrorInServerResponseException

from messageservice.core import senders as sender_service
from tests.portal import AppCredentials, LivePortal, ssl_context_for

T = TypeVar("T")

HANDLER = "https://sms.example.com/send"
# Every async client test is bounded: a wrong TLS setup would otherwise sit in fast_bitrix24's ~17 s retry loop.
ASYNC_TIMEOUT = 20.0
HTTP_TIMEOUT = 10.0
APP_CONTEXT_REQUIRED = "Access denied! Application context required"


def unique_code(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def listed_codes(portal: LivePortal, token: str) -> list[str]:
    """sender.list with a raw request: the server's view, independent of the client under test."""
    response = portal.call("messageservice.sender.list", token=token)
    assert response.status_code == 200, response.text
    codes = response.json()["result"]
    assert isinstance(codes, list)
    return codes


def stored_sender(portal: LivePortal, code: str) -> sender_service.Sender | None:
    """The stored row with its language rows (codes are unique per test, so the code alone finds it)."""
    found = [s for s in portal.run(lambda core: sender_service.list_senders(core)) if s.code == code]
    assert len(found) <= 1
    return found[0] if found else None


def webhook_path(webhook_url: str) -> str:
    """`<user_id>/<secret>` from a webhook URL; clients get URLs built from the portal under test."""
    parts = [p for p in urlsplit(webhook_url).path.split("/") if p]
    assert len(parts) == 3 and parts[0] == "rest", webhook_url
    return f"{parts[1]}/{parts[2]}"


def run_bounded(work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(work, ASYNC_TIMEOUT))


# --- b24pysdk ------------------------------------------------------------------------------------------------


@pytest.fixture
def sdk_portal(https_portal: LivePortal, monkeypatch: pytest.MonkeyPatch) -> Iterator[LivePortal]:
    """The https portal, trusted by requests and with the SDK's hard-coded OAuth server pointed at it."""
    cert = https_portal.server.cert_path
    assert cert is not None
    # requests reads this on every call; it replaces the system bundle, so the portal's cert must be in it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    # The SDK refreshes only at oauth.bitrix24.tech (a class attribute, no setting): aim it at our server.
    monkeypatch.setattr(BitrixOAuthRequester, "_OAUTH_TOKEN_URL", f"{https_portal.base_url}/oauth/token/")
    yield https_portal
    # An idle keep-alive TLS connection holds up the server's shutdown by 15 s (uvicorn waits for the TLS close).
    # Close ours: the portal's own requests session (still usable afterwards), and the SDK's responses and
    # errors, whose reference cycles keep their sockets open until the garbage collector runs.
    https_portal.session.close()
    gc.collect()


def sdk_client(
    portal: LivePortal, app: AppCredentials, *, expires: datetime | None = None
) -> tuple[Client, BitrixTokenLocal]:
    """Client + BitrixTokenLocal for `app`; the domain is host:port, pasted by the SDK into https://{domain}/rest/."""
    bitrix_app = BitrixAppLocal(
        domain=urlsplit(portal.base_url).netloc, client_id=app.client_id, client_secret=app.client_secret
    )
    token = BitrixTokenLocal(
        auth_token=app.access_token,
        refresh_token=app.refresh_token,
        expires=expires if expires is not None else datetime.now(UTC) + timedelta(hours=1),
        expires_in=3600,
        bitrix_app=bitrix_app,
    )
    # max_retries=1: the SDK retries only 503s, and a 503 here is a failure to see, not to wait out.
    return Client(token, timeout=HTTP_TIMEOUT, max_retries=1), token


def refresh_directly(portal: LivePortal, app: AppCredentials, refresh_token: str) -> requests.Response:
    return requests.get(
        f"{portal.base_url}/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": app.client_id,
            "client_secret": app.client_secret,
            "refresh_token": refresh_token,
        },
        timeout=HTTP_TIMEOUT,
    )


def test_b24pysdk_sender_lifecycle_over_https(sdk_portal: LivePortal) -> None:
    app = sdk_portal.add_app(name="SDK lifecycle")
    client, _ = sdk_client(sdk_portal, app)
    sender = client.messageservice.sender
    code = unique_code("sdk")

    added = sender.add(
        code,
        "SMS",
        HANDLER,
        {"en": "SDK provider", "ru": "СМС-провайдер"},
        description={"en": "Sends & receives", "ru": "Описание"},
    )
    assert added.result is True
    # The typed response parses the full time block; operating_reset_at must be a number for it to parse.
    assert added.time.duration >= 0
    assert added.time.operating is not None
    assert isinstance(added.time.operating_reset_at, datetime)
    assert added.time.date_finish >= added.time.date_start

    assert sender.list().result == [code]
    assert listed_codes(sdk_portal, app.access_token) == [code]
    stored = stored_sender(sdk_portal, code)
    assert stored is not None
    assert stored.handler == HANDLER
    assert stored.names == {"en": "SDK provider", "ru": "СМС-провайдер", "**": "SDK provider"}
    assert stored.descriptions["en"] == "Sends & receives"

    new_handler = "https://sms.example.com/v2/send?x=1&y=2"
    assert sender.update(code, handler=new_handler, name={"en": "Renamed", "de": "Umbenannt"}).result is True
    stored = stored_sender(sdk_portal, code)
    assert stored is not None
    assert stored.handler == new_handler
    assert stored.names["en"] == "Renamed"
    assert stored.names["de"] == "Umbenannt"
    assert stored.names["ru"] == "СМС-провайдер"  # upserted per language: untouched languages stay

    with pytest.raises(BitrixAPIError) as duplicate:
        _ = sender.add(code, "SMS", HANDLER, "Again").result
    assert duplicate.value.error == "ERROR_SENDER_ALREADY_INSTALLED"
    assert duplicate.value.error_description == "Sender already installed!"
    assert duplicate.value.response.status_code == 400

    assert sender.delete(code).result is True
    assert sender.list().result == []
    assert listed_codes(sdk_portal, app.access_token) == []
    assert stored_sender(sdk_portal, code) is None

    with pytest.raises(BitrixAPIError) as missing:
        _ = sender.delete(code).result
    assert missing.value.error == "ERROR_SENDER_NOT_FOUND"


def test_b24pysdk_refreshes_when_server_says_expired(sdk_portal: LivePortal) -> None:
    """The SDK believes its token is valid; the server answers expired_token; the SDK refreshes and retries."""
    app = sdk_portal.add_app(name="SDK refresh")
    client, token = sdk_client(sdk_portal, app)
    sdk_portal.expire_access_token(app.access_token)
    # Precondition: the server really refuses the old token the way the SDK recognises.
    expired = sdk_portal.call("messageservice.sender.list", token=app.access_token)
    assert expired.status_code == 401
    assert expired.json()["error"] == "expired_token"

    code = unique_code("refresh")
    assert client.messageservice.sender.add(code, "SMS", HANDLER, "Refreshed").result is True

    assert token.auth_token != app.access_token
    new_refresh = token.refresh_token
    assert new_refresh is not None and new_refresh != app.refresh_token
    assert token.expires is not None and token.expires > datetime.now(UTC)
    assert listed_codes(sdk_portal, token.auth_token) == [code]

    # Refresh tokens rotate: the one the SDK got works, the one it spent is gone...
    fresh = refresh_directly(sdk_portal, app, new_refresh)
    assert fresh.status_code == 200, fresh.text
    assert fresh.json()["access_token"]
    # ...and replaying the spent one revokes the family (OAuth 2.0 Security BCP): the newest token too.
    reused = refresh_directly(sdk_portal, app, app.refresh_token)
    assert reused.status_code == 400, reused.text
    assert reused.json()["error"] == "invalid_grant"
    assert refresh_directly(sdk_portal, app, fresh.json()["refresh_token"]).status_code == 400


def test_b24pysdk_refreshes_before_call_when_it_knows_expiry(sdk_portal: LivePortal) -> None:
    """With `expires` in the past the SDK refreshes before it sends the call at all."""
    app = sdk_portal.add_app(name="SDK early refresh")
    client, token = sdk_client(sdk_portal, app, expires=datetime.now(UTC) - timedelta(seconds=5))
    sdk_portal.expire_access_token(app.access_token)

    assert client.messageservice.sender.list().result == []
    assert token.auth_token != app.access_token
    assert refresh_directly(sdk_portal, app, app.refresh_token).json()["error"] == "invalid_grant"


def test_b24pysdk_without_refresh_token_surfaces_expiry(sdk_portal: LivePortal) -> None:
    app = sdk_portal.add_app(name="SDK no refresh")
    bitrix_app = BitrixAppLocal(
        domain=urlsplit(sdk_portal.base_url).netloc, client_id=app.client_id, client_secret=app.client_secret
    )
    token = BitrixTokenLocal(auth_token=app.access_token, bitrix_app=bitrix_app)
    sdk_portal.expire_access_token(app.access_token)

    with pytest.raises(BitrixAPIExpiredToken):
        _ = Client(token, timeout=HTTP_TIMEOUT, max_retries=1).messageservice.sender.list().result


def test_b24pysdk_call_batch(sdk_portal: LivePortal) -> None:
    app = sdk_portal.add_app(name="SDK batch")
    client, _ = sdk_client(sdk_portal, app)
    sender = client.messageservice.sender
    first, second = unique_code("batch_a"), unique_code("batch_b")

    # Commands run in order, so `after` sees both adds and `dup` collides with `add_a`.
    batch = client.call_batch(
        {
            "before": sender.list(),
            "add_a": sender.add(first, "SMS", HANDLER, {"en": "A & B", "ru": "Первый"}, description="d"),
            "add_b": sender.add(second, "SMS", HANDLER, "Second"),
            "dup": sender.add(first, "SMS", HANDLER, "Duplicate"),
            "rename": sender.update(second, name="Second, renamed"),
            "after": sender.list(),
        }
    ).result

    assert batch.result == {
        "before": [],
        "add_a": True,
        "add_b": True,
        "rename": True,
        "after": [first, second],
    }
    assert batch.result_error == {
        "dup": {"error": "ERROR_SENDER_ALREADY_INSTALLED", "error_description": "Sender already installed!"}
    }
    assert set(batch.result_time) == set(batch.result)
    assert all(t.duration >= 0 for t in batch.result_time.values())

    stored = stored_sender(sdk_portal, first)
    assert stored is not None
    assert stored.names == {"en": "A & B", "ru": "Первый", "**": "A & B"}
    renamed = stored_sender(sdk_portal, second)
    assert renamed is not None
    assert renamed.names == {"**": "Second, renamed"}

    # A sequence batch: keys 0..n-1 come back as lists, as PHP prints them.
    cleanup = client.call_batch([sender.delete(first), sender.delete(second), sender.list()]).result
    assert cleanup.result == [True, True, []]
    assert cleanup.result_error == []
    assert listed_codes(sdk_portal, app.access_token) == []


def test_b24pysdk_webhook_has_no_application_context(sdk_portal: LivePortal) -> None:
    path = webhook_path(sdk_portal.add_webhook(user_id=1, scopes="messageservice"))
    webhook = BitrixWebhook(domain=urlsplit(sdk_portal.base_url).netloc, webhook_token=path)
    client = Client(webhook, timeout=HTTP_TIMEOUT, max_retries=1)

    # The webhook itself authenticates: a method without an app gate answers.
    assert "messageservice" in client.scope().result

    with pytest.raises(BitrixAPIAccessDenied) as denied:
        _ = client.messageservice.sender.list().result
    assert denied.value.error == "ACCESS_DENIED"
    assert denied.value.error_description == APP_CONTEXT_REQUIRED
    assert denied.value.response.status_code == 403

    with pytest.raises(BitrixAPIAccessDenied):
        _ = client.messageservice.sender.add(unique_code("hook"), "SMS", HANDLER, "Hook").result


# --- fast_bitrix24 -------------------------------------------------------------------------------------------


def token_func_for(access_token: str) -> Callable[[], Awaitable[str]]:
    async def token_func() -> str:
        return access_token

    return token_func


@asynccontextmanager
async def fast_client(
    url: str,
    *,
    token_func: Callable[[], Awaitable[str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[BitrixAsync]:
    """BitrixAsync on our own session: raise_for_status=True as the library's own session has it."""
    connector = aiohttp.TCPConnector(ssl=ssl_context) if ssl_context is not None else aiohttp.TCPConnector()
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, raise_for_status=True, timeout=timeout) as session:
        yield BitrixAsync(url, token_func=token_func, verbose=False, client=session)


def test_fast_bitrix24_oauth_sender_lifecycle(portal: LivePortal) -> None:
    app = portal.add_app(name="fast_bitrix24")
    codes = [unique_code("fb_single"), unique_code("fb_a"), unique_code("fb_b"), unique_code("fb_c")]

    async def scenario() -> None:
        async with fast_client(portal.rest_url, token_func=token_func_for(app.access_token)) as b:
            # One dict: one batch with one command; the scalar result comes back unwrapped.
            single = await b.call(
                "messageservice.sender.add",
                {"CODE": codes[0], "TYPE": "SMS", "HANDLER": HANDLER, "NAME": {"en": "Single", "ru": "Один"}},
            )
            assert single is True

            # A list: one batch, results in item order.
            many = await b.call(
                "messageservice.sender.add",
                [{"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": f"Sender {code}"} for code in codes[1:]],
            )
            assert many == (True, True, True)

            assert await b.get_all("messageservice.sender.list") == codes

            assert await b.call("messageservice.sender.update", {"CODE": codes[0], "NAME": {"de": "Anbieter"}}) is True
            renamed = await b.call(
                "messageservice.sender.update",
                [{"CODE": code, "HANDLER": "https://sms.example.com/v2"} for code in codes[1:]],
            )
            assert renamed == (True, True, True)

            assert await b.call("messageservice.sender.delete", {"CODE": codes[0]}) is True
            assert await b.get_all("messageservice.sender.list") == codes[1:]
            deleted = await b.call("messageservice.sender.delete", [{"CODE": code} for code in codes[1:]])
            assert deleted == (True, True, True)
            assert await b.get_all("messageservice.sender.list") == []

    run_bounded(scenario())
    assert listed_codes(portal, app.access_token) == []


def test_fast_bitrix24_batch_encoding_reaches_the_store(portal: LivePortal) -> None:
    """fast_bitrix24 builds cmd strings with urllib.quote, nested dicts as NAME[en], and a leading __order."""
    app = portal.add_app(name="fast_bitrix24 encoding")
    code = unique_code("fb_enc")
    handler = "https://sms.example.com/h?a=1&b=2"

    async def scenario() -> None:
        async with fast_client(portal.rest_url, token_func=token_func_for(app.access_token)) as b:
            added = await b.call(
                "messageservice.sender.add",
                {
                    "CODE": code,
                    "TYPE": "SMS",
                    "HANDLER": handler,
                    "NAME": {"en": "Spaces & signs +/=?", "ru": "Провайдер"},
                    "DESCRIPTION": {"en": "100% sure"},
                },
            )
            assert added is True
            assert await b.call("messageservice.sender.update", {"CODE": code, "NAME": {"de": "Anbieter"}}) is True

    run_bounded(scenario())
    stored = stored_sender(portal, code)
    assert stored is not None
    assert stored.handler == handler
    assert stored.names == {
        "en": "Spaces & signs +/=?",
        "ru": "Провайдер",
        "**": "Spaces & signs +/=?",
        "de": "Anbieter",
    }
    assert stored.descriptions["en"] == "100% sure"


def test_fast_bitrix24_surfaces_batch_errors(portal: LivePortal) -> None:
    app = portal.add_app(name="fast_bitrix24 errors")
    code = unique_code("fb_dup")

    async def scenario() -> None:
        async with fast_client(portal.rest_url, token_func=token_func_for(app.access_token)) as b:
            params = {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "Dup"}
            assert await b.call("messageservice.sender.add", params) is True
            # The batch answers HTTP 200 with a non-empty result_error: the library raises on that.
            with pytest.raises(ErrorInServerResponseException) as duplicate:
                await b.call("messageservice.sender.add", params)
            (errors,) = duplicate.value.args
            assert [e["error"] for e in errors.values()] == ["ERROR_SENDER_ALREADY_INSTALLED"]

    run_bounded(scenario())
    assert listed_codes(portal, app.access_token) == [code]


def test_fast_bitrix24_webhook_is_denied_sender_methods(portal: LivePortal) -> None:
    url = portal.rest_url + webhook_path(portal.add_webhook(user_id=1, scopes="messageservice")) + "/"
    code = unique_code("fb_hook")

    async def scenario() -> None:
        async with fast_client(url) as b:
            # The webhook itself works (raw: a direct POST, the whole JSON back).
            scope = await b.call("scope", {}, raw=True)
            assert "messageservice" in scope["result"]

            # call() goes through batch: HTTP 200, the denial is in result_error, and the library raises.
            with pytest.raises(ErrorInServerResponseException) as in_batch:
                await b.call(
                    "messageservice.sender.add", {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "Hook"}
                )
            (errors,) = in_batch.value.args
            assert list(errors.values()) == [{"error": "ACCESS_DENIED", "error_description": APP_CONTEXT_REQUIRED}]

            with pytest.raises(ErrorInServerResponseException):
                await b.call("messageservice.sender.delete", [{"CODE": code}, {"CODE": code + "_2"}])

            # get_all() is a direct request: HTTP 403, which aiohttp raises at once (4xx are not retried).
            with pytest.raises(aiohttp.ClientResponseError) as direct:
                await b.get_all("messageservice.sender.list")
            assert direct.value.status == 403

    run_bounded(scenario())
    assert stored_sender(portal, code) is None


def test_fast_bitrix24_token_func_renews_on_401(portal: LivePortal) -> None:
    """On HTTP 401 fast_bitrix24 asks token_func again; here it spends the refresh token at /oauth/token/."""
    app = portal.add_app(name="fast_bitrix24 renew")
    portal.expire_access_token(app.access_token)
    issued: list[str] = []

    async def token_func() -> str:
        if not issued:
            issued.append(app.access_token)  # first: the (now expired) token the app has stored
        else:
            answer = await asyncio.to_thread(refresh_directly, portal, app, app.refresh_token)
            assert answer.status_code == 200, answer.text
            issued.append(answer.json()["access_token"])
        return issued[-1]

    code = unique_code("fb_renew")

    async def scenario() -> None:
        async with fast_client(portal.rest_url, token_func=token_func) as b:
            params = {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "Renewed"}
            assert await b.call("messageservice.sender.add", params) is True
            assert await b.get_all("messageservice.sender.list") == [code]

    run_bounded(scenario())
    assert len(issued) == 2
    assert issued[1] != app.access_token
    assert listed_codes(portal, issued[1]) == [code]


def test_fast_bitrix24_over_https_with_portal_cert(https_portal: LivePortal) -> None:
    cert = https_portal.server.cert_path
    assert cert is not None
    app = https_portal.add_app(name="fast_bitrix24 tls")
    codes = [unique_code("fb_tls_a"), unique_code("fb_tls_b")]
    context = ssl_context_for(cert)

    async def scenario() -> None:
        # Fail fast on a TLS mistake: fast_bitrix24 would retry a certificate error for ~17 s.
        async with (
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context), timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
            ) as probe,
            probe.get(https_portal.base_url + "/oauth/token/") as response,
        ):
            # No client_id, so 401: what matters is that the TLS handshake succeeded.
            assert response.status == 401

        async with fast_client(
            https_portal.rest_url, token_func=token_func_for(app.access_token), ssl_context=context
        ) as b:
            added = await b.call(
                "messageservice.sender.add",
                [{"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": {"en": code}} for code in codes],
            )
            assert added == (True, True)
            assert await b.get_all("messageservice.sender.list") == codes
            assert await b.call("messageservice.sender.update", {"CODE": codes[0], "NAME": {"en": "TLS"}}) is True
            assert await b.call("messageservice.sender.delete", {"CODE": codes[1]}) is True
            assert await b.get_all("messageservice.sender.list") == [codes[0]]

    run_bounded(scenario())
    stored = stored_sender(https_portal, codes[0])
    assert stored is not None
    assert stored.names["en"] == "TLS"
    assert stored_sender(https_portal, codes[1]) is None
