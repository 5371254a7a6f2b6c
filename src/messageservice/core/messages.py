"""Messages: sending (an extension of ours), reading, and delivery status reports (spec 1.7, 1.8, 2.2)."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.errors import AccessDenied, CoreError
from messageservice.core.phones import normalize_phone, recipient
from messageservice.core.queueing import Draft, queue
from messageservice.core.senders import check_code
from messageservice.observability.context import note_message
from messageservice.observability.metrics import metrics_for
from messageservice.php import php_empty, php_string
from messageservice.store.errors import StoreConflict
from messageservice.store.sends import wake_workers
from messageservice.store.tables import attempts, deliveries, messages, status_reports

VALIDATION = "ERROR_MESSAGE_VALIDATION_FAILURE"
NOT_FOUND = ("ERROR_MESSAGE_NOT_FOUND", "Message not found!")
MAX_BODY = 65_535
MAX_TO = 255
PAGE_SIZE = 50
# A message keeps its first status report and its last KEPT_REPORTS (a provider reporting in a loop must
# not grow it without end), and message.get shows its first attempt and its last KEPT_ATTEMPTS.
KEPT_REPORTS = 50
KEPT_ATTEMPTS = 50


@dataclass(frozen=True)
class Actor:
    """Who acts: a user, through an app (app_id), a webhook (webhook_id) or our own tools (channel)."""

    user_id: int
    is_admin: bool
    app_id: int | None = None
    webhook_id: int | None = None
    channel: str | None = None  # "cli", "console": an operator acting outside the REST API

    @property
    def scope(self) -> str:
        """Where an IDEMPOTENCY_KEY is unique."""
        if self.app_id is not None:
            return f"app:{self.app_id}"
        if self.webhook_id is not None:
            return f"webhook:{self.webhook_id}"
        return f"{self.channel or 'user'}:{self.user_id}"


def _invalid(text: str) -> CoreError:
    return CoreError(VALIDATION, text)


def _text(value: Any) -> str | None:
    return None if isinstance(value, dict | list) else php_string(value)


def _bindings(value: Any) -> list[dict[str, int]]:
    if php_empty(value):
        return []
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else None
    if items is None:
        raise _invalid("Wrong BINDINGS!")
    bindings = []
    for item in items:
        fields = {str(k).upper(): v for k, v in item.items()} if isinstance(item, dict) else {}
        owner_type, owner = _text(fields.get("OWNER_TYPE_ID")), _text(fields.get("OWNER_ID"))
        if not (
            owner_type
            and owner
            and owner_type.isascii()
            and owner_type.isdigit()
            and owner.isascii()
            and owner.isdigit()
            and len(owner_type) < 10
            and len(owner) < 19
        ):
            raise _invalid("Wrong BINDINGS!")
        bindings.append({"OWNER_TYPE_ID": int(owner_type), "OWNER_ID": int(owner)})
    return bindings


def _triple(value: Any, name: str) -> list[str]:
    items = [_text(v) for v in value] if isinstance(value, list) else []
    if len(items) != 3 or any(not item or len(item) > 255 for item in items):
        raise _invalid(f"Wrong {name}!")
    return [item for item in items if item]


def _headers(params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """module_id and its own fields, as CRM (bindings) or a business process (workflow, document) sends them."""
    module_id = _text(params.get("MODULE_ID")) or "crm"
    if module_id == "crm":
        bindings = _bindings(params.get("BINDINGS"))
        return module_id, {"bindings": bindings} if bindings else {}
    if module_id == "bizproc":
        workflow_id = _text(params.get("WORKFLOW_ID"))
        if not workflow_id or len(workflow_id) > 255:
            raise _invalid("Wrong WORKFLOW_ID!")
        return module_id, {
            "workflow_id": workflow_id,
            "document_id": _triple(params.get("DOCUMENT_ID"), "DOCUMENT_ID"),
            "document_type": _triple(params.get("DOCUMENT_TYPE"), "DOCUMENT_TYPE"),
        }
    raise _invalid("Unknown MODULE_ID!")


async def send_message(core: Core, actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    """Queue a message: it and its delivery job are committed together before this returns."""
    message_from = _text(params.get("MESSAGE_FROM"))
    if php_empty(message_from):
        raise _invalid("Empty MESSAGE_FROM!")
    assert message_from is not None
    if "|" not in message_from or len(message_from) > 300:
        raise _invalid("Wrong MESSAGE_FROM!")
    message_to = _text(params.get("MESSAGE_TO"))
    if not message_to or not message_to.strip():
        raise _invalid("Empty MESSAGE_TO!")
    if len(message_to) > MAX_TO:
        raise _invalid("Wrong MESSAGE_TO!")
    body = _text(params.get("MESSAGE_BODY"))
    if not body:
        raise _invalid("Empty MESSAGE_BODY!")
    if len(body) > MAX_BODY:
        raise _invalid("MESSAGE_BODY is too long!")
    module_id, headers = _headers(params)
    key = _text(params.get("IDEMPOTENCY_KEY")) or None
    if key is not None and len(key) > 255:
        raise _invalid("Wrong IDEMPOTENCY_KEY!")
    now = core.clock()
    draft = Draft(
        values={
            "message_id": secrets.token_hex(16),
            "message_from": message_from,
            "author_id": actor.user_id,
            "module_id": module_id,
            "headers": json.dumps(headers),
            "message_to": recipient(message_to),
            "message_body": body,
            "status_id": statuses.PENDING.id,
            "idempotency_scope": actor.scope if key is not None else None,
            "idempotency_key": key,
            "created_at": now,
            "updated_at": now,
        },
        reporter_app_id=actor.app_id,
    )
    try:
        queued = await queue(core, draft)
    except StoreConflict:
        # Two sends with one idempotency key raced in two processes; the other one won.
        existing = await _by_idempotency(core, actor, key) if key is not None else None
        if existing is None:
            raise
        return existing
    if queued.message_id == draft.values["message_id"]:  # stored now, not an earlier send's IDEMPOTENCY_KEY
        metrics_for(core).accepted(message_from)
    if queued.work is not None:  # new work: this process's dispatcher wakes (others, on PostgreSQL: NOTIFY)
        core.notify_queued(frozenset((queued.work,)))
    note_message(queued.message_id, message_from)
    return {"ID": queued.id, "MESSAGE_ID": queued.message_id, "STATUS": statuses.BY_ID[queued.status_id].name}


async def _by_idempotency(core: Core, actor: Actor, key: str) -> dict[str, Any] | None:
    query = select(messages.c.id, messages.c.message_id, messages.c.status_id).where(
        messages.c.idempotency_scope == actor.scope, messages.c.idempotency_key == key
    )
    async with core.store.connection() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    return {"ID": row.id, "MESSAGE_ID": row.message_id, "STATUS": statuses.BY_ID[row.status_id].name}


def _visible(actor: Actor) -> Any:
    """Apps see their own senders' messages; within them (and through a webhook) a user sees what they
    authored and an admin everything: a non-admin's token must not read other users' texts and recipients."""
    mine = messages.c.author_id == actor.user_id
    if actor.app_id is not None:
        return and_(messages.c.app_id == actor.app_id, messages.c.id.is_not(None) if actor.is_admin else mine)
    if actor.is_admin:
        return messages.c.id.is_not(None)
    return mine


MAX_ID = 2**31 - 1  # ids are 32-bit on both engines; a larger one names no message (and PostgreSQL would refuse it)


def _internal_id(value: Any) -> int | None:
    text = _text(value)
    if not text or not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > MAX_ID:
        return None
    return int(text)


async def status_description(core: Core, actor: Actor, params: dict[str, Any]) -> str:
    """messageservice.message.status.get: the English description, by the internal numeric id."""
    message_id = _internal_id(params.get("MESSAGE_ID"))
    if message_id is None:
        raise CoreError(*NOT_FOUND)
    async with core.store.connection() as conn:
        status_id = (
            await conn.execute(select(messages.c.status_id).where(messages.c.id == message_id, _visible(actor)))
        ).scalar()
    if status_id is None:
        raise CoreError(*NOT_FOUND)
    status = statuses.by_id(status_id)
    return status.description if status is not None else ""


async def report_status(core: Core, actor: Actor, params: dict[str, Any]) -> None:
    """messageservice.message.status.update, in Bitrix's order; history kept, current status forward-only."""
    check_code(params.get("CODE"))
    external_id = params.get("MESSAGE_ID")
    if php_empty(external_id):
        raise CoreError(*NOT_FOUND)
    wire = params.get("STATUS")
    status = statuses.REPORTABLE.get(wire) if isinstance(wire, str) else None
    if status is None:
        raise CoreError("ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!")
    external_text = _text(external_id)
    note_message(external_text)
    now = core.clock()
    async with core.store.transaction() as conn:
        # Only the calling app's messages: Bitrix's newer code ignores CODE here, and we refuse other apps'.
        row = (
            await conn.execute(
                select(messages.c.id, messages.c.author_id, messages.c.status_id, messages.c.message_from)
                .where(messages.c.message_id == external_text, messages.c.app_id == actor.app_id)
                .with_for_update()
            )
        ).first()
        if row is None:
            raise CoreError(*NOT_FOUND)
        if row.author_id != actor.user_id and not actor.is_admin:
            raise AccessDenied()
        applied = row.status_id != status.id and statuses.moves_forward(row.status_id, status)
        if applied:
            await conn.execute(
                update(messages).where(messages.c.id == row.id).values(status_id=status.id, updated_at=now)
            )
        await conn.execute(
            insert(status_reports).values(
                message_id=row.id,
                status=wire,
                status_id=status.id,
                applied=applied,
                reporter_user_id=actor.user_id,
                reporter_app_id=actor.app_id,
                reported_at=now,
            )
        )
        await _trim_history(conn, row.id)
    if applied:
        metrics_for(core).status_changed(row.message_from, status.name)


async def _trim_history(conn: Any, message_id: int) -> None:
    """Drop the reports between the first and the last KEPT_REPORTS (at most one per new report)."""
    of_message = status_reports.c.message_id == message_id
    cutoff = (
        await conn.execute(
            select(status_reports.c.id)
            .where(of_message)
            .order_by(status_reports.c.id.desc())
            .offset(KEPT_REPORTS)
            .limit(1)
        )
    ).first()
    if cutoff is None:
        return
    first = (await conn.execute(select(func.min(status_reports.c.id)).where(of_message))).scalar_one()
    await conn.execute(
        delete(status_reports).where(of_message, status_reports.c.id > first, status_reports.c.id <= cutoff.id)
    )


async def _first_and_last(conn: Any, table: Any, message_id: int, kept: int) -> list[Any]:
    """A message's first row of `table` and its last `kept`, in order: what one answer shows."""
    of_message = table.c.message_id == message_id
    first = (await conn.execute(select(table).where(of_message).order_by(table.c.id).limit(1))).all()
    last = (await conn.execute(select(table).where(of_message).order_by(table.c.id.desc()).limit(kept))).all()
    return first + [row for row in reversed(last) if not first or row.id != first[0].id]


def _message_view(row: Any) -> dict[str, Any]:
    status = statuses.by_id(row.status_id) or statuses.UNKNOWN
    return {
        "ID": row.id,
        "MESSAGE_ID": row.message_id,
        "MESSAGE_FROM": row.message_from,
        "SENDER_CODE": row.sender_code,
        "MESSAGE_TO": row.message_to,
        "MESSAGE_BODY": row.message_body,
        "MODULE_ID": row.module_id,
        **{key.upper(): value for key, value in json.loads(row.headers).items()},
        "AUTHOR_ID": row.author_id,
        "STATUS_ID": row.status_id,
        "STATUS": status.name,
        "STATUS_DESCRIPTION": status.description,
        "STATUS_SEMANTIC": status.semantic,
        "EXEC_ERROR": row.exec_error,
        "DATE_CREATE": row.created_at,
        "DATE_UPDATE": row.updated_at,
    }


async def get_message(core: Core, actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    """One message with its attempts and status history; by ID (internal) or MESSAGE_ID (32 hex)."""
    internal = _internal_id(params.get("ID"))
    external = _text(params.get("MESSAGE_ID"))
    if internal is not None:
        where = messages.c.id == internal
    elif external:
        where = messages.c.message_id == external
    else:
        raise CoreError(*NOT_FOUND)
    # One snapshot for all the reads, so that status, delivery and attempts agree (a write-back
    # commits them together).
    async with core.store.snapshot() as conn:
        delivery = (
            await conn.execute(
                select(deliveries)
                .join(messages, messages.c.id == deliveries.c.message_id)
                .where(where, _visible(actor))
            )
        ).first()
        row = (await conn.execute(select(messages).where(where, _visible(actor)))).first()
        if row is None:
            raise CoreError(*NOT_FOUND)
        tried = await _first_and_last(conn, attempts, row.id, KEPT_ATTEMPTS)
        history = await _first_and_last(conn, status_reports, row.id, KEPT_REPORTS)
    view = _message_view(row)
    view["DELIVERY"] = (
        {
            "STATE": delivery.state,
            "ATTEMPTS": delivery.attempts,
            "NEXT_ATTEMPT_AT": delivery.next_attempt_at if delivery.state == "pending" else None,
            "LAST_ERROR": delivery.last_error,
        }
        if delivery is not None
        else None
    )
    view["ATTEMPTS"] = [
        {
            "NUMBER": a.number,
            "STARTED_AT": a.started_at,
            "DURATION_MS": a.duration_ms,
            "HTTP_STATUS": a.http_status,
            "ERROR": a.error,
            "RESPONSE": a.response_head,
        }
        for a in tried
    ]
    view["HISTORY"] = [
        {
            "STATUS": h.status,
            "STATUS_ID": h.status_id,
            "APPLIED": h.applied,
            "USER_ID": h.reporter_user_id,
            "APP_ID": h.reporter_app_id,
            "DATE": h.reported_at,
        }
        for h in history
    ]
    return view


def _filters(raw: Any) -> list[Any]:
    fields = {str(k).upper(): v for k, v in raw.items()} if isinstance(raw, dict) else {}
    where: list[Any] = []
    sender = _text(fields.get("SENDER"))
    if sender:
        where.append(messages.c.message_from == sender if "|" in sender else messages.c.sender_code == sender)
    status = _text(fields.get("STATUS"))
    if status:
        chosen = [s.id for s in statuses.BY_ID.values() if s.name == status.lower()]
        where.append(messages.c.status_id.in_(chosen or [-1]))
    delivery = _text(fields.get("DELIVERY"))
    if delivery:
        # "dead" lists the dead letters: messages whose delivery was given up.
        where.append(messages.c.id.in_(select(deliveries.c.message_id).where(deliveries.c.state == delivery.lower())))
    recipient = _text(fields.get("MESSAGE_TO"))
    if recipient:
        where.append(messages.c.message_to == normalize_phone(recipient.strip()))
    for key, column_op in ((">=DATE_CREATE", "ge"), ("<DATE_CREATE", "lt")):
        value = _text(fields.get(key))
        if value:
            try:
                moment = float(value)
            except ValueError:
                raise _invalid(f"Wrong FILTER[{key}]!") from None
            where.append(messages.c.created_at >= moment if column_op == "ge" else messages.c.created_at < moment)
    return where


def _offset(start: Any) -> int:
    text = _text(start)
    if text and text.isascii() and text.isdigit() and len(text) < 10:
        return int(text)
    return 0


async def list_messages(
    core: Core, actor: Actor, params: dict[str, Any], start: Any, *also: ColumnElement[bool]
) -> tuple[list[Any], int, int]:
    """A page of messages, newest first: (rows, total, offset); `also`: more conditions (e.g. stuck only)."""
    where = and_(_visible(actor), *_filters(params.get("FILTER")), *also)
    offset = _offset(start)
    async with core.store.connection() as conn:
        total = int((await conn.execute(select(func.count()).select_from(messages).where(where))).scalar_one())
        rows = (
            await conn.execute(
                select(messages).where(where).order_by(messages.c.id.desc()).offset(offset).limit(PAGE_SIZE)
            )
        ).all()
    return [_message_view(row) for row in rows], total, offset


async def replay(core: Core, actor: Actor, params: dict[str, Any]) -> int:
    """Give dead letters a fresh start (all attempts again); returns how many were replayed.

    An operator's action, not a provider's report: the status goes back to pending, on purpose.
    """
    if not actor.is_admin:
        raise AccessDenied()
    raw = params.get("IDS", params.get("ID"))
    values = raw if isinstance(raw, list) else list(raw.values()) if isinstance(raw, dict) else [raw]
    ids = [i for i in (_internal_id(v) for v in values) if i is not None]
    if not ids:
        raise CoreError(*NOT_FOUND)
    now = core.clock()
    async with core.store.transaction() as conn:
        found = (
            await conn.execute(
                select(messages.c.id, messages.c.message_from)
                .join(deliveries, deliveries.c.message_id == messages.c.id)
                .where(
                    messages.c.id.in_(ids),
                    deliveries.c.state == "dead",
                    _visible(actor),
                    messages.c.sender_id.is_not(None),
                )
            )
        ).all()
        chosen = [row.id for row in found]
        if not chosen:
            return 0
        await conn.execute(
            update(deliveries)
            .where(deliveries.c.message_id.in_(chosen))
            .values(state="pending", attempts=0, next_attempt_at=now, last_error=None, created_at=now)
        )
        await conn.execute(
            update(messages)
            .where(messages.c.id.in_(chosen))
            .values(status_id=statuses.PENDING.id, exec_error=None, updated_at=now)
        )
        await conn.execute(
            insert(status_reports),
            [
                {
                    "message_id": m,
                    "status": "replayed",
                    "status_id": statuses.PENDING.id,
                    "applied": True,
                    "reporter_user_id": actor.user_id,
                    "reporter_app_id": actor.app_id,
                    "reported_at": now,
                }
                for m in chosen
            ],
        )
        if conn.features.listen_notify:
            await conn.run_sync(wake_workers)
    metrics = metrics_for(core)
    for row in found:
        metrics.status_changed(row.message_from, statuses.PENDING.name)
    return len(chosen)
