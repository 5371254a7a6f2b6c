"""Response bodies exactly as Bitrix's PHP writes them (spec 3.4, 3.5)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

# json_encode with JSON_HEX_TAG|AMP|APOS|QUOT and escaped slashes. Outside strings a JSON document
# never holds '\\', '<', '>', '&', "'" or '/', so rewriting the whole text is safe.
_PHP_ESCAPES = re.compile(r"""\\.|[<>&'/]""")
_REPLACEMENTS = {"<": "\\u003C", ">": "\\u003E", "&": "\\u0026", "'": "\\u0027", "/": "\\/", '\\"': "\\u0022"}


def _php_escape(match: re.Match[str]) -> str:
    text = match.group(0)
    return _REPLACEMENTS.get(text, text)


# One encoder for every response: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def php_json(value: Any) -> bytes:
    text = _ENCODER.encode(value)
    # Most bodies hold none of those characters: a few scans in C, where the rewrite walks the regex.
    if "\\" in text or "/" in text or "<" in text or ">" in text or "&" in text or "'" in text:
        text = _PHP_ESCAPES.sub(_php_escape, text)
    return text.encode("ascii")


def iso_date(timestamp: float) -> str:
    """PHP's date('c') in the server's time zone, e.g. 2025-03-25T10:00:00+03:00."""
    second = int(timestamp)
    if _last_date[0] == second:  # twice a request, thousands a second: the same text all second long
        return _last_date[1]
    # time.localtime is a C call; datetime(...).astimezone() costs several times more.
    local = time.localtime(second)
    offset = local.tm_gmtoff
    sign = "-" if offset < 0 else "+"
    hours, minutes = divmod(abs(offset) // 60, 60)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{hours:02d}:{minutes:02d}"
    _last_date[:] = [second, text]
    return text


_last_date: list[Any] = [None, ""]  # [second, its text]: iso_date's one-entry memo


@dataclass
class Timing:
    start: float
    finish: float
    processing: float

    def block(self, operating: float | None = None, operating_reset_at: int | None = None) -> dict[str, Any]:
        block: dict[str, Any] = {
            "start": self.start,
            "finish": self.finish,
            "duration": self.finish - self.start,
            "processing": self.processing,
            "date_start": iso_date(self.start),
            "date_finish": iso_date(self.finish),
        }
        if operating is not None:
            block["operating_reset_at"] = operating_reset_at
            block["operating"] = operating
        return block


def success_body(
    result: Any, time_block: dict[str, Any], *, next_offset: int | None = None, total: int | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"result": result}
    if next_offset is not None:
        body["next"] = next_offset
    if total is not None:
        body["total"] = total
    body["time"] = time_block
    return body


def error_body(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description}
