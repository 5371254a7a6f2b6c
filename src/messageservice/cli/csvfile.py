"""A CSV file of messages for `send-bulk`: a header row naming the columns, then one message per row.

A file that cannot be read, or whose header is wrong, is refused as a whole (FileError). A row that
is wrong (too few or too many fields, bytes that are not UTF-8, broken quoting) comes back as a
Row with an error and its line number, and the rows after it are read as usual.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from messageservice.cli.input import Draft, split_bindings

COLUMNS = ("to", "text", "from", "module", "bindings", "workflow_id", "document_id", "document_type", "idempotency_key")
REQUIRED = ("to", "text")
# Bitrix's field names are accepted as headers too.
ALIASES = {"message_to": "to", "message_body": "text", "message_from": "from", "module_id": "module"}


class FileError(Exception):
    """The file as a whole cannot be used."""


@dataclass(frozen=True)
class Row:
    line: int  # where the row starts in the file, 1-based, as an editor numbers lines
    draft: Draft | None
    error: str | None = None


def _open(path: Path) -> IO[str]:
    try:
        # utf-8-sig: spreadsheets often start the file with a byte order mark. Undecodable bytes are kept
        # as surrogates so that the row holding them, not the whole file, is refused.
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror or exc}") from None


def _undecodable(value: str) -> int | None:
    for ch in value:
        if "\udc80" <= ch <= "\udcff":
            return ord(ch) - 0xDC00
    return None


class MessageFile:
    def __init__(self, path: Path, delimiter: str = ",") -> None:
        if len(delimiter) != 1 or delimiter in '"\r\n':
            raise FileError(
                f"the delimiter must be one character other than a quote or a line break, got {delimiter!r}"
            )
        self.path = path
        self.delimiter = delimiter
        self.columns = self._header()

    def _reader(self, handle: IO[str]) -> Any:
        return csv.reader(handle, delimiter=self.delimiter, strict=True)

    def _header(self) -> list[str]:
        with _open(self.path) as handle:
            try:
                reader = self._reader(handle)
                header = next((row for row in reader if any(cell.strip() for cell in row)), None)
            except csv.Error as exc:
                raise FileError(f"{self.path}: the header row is not valid CSV: {exc}") from None
            except (OSError, UnicodeError) as exc:
                raise FileError(f"cannot read {self.path}: {exc}") from None
        if header is None:
            raise FileError(f"{self.path} is empty: the first row must name the columns, e.g. to,text")
        columns = []
        for cell in header:
            if _undecodable(cell) is not None:
                raise FileError(f"{self.path}: the header row is not UTF-8 text")
            name = cell.strip().lower().replace(" ", "_")
            columns.append(ALIASES.get(name, name))
        # A column without a name (a spreadsheet's trailing separator) is allowed, and its cells ignored.
        unknown = [c for c in columns if c and c not in COLUMNS]
        if unknown:
            raise FileError(f"{self.path}: unknown column {unknown[0]!r}; the columns are {', '.join(COLUMNS)}")
        duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
        if duplicated:
            raise FileError(f"{self.path}: column {duplicated[0]!r} appears twice")
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise FileError(f"{self.path}: no {missing[0]!r} column; the header needs at least to,text")
        return columns

    def count(self) -> int:
        """How many rows hold a message (or a broken one): a quick first pass, for the progress bar."""
        return sum(1 for _ in self._records())

    def rows(self, default_sender: str | None = None) -> Iterator[Row]:
        for line, cells, error in self._records():
            if error is not None or cells is None:
                yield Row(line, None, error)
                continue
            yield self._row(line, cells, default_sender)

    def _records(self) -> Iterator[tuple[int, list[str] | None, str | None]]:
        """(line, cells, error) for each record after the header; blank lines are left out.

        A record normally ends with its line; a quoted value may hold line breaks and run on. A quote
        that is never closed would swallow every line after it, so a record that runs on and then
        breaks (or does not have the header's number of fields) is reported at its first line, and
        reading goes on with the next line.
        """
        try:
            with _open(self.path) as handle:
                lines = handle.readlines()
        except OSError as exc:
            raise FileError(f"cannot read {self.path}: {exc}") from None
        header_seen = False
        at = 0
        while at < len(lines):
            reader = self._reader(iter(lines[at:]))
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                used = reader.line_num
                yield at + 1, None, self._broken(at, used, str(exc))
                at += 1
                continue
            used = max(reader.line_num, 1)
            if not any(cell.strip() for cell in cells):
                at += used
                continue
            if not header_seen:
                header_seen = True
                at += used
                continue
            if used > 1 and len(cells) != len(self.columns):
                yield (
                    at + 1,
                    None,
                    self._broken(at, used, f"{len(cells)} fields where the header has {len(self.columns)}"),
                )
                at += 1
                continue
            yield at + 1, cells, None
            at += used

    @staticmethod
    def _broken(at: int, used: int, detail: str) -> str:
        if used <= 1:
            return f"not valid CSV: {detail}"
        if "unexpected end of data" in detail:
            return (
                f"a quote opened on this line is never closed (it would run to the end of the file, line {at + used})"
            )
        return f"a quoted value starting on this line runs on to line {at + used} and breaks there ({detail})"

    def _row(self, line: int, cells: list[str], default_sender: str | None) -> Row:
        if len(cells) != len(self.columns):
            return Row(line, None, f"{len(cells)} fields where the header has {len(self.columns)}")
        values = dict(zip(self.columns, cells, strict=True))
        for name, value in values.items():
            byte = _undecodable(value)
            if byte is not None:
                return Row(line, None, f"column {name!r} is not UTF-8 text (byte 0x{byte:02x})")
        draft = Draft(
            sender=values.get("from", "").strip() or default_sender,
            to=values["to"],
            text=values["text"],
            module=values.get("module", "").strip() or "crm",
            bindings=split_bindings(values.get("bindings", "")),
            workflow_id=values.get("workflow_id", "").strip() or None,
            document_id=values.get("document_id", "").strip() or None,
            document_type=values.get("document_type", "").strip() or None,
            idempotency_key=values.get("idempotency_key", "").strip() or None,
        )
        return Row(line, draft)
