"""Log lines as people read them (text) or as log shippers index them (JSON, one object per line).

MESSAGESERVICE_LOG_FORMAT picks one for `serve` and `worker`. A JSON line has `time`, `level`, `logger`
and `message`, then the request id, message id, app and sender where the context knows them
(observability/context.py), then whatever the call passed in `extra` (an attempt's outcome, an access
line's status). Secrets are masked where the lines are made (logs.py `redact`), as in text.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from messageservice.config import LogFormat
from messageservice.observability.context import FIELDS, current

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "messageservice.access"

# A LogRecord's own attributes; anything else on a record came in through `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's coloured copy of the message
    "taskName",
}


def _plain(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        attributes = record.__dict__
        context = current()
        for name in FIELDS:
            value = attributes.get(name) or (getattr(context, name) if context is not None else None)
            if value is not None:
                line[name] = value
        for name, value in attributes.items():
            if name not in _STANDARD and name not in line:
                line[name] = _plain(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: LogFormat | str, level: int | str, access_level: int | str | None = None) -> None:
    """The root logger's handler for a long-running command (as logging.basicConfig: kept if already set)."""
    if log_format == LogFormat.JSON:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(level=level, format=TEXT_FORMAT)
    if access_level is not None:
        # Access lines follow the server's log level, as uvicorn's own did (`serve --log-level warning`).
        logging.getLogger(ACCESS_LOGGER).setLevel(
            access_level.upper() if isinstance(access_level, str) else access_level
        )


def uvicorn_log_config(log_format: LogFormat | str) -> dict[str, Any]:
    """uvicorn's logging: its own in text; in JSON its loggers hand their lines to the root's JSON handler."""
    import uvicorn.config

    if log_format != LogFormat.JSON:
        return uvicorn.config.LOGGING_CONFIG
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {"level": "INFO", "handlers": [], "propagate": True},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"level": "INFO", "handlers": [], "propagate": True},
        },
    }
