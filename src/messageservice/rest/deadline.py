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


class _Request:
    """One request's progress: its body complete, the deadline passed, a wait for body bytes under way."""

    __slots__ = ("complete", "deadline", "expired", "started", "task", "timed_out", "waiting")

    def __init__(self, deadline: float, task: asyncio.Task[Any] | None) -> None:
        self.deadline = deadline
        self.task = task
        self.complete = self.expired = self.started = self.timed_out = self.waiting = False

    def expire(self) -> None:
        self.expired = True
        if self.waiting and self.task is not None:
            self.task.cancel()


class _Sweep:
    """The requests of one event loop still reading their bodies, looked at every `tick` seconds by one
    timer while there are any. A timer per request (armed, then cancelled once the body is in) cost
    more than the rest of this middleware together: most bodies arrive with their headers."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.reading: set[_Request] = set()
        self.armed = False

    def watch(self, request: _Request) -> None:
        self.reading.add(request)
        if not self.armed:
            self.armed = True
            self.loop.call_later(self.tick, self.sweep)

    def sweep(self) -> None:
        now = self.loop.time()
        for request in [request for request in self.reading if request.deadline <= now]:
            self.reading.discard(request)
            request.expire()
        self.armed = bool(self.reading)
        if self.armed:
            self.loop.call_later(self.tick, self.sweep)


class BodyDeadline:
    """ASGI middleware: the whole request body must arrive within `seconds` of the request's start
    (give or take a quarter of it, at most a second: the sweep's tick).

    When the deadline passes during a wait for body bytes, that wait is cancelled (and only that: the
    app's own awaits are never interrupted); when it passes elsewhere, the next wait ends at once.
    `asyncio.timeout` around every receive cost about ten times as much, on every request."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds
        self._tick = min(1.0, max(seconds / 4, 0.001))
        self._sweep: _Sweep | None = None

    def _sweep_for(self, loop: asyncio.AbstractEventLoop) -> _Sweep:
        sweep = self._sweep
        if sweep is None or sweep.loop is not loop:
            # One loop per process in a server; tests run one loop after another.
            sweep = self._sweep = _Sweep(loop, self._tick)
        return sweep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        request = _Request(loop.time() + self.seconds, task)
        sweep = self._sweep_for(loop)
        sweep.watch(request)

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
                        sweep.reading.discard(request)
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
            sweep.reading.discard(request)


async def _send_timeout(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json; charset=utf-8"),
        (b"content-length", str(len(TIMEOUT_BODY)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": _TIMEOUT.status, "headers": headers})
    await send({"type": "http.response.body", "body": TIMEOUT_BODY})
