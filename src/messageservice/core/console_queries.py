"""Reads and small steering actions the console needs beyond the REST methods' own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import and_, func, or_, select, true, update

from messageservice.cache.changes import changing
from messageservice.core import statuses, stuck
from messageservice.core.context import Core
from messageservice.core.payload import auth_block, handler_body, stored_message
from messageservice.core.phones import normalize_phone
from messageservice.core.portal import get_portal
from messageservice.core.secrets import hash_secret, new_alnum
from messageservice.store.tables import apps, attempts, deliveries, messages, senders, users, webhooks

PAGE_SIZE = 25
MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL
# Shown instead of credentials that each attempt minted afresh and that we never keep.
NOT_KEPT = "(fresh for each attempt; not kept)"
PER_ATTEMPT = "(the attempt's time + expires_in)"
SECRET = "(the app's application_token: secret, not shown)"


@dataclass(frozen=True)
class MessageFilter:
    sender: str = ""  # client_id|CODE, or a CODE alone
    status: str = ""  # a status name (delivered, error, ...)
    delivery: str = ""  # pending | done | dead
    recipient: str = ""  # part of the recipient
    text: str = ""  # part of the body
    since: float | None = None
    until: float | None = None
    stuck: bool = False  # only stuck messages (core/stuck.py)


@dataclass(frozen=True)
class MessageRow:
    id: int
    message_id: str
    message_from: str
    message_to: str
    body_start: str
    status: str
    semantic: str
    delivery: str | None
    attempts: int
    created_at: float


@dataclass(frozen=True)
class MessagePage:
    rows: list[MessageRow]
    total: int
    page: int
    pages: int


def _contains(column: Any, part: str) -> Any:
    """A case-insensitive substring match with LIKE's wildcards taken literally."""
    escaped = part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped.lower()}%", escape="\\")


def _where(chosen: MessageFilter) -> list[Any]:
    where: list[Any] = []
    if chosen.sender:
        if "|" in chosen.sender:
            where.append(messages.c.message_from == chosen.sender)
        else:
            where.append(messages.c.sender_code == chosen.sender)
    if chosen.status:
        ids = [s.id for s in statuses.BY_ID.values() if s.name == chosen.status]
        where.append(messages.c.status_id.in_(ids or [-1]))
    if chosen.delivery:
        where.append(deliveries.c.state == chosen.delivery)
    if chosen.recipient:
        digits = normalize_phone(chosen.recipient)
        where.append(or_(_contains(messages.c.message_to, chosen.recipient), _contains(messages.c.message_to, digits)))
    if chosen.text:
        where.append(_contains(messages.c.message_body, chosen.text))
    if chosen.since is not None:
        where.append(messages.c.created_at >= chosen.since)
    if chosen.until is not None:
        where.append(messages.c.created_at < chosen.until)
    return where


async def search_messages(core: Core, chosen: MessageFilter, page: int = 1) -> MessagePage:
    """Messages matching every given filter, newest first, a page at a time (pages count from 1)."""
    joined = messages.outerjoin(deliveries, deliveries.c.message_id == messages.c.id)
    where = and_(true(), *_where(chosen), *([stuck.core_condition(core)] if chosen.stuck else []))
    async with core.store.connection() as conn:
        total = int((await conn.execute(select(func.count()).select_from(joined).where(where))).scalar_one())
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(max(1, page), pages)
        rows = (
            await conn.execute(
                select(
                    messages.c.id,
                    messages.c.message_id,
                    messages.c.message_from,
                    messages.c.message_to,
                    func.substr(messages.c.message_body, 1, 80).label("body_start"),
                    messages.c.status_id,
                    messages.c.created_at,
                    deliveries.c.state,
                    deliveries.c.attempts,
                )
                .select_from(joined)
                .where(where)
                .order_by(messages.c.id.desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE)
            )
        ).all()
    return MessagePage([_row(r) for r in rows], total, page, pages)


def _row(r: Any) -> MessageRow:
    status = statuses.by_id(r.status_id) or statuses.UNKNOWN
    return MessageRow(
        r.id,
        r.message_id,
        r.message_from,
        r.message_to,
        r.body_start,
        status.name,
        status.semantic,
        r.state,
        r.attempts or 0,
        r.created_at,
    )


async def handler_call(core: Core, message_id: int) -> tuple[str, list[tuple[str, str]], str | None] | None:
    """What the HANDLER received for a message: (handler URL, fields in order, raw body).

    The body is rebuilt from the stored message exactly as the dispatcher builds it; the token minted
    for each attempt is not kept and the application_token is a secret, so they are shown as such.
    """
    if not 0 < message_id <= MAX_ID:
        return None
    async with core.store.connection() as conn:
        row = (
            await conn.execute(
                select(
                    messages,
                    senders.c.type.label("sender_type"),
                    senders.c.handler,
                    apps.c.scopes,
                    apps.c.status.label("app_status"),
                )
                .outerjoin(senders, senders.c.id == messages.c.sender_id)
                .join(apps, apps.c.id == messages.c.app_id)
                .where(messages.c.id == message_id)
            )
        ).first()
    if row is None:
        return None
    message = stored_message(row)
    portal = await get_portal(core)
    auth = auth_block(
        portal,
        row,
        access_token=NOT_KEPT,
        expires=PER_ATTEMPT,
        expires_in=core.settings.access_token_ttl,
        application_token=SECRET,
    )
    body = handler_body(message, auth)
    return row.handler or "", parse_qsl(body, keep_blank_values=True), body


async def retry_now(core: Core, message_id: int) -> bool:
    """Bring a waiting retry forward to now, after a failed attempt of the current round.

    Not a job in flight: a claim counts its attempt before the attempt is recorded, so the delivery's count is
    then ahead of the latest recorded attempt's number. A replay starts the count again at 0 (numbers read
    1,2,3,1,2,...): comparing with the latest attempt's number, not with how many there are in all, holds in
    every round, and before the first attempt of a round (none recorded, or the last round's) it refuses."""
    if not 0 < message_id <= MAX_ID:
        return False
    now = core.clock()
    latest = (
        select(attempts.c.number)
        .where(attempts.c.message_id == message_id)
        .order_by(attempts.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    async with core.store.transaction() as conn:
        result = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.message_id == message_id,
                deliveries.c.state == "pending",
                deliveries.c.next_attempt_at > now,
                deliveries.c.attempts == latest,
            )
            .values(next_attempt_at=now)
        )
    if result.rowcount:
        core.notify_queued()
    return bool(result.rowcount)


@dataclass(frozen=True)
class SenderChoice:
    message_from: str  # client_id|CODE, as MESSAGE_FROM takes it
    label: str


async def sender_choices(core: Core) -> list[SenderChoice]:
    """Senders of installed apps, for the send form."""
    async with core.store.connection() as conn:
        rows = (
            await conn.execute(
                select(apps.c.client_id, apps.c.name, senders.c.code)
                .join(apps, apps.c.id == senders.c.app_id)
                .where(apps.c.installed)
                .order_by(apps.c.name, senders.c.code)
            )
        ).all()
    return [SenderChoice(f"{r.client_id}|{r.code}", f"{r.name}: {r.code}") for r in rows]


@dataclass(frozen=True)
class WebhookRow:
    id: int
    user_id: int
    user_name: str
    scopes: str
    title: str
    active: bool
    created_at: float


async def list_webhooks(core: Core) -> list[WebhookRow]:
    async with core.store.connection() as conn:
        rows = (
            await conn.execute(
                select(webhooks, users.c.name.label("user_name"))
                .join(users, users.c.id == webhooks.c.user_id)
                .order_by(webhooks.c.id)
            )
        ).all()
    return [WebhookRow(r.id, r.user_id, r.user_name, r.scopes, r.title, bool(r.active), r.created_at) for r in rows]


async def set_webhook_active(core: Core, webhook_id: int, active: bool) -> bool:
    if not 0 < webhook_id <= MAX_ID:
        return False
    async with changing(core) as conn:
        result = await conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(active=active))
    return bool(result.rowcount)


async def set_user_flags(core: Core, user_id: int, *, is_admin: bool, active: bool) -> bool:
    if not 0 < user_id <= MAX_ID:
        return False
    async with changing(core) as conn:
        result = await conn.execute(update(users).where(users.c.id == user_id).values(is_admin=is_admin, active=active))
    return bool(result.rowcount)


async def user_logins(core: Core) -> dict[int, str | None]:
    async with core.store.connection() as conn:
        rows = (await conn.execute(select(users.c.id, users.c.login))).all()
    return {r.id: r.login for r in rows}


async def reset_client_secret(core: Core, client_id: str) -> str | None:
    """A new client_secret for an app (the old one stops working); None if there is no such app."""
    secret = new_alnum(50)
    async with core.store.transaction() as conn:
        result = await conn.execute(
            update(apps).where(apps.c.client_id == client_id).values(client_secret_hash=hash_secret(secret))
        )
    return secret if result.rowcount else None
