"""The single-statement write-back of a batch of HANDLER call outcomes for PostgreSQL, generated from
the table definitions in store/tables.py (as store/sends.py is for sends).

One statement of data-modifying CTEs over arrays (unnest): the attempt rows, every delivery job's
next state, the messages that move to `sent` or to `error` (forward only: a provider's report that
landed first is never undone) and a history entry for each message that moved, which it returns. One round trip per
batch instead of five or more through the ORM. Each message appears once in a batch, so no row is
touched by two of the CTEs.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column

from messageservice.store.sqlgen import array_type, check_covers, insert_clause, quote
from messageservice.store.tables import attempts, deliveries, messages, status_reports

# One array each, in this order: the attempts made.
ATTEMPT_INPUT: tuple[Column[Any], ...] = tuple(c for c in attempts.columns if c is not attempts.c.id)
# Every job's next state; `uncount` gives back the attempt a claim counted for a job that was not tried.
JOB_INPUT = (deliveries.c.message_id, deliveries.c.state, deliveries.c.next_attempt_at, deliveries.c.last_error)

check_covers("store/writebacks.py", attempts, {attempts.c.id: None}, ATTEMPT_INPUT)

_HISTORY = {
    status_reports.c.id: None,
    status_reports.c.message_id: "moved.id",
    status_reports.c.status: "moved.status",
    status_reports.c.status_id: "moved.status_id",
    status_reports.c.applied: "true",
    status_reports.c.reporter_user_id: None,
    status_reports.c.reporter_app_id: None,
    status_reports.c.reported_at: "$now",
}
check_covers("store/writebacks.py", status_reports, _HISTORY)

# The parameters after the attempt and job arrays, by name.
_NAMED = (
    "uncount",
    "now",
    "sent_ids",
    "sent_id",
    "sent_name",
    "sent_not_from",
    "error_ids",
    "error_texts",
    "error_id",
    "error_name",
    "error_not_from",
)


def _sql() -> str:
    n = 0

    def arrays(columns: tuple[Column[Any], ...]) -> str:
        nonlocal n
        placed = []
        for column in columns:
            n += 1
            placed.append(f"${n}::{array_type(column)}")
        return ", ".join(placed)

    attempt_arrays = arrays(ATTEMPT_INPUT)
    job_arrays = arrays(JOB_INPUT)
    named = {name: f"${n + i}" for i, name in enumerate(_NAMED, start=1)}
    attempt_columns = ", ".join(quote(c.name) for c in ATTEMPT_INPUT)
    insert_history, select_history = insert_clause(status_reports, _HISTORY)
    d, m = deliveries.c, messages.c
    sql = f"""
WITH tried AS (
    INSERT INTO {quote(attempts.name)} ({attempt_columns})
    SELECT * FROM unnest({attempt_arrays})
),
jobs AS (
    UPDATE {quote(deliveries.name)} AS d
    SET {d.state.name} = j.state, {d.next_attempt_at.name} = j.next_at, {d.last_error.name} = j.error,
        {d.attempts.name} = d.{d.attempts.name} - j.uncount
    FROM unnest({job_arrays}, {named["uncount"]}::INTEGER[]) AS j(id, state, next_at, error, uncount)
    WHERE d.{d.message_id.name} = j.id AND d.{d.state.name} = 'pending'
),
to_sent AS (
    UPDATE {quote(messages.name)}
    SET {m.status_id.name} = {named["sent_id"]}::INTEGER, {m.exec_error.name} = NULL,
        {m.updated_at.name} = {named["now"]}::FLOAT
    WHERE {m.id.name} = ANY({named["sent_ids"]}::INTEGER[])
      AND {m.status_id.name} <> ALL({named["sent_not_from"]}::INTEGER[])
    RETURNING {m.id.name} AS id, {named["sent_name"]}::TEXT AS status, {m.status_id.name} AS status_id
),
to_error AS (
    UPDATE {quote(messages.name)} AS msg
    SET {m.status_id.name} = {named["error_id"]}::INTEGER, {m.exec_error.name} = e.error,
        {m.updated_at.name} = {named["now"]}::FLOAT
    FROM unnest({named["error_ids"]}::INTEGER[], {named["error_texts"]}::TEXT[]) AS e(id, error)
    WHERE msg.{m.id.name} = e.id AND msg.{m.status_id.name} <> ALL({named["error_not_from"]}::INTEGER[])
    RETURNING msg.{m.id.name} AS id, {named["error_name"]}::TEXT AS status, msg.{m.status_id.name} AS status_id
),
moved AS (
    SELECT * FROM to_sent UNION ALL SELECT * FROM to_error
)
{insert_history}
SELECT {select_history.replace("$now", named["now"] + "::FLOAT")} FROM moved
RETURNING {quote(status_reports.c.message_id.name)}, {quote(status_reports.c.status.name)}
"""
    return sql


WRITE_BACK_SQL = _sql()


def arguments(attempt_rows: list[dict[str, Any]], job_rows: list[dict[str, Any]], **named: Any) -> list[Any]:
    """Positional arguments: attempt arrays, job arrays, then `_NAMED` in order. Job rows carry the
    JOB_INPUT column names and `uncount`."""
    values: list[Any] = [[row[c.name] for row in attempt_rows] for c in ATTEMPT_INPUT]
    values += [[row[c.name] for row in job_rows] for c in JOB_INPUT]
    named["uncount"] = [row["uncount"] for row in job_rows]
    return values + [named[name] for name in _NAMED]
