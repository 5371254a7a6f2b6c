"""Signing in and out of the console."""

from __future__ import annotations

import asyncio
import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from messageservice.console.web import PREFIX, Console, check_post, guarded, posted
from messageservice.core.logins import Operator, authenticate

# A failed sign-in answers this much later: guessing by script gets slow.
FAILURE_DELAY_SECONDS = 0.5


def _safe_next(target: str) -> str:
    """Only back into the console: never to another site (no open redirect)."""
    if target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
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
        address = request.client.host if request.client else "?"

        def again(error: str, status: int) -> Response:
            context = {"next": next_url, "login": name, "error": error}
            return console.render(request, "login.html", context, status=status)

        if not name or not password:
            return again("Enter your login and password.", 400)
        wait = console.brake.wait_seconds(address, name)
        if wait:
            return again(f"Too many failed sign-ins. Try again in {wait} seconds.", 429)
        operator = await authenticate(console.core, name, password[:1024])
        if operator is None:
            console.brake.failed(address, name)
            await asyncio.sleep(FAILURE_DELAY_SECONDS)
            return again("Wrong login or password, or not an active admin.", 401)
        console.brake.succeeded(address, name)
        # A fresh session on sign-in: nothing from before (a planted CSRF token) carries over.
        request.session.clear()
        request.session.update({"user_id": operator.id, "stamp": operator.stamp, "csrf": secrets.token_urlsafe(32)})
        return RedirectResponse(next_url, status_code=303)

    async def logout(request: Request, operator: Operator) -> Response:
        request.session.clear()
        return RedirectResponse(PREFIX + "/login", status_code=303)

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", guarded(console, logout), methods=["POST"]),
    ]
