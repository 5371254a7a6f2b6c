"""Builds the ASGI application: the REST endpoint, OAuth, health, and the background event worker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from messageservice import __version__
from messageservice.background import BackgroundLoop, stop_loops
from messageservice.config import Settings, get_settings
from messageservice.console.app import create_console
from messageservice.core.context import Core
from messageservice.core.portal import set_public_url
from messageservice.delivery.app_events import EventWorker
from messageservice.delivery.dispatcher import Dispatcher
from messageservice.delivery.ssrf import handler_networks
from messageservice.delivery.wakeups import QueueListener
from messageservice.heap import settle_after_startup
from messageservice.housekeeping import Housekeeper
from messageservice.logs import install_access_log_redaction
from messageservice.methods import build_registry
from messageservice.oauth.routes import build_routes as oauth_routes
from messageservice.observability.access import AccessLog
from messageservice.observability.exposition import starlette_endpoint as metrics_endpoint
from messageservice.readiness import readiness
from messageservice.rest.deadline import BodyDeadline
from messageservice.rest.endpoint import RestEndpoint
from messageservice.rest.mount import RestFirst

log = logging.getLogger("messageservice")


def background_loops(core: Core, *, dispatch: bool = True) -> list[BackgroundLoop]:
    """What a server process runs besides HTTP; `messageservice worker` runs the same without HTTP."""
    loops: list[BackgroundLoop] = [EventWorker(core), Housekeeper(core)]
    if dispatch:
        dispatcher = Dispatcher(core)
        # Idle, it sleeps at most a sweep between turns.
        dispatcher.health.quiet_seconds = max(dispatcher.health.quiet_seconds, core.settings.dispatch_sweep_seconds)
        loops.append(dispatcher)
    if QueueListener.wanted(core.settings.database_url):
        # NOTIFY from other processes wakes this dispatcher (through core.notify_queued) and keeps the REST
        # cache right (cache/): every process listens, an API-only one too.
        loops.append(QueueListener(core, wakeups=dispatch))
    return loops


def with_handler_rule(settings: Settings, listening: Sequence[str] | None) -> Settings:
    """Settings whose allowed handler networks follow where this process listens (delivery/ssrf.py
    handler_networks); says once, in the log, which rule is in force."""
    networks, rule = handler_networks(settings.allowed_handler_networks, listening)
    log.info("%s", rule)
    return settings.model_copy(update={"allowed_handler_networks": networks})


def create_app(
    settings: Settings | None = None, *, public_url: str | None = None, listening: Sequence[str] | None = None
) -> Starlette:
    """`listening`: the addresses the server listens on (() when none, as in-process); None: not known,
    so loopback HANDLERs are not allowed unless the operator lists networks."""
    settings = with_handler_rule(settings or get_settings(), listening)
    core = Core.open(settings)
    registry = build_registry()
    rest = RestEndpoint(core, registry)
    loops = [*background_loops(core, dispatch=settings.serve_dispatch), rest.settler]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # uvicorn has configured its loggers by now; its access log would print secrets. Ours (AccessLog,
        # with the request id) replaces it: one line per request.
        install_access_log_redaction()
        logging.getLogger("uvicorn.access").disabled = True
        if public_url and not settings.public_url:
            await set_public_url(core, public_url)
        for loop in loops:
            loop.start()
        settle_after_startup()
        try:
            yield
        finally:
            await stop_loops(loops, settings.shutdown_grace_seconds)  # delivery in flight finishes, see background.py
            await core.close()

    async def health(request: Request) -> Response:
        """The process is alive; whether it can work is /ready's question."""
        return JSONResponse({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        is_ready, body = await readiness(core, loops)
        return JSONResponse(body, status_code=200 if is_ready else 503)

    async def index(request: Request) -> Response:
        return PlainTextResponse(
            "messageservice: a Bitrix24-compatible messageservice portal.\n"
            "REST: /rest/{method}   OAuth: /oauth/authorize/ /oauth/token/   Health: /health /ready   "
            "Console: /console/\n"
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return JSONResponse(
            {
                "error": "NOT_FOUND" if status == 404 else "ERROR_CORE",
                "error_description": "Not found" if status == 404 else "Request failed",
            },
            status_code=status,
        )

    routes = [
        Route("/rest/{path:anypath}", rest),
        Route("/rest", rest),
        *oauth_routes(core),
        Route("/health", health),
        Route("/ready", ready),
        Route("/metrics", metrics_endpoint(core)),
        Route("/console", lambda request: RedirectResponse("/console/", status_code=308)),
        Mount("/console", app=create_console(core, loops)),
        Route("/", index),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.add_middleware(RestFirst, rest=rest)  # innermost: REST calls skip the router (rest/mount.py)
    app.add_middleware(BodyDeadline, seconds=settings.body_timeout_seconds)
    app.add_middleware(AccessLog)  # outermost: its line times and names the whole request
    app.state.core = core
    app.state.registry = registry
    app.state.loops = loops
    return app
