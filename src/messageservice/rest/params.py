"""Reading a request's parameters as Bitrix's CRestUtil::getRequestData does (spec 3.2)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from messageservice.core.errors import CoreError
from messageservice.phpquery import EncodingError, parse_pairs, parse_str
from messageservice.rest import errors

# Removed before a method sees its parameters; `start` is consumed as the list offset.
AUTH_KEYS = ("auth", "access_token")
RESERVED_KEYS = ("auth", "access_token", "auth_connector", "aplogin", "ap", "state", "start")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def request_params(request: Request, body: bytes) -> dict[str, Any]:
    """Query string, then the body on top of it (array_replace: the body wins key by key)."""
    try:
        params = parse_str(request.scope.get("query_string", b""))
        if request.method == "POST" and body:
            kind = _content_type(request)
            if kind == "application/json":
                params.update(_json_object(body))
            elif kind == "multipart/form-data":
                params.update(await _multipart(request, body))
            else:
                params.update(parse_str(body))
    except EncodingError:
        raise errors.wrong_encoding() from None
    check_text(params)
    return params


async def _multipart(request: Request, body: bytes) -> dict[str, Any]:
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
    return parse_pairs(fields)


def split_auth(params: dict[str, Any], authorization: str | None) -> tuple[str | None, dict[str, Any], Any]:
    """Take the access token out of the header or the params; strip reserved keys; return the offset."""
    token: str | None = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
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
