"""The `messageservice` command: every command registered in one group, whose invoke maps errors once."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from messageservice.cli import (
    apps,
    check_provider,
    doctor,
    messages,
    portal,
    send,
    senders,
    serve,
    stuck,
    users,
    webhooks,
)
from messageservice.cli.errors import describe
from messageservice.cli.metavars import plain_metavars
from messageservice.cli.output import error


class CommandGroup(TyperGroup):
    """Every command runs inside this group's invoke: an expected failure becomes `error: …` and an exit code."""

    _plain = False

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        if not self._plain:  # before any help is printed, the root's own included
            plain_metavars(self)
            self._plain = True
        return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exit codes and usage errors, which Typer prints itself
        except Exception as exc:
            failure = describe(exc)
            if failure is None:
                raise  # a bug: its trace is what someone needs to fix it
            error(failure.message)
            raise typer.Exit(failure.code) from None


cli = typer.Typer(cls=CommandGroup, help="A self-hosted Bitrix24 messageservice portal.", no_args_is_help=True)
# In the order `--help` lists them: setting up, serving, messages, then the groups.
cli.command()(portal.init)
cli.command("migrate")(portal.migrate)
cli.command()(apps.token)
cli.command("api-doc")(serve.api_doc)
cli.command()(serve.worker)
cli.command()(serve.serve)
cli.command("send")(send.send)
cli.command("send-bulk")(send.send_bulk)
cli.command("replay")(messages.replay_command)
cli.command("stats")(messages.stats_command)
cli.command("check-provider")(check_provider.check_provider)
cli.command("doctor")(doctor.doctor)
cli.add_typer(users.users_cli, name="user")
cli.add_typer(apps.apps_cli, name="app")
senders.senders_cli.command("stuck-after")(stuck.stuck_after)
cli.add_typer(senders.senders_cli, name="senders")
cli.add_typer(webhooks.webhooks_cli, name="webhook")
cli.add_typer(messages.messages_cli, name="messages")


def main() -> None:
    cli()
