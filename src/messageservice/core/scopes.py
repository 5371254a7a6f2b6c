"""Scope lists as Bitrix writes them: comma-separated, lower-case."""

from __future__ import annotations

import re

from messageservice.core.errors import CoreError

_SCOPE = re.compile(r"^[a-z0-9_.]+$")


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> list[str]:
    parts = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes: list[str] = []
    for part in parts:
        scope = part.strip().lower()
        if not scope:
            continue
        if not _SCOPE.match(scope):
            raise CoreError("ERROR_ARGUMENT", f"invalid scope name: {part!r}")
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise CoreError("ERROR_ARGUMENT", "at least one scope is required")
    return scopes


def join_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> str:
    return ",".join(scopes)
