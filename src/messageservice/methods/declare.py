"""What a REST method takes, answers and refuses, declared beside its handler for the API reference.

Declarations describe; they do not validate (core/ does, with Bitrix's order and texts). A test keeps
them honest: every declared error text is one the code can give, and every literal error text of the
messageservice core is declared by some method (tests/test_docs_api.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from messageservice.core.errors import CoreError
from messageservice.rest.registry import Handler

ATTRIBUTE = "declaration"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool = False
    limits: str = ""
    about: str = ""


@dataclass(frozen=True)
class Failure:
    code: str
    text: str
    status: int | None  # None: not an HTTP error, reported inside a batch's result_error
    when: str = ""

    @classmethod
    def of(cls, error: CoreError, when: str = "") -> Failure:
        """From the error the code itself raises (rest/errors.py, core/errors.py), so the text cannot drift."""
        return cls(error.code, error.description, error.status, when)


@dataclass(frozen=True)
class Declaration:
    caller: str
    answer: str
    params: tuple[Param, ...] = ()
    errors: tuple[Failure, ...] = ()
    notes: str = ""


def declare(
    *,
    caller: str,
    answer: str,
    params: tuple[Param, ...] = (),
    errors: tuple[Failure, ...] = (),
    notes: str = "",
) -> Callable[[Handler], Handler]:
    """Attach a Declaration to a handler; put it under `@registry.method(...)`."""

    def attach(handler: Handler) -> Handler:
        setattr(handler, ATTRIBUTE, Declaration(caller, answer, params, errors, notes))
        return handler

    return attach


def declaration_of(handler: Any) -> Declaration | None:
    found = getattr(handler, ATTRIBUTE, None)
    return found if isinstance(found, Declaration) else None
