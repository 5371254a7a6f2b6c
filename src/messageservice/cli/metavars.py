"""Help that names values as Click does (TEXT, INTEGER RANGE, PATH), and flags by their name alone.

This Typer shows Python type names instead (`<str>`, `<list[str]>`, and `<bool>` even for `--help`).
Each parameter of the command tree gets its Click metavar once, before the first help is printed.
"""

from __future__ import annotations

import types
from typing import Any

# Typer carries its own copy of Click: its parameters are told apart by kind, not by Click's classes.


# Typer's type labels and the names Click gives the same types.
CLICK_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
    "datetime": "DATETIME",
    "int range": "INTEGER RANGE",
    "float range": "FLOAT RANGE",
    "uuid": "UUID",
}


def click_metavar(param: Any, ctx: Any) -> str:
    """What Click itself would show for the parameter's value: TEXT for `<str>`, [a|b] for choices."""
    label = str(param.display_type(ctx)).removeprefix("<").removesuffix(">")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    if label in CLICK_NAMES:
        shown = CLICK_NAMES[label]
    elif "|" in label:
        shown = f"[{label}]"
    else:
        shown = label.upper()
    return f"{shown}..." if param.nargs not in (1, None) else shown


def _plain(param: Any, ctx: Any) -> None:
    if param.param_type_name == "option":
        flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
        param.metavar = "" if flag else click_metavar(param, ctx)
    elif param.param_type_name == "argument":
        shown = click_metavar(param, ctx)
        param.metavar = (param.name or "value").upper()  # Typer adds the "..." of a repeated one
        # Typer's rich help reads an argument's type from this method, not from its metavar.
        param.display_type_rich = types.MethodType(lambda self, ctx: shown, param)  # type: ignore[method-assign]


def plain_metavars(command: Any) -> None:
    """Every parameter of the command and its subcommands, the help options included."""
    ctx = command.context_class(command)
    for param in command.params:
        _plain(param, ctx)
    help_option = command.get_help_option(ctx)
    if help_option is not None:
        _plain(help_option, ctx)
    commands: dict[str, Any] = getattr(command, "commands", {}) or {}
    for sub in commands.values():
        plain_metavars(sub)
