"""A HANDLER call and an app event as typed objects, parsed from the form body Bitrix24 POSTs (spec 2.3, 3.9).

Bitrix24 builds these bodies with PHP's http_build_query, so keys carry PHP brackets
(`bindings[0][OWNER_ID]=7`, `auth[access_token]=...`); they are read back with the same rules as PHP's
parse_str. Anything that does not have the shape Bitrix24 sends raises `MalformedCall` naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from messageservice.phpquery import EncodingError, parse_str
from messageservice.provider.errors import MalformedCall

# Bitrix24 caps nothing here, but a provider should not parse megabytes from a stranger.
MAX_BODY_BYTES = 1_048_576

ONAPPINSTALL = "ONAPPINSTALL"
ONAPPUPDATE = "ONAPPUPDATE"
ONAPPUNINSTALL = "ONAPPUNINSTALL"


@dataclass(frozen=True)
class Auth:
    """The `auth[...]` block. Tokens are left out of repr so that logging a call does not leak them."""

    access_token: str | None = field(default=None, repr=False)
    expires: int | None = None
    expires_in: int | None = None
    scope: tuple[str, ...] = ()
    domain: str | None = None
    server_endpoint: str | None = None
    status: str | None = None
    client_endpoint: str | None = None
    member_id: str | None = None
    user_id: int | None = None
    application_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)  # events only (ONAPPINSTALL, ONAPPUPDATE)


@dataclass(frozen=True)
class Binding:
    """A CRM item the message belongs to (CCrmOwnerType: 1 lead, 2 deal, 3 contact, 4 company, ...)."""

    owner_type_id: int
    owner_id: int


@dataclass(frozen=True)
class HandlerCall:
    """One message for the provider to send, as POSTed to the sender's HANDLER."""

    code: str  # the sender's CODE
    message_id: str  # 32 hex; report status with it, and drop repeats of it (delivery is at least once here)
    message_to: str  # the phone number, normalised to +digits by the portal
    message_body: str
    type: str  # the sender's TYPE: SMS
    module_id: str | None = None  # crm (a CRM card) or bizproc (an automation rule)
    ts: int | None = None  # when the portal queued the call, Unix seconds
    properties: Mapping[str, str] = field(default_factory=dict)
    bindings: tuple[Binding, ...] = ()  # crm
    workflow_id: str | None = None  # bizproc
    document_id: tuple[str, ...] = ()  # bizproc: e.g. ("crm", "CCrmDocumentLead", "LEAD_98")
    document_type: tuple[str, ...] = ()  # bizproc: e.g. ("crm", "CCrmDocumentLead", "LEAD")
    auth: Auth | None = None  # absent when the message has no author (spec 2.4)
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)  # the whole body, parsed


@dataclass(frozen=True)
class AppEvent:
    """ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL (or another event), as POSTed to the app's URL."""

    event: str  # upper case, e.g. ONAPPINSTALL
    auth: Auth
    data: Mapping[str, Any] = field(default_factory=dict)
    ts: int | None = None
    event_handler_id: str | None = None
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> int | None:
        value = self.data.get("VERSION")
        return int(value) if isinstance(value, str) and value.isdigit() else None

    @property
    def language_id(self) -> str | None:
        value = self.data.get("LANGUAGE_ID")
        return value if isinstance(value, str) else None


def _form(body: bytes | str, max_bytes: int) -> dict[str, Any]:
    raw = body.encode("utf-8", "surrogateescape") if isinstance(body, str) else body
    if not isinstance(raw, bytes | bytearray):
        raise MalformedCall(f"the body must be bytes or str, not {type(body).__name__}")
    if len(raw) > max_bytes:
        raise MalformedCall(f"the body is {len(raw)} bytes, more than {max_bytes}")
    try:
        fields = parse_str(bytes(raw))
    except EncodingError:
        raise MalformedCall("the body is not UTF-8 text") from None
    if not fields:
        raise MalformedCall("the body is empty or not form-encoded")
    return fields


def _text(fields: Mapping[str, Any], name: str, label: str | None = None) -> str | None:
    """An optional single value."""
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise MalformedCall("must be a single value, not an array", label or name)
    return value


def _required(fields: Mapping[str, Any], name: str) -> str:
    """A single value that must be there and not be empty."""
    value = _text(fields, name)
    if value is None:
        raise MalformedCall("missing", name)
    if not value:
        raise MalformedCall("empty", name)
    return value


def _integer(fields: Mapping[str, Any], name: str, label: str | None = None) -> int | None:
    value = _text(fields, name, label)
    if value is None or value == "":
        return None
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):
        raise MalformedCall(f"must be an integer, got {value[:40]!r}", label or name)
    return int(value)


def _text_list(fields: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = fields.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MalformedCall("must be a list of values (name[0]=..&name[1]=..)", name)
    return tuple(value)


def _text_map(fields: Mapping[str, Any], name: str) -> dict[str, str]:
    value = fields.get(name)
    if value is None:
        return {}
    if isinstance(value, list):  # keys 0..n-1 read as a list; still a map to the caller
        value = {str(index): item for index, item in enumerate(value)}
    if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
        raise MalformedCall("must be a map of values (name[key]=..)", name)
    return dict(value)


def _bindings(fields: Mapping[str, Any]) -> tuple[Binding, ...]:
    value = fields.get("bindings")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise MalformedCall("must be a list (bindings[0][OWNER_TYPE_ID]=..)", "bindings")
    result = []
    for index, item in enumerate(value):
        label = f"bindings[{index}]"
        if not isinstance(item, dict):
            raise MalformedCall("must have OWNER_TYPE_ID and OWNER_ID", label)
        owner_type = _integer(item, "OWNER_TYPE_ID", f"{label}[OWNER_TYPE_ID]")
        owner = _integer(item, "OWNER_ID", f"{label}[OWNER_ID]")
        if owner_type is None or owner is None:
            raise MalformedCall("must have OWNER_TYPE_ID and OWNER_ID", label)
        result.append(Binding(owner_type, owner))
    return tuple(result)


def parse_auth(value: Any, *, label: str = "auth") -> Auth:
    """The `auth[...]` block of a call or event, already parsed into a map."""
    if not isinstance(value, dict):
        raise MalformedCall("must be a map (auth[access_token]=..)", label)

    def text(key: str) -> str | None:
        return _text(value, key, f"{label}[{key}]")

    scope = text("scope")
    return Auth(
        access_token=text("access_token"),
        expires=_integer(value, "expires", f"{label}[expires]"),
        expires_in=_integer(value, "expires_in", f"{label}[expires_in]"),
        scope=tuple(part for part in (scope or "").split(",") if part),
        domain=text("domain"),
        server_endpoint=text("server_endpoint"),
        status=text("status"),
        client_endpoint=text("client_endpoint"),
        member_id=text("member_id"),
        user_id=_integer(value, "user_id", f"{label}[user_id]"),
        application_token=text("application_token"),
        refresh_token=text("refresh_token"),
    )


def parse_handler_call(body: bytes | str, *, max_bytes: int = MAX_BODY_BYTES) -> HandlerCall:
    """The raw body of a POST to HANDLER (application/x-www-form-urlencoded) as a HandlerCall."""
    fields = _form(body, max_bytes)
    if "event" in fields:
        raise MalformedCall("this is an app event, not a HANDLER call (parse it with parse_app_event)", "event")
    return HandlerCall(
        code=_required(fields, "code"),
        message_id=_required(fields, "message_id"),
        message_to=_required(fields, "message_to"),
        message_body=_required(fields, "message_body"),
        type=_required(fields, "type"),
        module_id=_text(fields, "module_id"),
        ts=_integer(fields, "ts"),
        properties=_text_map(fields, "properties"),
        bindings=_bindings(fields),
        workflow_id=_text(fields, "workflow_id"),
        document_id=_text_list(fields, "document_id"),
        document_type=_text_list(fields, "document_type"),
        auth=parse_auth(fields["auth"]) if "auth" in fields else None,
        fields=fields,
    )


def parse_app_event(body: bytes | str, *, max_bytes: int = MAX_BODY_BYTES) -> AppEvent:
    """The raw body of an event POST to the app's URL (ONAPPINSTALL and the others) as an AppEvent."""
    fields = _form(body, max_bytes)
    event = _required(fields, "event")
    if "auth" not in fields:
        raise MalformedCall("missing", "auth")
    auth = parse_auth(fields["auth"])
    if not auth.application_token:
        raise MalformedCall("missing", "auth[application_token]")
    data = fields.get("data", {})
    if isinstance(data, list):
        data = {str(index): item for index, item in enumerate(data)}
    if not isinstance(data, dict):
        raise MalformedCall("must be a map (data[VERSION]=..)", "data")
    return AppEvent(
        event=event.upper(),
        auth=auth,
        data=data,
        ts=_integer(fields, "ts"),
        event_handler_id=_text(fields, "event_handler_id"),
        fields=fields,
    )
