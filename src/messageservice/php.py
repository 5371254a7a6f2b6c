"""PHP value semantics that Bitrix's checks rely on: empty() and string casts."""

from __future__ import annotations

from typing import Any


def php_empty(value: Any) -> bool:
    """PHP's empty(): null, false, 0, 0.0, "", "0" and empty arrays."""
    if value is None or value is False:
        return True
    if isinstance(value, str):
        return value in ("", "0")
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, list | dict):
        return len(value) == 0
    return False


def php_string(value: Any) -> str | None:
    """A scalar as PHP casts it to string; None for arrays, which PHP cannot cast meaningfully."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    return None
