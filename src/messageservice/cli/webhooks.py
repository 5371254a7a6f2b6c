"""`webhook add`: incoming webhooks, URLs with a secret that act for a user."""

from __future__ import annotations

from typing import Annotated

import typer

from messageservice.cli import runner
from messageservice.cli.output import JsonOption, emit

webhooks_cli = typer.Typer(help="Incoming webhooks.", no_args_is_help=True)


@webhooks_cli.command("add")
def webhook_add(
    user: Annotated[int, typer.Option(help="The user the webhook acts for.")],
    scope: Annotated[str, typer.Option(help="Comma-separated scopes.")] = "messageservice",
    as_json: JsonOption = False,
) -> None:
    """Create an incoming webhook; prints its URL (the secret in it is shown only now)."""
    from messageservice.core.webhooks import add_webhook

    hook = runner.run(lambda core: add_webhook(core, user, scope))
    emit(
        {"id": hook.id, "user_id": hook.user_id, "scope": ",".join(hook.scopes), "url": hook.url},
        as_json,
        text=hook.url,
    )
