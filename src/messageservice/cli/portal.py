"""Setting a portal up: `init` (the portal and its first admin) and `migrate`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, console, emit
from messageservice.cli.public_url import checked_url, from_domain

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.core.portal import Portal


def init(
    domain: Annotated[
        str,
        typer.Option(
            help="The portal's domain, as tokens and events report it. An address (127.0.0.1:18555, localhost, "
            "host:port) is also where apps are told to call, until --public-url or the console says otherwise."
        ),
    ],
    public_url: Annotated[
        str | None,
        typer.Option(
            help="Where apps reach the portal (their client_endpoint), when it is not the domain, e.g. "
            "https://sms.example.com; given again, it replaces the one recorded."
        ),
    ] = None,
    admin_name: Annotated[str, typer.Option(help="Name of the first admin, user 1.")] = "Admin",
    admin_password: Annotated[
        str | None,
        typer.Option(envvar="MESSAGESERVICE_ADMIN_PASSWORD", help="Console password for `admin` (default: random)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create the portal and its first admin (user 1, console login `admin`). Safe to run again."""
    from messageservice.core.logins import ensure_admin_login
    from messageservice.core.portal import get_portal, init_portal, set_public_url

    chosen = checked_url(public_url) if public_url is not None else None
    settings = runner.load_settings()

    async def work(core: Core) -> tuple[Portal, bool, str | None, str | None]:
        portal, created = await init_portal(core, domain, admin_name)
        url = chosen or (from_domain(domain) if created else None)
        if url is not None:
            await set_public_url(core, url)
            portal = await get_portal(core)
        return portal, created, await recorded_url(core), await ensure_admin_login(core, admin_password)

    portal, created, recorded, password = runner.run(work, settings)
    data: dict[str, Any] = {"domain": portal.domain, "member_id": portal.member_id, "admin_user_id": 1}
    data["created"] = created
    if recorded is not None or settings.public_url:
        data["client_endpoint"] = portal.client_endpoint
    if password is not None:
        # Shown this once: only its hash is stored.
        data.update({"console_login": "admin", "console_password": password})
    emit(data, as_json)


def migrate() -> None:
    """Bring the database schema up to date."""
    runner.migrate(runner.load_settings())
    console.print("schema is up to date")


async def recorded_url(core: Core) -> str | None:
    """The public URL stored for the portal (None until `init` or `serve` records one)."""
    from sqlalchemy import select

    from messageservice.store.tables import portal

    async with core.store.connection() as conn:
        return (await conn.execute(select(portal.c.public_url).where(portal.c.id == 1))).scalar()
