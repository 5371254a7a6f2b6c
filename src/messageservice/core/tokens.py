"""OAuth 2.0 as Bitrix24 runs it: authorization codes, access tokens (1 h) and rotating refresh tokens."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update

from messageservice.cache.changes import changing
from messageservice.cache.freshness import cached
from messageservice.core.context import Core
from messageservice.core.portal import Portal, get_portal
from messageservice.core.secrets import hash_secret, new_hex, secret_matches
from messageservice.core.sessions import dead_sessions
from messageservice.store.connection import StoreConnection
from messageservice.store.tables import access_tokens, apps, auth_codes, console_sessions, refresh_tokens, users

log = logging.getLogger("messageservice.oauth")


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass(frozen=True)
class TokenAuth:
    """Who an access token speaks for."""

    app_id: int
    client_id: str
    user_id: int
    is_admin: bool
    scopes: frozenset[str]
    expires_at: float


async def mint_tokens(
    core: Core, conn: StoreConnection, app_row: Any, user_id: int, portal: Portal, family: str | None = None
) -> dict[str, Any]:
    """Create an access and a refresh token; returns the body /oauth/token/ answers with, in Bitrix's order.

    `family`: the refresh family they continue (a refresh); None starts a new one (a code, an install).
    """
    now = core.clock()
    family = family or new_hex(16)
    access_token = new_hex(35)
    refresh_token = new_hex(35)
    expires = int(now + core.settings.access_token_ttl)
    await conn.execute(
        insert(access_tokens).values(
            token_hash=hash_secret(access_token),
            app_id=app_row.id,
            user_id=user_id,
            expires_at=expires,
            family=family,
        )
    )
    await conn.execute(
        insert(refresh_tokens).values(
            token_hash=hash_secret(refresh_token),
            app_id=app_row.id,
            user_id=user_id,
            expires_at=now + core.settings.refresh_token_ttl,
            family=family,
        )
    )
    return {
        "access_token": access_token,
        "expires": expires,
        "expires_in": core.settings.access_token_ttl,
        "scope": app_row.scopes,
        "domain": portal.domain,
        "server_endpoint": portal.client_endpoint,
        "status": app_row.status,
        "client_endpoint": portal.client_endpoint,
        "member_id": portal.member_id,
        "user_id": user_id,
        "refresh_token": refresh_token,
    }


async def _active_user(conn: StoreConnection, user_id: int) -> bool:
    row = (await conn.execute(select(users.c.active).where(users.c.id == user_id))).first()
    return row is not None and bool(row.active)


async def _client(conn: StoreConnection, client_id: str, client_secret: str | None) -> Any:
    row = (await conn.execute(select(apps).where(apps.c.client_id == client_id))).first()
    if row is None or client_secret is None or not secret_matches(client_secret, row.client_secret_hash):
        raise OAuthError("invalid_client", "Invalid client credentials", 401)
    if not row.installed:
        raise OAuthError("invalid_client", "Application is not installed", 401)
    return row


async def authorizing_app(core: Core, client_id: str) -> Any:
    """The installed app an authorize request names, or invalid_client."""
    async with core.store.connection() as conn:
        app_row = (await conn.execute(select(apps).where(apps.c.client_id == client_id))).first()
    if app_row is None or not app_row.installed:
        raise OAuthError("invalid_client", "Application not found", 401)
    return app_row


async def issue_code(
    core: Core,
    client_id: str,
    user_id: int | None,
    *,
    signed_in: bool = False,
    redirect_uri: str | None = None,
) -> tuple[str, Any]:
    """An authorization code for an installed app; it lives `auth_code_ttl` seconds.

    `signed_in`: `user_id` is the user signed in to the console in this browser. Otherwise (only with
    `oauth_trust_user_id`, local development) the user is `user_id` or the app's installer.
    `redirect_uri`: the one the authorize request named; the token request may not name another.
    """
    async with core.store.transaction() as conn:
        app_row = (await conn.execute(select(apps).where(apps.c.client_id == client_id))).first()
        if app_row is None or not app_row.installed:
            raise OAuthError("invalid_client", "Application not found", 401)
        if not signed_in and not core.settings.oauth_trust_user_id:
            # As Bitrix24: a code is a signed-in user's consent, never an anonymous visitor's.
            raise OAuthError("access_denied", "Codes are issued only to a signed-in user", 403)
        if user_id is None:
            user_id = app_row.installed_by
        if user_id is None or not await _active_user(conn, user_id):
            raise OAuthError("invalid_request", "Unknown or inactive user", 400)
        code = new_hex(35)
        await conn.execute(
            insert(auth_codes).values(
                code_hash=hash_secret(code),
                app_id=app_row.id,
                user_id=user_id,
                expires_at=core.clock() + core.settings.auth_code_ttl,
                redirect_uri=redirect_uri,
            )
        )
    return code, app_row


async def exchange_code(
    core: Core, client_id: str, client_secret: str | None, code: str, redirect_uri: str | None = None
) -> dict[str, Any]:
    """A code for tokens, once. RFC 6749 4.1.3: a `redirect_uri` sent here must be the one the code was
    issued for. One left out is accepted: Bitrix24's token request has none, and the SDKs send none."""
    # Read before the write transaction: a second pooled connection inside it would deadlock the pool.
    portal = await get_portal(core)
    async with core.store.transaction() as conn:
        app_row = await _client(conn, client_id, client_secret)
        # Delete-then-check makes a code single-use even when two exchanges race.
        result = await conn.execute(
            delete(auth_codes)
            .where(auth_codes.c.code_hash == hash_secret(code))
            .returning(auth_codes.c.app_id, auth_codes.c.user_id, auth_codes.c.expires_at, auth_codes.c.redirect_uri)
        )
        row = result.first()
        if row is None or row.app_id != app_row.id or row.expires_at < core.clock():
            raise OAuthError("invalid_grant", "Invalid authorization code", 400)
        if redirect_uri is not None and row.redirect_uri is not None and redirect_uri != row.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request", 400)
        if not await _active_user(conn, row.user_id):
            raise OAuthError("invalid_grant", "User is not active", 400)
        return await mint_tokens(core, conn, app_row, row.user_id, portal=portal)


async def _revoke_family(conn: StoreConnection, app_id: int, family: str) -> None:
    """Every refresh and access token of the family: a replayed refresh token means one of them leaked."""
    await conn.execute(
        delete(refresh_tokens).where(refresh_tokens.c.app_id == app_id, refresh_tokens.c.family == family)
    )
    await conn.execute(delete(access_tokens).where(access_tokens.c.app_id == app_id, access_tokens.c.family == family))


async def refresh(core: Core, client_id: str, client_secret: str | None, token: str) -> dict[str, Any]:
    """A refresh token for new tokens, once (OAuth 2.0 Security BCP 4.14: rotation with replay detection).

    The spent token is kept, marked used, until it expires: presented again, by whoever holds a copy, it
    revokes its whole family, the tokens issued from it included, and both holders must authorize again.
    """
    portal = await get_portal(core)
    token_hash = hash_secret(token)
    replayed = False
    # A replay revokes a family of tokens that every process may hold in its REST cache.
    async with changing(core) as conn:
        app_row = await _client(conn, client_id, client_secret)
        now = core.clock()
        # Mark-then-check makes a refresh token single-use even when two refreshes race.
        row = (
            await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
                .returning(
                    refresh_tokens.c.app_id,
                    refresh_tokens.c.user_id,
                    refresh_tokens.c.expires_at,
                    refresh_tokens.c.family,
                )
            )
        ).first()
        if row is None:
            # Locked first: replays racing each other revoke the family one after the other (on PostgreSQL two
            # transactions deleting the same rows in different orders would deadlock); the later ones find
            # the token gone.
            spent = (
                await conn.execute(
                    select(refresh_tokens.c.app_id, refresh_tokens.c.family)
                    .where(refresh_tokens.c.token_hash == token_hash)
                    .with_for_update()
                )
            ).first()
            if spent is not None and spent.app_id == app_row.id and spent.family is not None:
                await _revoke_family(conn, app_row.id, spent.family)
                replayed = True
        else:
            if row.app_id != app_row.id or row.expires_at < now:
                raise OAuthError("invalid_grant", "Invalid refresh token", 400)
            if not await _active_user(conn, row.user_id):
                raise OAuthError("invalid_grant", "User is not active", 400)
            family = row.family
            if family is None:  # issued before families existed: it starts one now
                family = token_hash[:32]
                await conn.execute(
                    update(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash).values(family=family)
                )
            return await mint_tokens(core, conn, app_row, row.user_id, portal=portal, family=family)
    if replayed:
        log.warning("refresh token of app %s used twice: its token family is revoked", client_id)
    raise OAuthError("invalid_grant", "Invalid refresh token", 400)


async def mint_for_user(core: Core, client_id: str, user_id: int) -> dict[str, Any]:
    """The admin shortcut behind `messageservice token`: skip the browser, same answer as /oauth/token/."""
    portal = await get_portal(core)
    async with core.store.transaction() as conn:
        app_row = (await conn.execute(select(apps).where(apps.c.client_id == client_id))).first()
        if app_row is None:
            raise OAuthError("invalid_client", "Application not found", 401)
        if not app_row.installed:
            raise OAuthError("invalid_client", "Application is not installed", 401)
        if not await _active_user(conn, user_id):
            raise OAuthError("invalid_request", f"User {user_id} does not exist or is inactive", 400)
        return await mint_tokens(core, conn, app_row, user_id, portal=portal)


# Built once: this runs on every REST call.
_TOKEN_LOOKUP = (
    select(
        access_tokens.c.app_id,
        access_tokens.c.user_id,
        access_tokens.c.expires_at,
        apps.c.client_id,
        apps.c.scopes,
        apps.c.installed,
        users.c.is_admin,
        users.c.active,
    )
    .join(apps, apps.c.id == access_tokens.c.app_id)
    .join(users, users.c.id == access_tokens.c.user_id)
    .where(access_tokens.c.token_hash == bindparam("token_hash"))
)


async def lookup_access_token(core: Core, token: str) -> TokenAuth | None:
    """None when the token is unknown or its app or user is gone; expiry is the caller's to judge (on every
    call: a cached token expires like a read one). Held in the REST cache (cache/) while nothing changes."""
    token_hash = hash_secret(token)
    return await cached(core, ("token", token_hash), lambda: _read_access_token(core, token_hash))


async def _read_access_token(core: Core, token_hash: str) -> TokenAuth | None:
    rows = await core.store.fetch(_TOKEN_LOOKUP, {"token_hash": token_hash})
    if not rows or not rows[0]["installed"] or not rows[0]["active"]:
        return None
    row = rows[0]
    return TokenAuth(
        app_id=row["app_id"],
        client_id=row["client_id"],
        user_id=row["user_id"],
        is_admin=bool(row["is_admin"]),
        scopes=frozenset(row["scopes"].split(",")),
        expires_at=row["expires_at"],
    )


async def purge_expired(core: Core) -> None:
    now = core.clock()
    # A purged token answers "invalid" where a cached one would still say "expired".
    async with changing(core) as conn:
        await conn.execute(delete(access_tokens).where(access_tokens.c.expires_at < now - 86400))
        # Spent refresh tokens stay until they expire too: a replay must still be recognised.
        await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.expires_at < now))
        await conn.execute(delete(auth_codes).where(auth_codes.c.expires_at < now))
        await conn.execute(delete(console_sessions).where(dead_sessions(core, now)))
