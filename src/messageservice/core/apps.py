"""Applications: registration, install (ONAPPINSTALL), version update and uninstall (spec 1.9, 3.9)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, insert, select, update

from messageservice.cache.changes import changing
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.events import enqueue_event
from messageservice.core.orphans import count_failed, fail_queued
from messageservice.core.portal import get_portal, get_user
from messageservice.core.scopes import join_scopes, parse_scopes
from messageservice.core.secrets import hash_secret, new_alnum, new_hex
from messageservice.core.tokens import mint_tokens
from messageservice.store.connection import StoreConnection
from messageservice.store.tables import access_tokens, apps, auth_codes, messages, refresh_tokens, senders


@dataclass(frozen=True)
class App:
    id: int
    client_id: str
    name: str
    url: str
    scopes: list[str]
    version: int
    status: str
    installed: bool
    language_id: str
    installed_at: float | None


def _app(row: Any) -> App:
    return App(
        id=row.id,
        client_id=row.client_id,
        name=row.name,
        url=row.url,
        scopes=row.scopes.split(","),
        version=row.version,
        status=row.status,
        installed=bool(row.installed),
        language_id=row.language_id,
        installed_at=row.installed_at,
    )


def _check_url(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
        usable = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable or len(url.strip()) > 1000:
        raise CoreError("ERROR_ARGUMENT", f"app URL must be an http(s) URL of at most 1000 characters: {url!r}")
    return url.strip()


def _check_name(name: str) -> str:
    if not name.strip() or len(name.strip()) > 255:
        raise CoreError("ERROR_ARGUMENT", "app name must have 1 to 255 characters")
    return name.strip()


def _new_client_id() -> str:
    # The shape of a Bitrix24 local app's client_id: local.<14 hex>.<8 digits>.
    return f"local.{new_hex(7)}.{secrets.randbelow(90_000_000) + 10_000_000}"


async def add_app(core: Core, name: str, url: str, scopes: str | list[str]) -> tuple[App, str]:
    """Register an app; returns it with its client_secret, which is stored only as a hash."""
    name = _check_name(name)
    scope_list = parse_scopes(scopes)
    client_secret = new_alnum(50)
    async with core.store.transaction() as conn:
        result = await conn.execute(
            insert(apps)
            .values(
                client_id=_new_client_id(),
                client_secret_hash=hash_secret(client_secret),
                name=name,
                url=_check_url(url),
                scopes=join_scopes(scope_list),
                version=1,
                status="L",
                installed=False,
                language_id="en",
                created_at=core.clock(),
            )
            .returning(apps)
        )
        return _app(result.one()), client_secret


async def get_app(core: Core, client_id: str) -> App:
    async with core.store.connection() as conn:
        row = (await conn.execute(select(apps).where(apps.c.client_id == client_id))).first()
    if row is None:
        raise CoreError("APPLICATION_NOT_FOUND", f"Application {client_id} not found", 404)
    return _app(row)


async def list_apps(core: Core) -> list[App]:
    async with core.store.connection() as conn:
        rows = (await conn.execute(select(apps).order_by(apps.c.id))).all()
    return [_app(row) for row in rows]


async def _locked_app(conn: StoreConnection, client_id: str) -> Any:
    row = (await conn.execute(select(apps).where(apps.c.client_id == client_id).with_for_update())).first()
    if row is None:
        raise CoreError("APPLICATION_NOT_FOUND", f"Application {client_id} not found", 404)
    return row


async def application_token(core: Core, client_id: str) -> str | None:
    async with core.store.connection() as conn:
        row = (await conn.execute(select(apps.c.application_token_enc).where(apps.c.client_id == client_id))).first()
    if row is None or row.application_token_enc is None:
        return None
    return core.box.decrypt(row.application_token_enc)


async def install_app(core: Core, client_id: str, user_id: int = 1) -> str:
    """Install (or reinstall) an app and queue ONAPPINSTALL to its URL; returns the application_token."""
    installer = await get_user(core, user_id)
    if installer is None or not installer.is_admin:
        raise CoreError("ERROR_ARGUMENT", f"user {user_id} is not an admin of this portal")
    portal = await get_portal(core)
    token = new_hex(16)
    async with changing(core) as conn:
        row = await _locked_app(conn, client_id)
        await conn.execute(
            update(apps)
            .where(apps.c.id == row.id)
            .values(
                installed=True,
                application_token_enc=core.box.encrypt(token),
                installed_at=core.clock(),
                installed_by=user_id,
            )
        )
        row = (await conn.execute(select(apps).where(apps.c.id == row.id))).one()
        auth = await mint_tokens(core, conn, row, user_id, portal=portal)
        auth["application_token"] = token
        await enqueue_event(
            core,
            conn,
            row,
            "ONAPPINSTALL",
            {"VERSION": row.version, "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": row.language_id},
            auth,
        )
    return token


async def _forget_app_state(conn: StoreConnection, app_id: int, now: float) -> dict[str, int]:
    # Bitrix's OnRestAppDelete / OnRestAppUpdate drop every sender of the app (spec 1.9); what was
    # still queued for them fails as it would at send time in Bitrix.
    failed = await fail_queued(conn, messages.c.app_id == app_id, now)
    await conn.execute(delete(senders).where(senders.c.app_id == app_id))
    return failed


async def update_app(
    core: Core,
    client_id: str,
    *,
    version: int | None = None,
    url: str | None = None,
    scopes: str | list[str] | None = None,
    name: str | None = None,
    user_id: int = 1,
) -> App:
    """Change an app. A new version behaves as in Bitrix: senders deleted, new application_token, ONAPPUPDATE."""
    portal = await get_portal(core)
    failed: dict[str, int] = {}
    async with changing(core) as conn:
        row = await _locked_app(conn, client_id)
        values: dict[str, Any] = {}
        if url is not None:
            values["url"] = _check_url(url)
        if scopes is not None:
            values["scopes"] = join_scopes(parse_scopes(scopes))
        if name is not None:
            values["name"] = _check_name(name)
        if version is not None and version <= row.version:
            raise CoreError("ERROR_ARGUMENT", f"version must be greater than {row.version}")
        if version is not None:
            values["version"] = version
        if not values:
            raise CoreError("ERROR_ARGUMENT", "nothing to update")
        token: str | None = None
        if version is not None and row.installed:
            token = new_hex(16)
            values["application_token_enc"] = core.box.encrypt(token)
        await conn.execute(update(apps).where(apps.c.id == row.id).values(**values))
        updated = (await conn.execute(select(apps).where(apps.c.id == row.id))).one()
        if token is not None:
            failed = await _forget_app_state(conn, row.id, core.clock())
            auth = await mint_tokens(core, conn, updated, user_id, portal=portal)
            auth["application_token"] = token
            await enqueue_event(
                core,
                conn,
                updated,
                "ONAPPUPDATE",
                {"VERSION": version, "PREVIOUS_VERSION": row.version, "LANGUAGE_ID": row.language_id},
                auth,
            )
    count_failed(core, failed)
    return _app(updated)


async def uninstall_app(core: Core, client_id: str, *, clean: bool = False) -> None:
    """Uninstall: senders and tokens go, ONAPPUNINSTALL is queued with the minimal auth block."""
    portal = await get_portal(core)
    async with changing(core) as conn:
        row = await _locked_app(conn, client_id)
        if not row.installed:
            raise CoreError("ERROR_ARGUMENT", f"Application {client_id} is not installed")
        token = core.box.decrypt(row.application_token_enc) if row.application_token_enc else ""
        failed = await _forget_app_state(conn, row.id, core.clock())
        await conn.execute(delete(access_tokens).where(access_tokens.c.app_id == row.id))
        await conn.execute(delete(refresh_tokens).where(refresh_tokens.c.app_id == row.id))
        # A code not yet exchanged dies with the install too (a reinstall must not revive it).
        await conn.execute(delete(auth_codes).where(auth_codes.c.app_id == row.id))
        await conn.execute(update(apps).where(apps.c.id == row.id).values(installed=False, application_token_enc=None))
        auth = {
            "domain": portal.domain,
            "server_endpoint": portal.client_endpoint,
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
            "application_token": token,
        }
        await enqueue_event(
            core,
            conn,
            row,
            "ONAPPUNINSTALL",
            {"LANGUAGE_ID": row.language_id, "CLEAN": 1 if clean else 0},
            auth,
        )
    count_failed(core, failed)


async def signing_secret(core: Core, client_id: str, *, rotate: bool = False, disable: bool = False) -> str | None:
    """The app's Standard Webhooks secret, created on first use; `rotate` replaces it, `disable` drops it."""
    async with core.store.transaction() as conn:
        row = await _locked_app(conn, client_id)
        if disable:
            await conn.execute(update(apps).where(apps.c.id == row.id).values(signing_secret_enc=None))
            return None
        if row.signing_secret_enc and not rotate:
            return core.box.decrypt(row.signing_secret_enc)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        await conn.execute(update(apps).where(apps.c.id == row.id).values(signing_secret_enc=core.box.encrypt(secret)))
        return secret
