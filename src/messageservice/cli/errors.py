"""The one mapping from an exception to what the operator sees: one line on standard error and an exit code.

Exit codes: 1 the portal refused or failed (a CoreError or OAuthError, the database unreachable or
failing); 2 the input or the settings are wrong (InputError, SettingsError, a malformed database URL).

Exception classes are looked up among the modules already imported, never imported here: an
exception of a library that was never loaded cannot have been raised, and mapping must not load
the server stack (see the package docstring).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

REFUSED, BAD_INPUT = 1, 2
# Drivers and engines whose exceptions mean "the database failed", whatever their class.
DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "alembic")


class InputError(ValueError):
    """Input that cannot be used, with a message for the person who wrote it (exit 2)."""


@dataclass(frozen=True)
class Failure:
    message: str
    code: int


# The database the running command uses, noted when its settings are read: named in connection errors.
_database_url: str | None = None


def note_database(url: str | None) -> None:
    global _database_url
    _database_url = url


def _loaded(module: str, name: str) -> type[BaseException] | None:
    found = getattr(sys.modules.get(module), name, None)
    return found if isinstance(found, type) else None


def _is(exc: BaseException, module: str, name: str) -> bool:
    cls = _loaded(module, name)
    return cls is not None and isinstance(exc, cls)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def shown_url(url: str) -> str:
    """The database URL without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _root_cause(exc: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's and the store's wrappers."""
    seen = {id(exc)}
    while True:
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException) or id(inner) in seen:
            return exc
        seen.add(id(inner))
        exc = inner


def _is_network(exc: BaseException) -> bool:
    # An OSError naming a file is about a file (the data folder, the secret key), not about a server;
    # a broken pipe is standard output closed early (`| head`).
    if isinstance(exc, BrokenPipeError):
        return False
    return isinstance(exc, ConnectionError | TimeoutError) or (isinstance(exc, OSError) and exc.filename is None)


def _from_database(exc: BaseException) -> bool:
    return (
        _is(exc, "messageservice.store.errors", "StoreError")
        or type(exc).__module__.split(".")[0] in DATABASE_MODULES
        or _is_network(exc)
    )


def _network_reason(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "[Errno 111]" in text:
        return "connection refused"
    if _is(exc, "socket", "gaierror"):
        return f"unknown host: {exc.strerror or text}"  # type: ignore[attr-defined]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return (exc.strerror if isinstance(exc, OSError) and exc.strerror else None) or first_line(exc)


def database_failure(exc: BaseException) -> Failure | None:
    """What an exception from the database (or on the way to it) means, or None if it is not one."""
    if _is(exc, "sqlalchemy.exc", "ArgumentError") or _is(exc, "sqlalchemy.exc", "NoSuchModuleError"):
        return Failure(f"MESSAGESERVICE_DATABASE_URL: {first_line(exc)}", BAD_INPUT)
    if not _from_database(exc):
        return None
    cause = _root_cause(exc)
    at = f" at {shown_url(_database_url)}" if _database_url else ""
    if _is_network(cause):
        return Failure(f"cannot reach the database{at} ({_network_reason(cause)})", REFUSED)
    if _is(exc, "messageservice.store.errors", "StoreUnavailable"):
        return Failure(f"cannot reach the database{at} ({first_line(exc)})", REFUSED)
    return Failure(f"database{at}: {type(cause).__name__}: {first_line(cause)}", REFUSED)


def describe(exc: BaseException) -> Failure | None:
    """The line and exit code for an exception a command may meet; None for a bug (left to show its trace)."""
    if isinstance(exc, InputError) or _is(exc, "messageservice.config", "SettingsError"):
        return Failure(str(exc), BAD_INPUT)
    if _is(exc, "messageservice.core.errors", "CoreError"):
        return Failure(exc.description, REFUSED)  # type: ignore[attr-defined]
    if _is(exc, "messageservice.core.tokens", "OAuthError"):
        return Failure(f"{exc.error}: {exc.description}", REFUSED)  # type: ignore[attr-defined]
    failure = database_failure(exc)
    if failure is not None:
        return failure
    if isinstance(exc, OSError) and exc.filename is not None:
        return Failure(f"{exc.strerror or first_line(exc)}: {exc.filename}", REFUSED)
    return None
