"""`app add | install | update | uninstall | signing-secret | list`, and `token` for an app and a user."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, console, emit, err_console, print_json
from messageservice.cli.views import safe

if TYPE_CHECKING:
    from messageservice.core.apps import App
    from messageservice.core.context import Core

apps_cli = typer.Typer(help="Applications: add, install, update, uninstall.", no_args_is_help=True)


@apps_cli.command("add")
def app_add(
    name: Annotated[str, typer.Option(help="Application name.")],
    url: Annotated[str, typer.Option(help="The app's URL; ONAPPINSTALL is POSTed here.")],
    scope: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. messageservice.")] = "messageservice",
    as_json: JsonOption = False,
) -> None:
    """Register an application; prints client_id and client_secret (the secret is shown only now)."""
    from messageservice.core.apps import add_app

    app, secret = runner.run(lambda core: add_app(core, name, url, scope))
    emit({"client_id": app.client_id, "client_secret": secret, "scope": ",".join(app.scopes)}, as_json)


@apps_cli.command("install")
def app_install(
    client_id: str,
    user: Annotated[int, typer.Option(help="The installing admin.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Install an app: POSTs ONAPPINSTALL to its URL (retried by the server if unreachable)."""
    from messageservice.core.apps import install_app
    from messageservice.delivery.app_events import AttemptResult, post_event_now

    async def work(core: Core) -> tuple[str, AttemptResult | None]:
        token = await install_app(core, client_id, user)
        # A running server's event worker may claim the event first: then its attempt is the answer.
        wait = core.settings.event_timeout_seconds + 5
        return token, await post_event_now(core, client_id, "ONAPPINSTALL", wait)

    token, attempt = runner.run(work)
    delivered = attempt is not None and attempt.ok
    detail = attempt.detail if attempt is not None else "queued"
    data = {
        "client_id": client_id,
        "application_token": token,
        "onappinstall_delivered": delivered,
        "onappinstall_detail": detail,
    }
    if not delivered and not as_json:
        note = f"ONAPPINSTALL not delivered yet ({detail}); the server retries it."
        err_console.print(Text(safe(note), style="yellow"))
    emit(data, as_json)


@apps_cli.command("update")
def app_update(
    client_id: str,
    version: Annotated[int | None, typer.Option(help="New version: senders are deleted, ONAPPUPDATE sent.")] = None,
    url: Annotated[str | None, typer.Option(help="New app URL.")] = None,
    scope: Annotated[str | None, typer.Option(help="New comma-separated scopes.")] = None,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change an app; a new --version behaves as a Bitrix24 app update."""
    from messageservice.core.apps import update_app
    from messageservice.delivery.app_events import deliver_due

    async def work(core: Core) -> App:
        app = await update_app(core, client_id, version=version, url=url, scopes=scope, name=name)
        await deliver_due(core)
        return app

    app = runner.run(work)
    emit(
        {
            "client_id": app.client_id,
            "version": app.version,
            "url": app.url,
            "scope": ",".join(app.scopes),
            "name": app.name,
        },
        as_json,
    )


@apps_cli.command("uninstall")
def app_uninstall(
    client_id: str,
    clean: Annotated[bool, typer.Option("--clean", help="Report CLEAN=1 (the app's data is wiped).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Uninstall an app: its senders and tokens are deleted, ONAPPUNINSTALL is sent."""
    from messageservice.core.apps import uninstall_app
    from messageservice.delivery.app_events import deliver_due

    async def work(core: Core) -> None:
        await uninstall_app(core, client_id, clean=clean)
        await deliver_due(core)

    runner.run(work)
    emit({"client_id": client_id, "installed": False}, as_json)


@apps_cli.command("signing-secret")
def app_signing_secret(
    client_id: str,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace the secret with a new one.")] = False,
    disable: Annotated[bool, typer.Option("--disable", help="Stop signing HANDLER calls.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the app's Standard Webhooks secret (created on first use): HANDLER calls are then signed."""
    from messageservice.core.apps import signing_secret

    secret = runner.run(lambda core: signing_secret(core, client_id, rotate=rotate, disable=disable))
    emit({"client_id": client_id, "signing_secret": secret}, as_json, text=secret or "signing disabled")


@apps_cli.command("list")
def app_list(as_json: JsonOption = False) -> None:
    """List applications."""
    from rich.table import Table

    from messageservice.core.apps import list_apps

    columns = ("client_id", "name", "url", "scope", "version", "installed")
    rows = [
        {
            "client_id": a.client_id,
            "name": a.name,
            "url": a.url,
            "scope": ",".join(a.scopes),
            "version": a.version,
            "installed": a.installed,
        }
        for a in runner.run(list_apps)
    ]
    if as_json:
        print_json(rows)
        return
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[k]) for k in columns))
    console.print(table)


def token(
    client_id: str,
    user: Annotated[int, typer.Option(help="The user the token acts for.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Mint an access and refresh token for an app and a user (same fields as /oauth/token/)."""
    from messageservice.core.tokens import mint_for_user

    emit(runner.run(lambda core: mint_for_user(core, client_id, user)), as_json)
