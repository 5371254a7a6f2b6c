"""Setting a portal up: `init` (the portal and its first admin) and `migrate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, console, emit

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.core.portal import Portal


def init(
    domain: Annotated[str, typer.Option(help="The portal's domain, as tokens and events report it.")],
    admin_name: Annotated[str, typer.Option(help="Name of the first admin, user 1.")] = "Admin",
    admin_password: Annotated[
        str | None,
        typer.Option(envvar="MESSAGESERVICE_ADMIN_PASSWORD", help="Console password for `admin` (default: random)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the portal and its first admin (user 1, console login `admin`). Safe to run again."""
    from messageservice.core.logins import ensure_admin_login
    from messageservice.core.portal import init_portal

    async def work(core: Core) -> tuple[Portal, bool, str | None]:
        portal, created = await init_portal(core, domain, admin_name)
        return portal, created, await ensure_admin_login(core, admin_password)

    portal, created, password = runner.run(work)
    data: dict[str, Any] = {"domain": portal.domain, "member_id": portal.member_id, "admin_user_id": 1}
    data["created"] = created
    if password is not None:
        # Shown this once: only its hash is stored.
        data.update({"console_login": "admin", "console_password": password})
    emit(data, as_json)


def migrate() -> None:
    """Bring the database schema up to date."""
    runner.migrate(runner.load_settings())
    console.print("schema is up to date")
