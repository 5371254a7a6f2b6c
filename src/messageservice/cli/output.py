"""Where commands print: standard output for results (text or --json), standard error for errors and progress."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from messageservice.cli.views import safe

# Soft wrap: a line longer than the terminal (or than 80 columns in a pipe) is not broken in two.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    """A result: JSON, the given line, or a two-column table of its fields."""
    from rich.table import Table

    if as_json:
        print_json(data)
    elif text is not None:
        console.print(Text(text), highlight=False)
    else:
        table = Table(show_header=False, box=None)
        for key, value in data.items():
            table.add_row(Text(key, style="bold"), Text(str(value)))
        console.print(table)


def error(message: str) -> None:
    """`error: …` on standard error; the message is someone's text, never Rich markup."""
    err_console.print(Text.assemble(("error: ", "red"), safe(message)), highlight=False)


def fail(message: str, code: int) -> NoReturn:
    error(message)
    raise typer.Exit(code)
