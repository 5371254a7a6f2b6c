"""Signing in and out of the console."""

from __future__ import annotations

import asyncio

import itsdangerous
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from messageservice.console.web import PREFIX, Console, check_post, guarded, posted
from messageservice.core.logins import Operator, account_key, authenticate
from messageservice.session import browser_session

# A failed sign-in answers this much later: guessing by script gets slow.
FAILURE_DELAY_SECONDS = 0.5
# A browser that signed in to an account carries this signed cookie: that account's brake does not hold it,
# so an attacker guessing the account's password cannot keep its admin out (OWASP's "device cookies").
DEVICE_COOKIE = "messageservice_device"
DEVICE_SECONDS = 90 * 86400
DEVICE_PURPOSE = "console-device"


def _device_signer(console: Console) -> itsdangerous.TimestampSigner:
    return itsdangerous.TimestampSigner(console.core.box.derive(DEVICE_PURPOSE))


def _trusted_device(console: Console, request: Request, login: str) -> bool:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return False
    try:
        signed_for = _device_signer(console).unsign(raw, max_age=DEVICE_SECONDS).decode()
    except (itsdangerous.BadSignature, UnicodeDecodeError):
        return False
    return signed_for == account_key(login)


# Where a sign-in may return to: the console, or the OAuth authorize request that asked for the sign-in.
_NEXT_PREFIXES = (PREFIX + "/", "/oauth/authorize/?", "/oauth/authorize?")


def _safe_next(target: str) -> str:
    """Only back into this site's console or authorize page: never to another site (no open redirect)."""
    if target.startswith(_NEXT_PREFIXES) and "\\" not in target and not any(ord(c) < 0x21 for c in target):
        return target
    return PREFIX + "/"


def build_routes(console: Console) -> list[Route]:
    async def login_form(request: Request) -> Response:
        next_url = _safe_next(request.query_params.get("next", ""))
        return console.render(request, "login.html", {"next": next_url, "login": "", "error": None})

    async def login(request: Request) -> Response:
        refusal = await check_post(request)
        if refusal is not None:
            return console.render(
                request, "login.html", {"next": PREFIX + "/", "login": "", "error": refusal[1]}, status=refusal[0]
            )
        form = posted(request)
        name, password = form.raw("login").strip()[:64], form.raw("password")
        next_url = _safe_next(form.raw("next"))
        # The peer as the server saw it: X-Forwarded-For counts only from MESSAGESERVICE_TRUSTED_PROXIES
        # (`serve` hands that setting to uvicorn, which rewrites the client from the header).
        address = request.client.host if request.client else "?"
        trusted_device = _trusted_device(console, request, name)

        def again(error: str, status: int) -> Response:
            context = {"next": next_url, "login": name, "error": error}
            return console.render(request, "login.html", context, status=status)

        if not name or not password:
            return again("Enter your login and password.", 400)
        wait = await console.brake.wait_seconds(address, name, trusted_device=trusted_device)
        if wait:
            answer = again(f"Too many failed sign-ins. Try again in {wait} seconds.", 429)
            answer.headers["Retry-After"] = str(wait)
            return answer
        operator = await authenticate(console.core, name, password[:1024])
        if operator is None:
            await console.brake.failed(address, name)
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            return again("Wrong login or password, or not an active admin.", 401)
        await console.brake.succeeded(address, name)
        # A new session (and token, and so CSRF token) on sign-in: nothing planted before carries over.
        await browser_session(request).sign_in(operator.id)
        answer = RedirectResponse(next_url, status_code=303)
        answer.set_cookie(
            DEVICE_COOKIE,
            _device_signer(console).sign(account_key(operator.login)).decode(),
            max_age=DEVICE_SECONDS,
            path=PREFIX + "/login",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return answer

    async def logout(request: Request, operator: Operator) -> Response:
        # The row goes: the cookie, wherever a copy of it is, signs nobody in any more.
        await browser_session(request).sign_out()
        return RedirectResponse(PREFIX + "/login", status_code=303)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(console, logout), methods=["POST"]),
    ]
