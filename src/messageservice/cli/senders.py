"""`senders list`: every sender with its app, HANDLER, name and health; and the names an unknown sender is told."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, console, print_json
from messageservice.cli.views import safe

if TYPE_CHECKING:
    from messageservice.core.context import Core

senders_cli = typer.Typer(help="Senders (SMS providers) the apps registered.", no_args_is_help=True)

HEALTH_WINDOW = 3600  # the last hour, as the console's Providers page shows it
NAMED = 5  # an unknown-sender error names at most this many of the senders that exist


def display_name(names: dict[str, str]) -> str:
    """The English name, else the default-language one (`**`), else any: never the `**` marker itself."""
    return names.get("en") or names.get("**") or next(iter(names.values()), "")


async def sender_rows(core: Core) -> list[dict[str, Any]]:
    from messageservice.console.breakers import breaker_of, breaker_states
    from messageservice.core.apps import list_apps
    from messageservice.core.senders import list_senders
    from messageservice.core.stats import collect

    apps = {app.id: app for app in await list_apps(core)}
    health = {h.sender_id: h for h in (await collect(core, HEALTH_WINDOW)).handlers}
    states = await breaker_states(core)
    rows = []
    for sender in await list_senders(core):
        app = apps.get(sender.app_id)
        if app is None:
            continue
        seen = health.get(sender.id)
        rows.append(
            {
                "message_from": f"{app.client_id}|{sender.code}",
                "code": sender.code,
                "app": app.client_id,
                "app_name": app.name,
                "installed": app.installed,
                "handler": sender.handler,
                "name": display_name(sender.names),
                "names": sender.names,
                "calls_last_hour": seen.attempts if seen else 0,
                "ok_last_hour": seen.succeeded if seen else 0,
                "last_error": seen.last_error if seen else None,
                "breaker": breaker_of(app.client_id, sender.handler, states),
            }
        )
    return rows


def health_text(row: dict[str, Any]) -> Text:
    calls, ok = row["calls_last_hour"], row["ok_last_hour"]
    if not row["installed"]:
        return Text("app not installed", style="dim")
    if row["breaker"] != "closed":
        return Text(f"breaker {row['breaker']}; {ok} of {calls} calls ok in the last hour", style="red")
    if not calls:
        return Text("no calls in the last hour", style="dim")
    style = "green" if ok == calls else "yellow" if ok else "red"
    text = Text(f"{ok} of {calls} calls ok in the last hour", style=style)
    if row["last_error"] and ok < calls:
        text.append(f"; last error: {safe(row['last_error'], one_line=True)}", style="")
    return text


@senders_cli.command("list")
def senders_list(
    app: Annotated[str | None, typer.Option("--app", help="Only this app's senders (its client_id).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Every sender: the MESSAGE_FROM that names it, its app, HANDLER, name and health (the last hour)."""
    rows = [row for row in runner.run(sender_rows) if app is None or row["app"] == app.strip()]
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no senders" + (f" of app {app}" if app else "") + " (an app registers them with sender.add)")
        return
    # One block a sender, not a table: the sender and its HANDLER are what people copy, and a table
    # narrower than them would cut or fold them.
    for row in rows:
        head = Text(safe(row["message_from"], one_line=True), style="bold")
        head.append(f"  {safe(row['name'], one_line=True)}")
        console.print(head, highlight=False)
        installed = "" if row["installed"] else " (not installed)"
        for label, value in (
            ("app", Text(f"{safe(row['app_name'], one_line=True)}{installed}")),
            ("handler", Text(safe(row["handler"], one_line=True))),
            ("health", health_text(row)),
        ):
            console.print(Text(f"  {label:<8}") + value, highlight=False)


async def unknown_sender(core: Core, sender: str) -> str:
    """What `send` says when MESSAGE_FROM names no sender: the senders there are."""
    from messageservice.core.console_queries import sender_choices

    known = [choice.message_from for choice in await sender_choices(core)]
    if not known:
        return f"no sender {sender}: no installed app has registered a sender yet"
    shown = ", ".join(known[:NAMED]) + (f" and {len(known) - NAMED} more" if len(known) > NAMED else "")
    return f"no sender {sender}; the senders are {shown} (`messageservice senders list` shows them all)"
