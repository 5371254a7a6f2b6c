"""Logging without secrets: webhook secrets sit in URL paths, tokens and client secrets in query strings."""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

# /rest/{user_id}/{secret}/...: the second segment is the webhook's password.
_WEBHOOK_PATH = re.compile(r"^(/rest/+[^/]+/)[^/]+(/.*)$", re.DOTALL)
SENSITIVE_PARAMS = frozenset({"auth", "access_token", "refresh_token", "client_secret", "code", "password"})


def redact(target: str) -> str:
    """A request path (with query) fit for a log line."""
    path, sep, query = target.partition("?")
    path = _WEBHOOK_PATH.sub(r"\1***\2", path)
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    return path + "?" + urlencode([(k, "***" if k.lower() in SENSITIVE_PARAMS else v) for k, v in pairs])


class RedactAccessLog(logging.Filter):
    """For uvicorn's access logger, whose record args are (client, method, path, http_version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact(args[2]), args[3], args[4])
        return True


def install_access_log_redaction() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactAccessLog) for f in logger.filters):
        logger.addFilter(RedactAccessLog())
