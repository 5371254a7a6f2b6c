"""What every console page shares: templates, the signed-in operator, CSRF and Origin checks, and errors."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from messageservice.background import BackgroundLoop
from messageservice.console.forms import Form, FormError
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.logins import LoginBrake, Operator
from messageservice.core.tokens import OAuthError
from messageservice.delivery.app_events import deliver_due
from messageservice.session import BrowserSession, browser_session
from messageservice.store.limits import DatabaseBrakeStore

log = logging.getLogger("messageservice.console")

HERE = Path(__file__).parent
PREFIX = "/console"


def _when(value: float | None) -> str:
    if value is None:
        return "—"
    moment = datetime.datetime.fromtimestamp(float(value), datetime.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _environment() -> jinja2.Environment:
    # Autoescape everywhere, whatever the file name: no page ever prints user text unescaped.
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.globals["prefix"] = PREFIX
    return env


@dataclass
class Console:
    """The console's shared state: core services, templates, the login brake, this process's loops."""

    core: Core
    loops: list[BackgroundLoop]
    env: jinja2.Environment = field(default_factory=_environment)
    # Shared by every process through the database; set from `core` below.
    brake: LoginBrake = field(init=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.brake = LoginBrake(DatabaseBrakeStore(self.core.store))

    def send_app_events_now(self) -> None:
        """Post queued app events (ONAPPINSTALL, ...) at once, as the CLI does, without holding up the page;
        the event worker's claim keeps the two from posting one event twice."""

        async def post() -> None:
            try:
                await deliver_due(self.core)
            except Exception:
                log.exception("posting app events failed; the event worker retries them")

        task = asyncio.create_task(post())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def render(self, request: Request, template: str, context: dict[str, Any], *, status: int = 200) -> HTMLResponse:
        session = request.scope.get("console_session")
        flash = session.take_flash() if isinstance(session, BrowserSession) else None
        html = self.env.get_template(template).render(
            request=request,
            operator=request.scope.get("operator"),
            csrf=csrf_token(request),
            flash=flash,
            nav=template.split(".")[0],
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def error_page(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", {"message": message}, status=status)


def csrf_token(request: Request) -> str:
    """The session's token (session.py): every form carries it and every POST is checked."""
    session = request.scope.get("console_session")
    return session.csrf if isinstance(session, BrowserSession) else ""


def same_origin(request: Request) -> bool:
    """The browser says where a POST comes from (Origin, else Referer); it must be this site."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    host = request.headers.get("host", "")
    return parts.scheme == request.url.scheme and parts.netloc.lower() == host.lower()


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A one-line notice for the next page (never a secret: its cookie is signed, not encrypted)."""
    browser_session(request).flash_out = {"text": text, "kind": kind}


def redirect(path: str) -> RedirectResponse:
    return RedirectResponse(PREFIX + path, status_code=303)


Handler = Callable[[Request, Operator], Awaitable[Response]]


def guarded(console: Console, handler: Handler, *, json: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """A page for signed-in admins: POSTs must carry the CSRF token and come from this site."""

    async def endpoint(request: Request) -> Response:
        operator = await browser_session(request).operator()
        if operator is None:
            if json:
                return JSONResponse({"error": "signed out"}, status_code=401)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"{PREFIX}/login?next={quote(target, safe='')}", status_code=303)
        request.scope["operator"] = operator
        if request.method == "POST":
            refusal = await check_post(request)
            if refusal is not None:
                return console.error_page(request, *refusal)
        try:
            return await handler(request, operator)
        except (FormError, CoreError, OAuthError) as exc:
            # A handler that did not catch its own bad input: still a clear message, never a trace.
            return console.error_page(request, 400, describe(exc))

    return endpoint


async def check_post(request: Request) -> tuple[int, str] | None:
    """Why a POST is refused (another site, unreadable, or no valid CSRF token) and its status, or None."""
    if not same_origin(request):
        return 403, "This form was not sent from this site (Origin check failed)."
    try:
        form = await Form.read(request)
    except FormError as exc:
        return 400, exc.message
    request.state.form = form
    if not browser_session(request).csrf_matches(form.raw("csrf")):
        return 403, "The form has expired or was not sent from this console (CSRF check failed). Reload and try again."
    return None


def posted(request: Request) -> Form:
    """The form already read (and CSRF-checked) by `guarded`."""
    return request.state.form


def describe(exc: Exception) -> str:
    if isinstance(exc, FormError):
        return exc.message
    if isinstance(exc, CoreError):
        return exc.description
    if isinstance(exc, OAuthError):
        return exc.description
    return "The request failed."
