"""/oauth/authorize/ (authorization code, 30 s) and /oauth/token/ (GET query or POST form).

As on Bitrix24, a code is issued only to a user signed in (to the console, here): a browser that is
not signed in is sent to the sign-in page and comes back to the same authorize request afterwards.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.portal import get_portal
from messageservice.core.tokens import OAuthError, authorizing_app, exchange_code, issue_code, refresh
from messageservice.oauth.redirects import clean_redirect_uri, within_app
from messageservice.phpquery import EncodingError, parse_str
from messageservice.rest.envelope import php_json
from messageservice.rest.params import read_body
from messageservice.session import signed_in_operator

log = logging.getLogger("messageservice.oauth")
# Where a browser with no console session is sent to sign in (console/auth.py returns it here after).
CONSOLE_LOGIN = "/console/login"


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        php_json(body),
        status,
        media_type="application/json; charset=utf-8",
        headers={"Cache-Control": "no-store"},
    )


def _error(error: OAuthError) -> Response:
    return _json({"error": error.error, "error_description": error.description}, error.status)


async def _params(request: Request, core: Core) -> dict[str, Any]:
    try:
        params = parse_str(request.scope.get("query_string", b""))
        if request.method == "POST":
            params.update(parse_str(await read_body(request, core.settings.max_body_bytes)))
    except EncodingError:
        raise OAuthError("invalid_request", "Wrong request encoding") from None
    except CoreError as exc:
        raise OAuthError("invalid_request", exc.description, exc.status) from None
    return params


def _text(params: dict[str, Any], key: str) -> str | None:
    value = params.get(key)
    return value if isinstance(value, str) and value else None


def _sign_in_first(params: dict[str, Any]) -> Response:
    """No one is signed in: the sign-in page, which comes back to this same request afterwards."""
    again = {key: value for key, value in params.items() if isinstance(value, str)}
    target = "/oauth/authorize/?" + urlencode(again)
    return RedirectResponse(f"{CONSOLE_LOGIN}?{urlencode({'next': target})}", status_code=303)


def _guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """A bug must still answer in OAuth's JSON shape, never with a stack trace."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception:
            log.exception("unhandled error in %s", request.url.path)
            return _error(OAuthError("server_error", "Internal server error", 500))

    return guarded


def build_routes(core: Core) -> list[Route]:
    async def authorize(request: Request) -> Response:
        try:
            params = await _params(request, core)
            client_id = _text(params, "client_id")
            if client_id is None:
                raise OAuthError("invalid_request", "client_id is required")
            user_text = _text(params, "user_id")
            if user_text is not None and not (user_text.isascii() and user_text.isdigit() and len(user_text) <= 10):
                raise OAuthError("invalid_request", "user_id must be a number")
            requested = int(user_text) if user_text else None
            app_row = await authorizing_app(core, client_id)
            asked = _text(params, "redirect_uri")
            bound = clean_redirect_uri(asked) if asked is not None else None
            trusted = core.settings.oauth_trust_user_id
            operator = await signed_in_operator(core, request)
            if operator is None and not trusted:
                return _sign_in_first(params)
            if operator is not None and requested in (None, operator.id):
                # The code is for the user signed in to the console in this browser, and only for them.
                code, app_row = await issue_code(core, client_id, operator.id, signed_in=True, redirect_uri=bound)
            elif trusted:
                code, app_row = await issue_code(core, client_id, requested, redirect_uri=bound)
            else:
                raise OAuthError("access_denied", "user_id is not the signed-in user", 403)
        except OAuthError as exc:
            return _error(exc)
        portal = await get_portal(core)
        # Only the app's own URL space may receive its codes; elsewhere they go to the app's URL.
        target = bound if bound is not None and within_app(bound, app_row.url) else app_row.url
        query = {
            "code": code,
            "state": _text(params, "state") or "",
            "domain": portal.domain,
            "member_id": portal.member_id,
            "scope": app_row.scopes,
            "server_domain": urlsplit(portal.public_url).netloc,
        }
        separator = "&" if "?" in target else "?"
        return RedirectResponse(f"{target}{separator}{urlencode(query)}", status_code=302)

    async def token(request: Request) -> Response:
        try:
            params = await _params(request, core)
            grant = _text(params, "grant_type")
            client_id = _text(params, "client_id")
            secret = _text(params, "client_secret")
            if client_id is None:
                raise OAuthError("invalid_client", "client_id is required", 401)
            if grant == "authorization_code":
                code = _text(params, "code")
                if code is None:
                    raise OAuthError("invalid_request", "code is required")
                sent = _text(params, "redirect_uri")
                redirect_uri = clean_redirect_uri(sent) if sent is not None else None
                body = await exchange_code(core, client_id, secret, code, redirect_uri)
            elif grant == "refresh_token":
                refresh_token = _text(params, "refresh_token")
                if refresh_token is None:
                    raise OAuthError("invalid_request", "refresh_token is required")
                body = await refresh(core, client_id, secret, refresh_token)
            else:
                raise OAuthError("invalid_request", "grant_type must be authorization_code or refresh_token")
        except OAuthError as exc:
            return _error(exc)
        return _json(body)

    return [
        Route("/oauth/authorize/", _guarded(authorize), methods=["GET", "POST"]),
        Route("/oauth/authorize", _guarded(authorize), methods=["GET", "POST"]),
        Route("/oauth/token/", _guarded(token), methods=["GET", "POST"]),
        Route("/oauth/token", _guarded(token), methods=["GET", "POST"]),
    ]
