"""`send` (one message) and `send-bulk` (a CSV file of them).

The commands only write the database: a running server (or `messageservice worker`) on the same
database delivers what they queue. Exit codes: 0 done; 1 the portal refused (unknown sender), nothing
of a bulk file could be sent, or the database failed; 2 the input itself is wrong (errors.py).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from messageservice.cli import errors, runner, views
from messageservice.cli.acting import UserOption, acting
from messageservice.cli.csvfile import FileError, MessageFile, Row
from messageservice.cli.errors import BAD_INPUT, REFUSED, InputError
from messageservice.cli.input import Draft, send_params
from messageservice.cli.output import JsonOption, console, err_console, fail, print_json
from messageservice.cli.senders import unknown_sender

if TYPE_CHECKING:
    from messageservice.core.context import Core

# A text summary lists skipped rows one by one up to this many, then groups them by reason.
LISTED_SKIPS = 20
# send-bulk keeps this many sends in flight: enough to fill a group commit, few enough to show progress.
BULK_CHUNK = 200
SENDER_NOT_FOUND = "ERROR_SENDER_NOT_FOUND"


def read_text(text: str) -> str:
    """The --text value; '-' reads standard input (one final newline dropped)."""
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
        text=read_text(text),
        module=module,
        bindings=binding or [],
        workflow_id=workflow_id,
        document_id=document_id,
        document_type=document_type,
        idempotency_key=idempotency_key,
    )
    # Checked before the database is opened: a typo costs no connection.
    params = send_params(draft)

    async def work(core: Core) -> tuple[dict[str, Any], bool]:
        from messageservice.core.errors import CoreError
        from messageservice.core.messages import send_message

        actor = await acting(core, user)
        before = await keyed_message(core, actor.scope, draft.idempotency_key) if draft.idempotency_key else None
        try:
            result = await send_message(core, actor, params)
        except CoreError as exc:
            if exc.code == SENDER_NOT_FOUND:
                raise CoreError(exc.code, await unknown_sender(core, draft.sender or "")) from None
            raise
        if before is not None and before["id"] == result["ID"]:
            check_same(before, params, draft.idempotency_key or "")
        return result, before is not None

    result, already = runner.run(work)
    if as_json:
        print_json(result)
    elif already:
        line = f"already sent as message {result['ID']} (message_id {result['MESSAGE_ID']}, {result['STATUS']}) "
        note = f"with the idempotency key {draft.idempotency_key!r}; nothing new was queued"
        console.print(Text(line + note), highlight=False)
    else:
        console.print(
            Text(f"queued message {result['ID']} (message_id {result['MESSAGE_ID']}, {result['STATUS']})"),
            highlight=False,
        )


async def keyed_message(core: Core, scope: str, key: str) -> dict[str, Any] | None:
    """The message an idempotency key already sent for this operator, if any."""
    from sqlalchemy import select

    from messageservice.store.tables import messages

    query = select(messages.c.id, messages.c.message_from, messages.c.message_to, messages.c.message_body).where(
        messages.c.idempotency_scope == scope, messages.c.idempotency_key == key
    )
    async with core.store.connection() as conn:
        row = (await conn.execute(query)).first()
    return dict(row._mapping) if row is not None else None


def check_same(before: dict[str, Any], params: dict[str, Any], key: str) -> None:
    """A key sent again with other content is a mistake worth stopping for, not a quiet no-op."""
    from messageservice.core.errors import CoreError
    from messageservice.core.phones import normalize_phone

    differs = [
        name
        for name, old, new in (
            ("sender", before["message_from"], params["MESSAGE_FROM"]),
            ("recipient", before["message_to"], normalize_phone(params["MESSAGE_TO"].strip())),
            ("text", before["message_body"], params["MESSAGE_BODY"]),
        )
        if old != new
    ]
    if differs:
        raise CoreError(
            "IDEMPOTENCY_KEY_REUSED",
            f"the idempotency key {key!r} was already used by message {before['id']} "
            f"(to {before['message_to']}: {views.preview(before['message_body'])!r}), which has another "
            f"{' and '.join(differs)}; nothing was sent (`messageservice messages show {before['id']}`)",
        )


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
        fail(str(exc), BAD_INPUT)
    started = time.monotonic()
    outcome = BulkOutcome(rows=total)

    async def work(core: Core) -> None:
        import asyncio

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from messageservice.core.errors import CoreError
        from messageservice.core.messages import list_messages, send_message

        actor = await acting(core, user)
        keyed = bool(idempotency_prefix) or "idempotency_key" in message_file.columns
        # A key used before returns its old message: older than any this run creates.
        newest = (await list_messages(core, actor, {}, 0))[0] if keyed else []
        before = newest[0]["ID"] if newest else 0
        first_line_of: dict[int, int] = {}  # message id -> the row that sent it, when keys are in use
        refusals: dict[str, str] = {}  # an unknown sender -> what its rows are told (looked up once)
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
                if exc.code != SENDER_NOT_FOUND:
                    return exc.description
                unknown = row.draft.sender or ""
                if unknown not in refusals:
                    refusals[unknown] = await unknown_sender(core, unknown)
                return refusals[unknown]
            except Exception as exc:
                if errors.database_failure(exc) is None:
                    raise
                return exc

        def note(row: Row, result: dict[str, Any] | str | Exception | None) -> None:
            if isinstance(result, Exception):
                failure = errors.database_failure(result)
                outcome.stopped = outcome.stopped or f"line {row.line}: {failure.message if failure else result}"
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
        runner.run(work)
    except KeyboardInterrupt:
        outcome.stopped = "interrupted (Ctrl+C)"
    finally:
        # Also when the database failed half-way or the run was interrupted: say what was sent.
        if outcome.began:
            summary = outcome.as_dict(file, time.monotonic() - started)
            if as_json:
                print_json(summary)
            else:
                print_bulk_summary(summary)
    if outcome.stopped or not (outcome.sent or outcome.already_sent):
        raise typer.Exit(REFUSED)


def print_bulk_summary(summary: dict[str, Any]) -> None:
    from rich.table import Table

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
            table.add_row(f"{len(lines):,}", Text(views.safe(reason, one_line=True)), line_ranges(lines))
        console.print(table)
        console.print("(--json lists every skipped row)", style="dim")
    if summary["stopped"]:
        err_console.print(Text.assemble(("stopped at ", "red"), views.safe(summary["stopped"])))


def line_ranges(lines: list[int]) -> str:
    """Every line, runs of consecutive ones shortened: `2-5, 9, 12-40`."""
    runs: list[list[int]] = []
    for line in sorted(lines):
        if runs and line == runs[-1][1] + 1:
            runs[-1][1] = line
        else:
            runs.append([line, line])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
