"""The single-statement send for PostgreSQL, generated from the table definitions in store/tables.py.

A group of sends arrives as one array per input column (unnest); one statement of data-modifying CTEs
inserts the messages (resolving each sender from MESSAGE_FROM, `client_id|CODE`), their delivery jobs
and first history entries, and NOTIFYs the workers if anything was queued. A row whose
IDEMPOTENCY_KEY is taken (before, or earlier in the same statement) is skipped by ON CONFLICT and
looked up afterwards with KNOWN_SQL. One round trip per group instead of seven.

No column list is typed here: the columns a send supplies are the `messages` columns the statement
does not fill itself, and their array types come from the columns' own types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, text

from messageservice.store.sqlgen import array_type, check_covers, insert_clause, quote
from messageservice.store.tables import apps, deliveries, messages, senders, status_reports

WAKE_CHANNEL = "messageservice_queued"  # delivery/wakeups.py listens on it
# New work as (app_id, sender_id) pairs: a dispatcher that skips some apps and senders (delivery/skipped.py)
# need not claim for work that is all theirs. A wake-up names at most MAX_NAMED pairs (a NOTIFY payload
# must stay under 8,000 bytes); past that it names none, which means: work for anyone.
NewWork = frozenset[tuple[int, int]]
MAX_NAMED = 400


# What the statement fills in a message row itself (an expression over the input `i` and sender `s`);
# every other column of `messages` comes from the caller, one array each.
_MESSAGE_FILLED = {
    messages.c.id: None,  # the sequence
    messages.c.app_id: "s.app_id",
    messages.c.sender_id: "s.id",
    messages.c.sender_code: "s.code",
    messages.c.status_id: "$status_id",
    messages.c.exec_error: None,
    messages.c.updated_at: "i.created_at",
}
# Besides the message's own columns: who reports the first history entry.
_EXTRA_INPUT = (status_reports.c.reporter_app_id,)

INPUT: tuple[Column[Any], ...] = (
    *(column for column in messages.columns if column not in _MESSAGE_FILLED),
    *_EXTRA_INPUT,
)
INPUT_NAMES = tuple(column.name for column in INPUT)

# A delivery job and a history entry per inserted message `q`.
_DELIVERY = {
    deliveries.c.message_id: "q.id",
    deliveries.c.state: "'pending'",
    deliveries.c.attempts: "0",
    deliveries.c.next_attempt_at: "q.created_at",
    deliveries.c.last_error: None,
    deliveries.c.created_at: "q.created_at",
}
_HISTORY = {
    status_reports.c.id: None,
    status_reports.c.message_id: "q.id",
    status_reports.c.status: "$status",
    status_reports.c.status_id: "$status_id",
    status_reports.c.applied: "true",
    status_reports.c.reporter_user_id: "q.author_id",
    status_reports.c.reporter_app_id: "i.reporter_app_id",
    status_reports.c.reported_at: "q.created_at",
}


check_covers("store/sends.py", messages, _MESSAGE_FILLED, INPUT)
check_covers("store/sends.py", deliveries, _DELIVERY)
check_covers("store/sends.py", status_reports, _HISTORY)


def _numbered(sql: str, names: Sequence[str]) -> str:
    for number, name in enumerate(names, start=len(INPUT) + 1):
        sql = sql.replace(f"${name}", f"${number}")
    return sql


def _queue_sql() -> str:
    arrays = ", ".join(f"${n}::{array_type(column)}" for n, column in enumerate(INPUT, start=1))
    names = ", ".join(quote(name) for name in INPUT_NAMES)
    message_values = {
        **{column: f"i.{quote(column.name)}" for column in messages.columns if column not in _MESSAGE_FILLED},
        **_MESSAGE_FILLED,
    }
    insert_message, select_message = insert_clause(messages, {c: message_values[c] for c in messages.columns})
    insert_delivery, select_delivery = insert_clause(deliveries, _DELIVERY)
    insert_history, select_history = insert_clause(status_reports, _HISTORY)
    a, s, m = quote(apps.name), quote(senders.name), messages.c
    sql = f"""
WITH input AS (
    SELECT * FROM unnest({arrays}) WITH ORDINALITY AS t({names}, position)
),
queued AS (
    {insert_message}
    SELECT {select_message}
    FROM input i
    JOIN {a} a ON a.{apps.c.client_id.name} = split_part(i.{m.message_from.name}, '|', 1) AND a.{apps.c.installed.name}
    JOIN {s} s ON s.{senders.c.app_id.name} = a.{apps.c.id.name}
        AND s.{senders.c.code.name} = substr(i.{m.message_from.name}, strpos(i.{m.message_from.name}, '|') + 1)
    ORDER BY i.position  -- ids are drawn in this order: they follow the sends, as sequential ones would
    ON CONFLICT DO NOTHING
    RETURNING {m.id.name}, {m.message_id.name}, {m.app_id.name}, {m.sender_id.name}, {m.author_id.name},
        {m.created_at.name}
),
jobs AS (
    {insert_delivery}
    SELECT {select_delivery} FROM queued q
),
history AS (
    {insert_history}
    SELECT {select_history}
    FROM queued q JOIN input i ON i.{m.message_id.name} = q.{m.message_id.name}
),
announced AS (
    -- Names the new work's app:sender pairs (see wake_payload), or none when there are many.
    SELECT pg_notify('{WAKE_CHANNEL}', CASE WHEN count(DISTINCT pair) <= {MAX_NAMED} THEN string_agg(DISTINCT pair, ',')
        ELSE '' END)
    FROM (SELECT q.{m.app_id.name}::text || ':' || q.{m.sender_id.name}::text AS pair FROM queued q) AS work
    HAVING count(*) > 0
)
SELECT q.{m.id.name} AS id, q.{m.message_id.name} AS message_id, q.{m.app_id.name} AS app_id,
    q.{m.sender_id.name} AS sender_id, (SELECT count(*) FROM announced) AS announced
FROM queued q
"""
    return _numbered(sql, ("status_id", "status"))


QUEUE_SQL = _queue_sql()

_m = messages.c
KNOWN_SQL = f"""
SELECT {_m.id.name} AS id, {_m.message_id.name} AS message_id, {_m.status_id.name} AS status_id,
       {_m.idempotency_scope.name} AS idempotency_scope, {_m.idempotency_key.name} AS idempotency_key
FROM {quote(messages.name)}
WHERE ({_m.idempotency_scope.name}, {_m.idempotency_key.name}) IN (
    SELECT * FROM unnest($1::{array_type(_m.idempotency_scope)}, $2::{array_type(_m.idempotency_key)})
)
"""


def arguments(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """One array per input column, in the statement's order."""
    return [[row[name] for row in rows] for name in INPUT_NAMES]


_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


def wake_workers(conn: Connection, work: Iterable[tuple[int, int]] = ()) -> None:
    """Inside a transaction that queued deliveries, where features.listen_notify: workers wake on commit."""
    conn.execute(_NOTIFY, {"channel": WAKE_CHANNEL, "payload": wake_payload(work)})


def wake_payload(work: Iterable[tuple[int, int]]) -> str:
    """`app:sender,app:sender`; empty when there is nothing to name or too much."""
    pairs = sorted(set(work))
    return "" if len(pairs) > MAX_NAMED else ",".join(f"{app}:{sender}" for app, sender in pairs)


def woken_work(payload: str) -> NewWork | None:
    """The work a wake-up names; None when it names none (work for anyone)."""
    try:
        pairs = [part.split(":") for part in payload.split(",")] if payload else []
        named = frozenset((int(app), int(sender)) for app, sender in pairs)
    except ValueError:
        return None
    return named or None
