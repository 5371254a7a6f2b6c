"""Incoming webhooks: /rest/{user_id}/{code}/ URLs that act as a user with fixed scopes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, delete, insert, select

from messageservice.cache.changes import changing
from messageservice.cache.freshness import cached
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.portal import get_portal, get_user
from messageservice.core.scopes import join_scopes, parse_scopes
from messageservice.core.secrets import hash_secret, new_alnum
from messageservice.store.tables import users, webhooks


@dataclass(frozen=True)
class NewWebhook:
    id: int
    user_id: int
    code: str
    scopes: list[str]
    url: str


@dataclass(frozen=True)
class Webhook:
    id: int
    user_id: int
    scopes: frozenset[str]
    is_admin: bool


async def add_webhook(core: Core, user_id: int, scopes: str | list[str], title: str = "") -> NewWebhook:
    scope_list = parse_scopes(scopes)
    if await get_user(core, user_id) is None:
        raise CoreError("ERROR_ARGUMENT", f"user {user_id} does not exist")
    code = new_alnum(16)
    async with core.store.transaction() as conn:
        result = await conn.execute(
            insert(webhooks)
            .values(
                user_id=user_id,
                code_hash=hash_secret(code),
                scopes=join_scopes(scope_list),
                title=title,
                active=True,
                created_at=core.clock(),
            )
            .returning(webhooks.c.id)
        )
        webhook_id = result.scalar_one()
    portal = await get_portal(core)
    return NewWebhook(webhook_id, user_id, code, scope_list, f"{portal.client_endpoint}{user_id}/{code}/")


_WEBHOOK_LOOKUP = (
    select(webhooks.c.id, webhooks.c.user_id, webhooks.c.scopes, users.c.is_admin)
    .join(users, users.c.id == webhooks.c.user_id)
    .where(webhooks.c.code_hash == bindparam("code_hash"), webhooks.c.active, users.c.active)
)


async def find_webhook(core: Core, user_id: int, code: str) -> Webhook | None:
    """Look a webhook up by the hash of its secret (an indexed lookup, no secret compared in Python); held in
    the REST cache (cache/) while nothing changes."""
    code_hash = hash_secret(code)
    webhook = await cached(core, ("webhook", code_hash), lambda: _read_webhook(core, code_hash))
    return webhook if webhook is not None and webhook.user_id == user_id else None


async def _read_webhook(core: Core, code_hash: str) -> Webhook | None:
    rows = await core.store.fetch(_WEBHOOK_LOOKUP, {"code_hash": code_hash})
    if not rows:
        return None
    row = rows[0]
    return Webhook(row["id"], row["user_id"], frozenset(row["scopes"].split(",")), bool(row["is_admin"]))


async def delete_webhook(core: Core, webhook_id: int) -> bool:
    """Delete a webhook: its URL stops working on every process at once. False when there is none."""
    async with changing(core) as conn:
        result = await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))
    return bool(result.rowcount)
