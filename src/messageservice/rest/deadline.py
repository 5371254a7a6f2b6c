"""A deadline for request bodies: a client that has not sent its whole body in time gets 408 and the
connection is closed.

uvicorn's `timeout_keep_alive` covers idle connections between requests, not a request whose body
trickles in (or stops half way): without this, thousands of half-sent bodies hold thousands of
connections and the handlers waiting on them for as long as the clients like.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messageservice.rest.envelope import error_body, php_json
from messageservice.rest.errors import body_timeout

_TIMEOUT = body_timeout()
TIMEOUT_BODY = php_json(error_body(_TIMEOUT.code, _TIMEOUT.description))


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `seconds` of the request's start."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        state: dict[str, Any] = {"complete": not _has_body(scope), "started": False, "timed_out": False}

        async def timed_receive() -> Message:
            if state["complete"] or state["timed_out"]:
                # The body is in (what follows is a wait for the disconnect), or it never will be.
                return await receive() if not state["timed_out"] else {"type": "http.disconnect"}
            try:
                async with asyncio.timeout(max(deadline - loop.time(), 0.0)):
                    message = await receive()
            except TimeoutError:
                state["timed_out"] = True
                if not state["started"]:
                    state["started"] = True
                    await _send_timeout(send)
                # The app stops reading as if the client had gone; whatever it answers is dropped.
                return {"type": "http.disconnect"}
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["complete"] = True
            return message

        async def guarded_send(message: Message) -> None:
            if state["timed_out"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                if not state["complete"]:
                    # Answered before the body was read: close, rather than wait for the rest of it.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not state["timed_out"]:
                raise
            # The app's own reaction to the disconnect it was handed; the client already has its 408.


async def _send_timeout(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(TIMEOUT_BODY)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": _TIMEOUT.status, "headers": headers})
    await send({"type": "http.response.body", "body": TIMEOUT_BODY})
