"""`senders stuck-after`: a sender's own time after which its accepted messages without a final status are stuck."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from messageservice.cli import runner
from messageservice.cli.errors import InputError
from messageservice.cli.output import JsonOption, emit

if TYPE_CHECKING:
    from messageservice.core.context import Core

DEFAULT = "default"


def _seconds(text: str) -> float | None:
    """Seconds as a number, or None for `default` (the setting MESSAGESERVICE_STUCK_AFTER_SECONDS)."""
    from messageservice.core.stuck import check_after

    if text.strip().lower() == DEFAULT:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise InputError(f"not a number of seconds: {text!r} (or {DEFAULT!r} for the setting)") from None
    problem = check_after(seconds) if seconds == seconds else "must be a number"
    if problem is not None:
        raise InputError(f"seconds {problem}")
    return seconds


def stuck_after(
    sender: Annotated[str, typer.Argument(help="The sender: client_id|CODE, as MESSAGE_FROM names it.")],
    seconds: Annotated[
        str | None,
        typer.Argument(help=f"Seconds (0: never stuck), or {DEFAULT!r} for the setting; omitted: show the time."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show or set after how long a sender's accepted messages without a final status count as stuck."""
    client_id, bar, code = sender.strip().partition("|")
    if not bar or not client_id or not code:
        raise InputError(f"not a sender: {sender!r} (client_id|CODE, see `messageservice senders list`)")
    chosen = _seconds(seconds) if seconds is not None else None

    async def work(core: Core) -> tuple[float, bool] | None:
        from messageservice.core.stuck import set_stuck_after, stuck_after_of

        if seconds is not None and not await set_stuck_after(core, client_id, code, chosen):
            return None
        return await stuck_after_of(core, client_id, code)

    found = runner.run(work)
    if found is None:
        raise InputError(f"no sender {sender.strip()} (see `messageservice senders list`)")
    in_force, own = found
    data = {"sender": f"{client_id}|{code}", "stuck_after_seconds": in_force, "own": own}
    text = f"{client_id}|{code}: " + (f"stuck after {in_force:g} s" if in_force else "never stuck")
    emit(data, as_json, text + ("" if own else " (MESSAGESERVICE_STUCK_AFTER_SECONDS)"))
