"""Sending and watching messages from the command line: send, send-bulk, messages list|show|follow, replay, stats.

The commands only write and read the database: a running server (or `messageservice worker`) on
the same database delivers what they queue. They act as an operator (a portal user, `--user`,
default 1, who must exist): sends are authored by that user, and every message is visible.

Exit codes: 0 done; 1 the portal refused or failed (unknown sender, no such message, nothing of a
bulk file could be sent, database unreachable); 2 the input itself is wrong (a bad option value, a
malformed recipient, a file that cannot be read or has a wrong header).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import sys
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from messageservice import cli_views as views
from messageservice.cli_csv import FileError, MessageFile, Row
from messageservice.cli_input import Draft, InputError, parse_duration, parse_moment, send_params
from messageservice.config import get_settings
from messageservice.core import portal as portal_service
from messageservice.core import statuses
from messageservice.core.console_queries import handler_call
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.feed import MessageFeed
from messageservice.core.messages import MAX_ID, PAGE_SIZE, Actor, get_message, list_messages, replay, send_message
from messageservice.core.stats import MAX_WINDOW, MIN_WINDOW, collect
from messageservice.store.db import migrate
from messageservice.store.errors import StoreError

T = TypeVar("T")

REFUSED, BAD_INPUT = 1, 2
DELIVERY_STATES = ("pending", "done", "dead")
STATUS_NAMES = tuple(s.name for s in statuses.BY_ID.values())
# A text summary lists skipped rows one by one up to this many, then groups them by reason.
LISTED_SKIPS = 20
REPLAY_CHUNK = 500
# send-bulk keeps this many sends in flight: enough to fill a group commit, few enough to show progress.
BULK_CHUNK = 200
MAX_OFFSET = 999_999_999  # the largest start message.list takes

# Soft wrap: a line longer than the terminal (or than 80 columns in a pipe) is not broken in two.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
messages_cli = typer.Typer(help="Read messages: list them, show one in full, follow new ones.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
UserOption = Annotated[
    int, typer.Option("--user", min=1, max=MAX_ID, help="The portal user acting (and authoring sends).")
]
SenderFilter = Annotated[str | None, typer.Option("--sender", help="Only this sender: client_id|CODE, or CODE.")]


def register(cli: typer.Typer) -> None:
    """Add these commands to the main command line."""
    cli.command("send")(send)
    cli.command("send-bulk")(send_bulk)
    cli.add_typer(messages_cli, name="messages")
    cli.command("replay")(replay_command)
    cli.command("stats")(stats_command)


# --- plumbing --------------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(Text.assemble(("error: ", "red"), views.safe(message)))
    raise typer.Exit(code)


def _database_error(exc: StoreError | SQLAlchemyError | OSError) -> str:
    cause = exc.__cause__ or exc if isinstance(exc, StoreError) else exc
    cause = getattr(cause, "orig", None) or cause
    return f"database: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


def _run(work: Callable[[Core], Awaitable[T]]) -> T:
    """Open the store, run one piece of work, close; every expected failure becomes a message and an exit code."""
    settings = get_settings()

    async def main() -> T:
        core = Core.open(settings)
        try:
            return await work(core)
        finally:
            await core.close()

    try:
        migrate(settings.database_url)
        return asyncio.run(main())
    except InputError as exc:
        _fail(str(exc), BAD_INPUT)
    except CoreError as exc:
        _fail(exc.description, REFUSED)
    except (StoreError, SQLAlchemyError, OSError) as exc:
        _fail(_database_error(exc), REFUSED)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


async def _actor(core: Core, user_id: int) -> Actor:
    user = await portal_service.get_user(core, user_id)
    if user is None:
        raise InputError(f"there is no user {user_id} (see `messageservice user list`)")
    if not user.active:
        raise InputError(f"user {user_id} is deactivated")
    return Actor(user_id=user.id, is_admin=True, channel="cli")


def _checked(parse: Callable[[], T]) -> T:
    """Parse an option value; a bad one is a usage error, before the database is opened."""
    try:
        return parse()
    except InputError as exc:
        _fail(str(exc), BAD_INPUT)


def _sender_refusal(exc: CoreError, sender: str) -> str:
    if exc.code == "ERROR_SENDER_NOT_FOUND":
        return f"no sender {sender} (an installed app's client_id and a CODE it registered)"
    return exc.description


# --- send ------------------------------------------------------------------------------------


def _read_text(text: str) -> str:
    if text != "-":
        return text
    raw = sys.stdin.buffer.read()
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the text on standard input is not UTF-8") from None
    return decoded[:-1] if decoded.endswith("\n") else decoded


def send(
    sender: Annotated[str, typer.Option("--from", help="The sender: client_id|CODE.")],
    to: Annotated[str, typer.Option("--to", help="The recipient's phone number.")],
    text: Annotated[str, typer.Option("--text", help="The message text; '-' reads it from standard input.")],
    module: Annotated[str, typer.Option(help="crm (with --binding) or bizproc (with the workflow options).")] = "crm",
    binding: Annotated[
        list[str] | None, typer.Option("--binding", help="A CRM binding TYPE:ID (contact:42, deal:7, 3:42); repeat it.")
    ] = None,
    workflow_id: Annotated[str | None, typer.Option(help="bizproc: the workflow id.")] = None,
    document_id: Annotated[
        str | None, typer.Option(help="bizproc: three values, e.g. crm,CCrmDocumentLead,LEAD_98")
    ] = None,
    document_type: Annotated[
        str | None, typer.Option(help="bizproc: three values, e.g. crm,CCrmDocumentLead,LEAD")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Sending again with the same key sends nothing new and prints the same message.")
    ] = None,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Queue one message; a running server delivers it to the sender's HANDLER."""
    draft = Draft(
        sender=sender.strip(),
        to=to,
        text=_checked(lambda: _read_text(text)),
        module=module,
        bindings=binding or [],
        workflow_id=workflow_id,
        document_id=document_id,
        document_type=document_type,
        idempotency_key=idempotency_key,
    )
    params = _checked(lambda: send_params(draft))

    async def work(core: Core) -> dict[str, Any]:
        actor = await _actor(core, user)
        try:
            return await send_message(core, actor, params)
        except CoreError as exc:
            raise CoreError(exc.code, _sender_refusal(exc, draft.sender or "")) from None

    result = _run(work)
    if as_json:
        _print_json(result)
    else:
        console.print(
            Text(f"queued message {result['ID']} (message_id {result['MESSAGE_ID']}, {result['STATUS']})"),
            highlight=False,
        )


# --- send-bulk -------------------------------------------------------------------------------


@dataclasses.dataclass
class BulkOutcome:
    rows: int = 0
    # (line, message id): new messages, and those an idempotency key had already sent before this run.
    sent: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    already_sent: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {"line", "reason"}
    stopped: str | None = None  # why the run ended early (the database went away, Ctrl+C), if it did
    began: bool = False

    def as_dict(self, path: Path, seconds: float) -> dict[str, Any]:
        return {
            "file": str(path),
            "rows": self.rows,
            "sent": len(self.sent),
            "already_sent": len(self.already_sent),
            "skipped": self.skipped,
            "stopped": self.stopped,
            "messages": [{"line": line, "id": id_} for line, id_ in sorted(self.sent + self.already_sent)],
            "seconds": round(seconds, 3),
        }


def send_bulk(
    file: Annotated[
        Path, typer.Argument(help="A CSV file: a header row, then one message per row.", show_default=False)
    ],
    sender: Annotated[
        str | None, typer.Option("--from", help="The sender (client_id|CODE) for rows without a 'from' column.")
    ] = None,
    delimiter: Annotated[str, typer.Option(help="The field separator.")] = ",",
    idempotency_prefix: Annotated[
        str | None,
        typer.Option(
            help="Key each row without an idempotency_key as PREFIX:LINE, so that sending the same file "
            "again sends only the rows that were not sent."
        ),
    ] = None,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """Send every row of a CSV file; malformed rows are reported and skipped, the rest go on.

    Columns: to, text (required); from, module (crm|bizproc), bindings (TYPE:ID items separated by
    spaces or ';'), workflow_id, document_id, document_type (three comma-separated values each),
    idempotency_key. Exit code 0 if any row was sent, 1 if none could be, 2 if the file is unreadable.
    """
    try:
        message_file = MessageFile(file, delimiter)
        total = message_file.count()
    except FileError as exc:
        _fail(str(exc), BAD_INPUT)
    started = time.monotonic()
    outcome = BulkOutcome(rows=total)

    async def work(core: Core) -> None:
        actor = await _actor(core, user)
        keyed = bool(idempotency_prefix) or "idempotency_key" in message_file.columns
        # A key used before returns its old message: older than any this run creates.
        newest = (await list_messages(core, actor, {}, 0))[0] if keyed else []
        before = newest[0]["ID"] if newest else 0
        first_line_of: dict[int, int] = {}  # message id -> the row that sent it, when keys are in use
        progress = Progress(
            TextColumn("sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[skipped]} skipped"),
            console=err_console,
            disable=as_json,
        )

        async def queue(row: Row) -> dict[str, Any] | str | Exception:
            """The send's result, the reason it was refused, or the database error that stops the run."""
            assert row.draft is not None
            try:
                params = send_params(row.draft)
                if idempotency_prefix and "IDEMPOTENCY_KEY" not in params:
                    params["IDEMPOTENCY_KEY"] = f"{idempotency_prefix}:{row.line}"
                return await send_message(core, actor, params)
            except InputError as exc:
                return str(exc)
            except CoreError as exc:
                return _sender_refusal(exc, row.draft.sender or "")
            except (StoreError, SQLAlchemyError, OSError) as exc:
                return exc

        def note(row: Row, result: dict[str, Any] | str | Exception | None) -> None:
            if isinstance(result, Exception):
                outcome.stopped = outcome.stopped or f"line {row.line}: {_database_error(result)}"
                return
            reason = row.error if result is None else result if isinstance(result, str) else None
            if isinstance(result, dict):
                entry = (row.line, result["ID"])
                if result["ID"] in first_line_of:
                    reason = f"the same idempotency key as line {first_line_of[result['ID']]}"
                elif keyed and result["ID"] <= before:
                    outcome.already_sent.append(entry)
                else:
                    outcome.sent.append(entry)
                if keyed:
                    first_line_of.setdefault(result["ID"], row.line)
            if reason is not None:
                outcome.skipped.append({"line": row.line, "reason": reason})

        outcome.began = True
        rows = message_file.rows(sender.strip() if sender else None)
        with progress:
            task = progress.add_task("send", total=total, skipped=0)
            # Sends in flight together share the store's group commits; results are noted in file order.
            while not outcome.stopped and (chunk := list(itertools.islice(rows, BULK_CHUNK))):
                results = iter(await asyncio.gather(*(queue(row) for row in chunk if row.draft is not None)))
                for row in chunk:
                    note(row, next(results) if row.draft is not None else None)
                progress.update(task, advance=len(chunk), skipped=len(outcome.skipped))

    try:
        _run(work)
    except KeyboardInterrupt:
        outcome.stopped = "interrupted (Ctrl+C)"
    finally:
        # Also when the database failed half-way or the run was interrupted: say what was sent.
        if outcome.began:
            summary = outcome.as_dict(file, time.monotonic() - started)
            if as_json:
                _print_json(summary)
            else:
                _print_bulk_summary(summary)
    if outcome.stopped or not (outcome.sent or outcome.already_sent):
        raise typer.Exit(REFUSED)


def _print_bulk_summary(summary: dict[str, Any]) -> None:
    line = f"sent {summary['sent']:,} of {summary['rows']:,} rows from {summary['file']} in {summary['seconds']:.1f} s"
    if summary["already_sent"]:
        line += f"; {summary['already_sent']:,} had been sent before (same idempotency key)"
    skipped = summary["skipped"]
    line += f"; skipped {len(skipped):,}" + (":" if skipped else "")
    console.print(Text(views.safe(line)), highlight=False)
    if len(skipped) <= LISTED_SKIPS:
        for skip in skipped:
            console.print(Text(f"  line {skip['line']}: {views.safe(skip['reason'], one_line=True)}"), highlight=False)
    else:
        by_reason: dict[str, list[int]] = defaultdict(list)
        for skip in skipped:
            by_reason[skip["reason"]].append(skip["line"])
        table = Table("rows", "reason", "lines", header_style="bold")
        for reason, lines in sorted(by_reason.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(map(str, lines[:10])) + (f" and {len(lines) - 10:,} more" if len(lines) > 10 else "")
            table.add_row(f"{len(lines):,}", Text(views.safe(reason, one_line=True)), shown)
        console.print(table)
        console.print("(--json lists every skipped row)", style="dim")
    if summary["stopped"]:
        err_console.print(Text.assemble(("stopped at ", "red"), views.safe(summary["stopped"])))


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
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    offset: Annotated[
        int, typer.Option(min=0, max=MAX_OFFSET, help="Skip this many (the next page starts at offset+limit).")
    ] = 0,
    user: UserOption = 1,
    as_json: JsonOption = False,
) -> None:
    """List messages, newest first, with filters and paging."""
    if dead and delivery and delivery.lower() != "dead":
        _fail("--dead and --delivery disagree", BAD_INPUT)
    filters = _checked(lambda: _filters(sender, status, to, since, until, "dead" if dead else delivery))

    async def work(core: Core) -> tuple[list[dict[str, Any]], int]:
        actor = await _actor(core, user)
        rows: list[dict[str, Any]] = []
        total, start = 0, offset
        while len(rows) < limit:
            page, total, _ = await list_messages(core, actor, {"FILTER": filters}, start)
            rows += page
            start += len(page)
            if len(page) < PAGE_SIZE:
                break
        return rows[:limit], total

    rows, total = _run(work)
    shown_to = offset + len(rows)
    next_offset = shown_to if shown_to < total else None
    if as_json:
        _print_json({"total": total, "offset": offset, "next": next_offset, "messages": rows})
        return
    if not rows:
        console.print(f"no messages{' here' if offset else ''} ({total:,} match)", highlight=False)
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
    _checked(lambda: _message_ref(message))

    async def work(core: Core) -> dict[str, Any]:
        view = await _find(core, await _actor(core, user), message)
        if body:
            call = await handler_call(core, view["ID"])
            view["HANDLER_URL"] = (call[0] or None) if call is not None else None
            view["HANDLER_FIELDS"] = [list(pair) for pair in call[1]] if call is not None else None
        return view

    view = _run(work)
    if as_json:
        _print_json(view)
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
                    _print_json(event.as_dict())
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
        printed = _run(work)
    except KeyboardInterrupt:
        return  # Ctrl+C is how following normally ends
    if count is not None and printed < count:
        _fail(f"timed out after {timeout:g} s with {printed} of {count} events", REFUSED)


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
        _fail("name the messages to replay, or give --dead for all dead letters (not both)", BAD_INPUT)
    if sender and not dead:
        _fail("--sender narrows --dead; it cannot be used with ids", BAD_INPUT)
    for ref in messages or []:
        _checked(lambda ref=ref: _message_ref(ref))  # type: ignore[misc]

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
        actor = await _actor(core, user)
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

    result = _run(work)
    if as_json:
        _print_json(result)
    elif dry_run:
        console.print(
            f"would replay {len(result['would_replay']):,}: {_id_list(result['would_replay'])}", highlight=False
        )
    else:
        console.print(f"replayed {len(result['replayed']):,}: {_id_list(result['replayed'])}", highlight=False)
    if not as_json:
        for skip in result["skipped"]:
            err_console.print(Text(f"not replayed {views.safe(skip['message'])}: {views.safe(skip['reason'])}"))
    if messages and result["skipped"]:
        raise typer.Exit(REFUSED)


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
    seconds = _checked(lambda: _window(window))
    stats = _run(lambda core: collect(core, seconds))
    if as_json:
        _print_json(dataclasses.asdict(stats))
    else:
        console.print(views.stats_view(stats), highlight=False)
