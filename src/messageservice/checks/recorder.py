"""What the provider calls back: every /rest/ call the throwaway portal answers, recorded with its answer.

An ASGI wrapper around the server's app (the server itself is unchanged). It is also where the battery's
scenario hooks live, off the normal path: answer the next matching status report as a portal under load
does (503 QUERY_LIMIT_EXCEEDED with Retry-After), or as a portal does for an expired token.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from messageservice.core.errors import CoreError
from messageservice.phpquery import EncodingError, parse_str
from messageservice.rest import errors

SINK = "/check-provider/sink"  # answers any POST 200: the URL of the battery's second ("another") app
STATUS_UPDATE = "messageservice.message.status.update"
SENDER_ADD = "messageservice.sender.add"


@dataclass
class RestCall:
    seq: int
    at: float  # time.monotonic() when it arrived
    method: str  # lower case, without .json/.xml
    params: dict[str, Any]  # top-level keys upper-cased (as the portal reads them), auth keys removed
    token: str | None
    http_status: int = 0
    error: str | None = None
    error_description: str | None = None
    injected: str | None = None  # the hook that answered it instead of the portal

    @property
    def ok(self) -> bool:
        return 200 <= self.http_status < 300 and self.error is None

    @property
    def refusal(self) -> str:
        return f"{self.error}: {self.error_description} (HTTP {self.http_status})"


Matcher = Callable[[RestCall], bool]


@dataclass
class _Hook:
    matches: Matcher
    error: CoreError
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many calls it answers; -1: every matching call
    fired: list[RestCall] = field(default_factory=list)


def _method(path: str) -> str | None:
    if not path.startswith("/rest/"):
        return None
    name = unquote(path.rstrip("/").rsplit("/", 1)[-1]).lower()
    for suffix in (".json", ".xml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name or None


def _params(scope: Scope, body: bytes) -> dict[str, Any]:
    params: dict[str, Any] = {}
    content_type = dict(scope.get("headers") or []).get(b"content-type", b"").decode("latin-1")
    try:
        if scope.get("query_string"):
            params.update(parse_str(scope["query_string"]))
        if body and "json" in content_type:
            loaded = json.loads(body)
            params.update(loaded if isinstance(loaded, dict) else {})
        elif body:
            params.update(parse_str(body))
    except (EncodingError, ValueError):
        pass
    return {str(key).upper(): value for key, value in params.items()}


def _bearer(scope: Scope) -> str | None:
    value = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
    return value[7:].strip() or None if value.lower().startswith("bearer ") else None


class RestRecorder:
    """Wraps the server's ASGI app; `calls` grows as calls are answered (thread-safe, waitable)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.calls: list[RestCall] = []
        self._hooks: list[_Hook] = []
        self._changed = threading.Condition()

    # -- for the battery ------------------------------------------------------------------------------

    def mark(self) -> int:
        with self._changed:
            return len(self.calls)

    def since(self, mark: int, method: str | None = None) -> list[RestCall]:
        with self._changed:
            calls = self.calls[mark:]
        return [c for c in calls if method is None or c.method == method]

    def wait(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Until `condition()` holds (re-checked on every recorded call), or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.1))
            return True

    def answer_next(
        self, matches: Matcher, error: CoreError, *, headers: dict[str, str] | None = None, times: int = 1
    ) -> _Hook:
        hook = _Hook(matches, error, headers or {}, times)
        with self._changed:
            self._hooks.append(hook)
        return hook

    def remove(self, hook: _Hook) -> None:
        with self._changed:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def query_limit(self, matches: Matcher, retry_after: int) -> _Hook:
        """The next matching call is answered as a portal under load answers: 503 with Retry-After."""
        return self.answer_next(matches, errors.query_limit_exceeded(), headers={"Retry-After": str(retry_after)})

    def expire(self, matches: Matcher) -> _Hook:
        """From the first matching call on, its token is expired: every call with it gets expired_token (401)."""
        expired: set[str] = set()

        def hit(call: RestCall) -> bool:
            if call.token is not None and call.token in expired:
                return True
            if call.token is not None and matches(call):
                expired.add(call.token)
                return True
            return False

        return self.answer_next(hit, errors.expired_token(), times=-1)

    # -- ASGI -----------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == SINK:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"OK"})
            return
        method = _method(scope.get("path", "")) if scope["type"] == "http" else None
        if method is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        params = _params(scope, body)
        token = params.pop("AUTH", None) or params.pop("ACCESS_TOKEN", None) or _bearer(scope)
        call = RestCall(0, time.monotonic(), method, params, token if isinstance(token, str) else None)
        hook = self._hook_for(call)
        if hook is not None:
            await self._answer(call, hook, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        answer: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                call.http_status = message["status"]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            self._record(call, b"".join(answer))

    def _hook_for(self, call: RestCall) -> _Hook | None:
        with self._changed:
            for hook in self._hooks:
                if hook.times != 0 and hook.matches(call):
                    hook.fired.append(call)
                    if hook.times > 0:
                        hook.times -= 1
                    return hook
        return None

    async def _answer(self, call: RestCall, hook: _Hook, send: Send) -> None:
        error = hook.error
        body = json.dumps({"error": error.code, "error_description": error.description}).encode()
        headers = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in hook.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        call.http_status, call.injected = error.status, error.code
        self._record(call, body)

    def _record(self, call: RestCall, answer: bytes) -> None:
        try:
            decoded = json.loads(answer) if answer else None
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and "error" in decoded:
            call.error = str(decoded["error"])
            call.error_description = str(decoded.get("error_description") or "")
        elif not 200 <= call.http_status < 300:
            call.error, call.error_description = "HTTP_ERROR", answer[:200].decode("utf-8", "replace")
        with self._changed:
            call.seq = len(self.calls)
            self.calls.append(call)
            self._changed.notify_all()
