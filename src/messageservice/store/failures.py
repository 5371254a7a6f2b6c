"""What a driver or SQLAlchemy raised, said once in the store's own terms (store/errors.py).

Only this module knows the drivers' exception classes; everything above the store sees StoreError.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
from sqlalchemy import exc as sa

from messageservice.store.errors import StoreConflict, StoreError, StoreUnavailable

T = TypeVar("T")

# SQLSTATE classes that mean "not now" rather than "wrong": connection (08), resources such as a full
# disk or too many connections (53), operator intervention such as a shutdown (57), read-only (25006).
_UNAVAILABLE_STATES = ("08", "53", "57")
_READ_ONLY_STATE = "25006"
# SQLite says the same in words.
_UNAVAILABLE_WORDS = (
    "disk is full",
    "database or disk is full",
    "readonly database",
    "read-only",
    "unable to open database",
    "disk i/o error",
    "database is locked",
)


def _sqlstate(error: BaseException) -> str | None:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return state if isinstance(state, str) else None


def _driver_error(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrapper (asyncpg's sits one level deeper)."""
    inner = error.orig if isinstance(error, sa.DBAPIError) and error.orig is not None else error
    cause = inner.__cause__
    return cause if isinstance(cause, asyncpg.PostgresError | OSError) else inner


def translate(error: BaseException) -> StoreError | None:
    """The store error for a database failure; None when `error` is not one (let it pass as it is)."""
    if isinstance(error, StoreError):
        return error
    if isinstance(error, sa.IntegrityError):
        return StoreConflict(str(error.orig))
    if isinstance(error, asyncpg.IntegrityConstraintViolationError | sqlite3.IntegrityError):
        return StoreConflict(str(error))
    if isinstance(error, sa.SQLAlchemyError | asyncpg.PostgresError | asyncpg.InterfaceError | sqlite3.Error):
        driver = _driver_error(error)
        state = _sqlstate(driver) or ""
        text = str(driver).lower()
        if (
            state.startswith(_UNAVAILABLE_STATES)
            or state == _READ_ONLY_STATE
            or any(words in text for words in _UNAVAILABLE_WORDS)
            or isinstance(error, sa.DisconnectionError | sa.TimeoutError)
            or (isinstance(error, sa.DBAPIError) and error.connection_invalidated)
            or isinstance(driver, OSError | asyncpg.InterfaceError | asyncpg.CannotConnectNowError)
        ):
            return StoreUnavailable(str(driver))
        return StoreError(str(driver))
    if isinstance(error, OSError | TimeoutError):
        # Only raised here while reaching the server (refused, unreachable, DNS, a full disk on open).
        return StoreUnavailable(str(error) or type(error).__name__)
    return None


@contextlib.contextmanager
def store_errors() -> Iterator[None]:
    """Raise database failures inside the block as StoreError (chained to the original)."""
    try:
        yield
    except Exception as error:
        mapped = translate(error)
        if mapped is None or mapped is error:
            raise
        raise mapped from error


async def guarded(call: Callable[[], Awaitable[T]]) -> T:
    with store_errors():
        return await call()
