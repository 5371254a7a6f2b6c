"""The HANDLER call's form body, field for field in Bitrix's order (spec 2.3, 2.4)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from messageservice.phpquery import http_build_query

# auth[...] in the order Bitrix's queue servers write it, without refresh_token (sendRefreshToken=false).
AUTH_FIELDS = (
    "access_token",
    "expires",
    "expires_in",
    "scope",
    "domain",
    "server_endpoint",
    "status",
    "client_endpoint",
    "member_id",
    "user_id",
    "application_token",
)


@dataclass(frozen=True)
class HandlerMessage:
    module_id: str
    headers: dict[str, Any]  # bindings, or workflow_id / document_id / document_type
    sender_type: str
    sender_code: str
    message_id: str
    message_to: str
    message_body: str
    ts: int


def stored_message(row: Any) -> HandlerMessage:
    """A HandlerMessage from a messages row joined with its sender's type (as `sender_type`)."""
    return HandlerMessage(
        module_id=row.module_id,
        headers=json.loads(row.headers),
        sender_type=row.sender_type or "SMS",  # the sender may be gone; Bitrix's REST senders are SMS
        sender_code=row.sender_code,
        message_id=row.message_id,
        message_to=row.message_to,
        message_body=row.message_body,
        ts=int(row.created_at),
    )


def auth_block(
    portal: Any, row: Any, *, access_token: str, expires: Any, expires_in: int, application_token: str
) -> dict[str, Any]:
    """auth[...] for the author of a messages row joined with its app (`scopes`, `app_status`)."""
    return {
        "access_token": access_token,
        "expires": expires,
        "expires_in": expires_in,
        "scope": row.scopes,
        "domain": portal.domain,
        "server_endpoint": portal.client_endpoint,
        "status": row.app_status,
        "client_endpoint": portal.client_endpoint,
        "member_id": portal.member_id,
        "user_id": row.author_id,
        "application_token": application_token,
    }


def handler_fields(message: HandlerMessage, auth: dict[str, Any] | None) -> dict[str, Any]:
    """The body as an ordered map: headers first, then the sender's fields, then auth."""
    fields: dict[str, Any] = {"module_id": message.module_id, **message.headers}
    fields["properties"] = {"phone_number": message.message_to, "message_text": message.message_body}
    fields["type"] = message.sender_type
    fields["code"] = message.sender_code
    fields["message_id"] = message.message_id
    fields["message_to"] = message.message_to
    fields["message_body"] = message.message_body
    fields["ts"] = message.ts
    if auth is not None:
        fields["auth"] = {key: auth[key] for key in AUTH_FIELDS if key in auth}
    return fields


def handler_body(message: HandlerMessage, auth: dict[str, Any] | None) -> str:
    return http_build_query(handler_fields(message, auth))


def encoded_auth(auth: dict[str, Any]) -> str:
    """auth[...] as the body's last fields, encoded once for all the calls that carry the same block."""
    return http_build_query({"auth": {key: auth[key] for key in AUTH_FIELDS if key in auth}})


def handler_body_with(message: HandlerMessage, auth: str) -> str:
    """`handler_body` with auth[...] already encoded (`encoded_auth`): the same bytes."""
    return f"{http_build_query(handler_fields(message, None))}&{auth}"
