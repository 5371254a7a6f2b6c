"""Recipient numbers as Bitrix normalises them before queueing (spec 2.2, SmsManager + NormalizePhone)."""

from __future__ import annotations

import re

_NOT_DIALABLE = re.compile(r"[^0-9#*]")
MIN_LENGTH = 10


def normalize_phone(raw: str) -> str:
    """'+' and the digits, with 00/011 prefixes dropped and a leading 8 read as 7; the raw value if too short."""
    if len(raw) < MIN_LENGTH:
        return raw
    digits = _NOT_DIALABLE.sub("", raw)
    if len(digits) >= MIN_LENGTH:
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        elif digits.startswith("8"):
            digits = "7" + digits[1:]
    if len(digits) < MIN_LENGTH:
        return raw
    return "+" + digits
