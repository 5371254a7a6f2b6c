"""Console sessions, kept in the database: a row per sign-in, found by the sha256 of the cookie's random token.

Logout deletes the row, a new password deletes all of the user's rows, and a row unused for
`console_session_idle_seconds` (or older than `console_session_max_seconds`) is dead: a cookie captured
before any of these stops working, on every process, because every process reads the same rows.
"""

from __future__ import annotations

import secrets

from sqlalchemy import ColumnElement, delete, insert, or_, select, update

from messageservice.core.context import Core
from messageservice.core.logins import Operator, password_stamp
from messageservice.core.secrets import hash_secret
from messageservice.store.tables import console_sessions, users

# last_seen_at is written at most this often per session: a page's burst of requests costs one write.
TOUCH_SECONDS = 30.0


def new_session_token() -> str:
    return secrets.token_urlsafe(32)


def dead_sessions(core: Core, now: float) -> ColumnElement[bool]:
    """Sessions idle too long or signed in too long ago (the condition of a DELETE)."""
    settings = core.settings
    return or_(
        console_sessions.c.last_seen_at < now - settings.console_session_idle_seconds,
        console_sessions.c.created_at < now - settings.console_session_max_seconds,
    )


async def start_session(core: Core, user_id: int) -> str:
    """A new session for a user who just signed in; returns the token for the cookie (stored only hashed)."""
    token = new_session_token()
    now = core.clock()
    async with core.store.transaction() as conn:
        # Sign-ins are rare: clearing dead rows here keeps the table small without a loop of its own.
        await conn.execute(delete(console_sessions).where(dead_sessions(core, now)))
        await conn.execute(
            insert(console_sessions).values(
                token_hash=hash_secret(token), user_id=user_id, created_at=now, last_seen_at=now
            )
        )
    return token


async def session_operator(core: Core, token: str) -> Operator | None:
    """The admin this token signs in, if its session is alive and the user still an active admin.

    One read per console request; a write only when the session must be marked used or has died.
    """
    token_hash = hash_secret(token)
    async with core.store.connection() as conn:
        row = (
            await conn.execute(
                select(
                    console_sessions.c.created_at,
                    console_sessions.c.last_seen_at,
                    users.c.id,
                    users.c.name,
                    users.c.login,
                    users.c.password_hash,
                    users.c.is_admin,
                    users.c.active,
                )
                .join(users, users.c.id == console_sessions.c.user_id)
                .where(console_sessions.c.token_hash == token_hash)
            )
        ).first()
    if row is None:
        return None
    now = core.clock()
    settings = core.settings
    alive = (
        now - row.last_seen_at <= settings.console_session_idle_seconds
        and now - row.created_at <= settings.console_session_max_seconds
    )
    if not alive or not row.is_admin or not row.active or not row.password_hash:
        async with core.store.transaction() as conn:
            await conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == token_hash))
        return None
    if now - row.last_seen_at >= TOUCH_SECONDS:
        async with core.store.transaction() as conn:
            await conn.execute(
                update(console_sessions).where(console_sessions.c.token_hash == token_hash).values(last_seen_at=now)
            )
    return Operator(row.id, row.name, row.login, password_stamp(row.password_hash))


async def end_session(core: Core, token: str) -> None:
    async with core.store.transaction() as conn:
        await conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == hash_secret(token)))
