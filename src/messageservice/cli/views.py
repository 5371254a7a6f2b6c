"""How messages, attempts, timelines, the live stream and stats look in a terminal.

Everything from the database is someone's text: it goes into Rich as Text (never as markup), with
control characters shown escaped, so a message body cannot restyle or clear the operator's terminal.
"""

from __future__ import annotations

import time
import unicodedata
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from messageservice.cli.input import OWNER_TYPES

if TYPE_CHECKING:
    from messageservice.core.feed import FeedEvent
    from messageservice.core.stats import Stats

SPARKS = " ▁▂▃▄▅▆▇█"
STATUS_STYLES = {"success": "green", "failure": "red", "process": "yellow"}
DELIVERY_STYLES = {"done": "green", "dead": "red", "pending": "yellow"}
# Characters that reorder the text around them (the "Trojan Source" trick): shown escaped too.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def safe(value: Any, *, one_line: bool = False) -> str:
    """Text with control characters made visible (\\x1b, not an escape sequence)."""
    text = "" if value is None else str(value)
    out = []
    for ch in text:
        if ch == "\n" and not one_line:
            out.append(ch)
        elif ch in "\n\r\t" and one_line:
            out.append("↵" if ch == "\n" else " ")
        elif (unicodedata.category(ch) == "Cc" and ch != "\t") or ch in BIDI_CONTROLS:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def preview(value: Any, width: int = 40) -> str:
    text = safe(value, one_line=True)
    return text if len(text) <= width else text[: width - 1] + "…"


def when(moment: float | None, *, precise: bool = False) -> str:
    if moment is None:
        return "-"
    local = datetime.fromtimestamp(moment).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if precise else local.strftime("%Y-%m-%d %H:%M:%S")


def ago(moment: float | None, now: float | None = None) -> str:
    if moment is None:
        return "-"
    seconds = max(0.0, (now if now is not None else time.time()) - moment)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def status_text(view: dict[str, Any]) -> Text:
    return Text(safe(view.get("STATUS")), style=STATUS_STYLES.get(view.get("STATUS_SEMANTIC") or "", ""))


def message_table(rows: list[dict[str, Any]]) -> Table:
    table = Table("id", "created", "from", "to", "status", "text", header_style="bold")
    for row in rows:
        table.add_row(
            str(row["ID"]),
            when(row["DATE_CREATE"]),
            Text(safe(row["SENDER_CODE"], one_line=True)),
            Text(safe(row["MESSAGE_TO"], one_line=True)),
            status_text(row),
            Text(preview(row["MESSAGE_BODY"])),
        )
    return table


# CRM owner types by number (CCrmOwnerType), as `send --binding contact:42` names them.
OWNER_TYPE_NAMES = {number: name for name, number in OWNER_TYPES.items()}


def binding_text(binding: dict[str, Any]) -> str:
    """`contact:42`: the way `send --binding` takes it (a type without a name stays a number)."""
    kind = binding["OWNER_TYPE_ID"]
    name = OWNER_TYPE_NAMES.get(int(kind)) if str(kind).isdigit() else None
    return f"{name or kind}:{binding['OWNER_ID']}"


def _module_fields(view: dict[str, Any]) -> str:
    if view["MODULE_ID"] == "crm":
        bindings = view.get("BINDINGS") or []
        return "crm, bound to " + (", ".join(map(binding_text, bindings)) or "nothing")
    document = ",".join(view.get("DOCUMENT_ID") or [])
    return f"bizproc workflow {view.get('WORKFLOW_ID')} document {document}"


def reporter(user_id: int | None, app_id: int | None) -> str:
    if user_id is None and app_id is None:
        return "dispatcher"
    if app_id is not None:
        return f"app {app_id} (user {user_id})"
    return f"user {user_id}"


def message_detail(view: dict[str, Any]) -> RenderableType:
    """One message: its fields, delivery, every attempt and the status timeline."""
    fields = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    fields.add_column(style="bold")
    fields.add_column()
    delivery = view.get("DELIVERY") or {}
    state = delivery.get("STATE")
    fields.add_row("message", Text(f"{view['ID']}  (message_id {view['MESSAGE_ID']})"))
    fields.add_row("from", Text(f"{safe(view['MESSAGE_FROM'], one_line=True)}  by user {view['AUTHOR_ID']}"))
    fields.add_row("to", Text(safe(view["MESSAGE_TO"], one_line=True)))
    fields.add_row("module", Text(safe(_module_fields(view), one_line=True)))
    status = status_text(view)
    if view.get("STATUS_DESCRIPTION") and view["STATUS_DESCRIPTION"] != view["STATUS"]:
        status.append(f"  ({safe(view['STATUS_DESCRIPTION'])})", style="")
    fields.add_row("status", status)
    if view.get("EXEC_ERROR"):
        fields.add_row("error", Text(safe(view["EXEC_ERROR"]), style="red"))
    if state:
        line = Text(state, style=DELIVERY_STYLES.get(state, ""))
        line.append(f", {delivery.get('ATTEMPTS', 0)} attempt(s)")
        if delivery.get("NEXT_ATTEMPT_AT") is not None:
            line.append(f", next at {when(delivery['NEXT_ATTEMPT_AT'])}")
        if delivery.get("LAST_ERROR"):
            line.append(f", last error: {safe(delivery['LAST_ERROR'], one_line=True)}")
        held = view.get("HELD_BY_BREAKER")
        if held:
            until = datetime.fromtimestamp(held["UNTIL"]).astimezone().strftime("%H:%M:%S")
            line.append(f", held: breaker open for {safe(held['ORIGIN'], one_line=True)} until {until}", style="red")
        fields.add_row("delivery", line)
    fields.add_row("created", when(view["DATE_CREATE"]))
    fields.add_row("updated", when(view["DATE_UPDATE"]))
    fields.add_row("text", Text(safe(view["MESSAGE_BODY"])))

    tries = Table("#", "started", "took", "HTTP", "error", "response", title="Attempts", title_justify="left")
    for attempt in view.get("ATTEMPTS") or []:
        code = attempt.get("HTTP_STATUS")
        ok = code is not None and 200 <= code < 300
        tries.add_row(
            str(attempt["NUMBER"]),
            when(attempt["STARTED_AT"], precise=True),
            f"{attempt['DURATION_MS']:.0f} ms",
            Text(str(code) if code is not None else "-", style="green" if ok else "red"),
            Text(preview(attempt.get("ERROR"), 60)),
            Text(preview(attempt.get("RESPONSE"), 60)),
        )
    timeline = Table("when", "status", "applied", "reported by", title="Status timeline", title_justify="left")
    for entry in view.get("HISTORY") or []:
        timeline.add_row(
            when(entry["DATE"], precise=True),
            Text(safe(entry["STATUS"])),
            "yes" if entry["APPLIED"] else Text("no (late or repeated)", style="dim"),
            reporter(entry["USER_ID"], entry["APP_ID"]),
        )
    parts: list[RenderableType] = [fields, Text("")]
    parts.append(tries if view.get("ATTEMPTS") else Text("No attempts yet.", style="dim"))
    parts += [Text(""), timeline]
    return Group(*parts)


def handler_fields_table(url: str | None, fields: list[list[str]] | None) -> RenderableType:
    if fields is None:
        return Text("")
    title = f"\nHANDLER call to {safe(url, one_line=True)} (form fields, in order)"
    if url is None:
        title = "\nHANDLER call body (form fields, in order); the sender was deleted, so no more calls go out"
    table = Table("field", "value", title=title, title_justify="left")
    for name, value in fields:
        table.add_row(Text(safe(name)), Text(safe(value)))
    return table


def feed_line(event: FeedEvent) -> Text:
    line = Text(when(event.at, precise=True) + "  ", style="dim")
    line.append(f"#{event.id} ", style="bold")
    if event.kind == "created":
        line.append("new ", style="cyan")
        line.append(f"{safe(event.message_from, one_line=True)} → {safe(event.message_to, one_line=True)}  ")
        line.append(preview(event.text, 60))
        return line
    style = "" if event.applied else "dim"
    line.append(f"{safe(event.status, one_line=True)}", style=style or "yellow")
    line.append(f"  by {reporter(event.reporter_user_id, event.reporter_app_id)}", style="dim")
    if not event.applied:
        line.append("  (not applied: late or repeated)", style="dim")
    return line


def sparkline(values: list[int]) -> str:
    top = max(values, default=0)
    if top == 0:
        return SPARKS[0] * len(values)
    return "".join(SPARKS[0 if v == 0 else max(1, round(v / top * (len(SPARKS) - 1)))] for v in values)


def stats_view(stats: Stats) -> RenderableType:
    now = stats.generated_at
    window = (
        f"{stats.window_seconds / 3600:g} h" if stats.window_seconds >= 3600 else f"{stats.window_seconds / 60:g} min"
    )
    # The last hour at most, one character a minute (a window's partial first minute adds a character).
    minutes = stats.per_minute[-60:]
    spark_span = window if stats.window_seconds <= 3600 else "60 min"
    flow = Table("", "total", f"per minute, last {spark_span}", title=f"Last {window}", title_justify="left")
    for name in ("created", "delivered", "failed"):
        total = sum(getattr(m, name) for m in stats.per_minute)
        flow.add_row(name, f"{total:,}", sparkline([getattr(m, name) for m in minutes]))

    queue = Table(show_header=False, title="Queue now", title_justify="left")
    queue.add_row("pending", f"{stats.queue_depth:,}")
    queue.add_row("due now", f"{stats.due_now:,}")
    queue.add_row("oldest due", ago(stats.oldest_due_at, now) if stats.oldest_due_at else "-")
    queue.add_row("dead letters", Text(f"{stats.dead:,}", style="red" if stats.dead else ""))

    counts = Table("status", "messages", title=f"Messages of the last {window}", title_justify="left")
    for name, count in sorted(stats.by_status.items(), key=lambda item: -item[1]):
        counts.add_row(name, f"{count:,}")
    for state, count in sorted(stats.by_delivery_state.items(), key=lambda item: -item[1]):
        counts.add_row(Text(f"delivery {state}", style=DELIVERY_STYLES.get(state, "")), f"{count:,}")

    handlers = Table(
        "sender / handler", "attempts", "ok", "p50", "p95", "last attempt", "last error",
        title=f"Handlers, last {window}", title_justify="left",
    )  # fmt: skip
    # The sender is what people look for and copy: it keeps its width (the HANDLER under it is shortened),
    # and the other columns give way.
    senders = [safe(f"{h.app_client_id}|{h.sender_code}", one_line=True) for h in stats.handlers]
    width = max(map(len, senders), default=0)
    handlers.columns[0].no_wrap = True
    handlers.columns[0].min_width = width
    for h, sender in zip(stats.handlers, senders, strict=True):
        rate = h.success_rate if h.success_rate is not None else 0.0
        cell = Text(sender)
        cell.append("\n" + preview(h.handler, max(width, 30)), style="dim")
        handlers.add_row(
            cell,
            f"{h.attempts:,}",
            Text(f"{rate:.0%}", style="green" if rate >= 0.99 else "yellow" if rate >= 0.9 else "red"),
            f"{h.p50_ms:.0f} ms" if h.p50_ms is not None else "-",
            f"{h.p95_ms:.0f} ms" if h.p95_ms is not None else "-",
            ago(h.last_attempt_at, now),
            Text(preview(h.last_error, 40), style="red" if h.last_error else ""),
        )
    parts: list[RenderableType] = [flow, Text(""), queue, Text(""), counts, Text("")]
    parts.append(handlers if stats.handlers else Text("No HANDLER calls in this window.", style="dim"))
    return Group(*parts)
