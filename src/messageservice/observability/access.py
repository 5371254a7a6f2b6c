"""One access line per HTTP request, with its request id, and the id in the context of everything logged
while the request is answered (observability/context.py). Replaces uvicorn's access log (app.py turns
it off), so each request is logged once; the path is masked as uvicorn's was (logs.py `redact`)."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messageservice.logs import redact
from messageservice.observability.context import LOG_CONTEXT, LogContext, request_id_from
from messageservice.observability.jsonlog import ACCESS_LOGGER
from messageservice.observability.metrics import REST_METHOD

log = logging.getLogger(ACCESS_LOGGER)

REQUEST_ID_HEADER = b"x-request-id"


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = None
        for name, value in scope["headers"]:
            if name == REQUEST_ID_HEADER:
                sent = value
                break
        request_id = request_id_from(sent)
        echoed = (REQUEST_ID_HEADER, request_id.encode("latin-1"))
        token = LOG_CONTEXT.set(LogContext(request_id))
        status = 500  # an app that raises before answering: what the server then sends

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if log.isEnabledFor(logging.INFO):
                self._line(scope, status, (time.perf_counter() - started) * 1000, request_id)
            LOG_CONTEXT.reset(token)

    @staticmethod
    def _line(scope: Scope, status: int, duration_ms: float, request_id: str) -> None:
        query = scope.get("query_string", b"")
        target = redact(scope["path"] + ("?" + query.decode("latin-1") if query else ""))
        client = scope.get("client")
        address = client[0] if client else "-"
        rest_method = scope.get(REST_METHOD)
        log.info(
            '%s "%s %s" %d %.1f ms%s [%s]',
            address,
            scope["method"],
            target,
            status,
            duration_ms,
            f" {rest_method}" if rest_method else "",
            request_id,
            extra={
                "client": address,
                "method": scope["method"],
                "path": target,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "rest_method": rest_method,
            },
        )
