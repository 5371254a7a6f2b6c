"""`user add | password | list`: the portal's users."""

from __future__ import annotations

from typing import Annotated

import typer

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, console, emit, print_json

users_cli = typer.Typer(help="Portal users.", no_args_is_help=True)


@users_cli.command("add")
def user_add(
    name: Annotated[str, typer.Option(help="Display name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a portal admin.")] = False,
    last_name: Annotated[str, typer.Option(help="Last name.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a user; prints the new user id."""
    from messageservice.core.portal import add_user

    user = runner.run(lambda core: add_user(core, name, admin=admin, last_name=last_name))
    emit({"id": user.id, "name": user.name, "admin": user.is_admin}, as_json, text=str(user.id))


@users_cli.command("password")
def user_password(
    user_id: Annotated[int, typer.Argument(help="The user's id.")],
    login: Annotated[str | None, typer.Option(help="Also set the console login (default: kept, or user<ID>).")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="MESSAGESERVICE_NEW_PASSWORD", help="The password (default: prompt).")
    ] = None,
) -> None:
    """Set a user's console password (only active admins can sign in)."""
    from messageservice.core.logins import set_password

    chosen = password or typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    runner.run(lambda core: set_password(core, user_id, chosen, login=login))
    console.print("password set")


@users_cli.command("list")
def user_list(as_json: JsonOption = False) -> None:
    """List users."""
    from rich.table import Table

    from messageservice.core.portal import list_users

    users = runner.run(list_users)
    rows = [{"id": u.id, "name": u.name, "last_name": u.last_name, "admin": u.is_admin} for u in users]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "admin")
    for row in rows:
        table.add_row(str(row["id"]), f"{row['name']} {row['last_name']}".strip(), "yes" if row["admin"] else "")
    console.print(table)
