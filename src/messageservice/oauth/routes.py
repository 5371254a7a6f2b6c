"""/oauth/authorize/ (authorization code, 30 s) and /oauth/token/ (GET query or POST form)."""

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
from messageservice.core.tokens import OAuthError, exchange_code, issue_code, refresh
from messageservice.phpquery import EncodingError, parse_str
from messageservice.rest.envelope import php_json
from messageservice.rest.params import read_body
from messageservice.session import signed_in_operator

log = logging.getLogger("messageservice.oauth")


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


def _within_app(redirect: str, app_url: str) -> bool:
    """The redirect must lie under the app's URL (same origin and path prefix), not just on its site."""
    target, app = urlsplit(redirect), urlsplit(app_url)
    base = app.path if app.path.endswith("/") else app.path.rsplit("/", 1)[0] + "/"
    return (target.scheme, target.netloc.lower()) == (app.scheme, app.netloc.lower()) and (
        target.path + "/"
    ).startswith(base)


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
            operator = await signed_in_operator(core, request)
            if operator is not None and requested in (None, operator.id):
                # Signed in to the console in this browser: the code is for that user.
                code, app_row = await issue_code(core, client_id, operator.id, signed_in=True)
            else:
                code, app_row = await issue_code(core, client_id, requested)
        except OAuthError as exc:
            return _error(exc)
        portal = await get_portal(core)
        redirect = _text(params, "redirect_uri")
        # Only the app's own URL space may receive its codes.
        target = redirect if redirect and _within_app(redirect, app_row.url) else app_row.url
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
                body = await exchange_code(core, client_id, secret, code)
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
