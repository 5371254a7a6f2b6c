"""Reading a request's parameters as Bitrix's CRestUtil::getRequestData does (spec 3.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Any, TypeVar

from starlette.requests import Request

from messageservice.core.errors import CoreError
from messageservice.phpquery import EncodingError, parse_pairs, scalar_params, split_pairs
from messageservice.rest import errors

T = TypeVar("T")

# Removed before a method sees its parameters; `start` is consumed as the list offset.
AUTH_KEYS = ("auth", "access_token")  # in order: `auth` wins
RESERVED_KEYS = ("auth", "access_token", "auth_connector", "aplogin", "ap", "state", "start")


@dataclass(slots=True)
class RequestHead:
    """The headers the REST endpoint reads, taken in one pass over the request's (the first of each
    wins, as in Starlette's `headers.get`): asking Starlette for each, several times a request, cost more."""

    method: str
    content_type: str  # media type only, lower case ("" when absent)
    content_length: str | None
    authorization: str | None

    @classmethod
    def of(cls, request: Request) -> RequestHead:
        content_type = content_length = authorization = None
        for name, value in request.scope["headers"]:
            if name == b"content-type":
                if content_type is None:
                    content_type = value.decode("latin-1")
            elif name == b"content-length":
                if content_length is None:
                    content_length = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        media_type = content_type.split(";", 1)[0].strip().lower() if content_type else ""
        return cls(request.method, media_type, content_length, authorization)


async def read_body(request: Request, limit: int, declared: str | None = None) -> bytes:
    """The whole body, refused past `limit` bytes; `declared`: its Content-Length, when already read."""
    if declared is None:
        declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    # Straight from `receive`, as Starlette's `request.stream()` reads it, without its async generator
    # (a few us a request); nothing reads the body from the request again.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise errors.body_too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        elif kind == "http.disconnect":
            # Gone, or cut off by the body deadline (rest/deadline.py), which has answered already.
            raise errors.body_timeout()


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        # Bitrix decodes invalid JSON to an empty array, silently.
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(i): item for i, item in enumerate(value)}
    return {}


def _plain_json(raw: bytes) -> bool:
    return b"\\u" not in raw and raw.count(b"[") + raw.count(b"{") <= 64 and _strict_utf8(raw)


def _strict_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def check_text(value: Any, depth: int = 0) -> None:
    """Text must be storable and echoable on every engine: no lone surrogates ("\\ud800" in JSON,
    UTF-7 multipart) and no NUL, which PostgreSQL cannot store in a text column."""
    if depth > 64:
        raise errors.wrong_encoding()
    if isinstance(value, str):
        if "\x00" in value:
            raise errors.wrong_encoding()
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise errors.wrong_encoding() from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, depth + 1)
            check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_text(item, depth + 1)


@dataclass
class RawParams:
    """A request's parameters split into decoded pairs (or a JSON object): linear work. Building the
    nested parameters from them costs more, so it waits until the caller is known (`build`)."""

    query: list[tuple[str, str]]
    body_pairs: list[tuple[str, str]] | None = None
    body_json: dict[str, Any] | None = None
    # A form body known to be valid text without credentials in it, split only by `build`.
    body_form: bytes | None = None
    # Strict UTF-8 without escapes and too few brackets to nest past the limit: nothing check_text would
    # refuse, so the walk over a big document is skipped.
    _plain_json: bool = False

    def credential(self) -> str | None:
        """The `auth`/`access_token` param the built parameters will hold (the body wins key by key)."""
        found: dict[str, Any] = dict(scalar_params(self.query, AUTH_KEYS)) if self.query else {}
        if self.body_json is not None:
            found.update({key: self.body_json[key] for key in AUTH_KEYS if key in self.body_json})
        elif self.body_pairs is not None:
            found.update(scalar_params(self.body_pairs, AUTH_KEYS))
        for key in AUTH_KEYS:
            value = found.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def check(self) -> None:
        """Unstorable text is refused before credentials are looked at (a linear pass, in C for pairs)."""
        for pairs in (self.query, self.body_pairs):
            if not pairs:
                continue
            text = "".join(chain.from_iterable(pairs))
            if "\x00" in text:
                raise errors.wrong_encoding()
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise errors.wrong_encoding() from None
        if self.body_json is not None and not self._plain_json:
            check_text(self.body_json)

    def build(self) -> dict[str, Any]:
        """Query string, then the body on top of it (array_replace: the body wins key by key)."""
        params = parse_pairs(self.query) if self.query else {}
        if self.body_json is not None:
            params.update(self.body_json)
        elif self.body_pairs is not None:
            params.update(parse_pairs(self.body_pairs))
        elif self.body_form is not None:
            params.update(parse_pairs(split_pairs(self.body_form)))
        return params


def _form_without_credentials(body: bytes) -> bool:
    """True when passes in C show that a form body is valid text and names no `auth`/`access_token`
    (PHP's mangling keeps their first letters; without '%' no escape can spell them): the common case,
    and an unauthenticated flood's, whose body then is never split."""
    if b"%" in body or b"auth" in body or b"acce" in body or b"\x00" in body:
        return False
    return _strict_utf8(body)


def split_params(request: Request, head: RequestHead, body: bytes) -> RawParams:
    """The pairs of the query string and of a form or raw body (not multipart: see `read_params`)."""
    try:
        query = request.scope.get("query_string", b"")
        raw = RawParams(split_pairs(query) if query else [])
        if head.method == "POST" and body:
            if head.content_type == "application/json":
                raw.body_json = _json_object(body)
                raw._plain_json = _plain_json(body)
            elif _form_without_credentials(body):
                raw.body_form = body
            else:
                raw.body_pairs = split_pairs(body)
    except EncodingError:
        raise errors.wrong_encoding() from None
    raw.check()
    return raw


async def read_params(request: Request, head: RequestHead, body: bytes) -> RawParams:
    """`split_params`, with big bodies split off the event loop, and multipart forms read as pairs."""
    posted = head.method == "POST" and body
    if posted and head.content_type == "multipart/form-data":
        raw = split_params(request, head, b"")
        raw.body_pairs = await _multipart(request, body)
        raw.check()
        return raw
    if posted and head.content_type != "application/json" and _form_without_credentials(body):
        # Those passes run in C at memory speed, cheaper than a hand-off to the parser thread: a flood
        # of big bodies without credentials stays on the event loop and is refused from there.
        raw = split_params(request, head, b"")
        raw.body_form = body
        return raw
    return await off_loop(len(body), split_params, request, head, body)


# How many request bodies over OFF_LOOP_BYTES one process reads at once. Credentials may sit inside such
# a body (Bitrix clients send `auth` there), so each costs a full read and scan before it can be refused:
# a flood of them takes turns instead of filling every turn of the event loop. Header and URL credentials
# do not exempt a request: anyone can write a wrong one.
BIG_BODIES_AT_ONCE = 4


def big_body(head: RequestHead) -> bool:
    """A POST whose body is over OFF_LOOP_BYTES by its Content-Length, or of unknown length."""
    if head.method != "POST":
        return False
    declared = head.content_length
    return not (declared is not None and declared.isdigit() and int(declared) <= OFF_LOOP_BYTES)


# Bodies above this are split and built in a thread of their own, so that one big request does not hold
# the event loop (and with it every other request and delivery). One thread: several parses at once
# would only take turns at the GIL, and the event loop gets its turns more often against one.
OFF_LOOP_BYTES = 65_536
_parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="params")


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    if size <= OFF_LOOP_BYTES:
        return work(*args)
    return await asyncio.get_running_loop().run_in_executor(_parser, work, *args)


async def _multipart(request: Request, body: bytes) -> list[tuple[str, str]]:
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    # Starlette's form parser reads the stream we already consumed; hand it the bytes again.
    clone = Request(request.scope, receive=replay)
    try:
        form = await clone.form()
    except Exception as exc:  # malformed multipart bodies raise assorted parser errors
        raise CoreError("ERROR_ARGUMENT", "Malformed multipart body") from exc
    fields = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    await form.close()
    return fields


def bearer_token(authorization: str | None) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def split_auth(params: dict[str, Any], authorization: str | None) -> tuple[str | None, dict[str, Any], Any]:
    """Take the access token out of the header or the params; strip reserved keys; return the offset."""
    token = bearer_token(authorization)
    if token is None:
        for key in AUTH_KEYS:
            value = params.get(key)
            if isinstance(value, str) and value:
                token = value
                break
    start = params.get("start")
    cleaned = {key: value for key, value in params.items() if key not in RESERVED_KEYS}
    return token, cleaned, start


def upper_keys(params: dict[str, Any]) -> dict[str, Any]:
    """array_change_key_case(CASE_UPPER): top-level keys only; a later duplicate wins."""
    return {str(key).upper(): value for key, value in params.items()}
