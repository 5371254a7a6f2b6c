"""Senders (SMS providers) registered by apps, with Bitrix's validation order, codes and texts (spec 1.3-1.6)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, delete, insert, select, update

from messageservice.cache.changes import changing
from messageservice.cache.freshness import cached
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.orphans import count_failed, fail_queued
from messageservice.core.schedules import parse_schedule
from messageservice.delivery.ssrf import handler_url_refusal, listening_nowhere
from messageservice.php import php_empty, php_string
from messageservice.store.connection import StoreConnection
from messageservice.store.errors import StoreConflict
from messageservice.store.tables import apps, messages, sender_langs, senders

VALIDATION = "ERROR_SENDER_VALIDATION_FAILURE"
# PHP's '$' also matches before one trailing newline; Python's does too.
CODE_PATTERN = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE | re.ASCII)
SCHEME_PATTERN = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
TYPES = ("SMS",)
MAX_CODE = 128
MAX_HANDLER = 1000
MAX_NAME = 500
MAX_LANGUAGE_ID = 8
MAX_RETRY_SCHEDULE = 200
DEFAULT_LANGUAGE = "**"


@dataclass
class Sender:
    id: int
    app_id: int
    code: str
    type: str
    handler: str
    author_id: int
    names: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str | None] = field(default_factory=dict)


def check_handler_url(url: Any) -> str:
    """Bitrix's HandlerHelper::checkCallback: a dotted host first, then an http(s) scheme."""
    text = php_string(url) or ""
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        host = ""
    if not host or host.find(".") <= 0:
        raise CoreError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL")
    scheme = SCHEME_PATTERN.match(text)
    # Case-sensitive like PHP's comparison: "HTTP://" is refused.
    if scheme is None or scheme.group(1) not in ("http", "https"):
        raise CoreError("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol")
    return text


def check_deliverable(core: Core, url: str) -> None:
    """Refuse at registration what delivery would surely refuse (delivery/ssrf.py handler_url_refusal),
    with the wrong-handler error Bitrix gives for a URL it cannot call."""
    if handler_url_refusal(url, listening_nowhere(core.settings.allowed_handler_networks)) is not None:
        raise CoreError("ERROR_WRONG_HANDLER_URL", "Wrong handler URL")


def check_code(code: Any) -> str:
    if php_empty(code):
        raise CoreError(VALIDATION, "Empty sender code!")
    text = php_string(code)
    if text is None or not CODE_PATTERN.match(text):
        raise CoreError(VALIDATION, "Wrong sender code!")
    return text


def _lang_rows(name: Any, description: Any, app_name: str) -> list[dict[str, Any]] | None:
    """Language rows as Bitrix stores them; None when a value cannot be stored.

    A NAME map gives one row per lower-cased language plus a '**' copy of the first; DESCRIPTION is
    taken per language only when it is a map too. A string NAME gives the '**' row alone.
    """
    is_map = isinstance(name, dict | list)
    names = _by_language(name)
    descriptions = (
        _by_language(description) if description is not None and is_map == isinstance(description, dict | list) else {}
    )
    if names is None or descriptions is None:
        return None
    rows = [
        {"language_id": lang, "name": text, "description": descriptions.get(lang), "app_name": app_name}
        for lang, text in names.items()
    ]
    if is_map and rows:
        rows.append({**rows[0], "language_id": DEFAULT_LANGUAGE})
    if any(len(row["name"]) > MAX_NAME or not 0 < len(row["language_id"]) <= MAX_LANGUAGE_ID for row in rows):
        return None
    # A later duplicate key (e.g. 'EN' and 'en') replaces the earlier, as a PHP array would.
    return list({row["language_id"]: row for row in rows}.values())


def _retry_schedule(params: dict[str, Any]) -> str | None:
    """RETRY_SCHEDULE (our extension; Bitrix24 ignores it): the provider's own delays, "" for the default."""
    text = php_string(params.get("RETRY_SCHEDULE"))
    if text is None or (text.strip() and (len(text) > MAX_RETRY_SCHEDULE or parse_schedule(text) is None)):
        raise CoreError(VALIDATION, "Wrong RETRY_SCHEDULE!")
    return ",".join(part.strip() for part in text.split(",")) if text.strip() else None


async def add_sender(core: Core, app_id: int, author_id: int, params: dict[str, Any]) -> None:
    """messageservice.sender.add after the context and admin checks; params have upper-case keys."""
    if not params:
        raise CoreError(VALIDATION, "Empty data!")
    code = check_code(params.get("CODE"))
    handler = check_handler_url(params.get("HANDLER"))
    check_deliverable(core, handler)
    if php_empty(params.get("NAME")):
        raise CoreError(VALIDATION, "Empty sender NAME!")
    sender_type = params.get("TYPE")
    if php_empty(sender_type):
        raise CoreError(VALIDATION, "Empty sender message TYPE!")
    if sender_type not in TYPES:
        raise CoreError(VALIDATION, "Unknown sender message TYPE!")
    schedule = _retry_schedule(params) if "RETRY_SCHEDULE" in params else None
    async with changing(core) as conn:
        app_name = (await conn.execute(select(apps.c.name).where(apps.c.id == app_id))).scalar_one()
        if await _find(conn, app_id, code) is not None:
            raise CoreError("ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
        lang_rows = _lang_rows(params.get("NAME"), params.get("DESCRIPTION"), app_name)
        if len(code) > MAX_CODE or len(handler) > MAX_HANDLER or lang_rows is None:
            raise CoreError("ERROR_SENDER_ADD_FAILURE", "Sender save error!")
        now = core.clock()
        try:
            async with conn.begin_nested():
                sender_id = (
                    await conn.execute(
                        insert(senders)
                        .values(
                            app_id=app_id,
                            code=code,
                            type=sender_type,
                            handler=handler,
                            retry_schedule=schedule,
                            author_id=author_id,
                            created_at=now,
                            updated_at=now,
                        )
                        .returning(senders.c.id)
                    )
                ).scalar_one()
        except StoreConflict:
            # Lost a race with a concurrent add of the same code.
            raise CoreError("ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!") from None
        await conn.execute(insert(sender_langs), [{"sender_id": sender_id, **row} for row in lang_rows])


async def _find(conn: StoreConnection, app_id: int, code: str, *, lock: bool = False) -> Any:
    query = select(senders).where(senders.c.app_id == app_id, senders.c.code == code)
    # Locking the sender row serialises concurrent updates of it on PostgreSQL (SQLite's writes are serial).
    return (await conn.execute(query.with_for_update() if lock else query)).first()


async def update_sender(core: Core, app_id: int, params: dict[str, Any]) -> None:
    """messageservice.sender.update (docs only; order and per-language upsert are our reading of them)."""
    code = params.get("CODE")
    if php_empty(code):
        raise CoreError("ERROR_SENDER_CODE_REQUIRED", "CODE is required!")
    if all(key not in params for key in ("HANDLER", "NAME", "DESCRIPTION", "RETRY_SCHEDULE")):
        raise CoreError("ERROR_SENDER_OTHER_PARAMS_REQUIRED", "At least one other parameter is required!")
    handler = check_handler_url(params["HANDLER"]) if "HANDLER" in params else None
    if handler is not None:
        check_deliverable(core, handler)
    schedule = _retry_schedule(params) if "RETRY_SCHEDULE" in params else None
    code_text = php_string(code)
    async with changing(core) as conn:
        row = await _find(conn, app_id, code_text, lock=True) if code_text is not None else None
        if row is None:
            raise CoreError("ERROR_SENDER_NOT_FOUND", "Sender not found!")
        existing = {
            r.language_id: r
            for r in (await conn.execute(select(sender_langs).where(sender_langs.c.sender_id == row.id))).all()
        }
        changes = _lang_changes(params, existing)
        if changes is None or (handler is not None and len(handler) > MAX_HANDLER):
            raise CoreError("ERROR_SENDER_UPDATE_FAILURE", "Sender update error!")
        app_name = (await conn.execute(select(apps.c.name).where(apps.c.id == app_id))).scalar_one()
        values: dict[str, Any] = {"updated_at": core.clock()}
        if handler is not None:
            values["handler"] = handler
        if "RETRY_SCHEDULE" in params:
            values["retry_schedule"] = schedule
        await conn.execute(update(senders).where(senders.c.id == row.id).values(**values))
        for lang_id, change in changes.items():
            if lang_id in existing:
                await conn.execute(
                    update(sender_langs).where(sender_langs.c.id == existing[lang_id].id).values(**change)
                )
            else:
                await conn.execute(
                    insert(sender_langs).values(sender_id=row.id, language_id=lang_id, app_name=app_name, **change)
                )


def _lang_changes(params: dict[str, Any], existing: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """Per-language upserts; None when a new language lacks NAME or a value cannot be stored."""
    names = _by_language(params["NAME"]) if "NAME" in params else {}
    descriptions = _by_language(params["DESCRIPTION"]) if "DESCRIPTION" in params else {}
    if names is None or descriptions is None:
        return None
    changes: dict[str, dict[str, Any]] = {}
    for lang_id, name in names.items():
        if php_empty(name) or len(name) > MAX_NAME or not 0 < len(lang_id) <= MAX_LANGUAGE_ID:
            return None
        changes[lang_id] = {"name": name}
    for lang_id, description in descriptions.items():
        if lang_id not in changes and lang_id not in existing:
            return None
        changes.setdefault(lang_id, {})["description"] = description
    return changes


def _by_language(value: Any) -> dict[str, str] | None:
    """A string or a language map as {language_id: text}; a string is the default ('**') language."""
    if isinstance(value, dict | list):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        result: dict[str, str] = {}
        for lang, text in items:
            text_value = php_string(text)
            if text_value is None:
                return None
            result[str(lang).lower()] = text_value
        return result
    text_value = php_string(value)
    return None if text_value is None else {DEFAULT_LANGUAGE: text_value}


async def delete_sender(core: Core, app_id: int, params: dict[str, Any]) -> None:
    code = check_code(params.get("CODE"))
    async with changing(core) as conn:
        row = await _find(conn, app_id, code, lock=True)
        if row is None:
            raise CoreError("ERROR_SENDER_NOT_FOUND", "Sender not found!")
        failed = await fail_queued(conn, messages.c.sender_id == row.id, core.clock())
        await conn.execute(delete(senders).where(senders.c.id == row.id))
    count_failed(core, failed)


_CODES = select(senders.c.code).where(senders.c.app_id == bindparam("app_id")).order_by(senders.c.id)


async def list_codes(core: Core, app_id: int) -> list[str]:
    """sender.list: held in the REST cache (cache/) while nothing changes."""
    codes = await cached(core, ("senders", app_id), lambda: _read_codes(core, app_id))
    return list(codes or ())


async def _read_codes(core: Core, app_id: int) -> tuple[str, ...]:
    return tuple(row["code"] for row in await core.store.fetch(_CODES, {"app_id": app_id}))


async def list_senders(core: Core, app_id: int | None = None) -> list[Sender]:
    """Senders with their language rows, for the CLI and the console."""
    query = select(senders).order_by(senders.c.id)
    if app_id is not None:
        query = query.where(senders.c.app_id == app_id)
    async with core.store.connection() as conn:
        rows = (await conn.execute(query)).all()
        ids = [row.id for row in rows]
        langs = (await conn.execute(select(sender_langs).where(sender_langs.c.sender_id.in_(ids)))).all() if ids else []
    result = {row.id: Sender(row.id, row.app_id, row.code, row.type, row.handler, row.author_id) for row in rows}
    for lang in langs:
        result[lang.sender_id].names[lang.language_id] = lang.name
        result[lang.sender_id].descriptions[lang.language_id] = lang.description
    return list(result.values())
