"""The /rest/ endpoint: URL forms, parameters, auth, limits, the call and its envelope."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from messageservice.cache.freshness import RequestScope
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.logs import redact
from messageservice.observability.context import note_app
from messageservice.observability.metrics import OTHER, REST_METHOD, metrics_for
from messageservice.rest import errors
from messageservice.rest.auth import token_caller, webhook_caller
from messageservice.rest.dispatch import invoke
from messageservice.rest.envelope import Timing, error_body, php_json, success_body
from messageservice.rest.limiter import LimitSettler, OperatingMeter, SharedBucket
from messageservice.rest.params import (
    BIG_BODIES_AT_ONCE,
    RequestHead,
    bearer_token,
    big_body,
    off_loop,
    read_body,
    read_params,
    split_auth,
)
from messageservice.rest.registry import CallContext, Caller, Registry
from messageservice.rest.xml import php_xml
from messageservice.store.errors import StoreError, StoreUnavailable
from messageservice.store.failures import translate
from messageservice.store.limits import DatabaseLimitStore

log = logging.getLogger("messageservice.rest")

COMMON_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "origin, content-type, accept",
    "X-Content-Type-Options": "nosniff",
}
JSON_TYPE = "application/json; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


_COMMON_RAW = _encoded(COMMON_HEADERS)


class RestResponse(Response):
    """Starlette's Response with the same headers in the same order, the fixed ones encoded once:
    Starlette encodes every header anew for each response."""

    def __init__(self, content: bytes, status: int, media_type: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = content
        self.raw_headers = [
            *headers,
            (b"content-length", str(len(content)).encode("latin-1")),
            (b"content-type", media_type.encode("latin-1")),
        ]


@dataclass(frozen=True)
class Route:
    method: str
    transport: str
    webhook: tuple[str, str] | None


def parse_route(path: str) -> Route | None:
    """`/rest/m`, `/rest/m.json`, `/rest//m`, `/rest/{uid}/{code}/m`, each with or without a trailing slash."""
    segments = [s for s in path.split("/") if s]
    if len(segments) not in (1, 3):
        return None
    name = segments[-1]
    transport = "json"
    base, dot, suffix = name.rpartition(".")
    if dot and suffix.lower() in ("json", "xml"):
        name, transport = base, suffix.lower()
    webhook = (segments[0], segments[1]) if len(segments) == 3 else None
    return Route(name.lower(), transport, webhook)


ROUTES_REMEMBERED = 4096


class RestEndpoint:
    """The /rest/ endpoint as a plain ASGI app, so the router passes it every HTTP method (Bitrix
    reads GET and POST alike; other verbs act like GET)."""

    def __init__(self, core: Core, registry: Registry) -> None:
        self.core = core
        self.registry = registry
        settings = core.settings
        self.bucket = SharedBucket(
            DatabaseLimitStore(core.store),
            settings.rate_limit_burst,
            settings.rate_limit_per_second,
            settle_seconds=settings.rate_limit_settle_seconds,
        )
        self.meter = OperatingMeter(settings.operating_limit_seconds, DatabaseLimitStore(core.store))
        # The app runs it with the other background loops: it settles this process's limits with the shared ones.
        self.settler = LimitSettler(core, self.bucket, self.meter)
        self._big_bodies = asyncio.Semaphore(BIG_BODIES_AT_ONCE)
        self._routes: dict[str, Route | None] = {}
        self.metrics = metrics_for(core)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)
        self.metrics.rest_call(scope.get(REST_METHOD, OTHER), response.status_code, time.perf_counter() - started)

    def _route(self, path: str) -> Route | None:
        # The same few paths come again and again; a flood of new ones stops being remembered when full.
        try:
            return self._routes[path]
        except KeyError:
            route = parse_route(path)
            if len(self._routes) < ROUTES_REMEMBERED:
                self._routes[path] = route
            return route

    async def handle(self, request: Request) -> Response:
        route = self._route(request.path_params.get("path", ""))
        # The metrics' and the access line's label: a method of ours, or "other" (a bounded set).
        request.scope[REST_METHOD] = (
            route.method if route is not None and route.method in self.registry.methods else OTHER
        )
        if request.method == "OPTIONS":
            return Response(b"", 200, headers=COMMON_HEADERS)
        started = time.time()
        transport = route.transport if route else "json"
        headers = COMMON_HEADERS
        try:
            with RequestScope():  # one look at the REST cache's freshness per request (cache/freshness.py)
                body, status = await self._handle(request, route, started)
        except CoreError as exc:
            body, status = error_body(exc.code, exc.description), exc.status
        except Exception as failure:
            # The store raises StoreError; a driver error from code not yet behind it is mapped alike.
            stored = translate(failure)
            exc = self._store_error(request, stored) if stored is not None else None
            if exc is None:
                log.exception("unhandled error in %s", redact(request.url.path))
                exc = errors.internal_error()
            elif isinstance(stored, StoreUnavailable):
                headers = {**COMMON_HEADERS, "Retry-After": str(errors.STORE_RETRY_AFTER_SECONDS)}
            body, status = error_body(exc.code, exc.description), exc.status
        return self._respond(body, status, transport, headers)

    @staticmethod
    def _store_error(request: Request, error: StoreError) -> CoreError:
        path = redact(request.url.path)
        if isinstance(error, StoreUnavailable):
            # Not a bug here: storage full, read-only or unreachable; the client retries after a pause.
            log.warning("storage unavailable in %s: %s", path, error)
            return errors.store_unavailable()
        log.error("database error in %s", path, exc_info=error)
        return errors.sql_error()

    def _respond(
        self, body: dict[str, Any], status: int, transport: str, headers: dict[str, str] = COMMON_HEADERS
    ) -> Response:
        raw_headers = _COMMON_RAW if headers is COMMON_HEADERS else _encoded(headers)
        if transport == "xml":
            return RestResponse(php_xml(body), status, XML_TYPE, raw_headers)
        try:
            content = php_json(body)
        except (ValueError, TypeError):
            content = php_json(error_body("WRONG_ENCODING", "Wrong request encoding"))
        return RestResponse(content, status, JSON_TYPE, raw_headers)

    async def _handle(self, request: Request, route: Route | None, started: float) -> tuple[dict[str, Any], int]:
        # The method must exist before anything else is looked at, even auth (spec 3.1).
        method = self.registry.get(route.method) if route else None
        if route is None or method is None:
            raise errors.method_not_found()
        # Credentials first, from the header, the URL or a cheap pass over the body's pairs: a caller
        # without valid ones (or over its limit) never gets the nested parameters built (issue 9.1).
        head = RequestHead.of(request)
        limit = self.core.settings.max_body_bytes
        if big_body(head):
            async with self._big_bodies:  # a few at a time (rest/params.py BIG_BODIES_AT_ONCE)
                raw_body = await read_body(request, limit, head.content_length)
                raw = await read_params(request, head, raw_body)
        else:
            raw_body = await read_body(request, limit, head.content_length)
            raw = await read_params(request, head, raw_body)
        token = bearer_token(head.authorization) or raw.credential()
        caller = await self._authenticate(request, route, token)
        note_app(caller.client_id or f"webhook:{caller.webhook_id}")
        if not await self.bucket.admit(caller.limiter_key):
            raise errors.query_limit_exceeded()
        _, params, start = split_auth(await off_loop(len(raw_body), raw.build), None)
        ctx = CallContext(self.core, caller, self.registry, start=start, meter=self.meter)
        began = time.time()
        outcome = await invoke(ctx, method, params)
        finished = time.time()
        timing = Timing(started, finished, finished - began)
        body = success_body(
            outcome.result,
            timing.block(outcome.operating, outcome.operating_reset_at),
            next_offset=outcome.next,
            total=outcome.total,
        )
        return body, 200

    async def _authenticate(self, request: Request, route: Route, token: str | None) -> Caller:
        if route.webhook is not None:
            user_id, code = route.webhook
            return await webhook_caller(self.core, user_id, code, request.url.scheme == "https")
        return await token_caller(self.core, token)


class AnyPathConvertor(Convertor[str]):
    """Like Starlette's `path`, but crossing newlines: `/rest/a%0Ab/m` is a route, not a router 404."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", AnyPathConvertor())
