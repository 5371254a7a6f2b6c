"""The `.xml` transport: Bitrix's <response> document, numeric keys as <item> (spec 3.1)."""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def _tag(key: str) -> str:
    # Numeric keys, and keys that are no valid XML name (user-chosen batch keys), become <item>.
    return key if _XML_NAME.match(key) and not key.lower().startswith("xml") else "item"


def _encode(value: Any) -> str:
    if isinstance(value, dict):
        return "".join(f"<{_tag(str(k))}>{_encode(v)}</{_tag(str(k))}>" for k, v in value.items())
    if isinstance(value, list):
        return "".join(f"<item>{_encode(v)}</item>" for v in value)
    if value is True:
        return "true"
    if value is False or value is None:
        return ""
    return escape(str(value))


def php_xml(body: dict[str, Any]) -> bytes:
    return f'<?xml version="1.0" encoding="utf-8"?><response>{_encode(body)}</response>'.encode()
