"""Reading messages from the command line: messages list | show | follow, replay, stats.

They act as an operator (`--user`, see acting.py) for whom every message is visible. Exit codes:
0 done; 1 the portal refused or failed (no such message, a replay that could not be done, the
database unreachable); 2 the input itself is wrong (a bad option value or message id).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from messageservice.cli import runner, views
from messageservice.cli.acting import SenderFilter, UserOption, acting
from messageservice.cli.errors import BAD_INPUT, REFUSED, InputError
from messageservice.cli.input import parse_duration, parse_moment
from messageservice.cli.output import JsonOption, console, err_console, fail, print_json
from messageservice.core import statuses

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.core.messages import Actor

DELIVERY_STATES = ("pending", "done", "dead")
STATUS_NAMES = tuple(s.name for s in statuses.BY_ID.values())
REPLAY_CHUNK = 500
MAX_OFFSET = 999_999_999  # the largest start message.list takes
# core.stats.MIN_WINDOW and MAX_WINDOW, repeated so that checking --window does not load the store (tested equal).
MIN_WINDOW, MAX_WINDOW = 60, 7 * 86_400

messages_cli = typer.Typer(help="Read messages: list them, show one in full, follow new ones.", no_args_is_help=True)


# --- messages list | show | follow -----------------------------------------------------------


def _filters(
    sender: str | None,
    status: str | None,
    to: str | None,
    since: str | None,
    until: str | None,
    delivery: str | None,
) -> dict[str, str]:
    now = time.time()
    filters: dict[str, str] = {}
    if sender:
        filters["SENDER"] = sender.strip()
    if status:
        if status.lower() not in STATUS_NAMES:
            raise InputError(f"unknown status {status!r}; one of {', '.join(STATUS_NAMES)}")
        filters["STATUS"] = status.lower()
    if to:
        filters["MESSAGE_TO"] = to
    if since:
        filters[">=DATE_CREATE"] = repr(parse_moment(since, now))
    if until:
        filters["<DATE_CREATE"] = repr(parse_moment(until, now))
    if delivery:
        if delivery.lower() not in DELIVERY_STATES:
            raise InputError(f"unknown delivery state {delivery!r}; one of {', '.join(DELIVERY_STATES)}")
        filters["DELIVERY"] = delivery.lower()
    return filters


@messages_cli.command("list")
def messages_list(
    sender: SenderFilter = None,
    status: Annotated[str | None, typer.Option(help="Only this status: pending, sent, delivered, error, ...")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Only to this recipient.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Created at or after: 2026-11-22, 2026-11-22T10:30, epoch seconds, or 2h (ago).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Created before (same forms as --since).")] = None,
    delivery: Annotated[str | None, typer.Option(help="Only this delivery state: pending, done or dead.")] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Only dead letters (same as --delivery dead).")] = False,
    stuck: Annotated[
        bool,
        typer.Option(
            "--stuck", help="Only stuck messages: the HANDLER accepted them, no final status came in the sender's time."
        ),
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    offset: Annotated[
        int, typer.Option(min=0, max=MAX_OFFSET, help="Skip this many (the next page starts at offset+limit).")
    ] = 0,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """List messages, newest first, with filters and paging."""
    if dead and delivery and delivery.lower() != "dead":
        fail("--dead and --delivery disagree", BAD_INPUT)
    filters = _filters(sender, status, to, since, until, "dead" if dead else delivery)

    async def work(core: Core) -> tuple[list[dict[str, Any]], int]:
        from messageservice.core.messages import PAGE_SIZE, list_messages
        from messageservice.core.stuck import list_stuck_messages

        listing = list_stuck_messages if stuck else list_messages
        actor = await acting(core, user)
        rows: list[dict[str, Any]] = []
        total, start = 0, offset
        while len(rows) < limit:
            page, total, _ = await listing(core, actor, {"FILTER": filters}, start)
            rows += page
            start += len(page)
            if len(page) < PAGE_SIZE:
                break
        return rows[:limit], total

    rows, total = runner.run(work)
    shown_to = offset + len(rows)
    next_offset = shown_to if shown_to < total else None
    if as_json:
        print_json({"total": total, "offset": offset, "next": next_offset, "messages": rows})
        return
    if not rows:
        kind = "stuck messages" if stuck else "messages"
        console.print(f"no {kind}{' here' if offset else ''} ({total:,} match)", highlight=False)
        return
    console.print(views.message_table(rows))
    footer = f"{offset + 1:,}-{shown_to:,} of {total:,}"
    if next_offset is not None:
        footer += f"; next page: --offset {next_offset}"
    console.print(footer, style="dim", highlight=False)


def _message_ref(ref: str) -> dict[str, str]:
    value = ref.strip()
    if value.isascii() and value.isdigit() and len(value) < 19:
        return {"ID": value}
    if len(value) == 32 and all(ch in "0123456789abcdef" for ch in value.lower()):
        return {"MESSAGE_ID": value.lower()}
    raise InputError(f"not a message id: {ref!r} (a number, or the 32-hex message_id the HANDLER got)")


async def _find(core: Core, actor: Actor, ref: str) -> dict[str, Any]:
    from messageservice.core.errors import CoreError
    from messageservice.core.messages import get_message

    try:
        return await get_message(core, actor, _message_ref(ref))
    except CoreError as exc:
        if exc.code == "ERROR_MESSAGE_NOT_FOUND":
            raise CoreError(exc.code, f"no message {ref}") from None
        raise


@messages_cli.command("show")
def messages_show(
    message: Annotated[str, typer.Argument(help="The message's id, or its 32-hex message_id.", show_default=False)],
    body: Annotated[
        bool, typer.Option("--body", help="Also the form fields every HANDLER call carries, in order.")
    ] = False,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """One message in full: fields, delivery, every HANDLER attempt and the status timeline."""
    _message_ref(message)

    async def work(core: Core) -> dict[str, Any]:
        from messageservice.console.breakers import held_message
        from messageservice.core.console_queries import handler_call

        view = await _find(core, await acting(core, user), message)
        call = await handler_call(core, view["ID"])
        held = await held_message(core, view, call[0] if call else None)
        if held is not None:
            view["HELD_BY_BREAKER"] = {"ORIGIN": held.origin, "UNTIL": held.until}
        if body:
            view["HANDLER_URL"] = (call[0] or None) if call is not None else None
            view["HANDLER_FIELDS"] = [list(pair) for pair in call[1]] if call is not None else None
        return view

    view = runner.run(work)
    if as_json:
        print_json(view)
        return
    console.print(views.message_detail(view), highlight=False)
    if body:
        console.print(views.handler_fields_table(view["HANDLER_URL"], view["HANDLER_FIELDS"]), highlight=False)


@messages_cli.command("follow")
def messages_follow(
    sender: SenderFilter = None,
    to: Annotated[str | None, typer.Option("--to", help="Only messages to this recipient.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events.")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=0.1, help="Stop after this many seconds (exit 1 if --count was not reached).")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, max=60.0, help="Seconds between looks at the database.")] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Print new messages and status changes as they happen, until Ctrl+C (JSON: one object a line)."""

    import asyncio

    from messageservice.core.feed import MessageFeed

    async def work(core: Core) -> int:
        feed = MessageFeed(core, sender=sender.strip() if sender else None, recipient=to)
        await feed.start()
        # On standard error in both modes: scripts (and tests) wait for it before they make changes.
        err_console.print("following new messages and status changes; Ctrl+C stops", style="dim")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        printed = 0
        while True:
            for event in await feed.poll():
                if as_json:
                    print_json(event.as_dict())
                else:
                    console.print(views.feed_line(event), highlight=False)
                    sys.stdout.flush()
                printed += 1
                if count is not None and printed >= count:
                    return printed
            wait = interval
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return printed
            await asyncio.sleep(wait)

    try:
        printed = runner.run(work)
    except KeyboardInterrupt:
        return  # Ctrl+C is how following normally ends
    if count is not None and printed < count:
        fail(f"timed out after {timeout:g} s with {printed} of {count} events", REFUSED)


# --- replay ----------------------------------------------------------------------------------


def replay_command(
    messages: Annotated[
        list[str] | None,
        typer.Argument(help="Dead letters to send again: ids or 32-hex message_ids.", show_default=False),
    ] = None,
    dead: Annotated[bool, typer.Option("--dead", help="Every dead letter (narrow it with --sender).")] = False,
    sender: SenderFilter = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would be replayed.")] = False,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Send dead letters again, from their first attempt (their status goes back to pending).

    With ids, exit code 1 if any of them could not be replayed (each is named with the reason).
    """
    if dead == bool(messages):
        fail("name the messages to replay, or give --dead for all dead letters (not both)", BAD_INPUT)
    if sender and not dead:
        fail("--sender narrows --dead; it cannot be used with ids", BAD_INPUT)
    for ref in messages or []:
        _message_ref(ref)

    from messageservice.core.errors import CoreError
    from messageservice.core.messages import PAGE_SIZE, get_message, list_messages, replay

    async def chosen(core: Core, actor: Actor) -> tuple[list[int], list[dict[str, Any]]]:
        if dead:
            ids: list[int] = []
            filters = {"DELIVERY": "dead", **({"SENDER": sender.strip()} if sender else {})}
            while True:
                page, total, _ = await list_messages(core, actor, {"FILTER": filters}, len(ids))
                ids += [row["ID"] for row in page]
                if len(page) < PAGE_SIZE or len(ids) >= total:
                    return sorted(set(ids)), []
        eligible, skipped = [], []
        for ref in messages or []:
            try:
                view = await _find(core, actor, ref)
            except CoreError as exc:
                skipped.append({"message": ref, "reason": exc.description})
                continue
            state = (view.get("DELIVERY") or {}).get("STATE")
            if state != "dead":
                skipped.append(
                    {"message": ref, "reason": f"not a dead letter (delivery {state}, status {view['STATUS']})"}
                )
            else:
                eligible.append(view["ID"])
        return sorted(set(eligible)), skipped

    async def work(core: Core) -> dict[str, Any]:
        actor = await acting(core, user)
        ids, skipped = await chosen(core, actor)
        if dry_run:
            return {"would_replay": ids, "replayed": [], "skipped": skipped}
        replayed, since = 0, core.clock()
        for at in range(0, len(ids), REPLAY_CHUNK):
            replayed += await replay(core, actor, {"IDS": [str(i) for i in ids[at : at + REPLAY_CHUNK]]})
        gone: set[int] = set()
        if replayed < len(ids):
            # Dead letters whose sender was deleted cannot go anywhere: find which, to name them.
            for message_id in ids:
                view = await get_message(core, actor, {"ID": str(message_id)})
                if not any(h["STATUS"] == "replayed" and h["DATE"] >= since for h in view["HISTORY"]):
                    gone.add(message_id)
                    skipped.append({"message": str(message_id), "reason": "its sender was deleted"})
        return {"replayed": [i for i in ids if i not in gone], "skipped": skipped}

    result = runner.run(work)
    if as_json:
        print_json(result)
    elif dry_run and not result["would_replay"]:
        console.print(Text(f"nothing would be replayed: {_why_none(result['skipped'], sender if dead else None)}"))
    elif dry_run:
        console.print(
            f"would replay {len(result['would_replay']):,}: {_id_list(result['would_replay'])}", highlight=False
        )
    elif result["replayed"]:
        console.print(f"replayed {len(result['replayed']):,}: {_id_list(result['replayed'])}", highlight=False)
    else:
        console.print(Text(f"nothing replayed: {_why_none(result['skipped'], sender if dead else None)}"))
    if not as_json:
        for skip in result["skipped"]:
            err_console.print(Text(f"not replayed {views.safe(skip['message'])}: {views.safe(skip['reason'])}"))
    if messages and result["skipped"]:
        raise typer.Exit(REFUSED)


def _why_none(skipped: list[dict[str, str]], sender: str | None) -> str:
    if not skipped:
        return "there are no dead letters" + (f" of {views.safe(sender, one_line=True)}" if sender else "")
    if len(skipped) == 1:
        return f"message {views.safe(skipped[0]['message'])}: {views.safe(skipped[0]['reason'])}"
    return f"none of the {len(skipped)} messages could be (each is named below)"


def _id_list(ids: list[int], shown: int = 20) -> str:
    if not ids:
        return "-"
    return ", ".join(map(str, ids[:shown])) + (f" and {len(ids) - shown:,} more" if len(ids) > shown else "")


# --- stats -----------------------------------------------------------------------------------


def _window(raw: str) -> int:
    seconds = int(parse_duration(raw))
    if not MIN_WINDOW <= seconds <= MAX_WINDOW:
        raise InputError(f"the window must be 1m to 7d, got {raw!r}")
    return seconds


def stats_command(
    window: Annotated[str, typer.Option(help="How far back: 15m, 1h, 24h, 7d, or seconds.")] = "1h",
    as_json: JsonOption = False,
) -> None:
    """Messages per minute, queue depth and lag, dead letters, and each HANDLER's health."""
    seconds = _window(window)
    from messageservice.core.stats import collect  # after the check: a bad window loads nothing

    stats = runner.run(lambda core: collect(core, seconds))
    if as_json:
        print_json(dataclasses.asdict(stats))
    else:
        console.print(views.stats_view(stats), highlight=False)
