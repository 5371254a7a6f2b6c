"""What a message's HANDLER calls carry, rebuilt for an operator to read.

Bodies are not stored: the dispatcher builds each one from the message when it sends it, with a
fresh access token. Rebuilt here by the same code (delivery/payload.py), the fields are exactly the
ones every attempt sent, except the `auth[...]` values, which differ per attempt and are secrets.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from sqlalchemy import Connection, select

from messageservice.core.context import Core
from messageservice.delivery.payload import AUTH_FIELDS, HandlerMessage, handler_body
from messageservice.store.snapshot import read_snapshot
from messageservice.store.tables import messages, senders

PER_ATTEMPT = "(new for each attempt)"


async def handler_fields(core: Core, message_id: int) -> list[tuple[str, str]] | None:
    """The form fields in order, as the HANDLER gets them; None if there is no such message or its sender is gone."""

    def read(conn: Connection) -> list[tuple[str, str]] | None:
        row = conn.execute(
            select(messages, senders.c.type.label("sender_type"))
            .join(senders, senders.c.id == messages.c.sender_id)
            .where(messages.c.id == message_id)
        ).first()
        if row is None:
            return None
        message = HandlerMessage(
            module_id=row.module_id,
            headers=json.loads(row.headers),
            sender_type=row.sender_type,
            sender_code=row.sender_code,
            message_id=row.message_id,
            message_to=row.message_to,
            message_body=row.message_body,
            ts=int(row.created_at),
        )
        fields = parse_qsl(handler_body(message, None), keep_blank_values=True)
        return fields + [(f"auth[{name}]", PER_ATTEMPT) for name in AUTH_FIELDS]

    return await read_snapshot(core.engine, read)
