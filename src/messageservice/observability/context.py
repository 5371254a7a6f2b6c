"""What a log line is about, where known: the request, the message, the app and the sender.

One context variable holding one small record per request (or per task that names a message), so
that code deep in a call (a send, a status report) names the message once and every line logged later
in the same request (its access line included) carries it. One variable rather than four: entering
and leaving a request then costs one `set` and one `reset`, which is most of what a request's log
context costs on the hot path.
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re


class LogContext:
    """The fields a JSON line takes from the context (`FIELDS`, in the order they are written)."""

    __slots__ = ("app", "message_id", "request_id", "sender")

    def __init__(self, request_id: str | None = None) -> None:
        self.request_id = request_id
        self.message_id: str | None = None
        self.app: str | None = None
        self.sender: str | None = None


FIELDS = ("request_id", "message_id", "app", "sender")

LOG_CONTEXT: contextvars.ContextVar[LogContext | None] = contextvars.ContextVar("log_context", default=None)

# A request id a client or proxy sent is kept when it looks like one (no spaces, quotes or control bytes).
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# New ids: a random prefix per process and a counter, 16 hex digits in all. Unique, which is all an id
# needs, without a system call per request.
_PREFIX = os.urandom(4).hex()
_COUNTER = itertools.count(int.from_bytes(os.urandom(3), "big"))


def new_request_id() -> str:
    return f"{_PREFIX}{next(_COUNTER) & 0xFFFFFFFF:08x}"


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    if header:
        text = header.decode("latin-1")
        if _GOOD_REQUEST_ID.fullmatch(text):
            return text
    return new_request_id()


def current() -> LogContext | None:
    return LOG_CONTEXT.get()


def _writable() -> LogContext:
    context = LOG_CONTEXT.get()
    if context is None:
        context = LogContext()
        LOG_CONTEXT.set(context)
    return context


def note_message(message_id: str | None, sender: str | None = None) -> None:
    """The message (and its sender) the current request or task is about."""
    if message_id or sender:
        context = _writable()
        if message_id:
            context.message_id = str(message_id)[:64]
        if sender:
            context.sender = sender[:300]


def note_app(app: str | None) -> None:
    if app:
        _writable().app = app
