"""What a log line is about, where known: the request, the message, the app and the sender.

Context variables, so that code deep in a call (a send, a status report) names the message once and
every line logged later in the same request (its access line included) carries it.
"""

from __future__ import annotations

import contextvars
import os
import re

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
MESSAGE_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("message_id", default=None)
APP: contextvars.ContextVar[str | None] = contextvars.ContextVar("app", default=None)
SENDER: contextvars.ContextVar[str | None] = contextvars.ContextVar("sender", default=None)

# The fields a JSON line takes from the context, in the order they are written.
FIELDS: tuple[tuple[str, contextvars.ContextVar[str | None]], ...] = (
    ("request_id", REQUEST_ID),
    ("message_id", MESSAGE_ID),
    ("app", APP),
    ("sender", SENDER),
)

# A request id a client or proxy sent is kept when it looks like one (no spaces, quotes or control bytes).
_GOOD_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def new_request_id() -> str:
    return os.urandom(8).hex()


def request_id_from(header: bytes | None) -> str:
    """The client's X-Request-ID when it is a plain token, else a new one."""
    if header:
        text = header.decode("latin-1")
        if _GOOD_REQUEST_ID.fullmatch(text):
            return text
    return new_request_id()


def note_message(message_id: str | None, sender: str | None = None) -> None:
    """The message (and its sender) the current request or task is about."""
    if message_id:
        MESSAGE_ID.set(str(message_id)[:64])
    if sender:
        SENDER.set(sender[:300])


def note_app(app: str | None) -> None:
    if app:
        APP.set(app)
