"""Building blocks of the statements generated from the table definitions (store/sends.py,
store/writebacks.py): quoted names, array types, INSERT clauses, and the check that a statement
places every column of its table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.dialects import postgresql

DIALECT = postgresql.dialect()
quote = DIALECT.identifier_preparer.quote


def check_covers(
    where: str, table: Table, filled: Mapping[Column[Any], str | None], given: Sequence[Column[Any]] = ()
) -> None:
    """A new column in tables.py must be placed in `where` too; say so at import rather than at the first use."""
    missing = {c.name for c in table.columns} - {c.name for c in filled} - {c.name for c in given}
    if missing:
        raise RuntimeError(f"{where} does not fill {table.name}.{', '.join(sorted(missing))}")


def array_type(column: Column[Any]) -> str:
    return f"{column.type.compile(dialect=DIALECT)}[]"


def insert_clause(table: Table, values: Mapping[Column[Any], str | None]) -> tuple[str, str]:
    """`INSERT INTO table (columns)` and the matching select list; a None expression leaves the
    column to its default (a serial id, a NULL)."""
    chosen = [(column, expression) for column, expression in values.items() if expression is not None]
    columns = ", ".join(quote(column.name) for column, _ in chosen)
    return f"INSERT INTO {quote(table.name)} ({columns})", ", ".join(expression for _, expression in chosen)
