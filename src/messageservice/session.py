"""The console's browser session: an opaque cookie, the sign-in behind it kept in the database.

The cookie `messageservice_console` carries only a random token. A signed-in browser's token has a row
in `console_sessions` (core/sessions.py, stored as its sha256); a visitor who has not signed in gets a
token too, with no row, so that the sign-in form has a CSRF token before anyone is signed in. Signing
in always issues a new token (nothing planted before carries over). The CSRF token of a page is an
HMAC of the session token: nothing to store, and it changes with every sign-in.

The cookie's path is `/`: /oauth/authorize/ reads it (`signed_in_operator`) to know who is signed in.
Only the console and /oauth/authorize/ read it; the REST API never does.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import itsdangerous
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messageservice.core.context import Core
from messageservice.core.logins import Operator
from messageservice.core.sessions import end_session, new_session_token, session_operator, start_session

COOKIE = "messageservice_console"
# A one-line notice for the next page ("Installed."), signed; never a secret.
FLASH_COOKIE = "messageservice_flash"
FLASH_PATH = "/console"
CSRF_PURPOSE = "console-csrf"
FLASH_PURPOSE = "console-flash"
# Only the token's own characters (token_urlsafe): anything else is no session.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _well_formed(token: str | None) -> bool:
    return token is not None and 20 <= len(token) <= 100 and set(token) <= _TOKEN_CHARS


@dataclass
class BrowserSession:
    """This request's session; the middleware writes the cookies it decided on into the response."""

    core: Core
    token: str
    # The token is new (a new visitor's, or a new sign-in's): the cookie must be sent, if `needed`.
    issue: bool = False
    needed: bool = False
    ended: bool = False
    flash_in: dict[str, str] | None = None
    flash_out: dict[str, str] | None = None
    flash_shown: bool = False
    _operator: Operator | None = field(default=None, repr=False)
    _looked_up: bool = False

    async def operator(self) -> Operator | None:
        """The signed-in admin (one database read per request, however often asked)."""
        if not self._looked_up:
            self._looked_up = True
            self._operator = None if self.issue else await session_operator(self.core, self.token)
        return self._operator

    @property
    def csrf(self) -> str:
        # A new visitor's token is sent only once a page uses it (a form): static files set no cookie.
        self.needed = True
        key = self.core.box.derive(CSRF_PURPOSE).encode()
        return hmac.new(key, self.token.encode(), hashlib.sha256).hexdigest()

    def csrf_matches(self, sent: str) -> bool:
        return hmac.compare_digest(sent.encode(), self.csrf.encode())

    async def sign_in(self, user_id: int) -> None:
        """A new session row and a new token: whatever token the browser had before is worth nothing now."""
        if not self.issue:
            await end_session(self.core, self.token)
        self.token = await start_session(self.core, user_id)
        self.issue, self.needed, self._looked_up, self._operator = True, True, False, None

    async def sign_out(self) -> None:
        await end_session(self.core, self.token)
        self.ended, self._looked_up, self._operator = True, True, None

    def take_flash(self) -> dict[str, str] | None:
        self.flash_shown = self.flash_in is not None
        flash, self.flash_in = self.flash_in, None
        return flash


def _flash_signer(core: Core) -> itsdangerous.URLSafeSerializer:
    return itsdangerous.URLSafeSerializer(core.box.derive(FLASH_PURPOSE))


def _read_flash(core: Core, raw: str | None) -> dict[str, str] | None:
    if not raw:
        return None
    try:
        value = _flash_signer(core).loads(raw)
    except itsdangerous.BadSignature:
        return None
    if isinstance(value, dict) and isinstance(value.get("text"), str) and isinstance(value.get("kind"), str):
        return {"text": value["text"], "kind": value["kind"]}
    return None


def browser_session(request: HTTPConnection) -> BrowserSession:
    session = request.scope.get("console_session")
    assert isinstance(session, BrowserSession), "ConsoleSessions middleware is not installed"
    return session


def _cookie_headers(session: BrowserSession, secure: bool, lifetime: int) -> list[tuple[bytes, bytes]]:
    answer = Response()
    flags: dict[str, Any] = {"secure": secure, "httponly": True, "samesite": "lax"}
    if session.ended:
        answer.delete_cookie(COOKIE, path="/", **flags)
    elif session.issue and session.needed:
        answer.set_cookie(COOKIE, session.token, max_age=lifetime, path="/", **flags)
    if session.flash_out is not None:
        value = _flash_signer(session.core).dumps(session.flash_out)
        answer.set_cookie(FLASH_COOKIE, value, max_age=300, path=FLASH_PATH, **flags)
    elif session.flash_shown:
        answer.delete_cookie(FLASH_COOKIE, path=FLASH_PATH, **flags)
    return [(name, value) for name, value in answer.raw_headers if name == b"set-cookie"]


class ConsoleSessions:
    """ASGI middleware for the console: a `BrowserSession` in scope["console_session"], cookies on the way out.

    The cookie is Secure when the request came over https or the public URL is https (behind a proxy that
    ends TLS), HttpOnly (no script reads it) and SameSite=Lax (no cross-site POST carries it).
    """

    def __init__(self, app: ASGIApp, core: Core) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookies = HTTPConnection(scope).cookies
        raw = cookies.get(COOKIE)
        token = raw if raw is not None and _well_formed(raw) else None
        session = BrowserSession(self.core, token or new_session_token(), issue=token is None)
        session.flash_in = _read_flash(self.core, cookies.get(FLASH_COOKIE))
        scope["console_session"] = session
        settings = self.core.settings
        secure = scope.get("scheme") == "https" or (settings.public_url or "").startswith("https://")

        async def with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = _cookie_headers(session, secure, settings.console_session_max_seconds)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_cookies)


async def signed_in_operator(core: Core, request: Request) -> Operator | None:
    """For pages outside the console (/oauth/authorize/): the admin signed in in this browser, if any."""
    raw = request.cookies.get(COOKIE)
    if not _well_formed(raw):
        return None
    assert raw is not None
    return await session_operator(core, raw)
