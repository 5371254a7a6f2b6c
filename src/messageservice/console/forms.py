"""Form bodies read with a size cap and fields checked one by one, each failure a sentence for the page."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qs

from starlette.requests import Request

# Generous for a message body of 65,535 characters percent-encoded, small enough to refuse floods.
MAX_FORM_BYTES = 1_000_000
MAX_FIELDS = 200
# Names, logins, URLs and the like never need markup; a tag there is a mistake or an attack.
TAG = re.compile(r"<\s*/?\s*[A-Za-z!?]")
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
T = TypeVar("T")


class FormError(Exception):
    """Bad input: the message is shown on the page and nothing is changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Form:
    def __init__(self, fields: dict[str, list[str]]) -> None:
        self.fields = fields

    @classmethod
    async def read(cls, request: Request) -> Form:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            raise FormError("The form is too large.")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise FormError("The form is too large.")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if body and content_type != "application/x-www-form-urlencoded":
            raise FormError("The form must be sent as application/x-www-form-urlencoded.")
        try:
            text = body.decode("utf-8")
            fields = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise FormError("The form could not be read (bad encoding or too many fields).") from None
        return cls(fields)

    def raw(self, name: str) -> str:
        values = self.fields.get(name) or [""]
        return values[0]

    def values(self) -> dict[str, str]:
        """Every field's first value, to put back into a form shown again after an error."""
        return {name: values[0] for name, values in self.fields.items() if values}

    def text(
        self,
        name: str,
        label: str,
        *,
        required: bool = True,
        max_length: int = 255,
        strip: bool = True,
        free_text: bool = False,
    ) -> str:
        """One field's value, checked. Only `free_text` (a message body) may hold markup or line breaks."""
        values = self.fields.get(name, [])
        if len(values) > 1:
            raise FormError(f"{label}: give one value only.")
        value = values[0] if values else ""
        if strip:
            value = value.strip()
        if required and not value:
            raise FormError(f"{label} is required.")
        if len(value) > max_length:
            raise FormError(f"{label} is too long (at most {max_length} characters).")
        if "\x00" in value:
            raise FormError(f"{label} must not contain NUL characters.")
        if not free_text and TAG.search(value):
            raise FormError(f"{label} must not contain HTML tags.")
        if not free_text and (CONTROL.search(value) or "\n" in value or "\r" in value):
            raise FormError(f"{label} must be one line without control characters.")
        return value

    def integer(
        self, name: str, label: str, *, required: bool = True, low: int = 1, high: int = 2**31 - 1
    ) -> int | None:
        value = self.text(name, label, required=required, max_length=20)
        if not value:
            return None
        if not (value.isascii() and value.lstrip("-").isdigit()):
            raise FormError(f"{label} must be a whole number.")
        number = int(value)
        if not low <= number <= high:
            raise FormError(f"{label} must be between {low} and {high}.")
        return number

    def choice(self, name: str, label: str, options: dict[str, str] | list[str] | tuple[str, ...]) -> str:
        value = self.text(name, label)
        if value not in options:
            raise FormError(f"{label}: choose one of the offered values.")
        return value

    def checked(self, name: str) -> bool:
        return self.raw(name) in ("on", "1", "true", "yes")


class FieldErrors(FormError):
    """Several fields wrong at once: each message is shown beside its field, the summary above the form."""

    def __init__(self, fields: dict[str, str], labels: dict[str, str]) -> None:
        names = ", ".join(labels.get(name, name) for name in fields)
        super().__init__(f"Please correct the marked field{'s' if len(fields) > 1 else ''}: {names}.")
        self.fields = fields


class Checker:
    """Reads fields one after another and keeps every failure, so that a form shows all its errors at once."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.labels: dict[str, str] = {}

    def field(self, name: str, label: str, read: Callable[[], T]) -> T | None:
        self.labels[name] = label
        try:
            return read()
        except FormError as exc:
            self.fail(name, exc.message)
            return None

    def fail(self, name: str, message: str) -> None:
        self.errors.setdefault(name, message)

    def done(self) -> None:
        if self.errors:
            raise FieldErrors(dict(self.errors), self.labels)
