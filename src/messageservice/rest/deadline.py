"""A deadline for request bodies: a client that has not sent its whole body in time gets 408 and the
connection is closed.

uvicorn's `timeout_keep_alive` covers idle connections between requests, not a request whose body
trickles in (or stops half way): without this, thousands of half-sent bodies hold thousands of
connections and the handlers waiting on them for as long as the clients like.
"""

from __future__ import annotations

import asyncio

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


class _Request:
    """One request's progress: its body complete, the deadline passed, a wait for body bytes under way."""

    __slots__ = ("complete", "expired", "started", "timed_out", "waiting")

    def __init__(self) -> None:
        self.complete = self.expired = self.started = self.timed_out = self.waiting = False


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `seconds` of the request's start.

    One timer per request with a body, cancelled once the body is in. When it fires during a wait for
    body bytes, it cancels that wait (and only that: the app's own awaits are never interrupted); when
    it fires elsewhere, the next wait ends at once. `asyncio.timeout` around every receive cost about
    ten times as much, on every request."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        request = _Request()

        def expire() -> None:
            request.expired = True
            if request.waiting and task is not None:
                task.cancel()

        timer = loop.call_at(loop.time() + self.seconds, expire)

        async def timed_receive() -> Message:
            if request.complete:
                return await receive()  # the body is in: what follows is a wait for the disconnect
            if not request.expired:
                request.waiting = True
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    # Ours only if the deadline passed and nobody else cancelled this task too.
                    if not request.expired or task is None or task.uncancel() > 0:
                        raise
                else:
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        request.complete = True
                        timer.cancel()
                    return message
                finally:
                    request.waiting = False
            if not request.timed_out:
                request.timed_out = True
                if not request.started:
                    request.started = True
                    await _send_timeout(send)
            # The app stops reading as if the client had gone; whatever it answers is dropped.
            return {"type": "http.disconnect"}

        async def guarded_send(message: Message) -> None:
            if request.timed_out:
                return
            if message["type"] == "http.response.start":
                request.started = True
                if not request.complete:
                    # Answered before the body was read: close, rather than wait for the rest of it.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, timed_receive, guarded_send)
        except Exception:
            if not request.timed_out:
                raise
            # The app's own reaction to the disconnect it was handed; the client already has its 408.
        finally:
            timer.cancel()


async def _send_timeout(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(TIMEOUT_BODY)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": _TIMEOUT.status, "headers": headers})
    await send({"type": "http.response.body", "body": TIMEOUT_BODY})
