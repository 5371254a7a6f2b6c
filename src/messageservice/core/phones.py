"""Recipient numbers as Bitrix normalises them before queueing (spec 2.2, SmsManager + NormalizePhone).

One rule for every way in (REST `message.send`, the console's Send form, the CLI): a recipient is
accepted when Bitrix24's NormalizePhone reads it as a phone number, and stored as Bitrix stores it.
This module imports nothing heavy: the CLI checks its input with it before opening the database.
"""

from __future__ import annotations

import re

from messageservice.core.errors import CoreError

_NOT_DIALABLE = re.compile(r"[^0-9#*]")
MIN_LENGTH = 10
# What a person is told when a recipient is refused (the console and the CLI say it in their own words around it).
RULE = "at least 10 digits, e.g. +1 555 010 2030 or 8 (999) 000-00-00"
# The code message.send answers for any bad field (core.messages.VALIDATION; a test keeps them equal).
VALIDATION = "ERROR_MESSAGE_VALIDATION_FAILURE"
NOT_A_PHONE = "MESSAGE_TO is not a phone number!"


def phone_number(raw: str) -> str | None:
    """'+' and the digits, with 00/011 prefixes dropped and a leading 8 read as 7; None if too short."""
    if len(raw) < MIN_LENGTH:
        return None
    digits = _NOT_DIALABLE.sub("", raw)
    if len(digits) >= MIN_LENGTH:
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        elif digits.startswith("8"):
            digits = "7" + digits[1:]
    if len(digits) < MIN_LENGTH:
        return None
    return "+" + digits


def normalize_phone(raw: str) -> str:
    """The number as Bitrix stores it, or the raw value when it is not one (for search filters)."""
    return phone_number(raw) or raw


class NotAPhone(CoreError):
    def __init__(self, raw: str) -> None:
        super().__init__(VALIDATION, NOT_A_PHONE)
        self.raw = raw


def recipient(raw: str) -> str:
    """The recipient of a new message as stored (`+` and digits); NotAPhone if Bitrix would not read it as one."""
    number = phone_number(raw.strip())
    if number is None:
        raise NotAPhone(raw)
    return number
