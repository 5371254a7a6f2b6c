"""The /metrics page: who may read it (MESSAGESERVICE_METRICS), and the page itself, on `serve`'s own port and
on the small listener `worker --metrics-port` opens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from messageservice.background import BackgroundLoop
from messageservice.config import MetricsAccess, Settings
from messageservice.core.context import Core
from messageservice.observability.metrics import metrics_for
from messageservice.observability.state import StateCollector, read_state
from messageservice.store.errors import StoreError

log = logging.getLogger("messageservice.metrics")


@dataclass(frozen=True)
class Refusal:
    status: int
    error: str
    description: str
    headers: tuple[tuple[str, str], ...] = ()

    def body(self) -> bytes:
        return json.dumps({"error": self.error, "error_description": self.description}).encode()


NOT_FOUND = Refusal(404, "NOT_FOUND", "Not found")
NOT_LOCAL = Refusal(403, "ACCESS_DENIED", "Metrics are open to clients on this machine only")
NO_TOKEN = Refusal(
    401, "INVALID_TOKEN", "A bearer token is required", (("WWW-Authenticate", 'Bearer realm="metrics"'),)
)
UNAVAILABLE = Refusal(503, "DATABASE_UNAVAILABLE", "The database could not be read; try again")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def refusal(settings: Settings, client_host: str | None, authorization: str | None) -> Refusal | None:
    """None when this client may read the metrics; else what to answer."""
    if settings.metrics == MetricsAccess.OFF:
        return NOT_FOUND
    if settings.metrics == MetricsAccess.LOOPBACK:
        return None if is_loopback(client_host) else NOT_LOCAL
    scheme, _, presented = (authorization or "").partition(" ")
    # Digests of equal length compared in constant time: the time taken says nothing of the token, not even
    # its length.
    given = hashlib.sha256(presented.strip().encode()).digest()
    expected = hashlib.sha256((settings.metrics_token or "").encode()).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        return NO_TOKEN
    return None


async def render(core: Core) -> bytes:
    """This process's counters, then the installation's state as the database has it now."""
    state = await read_state(core)
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(StateCollector(state))
    return generate_latest(metrics_for(core).registry) + generate_latest(scrape)


async def answer(core: Core, client_host: str | None, authorization: str | None) -> tuple[int, bytes, dict[str, str]]:
    refused = refusal(core.settings, client_host, authorization)
    if refused is None:
        try:
            return 200, await render(core), {"Content-Type": CONTENT_TYPE_LATEST}
        except StoreError as exc:
            log.warning("metrics: reading the installation's state failed: %s", exc)
            refused = UNAVAILABLE
    headers = {"Content-Type": "application/json; charset=utf-8", **dict(refused.headers)}
    return refused.status, refused.body(), headers


def starlette_endpoint(core: Core) -> Callable[[Request], Awaitable[Response]]:
    """`GET /metrics` on serve."""

    async def metrics(request: Request) -> Response:
        host = request.client.host if request.client else None
        status, body, headers = await answer(core, host, request.headers.get("authorization"))
        return Response(body, status, headers=headers)

    return metrics


class MetricsListener(BackgroundLoop):
    """`worker --metrics-port`: /metrics on a port of its own (a worker serves no other HTTP)."""

    name = "metrics-listener"

    def __init__(self, core: Core, host: str, port: int) -> None:
        super().__init__(core)
        self.host, self.port = host, port
        self.bound = asyncio.Event()
        self.bound_port: int | None = None

    async def _metrics(self, request: web.Request) -> web.Response:
        status, body, headers = await answer(self._core, request.remote, request.headers.get("Authorization"))
        return web.Response(body=body, status=status, headers=headers)

    async def _other(self, request: web.Request) -> web.Response:
        return web.Response(body=NOT_FOUND.body(), status=404, content_type="application/json")

    async def run(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/{tail:.*}", self._other)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            addresses = runner.addresses
            self.bound_port = int(addresses[0][1]) if addresses else self.port
            log.info("metrics on http://%s:%s/metrics", self.host, self.bound_port)
            self.bound.set()
            while True:
                self.mark_active()
                await asyncio.sleep(self.quiet_seconds / 2)
        finally:
            await runner.cleanup()


def metrics_loops(core: Core, host: str, port: int | None) -> list[BackgroundLoop]:
    """`worker --metrics-port`: the listener, run with the worker's other loops; none without the option."""
    if port is None:
        return []
    if core.settings.metrics == MetricsAccess.OFF:
        log.warning("--metrics-port %s: MESSAGESERVICE_METRICS is off, so /metrics answers 404", port)
    return [MetricsListener(core, host, port)]
