"""Operator input for sending (command options or a CSV row) checked and turned into send parameters.

The core checks what the REST API checks; this adds what a person typing or a spreadsheet gets
wrong (a recipient that is not a phone number, a binding written as `contact:42`), with messages in
the command line's own terms (`--to`, column `text`) rather than Bitrix field names.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from messageservice.cli.errors import InputError
from messageservice.core.phones import RULE, phone_number

# CRM owner types by name, as Bitrix numbers them (CCrmOwnerType): lead 1, deal 2, contact 3, company 4.
OWNER_TYPES = {"lead": 1, "deal": 2, "contact": 3, "company": 4}
# core.messages.MAX_BODY, repeated so that checking a draft does not load the store (a test keeps them equal).
MAX_BODY = 65_535


@dataclass
class Draft:
    """One message as the operator wrote it, before it is checked."""

    sender: str | None = None  # client_id|CODE
    to: str | None = None
    text: str | None = None
    module: str = "crm"
    bindings: list[str] = field(default_factory=list)  # TYPE:ID items
    workflow_id: str | None = None
    document_id: str | None = None  # a,b,c
    document_type: str | None = None
    idempotency_key: str | None = None


def check_recipient(raw: str) -> str:
    """A phone number as Bitrix24 reads one (core.phones, the rule REST and the console apply too)."""
    value = raw.strip()
    if phone_number(value) is None:
        raise InputError(f"not a phone number: {raw!r} ({RULE})")
    return value


def parse_binding(raw: str) -> dict[str, str]:
    """`contact:42` or `3:42` into Bitrix's {OWNER_TYPE_ID, OWNER_ID}."""
    kind, sep, owner = raw.strip().partition(":")
    kind = kind.strip().lower()
    owner_type = str(OWNER_TYPES[kind]) if kind in OWNER_TYPES else kind
    owner = owner.strip()
    if not (sep and owner_type.isascii() and owner_type.isdigit() and owner.isascii() and owner.isdigit()):
        names = ", ".join(OWNER_TYPES)
        raise InputError(f"not a binding: {raw!r} (TYPE:ID, TYPE a number or one of {names}, e.g. contact:42)")
    return {"OWNER_TYPE_ID": owner_type, "OWNER_ID": owner}


def split_bindings(raw: str) -> list[str]:
    """A CSV cell holding several bindings, separated by spaces or semicolons."""
    return [item for item in re.split(r"[\s;]+", raw.strip()) if item]


def parse_triple(raw: str, name: str) -> list[str]:
    parts = [part.strip() for part in raw.split(",")]
    if len(parts) != 3 or not all(parts):
        raise InputError(f"{name} must be three comma-separated values, e.g. crm,CCrmDocumentLead,LEAD_98; got {raw!r}")
    return parts


def send_params(draft: Draft) -> dict[str, Any]:
    """The message.send parameters for a draft; InputError names what is wrong."""
    if not draft.sender:
        raise InputError("no sender: give --from client_id|CODE (or a 'from' column)")
    if "|" not in draft.sender:
        raise InputError(f"the sender must be client_id|CODE, got {draft.sender!r}")
    if draft.to is None or not draft.to.strip():
        raise InputError("no recipient ('to' is empty)")
    to = check_recipient(draft.to)
    if not draft.text:
        raise InputError("no text ('text' is empty)")
    if len(draft.text) > MAX_BODY:
        raise InputError(f"the text is {len(draft.text):,} characters long; at most {MAX_BODY:,} fit")
    if "\x00" in draft.text:
        raise InputError("the text contains a NUL character")
    params: dict[str, Any] = {"MESSAGE_FROM": draft.sender, "MESSAGE_TO": to, "MESSAGE_BODY": draft.text}
    module = (draft.module or "crm").strip().lower()
    if module == "crm":
        if draft.workflow_id or draft.document_id or draft.document_type:
            raise InputError("a workflow or document id needs module bizproc")
        if draft.bindings:
            params["BINDINGS"] = [parse_binding(item) for item in draft.bindings]
    elif module == "bizproc":
        if draft.bindings:
            raise InputError("bindings belong to module crm, not bizproc")
        if not draft.workflow_id or not draft.document_id or not draft.document_type:
            raise InputError("module bizproc needs a workflow id, a document id and a document type")
        params["MODULE_ID"] = "bizproc"
        params["WORKFLOW_ID"] = draft.workflow_id
        params["DOCUMENT_ID"] = parse_triple(draft.document_id, "the document id")
        params["DOCUMENT_TYPE"] = parse_triple(draft.document_type, "the document type")
    else:
        raise InputError(f"unknown module {draft.module!r} (crm or bizproc)")
    if draft.idempotency_key:
        if len(draft.idempotency_key) > 255:
            raise InputError("the idempotency key is longer than 255 characters")
        params["IDEMPOTENCY_KEY"] = draft.idempotency_key
    return params


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(raw: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `7d` into seconds."""
    match = _DURATION.match(raw)
    if not match:
        raise InputError(f"not a duration: {raw!r} (e.g. 90, 90s, 15m, 2h, 7d)")
    return float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]


def parse_moment(raw: str, now: float) -> float:
    """A point in time: epoch seconds, an ISO date or date-time (local time unless it has an offset),
    or a duration meaning that long ago (`15m`, `2h`, `7d`)."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if value > 1e8 and math.isfinite(value):  # epoch seconds, not a bare number of seconds ago
            return value
    if _DURATION.match(text) and text[-1:].isalpha():
        return now - parse_duration(text)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InputError(
            f"not a time: {raw!r} (epoch seconds, 2026-11-22, 2026-11-22T10:30, or ago as 15m, 2h, 7d)"
        ) from None
