"""The console as one ASGI app, mounted at /console by messageservice.app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messageservice.background import BackgroundLoop
from messageservice.console import apps, auth, checks, dashboard, messages, portal, providers, send
from messageservice.console.web import HERE, Console, log
from messageservice.core.context import Core
from messageservice.rest.errors import STORE_RETRY_AFTER_SECONDS
from messageservice.session import ConsoleSessions
from messageservice.store.errors import StoreError, StoreUnavailable

# No inline script or style anywhere: even text that slipped past escaping could not run.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def create_console(core: Core, loops: list[BackgroundLoop]) -> Starlette:
    console = Console(core, loops)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        texts = {404: "There is no such page.", 405: "That action is not allowed here."}
        text = texts.get(status, "The request failed.")
        return console.error_page(request, status, text)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("console page failed: %s %s", request.method, request.url.path, exc_info=exc)
        return console.error_page(request, 500, "Something went wrong on the server; it has been logged.")

    async def store_error(request: Request, exc: Exception) -> Response:
        # The database failed, not the page: an error page (never a trace), 503 while it cannot be reached.
        if isinstance(exc, StoreUnavailable):
            log.warning("console page %s: storage unavailable: %s", request.url.path, exc)
            response = console.error_page(request, 503, "The database cannot be reached or written now; try again.")
            response.headers["Retry-After"] = str(STORE_RETRY_AFTER_SECONDS)
            return response
        log.error("console page failed: %s %s", request.method, request.url.path, exc_info=exc)
        return console.error_page(request, 500, "A database operation failed; it has been logged.")

    routes = [
        *auth.build_routes(console),
        *dashboard.build_routes(console),
        *messages.build_routes(console),
        *send.build_routes(console),
        *apps.build_routes(console),
        *providers.build_routes(console),
        *checks.build_routes(console),
        *portal.build_routes(console),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(SecurityHeaders),
            # Server-side sessions behind an opaque cookie (session.py); /oauth/authorize/ reads it too.
            Middleware(ConsoleSessions, core=core),
        ],
        exception_handlers={HTTPException: http_error, StoreError: store_error, Exception: server_error},
    )
