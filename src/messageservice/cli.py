"""The command line: everything an admin does, scriptable, with --json for machines."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
import uvloop
from rich.console import Console
from rich.table import Table

from messageservice.cli_messages import register as register_message_commands
from messageservice.config import Settings, SettingsError, get_settings
from messageservice.core import apps as app_service
from messageservice.core import portal as portal_service
from messageservice.core import webhooks as webhook_service
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.logins import ensure_admin_login, set_password
from messageservice.core.tokens import OAuthError, mint_for_user
from messageservice.delivery.app_events import deliver_due
from messageservice.store.db import migrate

T = TypeVar("T")

cli = typer.Typer(help="A self-hosted Bitrix24 messageservice portal.", no_args_is_help=True)
user_cli = typer.Typer(help="Portal users.", no_args_is_help=True)
app_cli = typer.Typer(help="Applications: add, install, update, uninstall.", no_args_is_help=True)
webhook_cli = typer.Typer(help="Incoming webhooks.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(app_cli, name="app")
cli.add_typer(webhook_cli, name="webhook")

console = Console()
err_console = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _run(work: Callable[[Core], Awaitable[T]], settings: Settings | None = None) -> T:
    """Migrate, open the store, run one piece of core work, close; errors become a message and exit 1."""
    settings = settings or get_settings()
    migrate(settings.database_url)

    async def main() -> T:
        core = Core.open(settings)
        try:
            return await work(core)
        finally:
            await core.close()

    try:
        return asyncio.run(main())
    except CoreError as exc:
        err_console.print(f"[red]error:[/red] {exc.description}")
        raise typer.Exit(1) from None
    except OAuthError as exc:
        err_console.print(f"[red]error:[/red] {exc.error}: {exc.description}")
        raise typer.Exit(1) from None


def _emit(data: dict[str, Any], as_json: bool, text: str | None = None) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    elif text is not None:
        console.print(text)
    else:
        table = Table(show_header=False, box=None)
        for key, value in data.items():
            table.add_row(f"[bold]{key}[/bold]", str(value))
        console.print(table)


@cli.command()
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

    async def work(core: Core) -> tuple[portal_service.Portal, bool, str | None]:
        portal, created = await portal_service.init_portal(core, domain, admin_name)
        return portal, created, await ensure_admin_login(core, admin_password)

    portal, created, password = _run(work)
    data: dict[str, Any] = {"domain": portal.domain, "member_id": portal.member_id, "admin_user_id": 1}
    data["created"] = created
    if password is not None:
        # Shown this once: only its hash is stored.
        data.update({"console_login": "admin", "console_password": password})
    _emit(data, as_json)


@cli.command("migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    migrate(get_settings().database_url)
    console.print("schema is up to date")


@user_cli.command("add")
def user_add(
    name: Annotated[str, typer.Option(help="Display name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user a portal admin.")] = False,
    last_name: Annotated[str, typer.Option(help="Last name.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Add a user; prints the new user id."""
    user = _run(lambda core: portal_service.add_user(core, name, admin=admin, last_name=last_name))
    _emit({"id": user.id, "name": user.name, "admin": user.is_admin}, as_json, text=str(user.id))


@user_cli.command("password")
def user_password(
    user_id: Annotated[int, typer.Argument(help="The user's id.")],
    login: Annotated[str | None, typer.Option(help="Also set the console login (default: kept, or user<ID>).")] = None,
    password: Annotated[
        str | None, typer.Option(envvar="MESSAGESERVICE_NEW_PASSWORD", help="The password (default: prompt).")
    ] = None,
) -> None:
    """Set a user's console password (only active admins can sign in)."""
    chosen = password or typer.prompt("New password", hide_input=True, confirmation_prompt=True)
    _run(lambda core: set_password(core, user_id, chosen, login=login))
    console.print("password set")


@user_cli.command("list")
def user_list(as_json: JsonOption = False) -> None:
    """List users."""
    users = _run(portal_service.list_users)
    rows = [{"id": u.id, "name": u.name, "last_name": u.last_name, "admin": u.is_admin} for u in users]
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    table = Table("id", "name", "admin")
    for row in rows:
        table.add_row(str(row["id"]), f"{row['name']} {row['last_name']}".strip(), "yes" if row["admin"] else "")
    console.print(table)


@app_cli.command("add")
def app_add(
    name: Annotated[str, typer.Option(help="Application name.")],
    url: Annotated[str, typer.Option(help="The app's URL; ONAPPINSTALL is POSTed here.")],
    scope: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. messageservice.")] = "messageservice",
    as_json: JsonOption = False,
) -> None:
    """Register an application; prints client_id and client_secret (the secret is shown only now)."""
    app, secret = _run(lambda core: app_service.add_app(core, name, url, scope))
    _emit({"client_id": app.client_id, "client_secret": secret, "scope": ",".join(app.scopes)}, as_json)


@app_cli.command("install")
def app_install(
    client_id: str,
    user: Annotated[int, typer.Option(help="The installing admin.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Install an app: POSTs ONAPPINSTALL to its URL (retried by the server if unreachable)."""

    async def work(core: Core) -> tuple[str, list[Any]]:
        token = await app_service.install_app(core, client_id, user)
        return token, await deliver_due(core)

    token, attempts = _run(work)
    delivered = any(a.ok for a in attempts)
    detail = attempts[0].detail if attempts else "queued"
    data = {
        "client_id": client_id,
        "application_token": token,
        "onappinstall_delivered": delivered,
        "onappinstall_detail": detail,
    }
    if not delivered and not as_json:
        err_console.print(f"[yellow]ONAPPINSTALL not delivered yet ({detail}); the server retries it.[/yellow]")
    _emit(data, as_json)


@app_cli.command("update")
def app_update(
    client_id: str,
    version: Annotated[int | None, typer.Option(help="New version: senders are deleted, ONAPPUPDATE sent.")] = None,
    url: Annotated[str | None, typer.Option(help="New app URL.")] = None,
    scope: Annotated[str | None, typer.Option(help="New comma-separated scopes.")] = None,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change an app; a new --version behaves as a Bitrix24 app update."""

    async def work(core: Core) -> app_service.App:
        app = await app_service.update_app(core, client_id, version=version, url=url, scopes=scope, name=name)
        await deliver_due(core)
        return app

    app = _run(work)
    _emit(
        {
            "client_id": app.client_id,
            "version": app.version,
            "url": app.url,
            "scope": ",".join(app.scopes),
            "name": app.name,
        },
        as_json,
    )


@app_cli.command("uninstall")
def app_uninstall(
    client_id: str,
    clean: Annotated[bool, typer.Option("--clean", help="Report CLEAN=1 (the app's data is wiped).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Uninstall an app: its senders and tokens are deleted, ONAPPUNINSTALL is sent."""

    async def work(core: Core) -> None:
        await app_service.uninstall_app(core, client_id, clean=clean)
        await deliver_due(core)

    _run(work)
    _emit({"client_id": client_id, "installed": False}, as_json)


@app_cli.command("signing-secret")
def app_signing_secret(
    client_id: str,
    rotate: Annotated[bool, typer.Option("--rotate", help="Replace the secret with a new one.")] = False,
    disable: Annotated[bool, typer.Option("--disable", help="Stop signing HANDLER calls.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print the app's Standard Webhooks secret (created on first use): HANDLER calls are then signed."""
    secret = _run(lambda core: app_service.signing_secret(core, client_id, rotate=rotate, disable=disable))
    _emit({"client_id": client_id, "signing_secret": secret}, as_json, text=secret or "signing disabled")


@app_cli.command("list")
def app_list(as_json: JsonOption = False) -> None:
    """List applications."""
    apps = _run(app_service.list_apps)
    rows = [
        {
            "client_id": a.client_id,
            "name": a.name,
            "url": a.url,
            "scope": ",".join(a.scopes),
            "version": a.version,
            "installed": a.installed,
        }
        for a in apps
    ]
    if as_json:
        sys.stdout.write(json.dumps(rows, ensure_ascii=False) + "\n")
        return
    table = Table("client_id", "name", "url", "scope", "version", "installed")
    for row in rows:
        table.add_row(*(str(row[k]) for k in ("client_id", "name", "url", "scope", "version", "installed")))
    console.print(table)


@cli.command()
def token(
    client_id: str,
    user: Annotated[int, typer.Option(help="The user the token acts for.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Mint an access and refresh token for an app and a user (same fields as /oauth/token/)."""
    data = _run(lambda core: mint_for_user(core, client_id, user))
    _emit(data, as_json)


@webhook_cli.command("add")
def webhook_add(
    user: Annotated[int, typer.Option(help="The user the webhook acts for.")],
    scope: Annotated[str, typer.Option(help="Comma-separated scopes.")] = "messageservice",
    as_json: JsonOption = False,
) -> None:
    """Create an incoming webhook; prints its URL (the secret in it is shown only now)."""
    hook = _run(lambda core: webhook_service.add_webhook(core, user, scope))
    _emit(
        {"id": hook.id, "user_id": hook.user_id, "scope": ",".join(hook.scopes), "url": hook.url},
        as_json,
        text=hook.url,
    )


@cli.command("api-doc")
def api_doc() -> None:
    """Print the REST method reference (Markdown), generated from the method registry."""
    from messageservice.methods import build_registry
    from messageservice.methods.apidoc import render

    sys.stdout.write(render(build_registry()))


@cli.command()
def worker(
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Deliver messages without serving HTTP: more dispatchers sharing one PostgreSQL queue."""
    import signal

    from messageservice.app import background_loops
    from messageservice.heap import settle_after_startup

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    migrate(settings.database_url)

    async def main() -> None:
        core = Core.open(settings)
        loops = background_loops(core)
        stopping = asyncio.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(number, stopping.set)
        for loop in loops:
            loop.start()
        settle_after_startup()
        console.print("worker running; Ctrl+C stops it", highlight=False)
        try:
            await stopping.wait()
        finally:
            for loop in reversed(loops):
                await loop.stop()
            await core.close()

    # uvloop, as `serve` gets from uvicorn: the dispatcher's HTTP client runs markedly cheaper on it.
    uvloop.run(main())


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    tls: Annotated[bool, typer.Option("--tls", help="Serve https with a self-signed certificate.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    dispatch: Annotated[
        bool,
        typer.Option(
            "--dispatch/--no-dispatch",
            help="Also deliver messages here (default); --no-dispatch leaves delivery to `messageservice worker`s.",
        ),
    ] = True,
) -> None:
    """Run the server."""
    import uvicorn

    from messageservice.app import create_app
    from messageservice.tls import ensure_certificate, trust_instructions

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    if not dispatch:
        settings = settings.model_copy(update={"serve_dispatch": False})
    migrate(settings.database_url)

    async def check(core: Core) -> portal_service.Portal:
        return await portal_service.get_portal(core)

    portal = _run(check)
    scheme = "https" if tls else "http"
    url_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url_host = f"[{url_host}]" if ":" in url_host else url_host
    public_url = settings.public_url or f"{scheme}://{url_host}:{port}"
    ssl_options: dict[str, Any] = {}
    if tls:
        cert, key = ensure_certificate(settings.data_dir / "tls", [portal.domain])
        ssl_options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        console.print(trust_instructions(cert))
    console.print(getting_started(public_url), markup=False, highlight=False)
    uvicorn.run(
        create_app(settings, public_url=public_url),
        host=host,
        port=port,
        log_level=log_level,
        # A client's idle TLS keep-alive would otherwise hold a shutdown for the 30 s SSL close timeout.
        timeout_graceful_shutdown=10,
        # X-Forwarded-For/-Proto only from the proxies the operator names (uvicorn's default trusts 127.0.0.1).
        forwarded_allow_ips=settings.trusted_proxies,
        **ssl_options,
    )


def getting_started(public_url: str) -> str:
    ms = sys.argv[0] if sys.argv[0].endswith("messageservice") else "messageservice"
    return (
        f"\nmessageservice portal at {public_url}\n"
        "In another terminal:\n"
        f"  1. create an app:   {ms} app add --name 'My SMS app' --url http://127.0.0.1:9000/ "
        "--scope messageservice\n"
        f"  2. install it:      {ms} app install <client_id>\n"
        f"  3. get a token:     {ms} token <client_id> --user 1\n"
        "  4. first call:      curl -s "
        f"'{public_url}/rest/messageservice.sender.add.json' -d auth=<access_token> -d CODE=demo -d TYPE=SMS "
        "-d HANDLER=http://127.0.0.1:9000/handler -d 'NAME[en]=Demo SMS'\n"
        f"                     curl -s '{public_url}/rest/messageservice.sender.list.json?auth=<access_token>'\n"
    )


# send, send-bulk, messages, replay, stats: listed after the admin commands above.
register_message_commands(cli)


def main() -> None:
    try:
        cli()
    except SettingsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
