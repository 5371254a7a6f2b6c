"""Domain errors. The REST layer maps each to Bitrix's code, text and HTTP status."""

from __future__ import annotations


class CoreError(Exception):
    """A failure a caller can act on; `code` and `description` are Bitrix's own where Bitrix has one."""

    status = 400

    def __init__(self, code: str, description: str, status: int | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        if status is not None:
            self.status = status


class AccessDenied(CoreError):
    status = 403

    def __init__(self, reason: str = "") -> None:
        # Bitrix's AccessException prefixes every reason with "Access denied!".
        text = f"Access denied! {reason}" if reason else "Access denied!"
        super().__init__("ACCESS_DENIED", text)
