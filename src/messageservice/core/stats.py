"""Operational numbers for the console's dashboard and `messageservice stats`.

Everything is aggregated in SQL over a time window, on one read snapshot (see store/snapshot.py).
The attempts and status history tables have no index on their time column; their ids grow with
time, so a window is found by walking the primary key back from the newest row to the first one
older than the window: only the window's rows are read. (Rows written a few seconds out of order
right at the window's start may be missed; that is noise for a dashboard.)
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Connection, Integer, Table, and_, case, cast, func, select

from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.store.tables import apps, attempts, deliveries, messages, senders, status_reports

MIN_WINDOW = 60
MAX_WINDOW = 7 * 86_400
# Percentiles come from each handler's latest attempts in the window, at most this many.
LATENCY_SAMPLE = 1_000

# A message "delivered" once it was handed over (sent) or confirmed; "failed" on any failure state.
REACHED_SUCCESS = (statuses.SENT.id, statuses.DELIVERED.id, statuses.READ.id)
REACHED_FAILURE = (statuses.ERROR.id, statuses.EXCEPTION.id, statuses.UNDELIVERED.id, statuses.FAILED.id)


@dataclass(frozen=True)
class MinuteCount:
    minute: float  # epoch seconds at the minute's start
    created: int  # messages created in this minute
    delivered: int  # messages that first reached sent/delivered/read in this minute
    failed: int  # messages that first reached error/exception/undelivered/failed in this minute


@dataclass(frozen=True)
class HandlerHealth:
    """One sender's HANDLER, over the attempts made in the window."""

    sender_id: int
    app_client_id: str
    sender_code: str
    handler: str
    attempts: int
    succeeded: int  # answered 2xx
    failed: int  # anything else: another status, a timeout, a refused connection
    success_rate: float | None  # succeeded / attempts, 0..1
    p50_ms: float | None  # over the latest LATENCY_SAMPLE attempts in the window
    p95_ms: float | None
    last_error: str | None  # the latest failed attempt's error (or "HTTP nnn") in the window
    last_attempt_at: float | None


@dataclass(frozen=True)
class Stats:
    generated_at: float
    window_seconds: int
    per_minute: list[MinuteCount]  # every minute of the window, oldest first, zeros included
    by_status: dict[str, int]  # messages created in the window, by current status name
    by_delivery_state: dict[str, int]  # the same messages, by delivery state (pending, done, dead)
    queue_depth: int  # all pending deliveries now, in flight included
    due_now: int  # pending deliveries whose time has come and that no dispatcher holds
    oldest_due_at: float | None  # when the longest-waiting due delivery became due: the queue's lag
    dead: int  # all dead letters now (replayable with `messageservice replay --dead`)
    handlers: list[HandlerHealth]  # busiest first


async def collect(core: Core, window_seconds: int = 3600) -> Stats:
    """The numbers for the last `window_seconds` (60 s to 7 days) and the queue as it is now."""
    if isinstance(window_seconds, bool) or not isinstance(window_seconds, int):
        raise CoreError("ERROR_ARGUMENT", "The stats window must be a whole number of seconds.")
    if not MIN_WINDOW <= window_seconds <= MAX_WINDOW:
        raise CoreError("ERROR_ARGUMENT", f"The stats window must be {MIN_WINDOW} to {MAX_WINDOW} seconds.")
    now = core.clock()
    floors = core.store.features.cast_rounds
    return await core.store.read(lambda conn: _collect(conn, now, window_seconds, floors))


def _collect(conn: Connection, now: float, window: int, floors: bool) -> Stats:
    start = now - window
    reports_after = _last_id_before(conn, status_reports, status_reports.c.reported_at, start)
    attempts_after = _last_id_before(conn, attempts, attempts.c.started_at, start)
    return Stats(
        generated_at=now,
        window_seconds=window,
        per_minute=_per_minute(conn, now, start, reports_after, floors),
        by_status=_by_status(conn, start),
        by_delivery_state=_by_delivery_state(conn, start),
        **_queue(conn, now),
        handlers=_handlers(conn, start, attempts_after),
    )


def _last_id_before(conn: Connection, table: Table, time_column: Column[Any], start: float) -> int:
    """The newest row older than the window; rows after it (by id) are the window's."""
    query = select(table.c.id).where(time_column < start).order_by(table.c.id.desc()).limit(1)
    return int(conn.execute(query).scalar() or 0)


def _minute_of(moment: Any, floors: bool) -> Any:
    """The minute number (epoch seconds // 60) of a time column; `floors`: the engine's cast rounds."""
    if floors:
        return cast(func.floor(moment / 60), Integer)
    return cast(moment / 60, Integer)  # SQLite truncates; times are positive, so that is floor


def _per_minute(conn: Connection, now: float, start: float, reports_after: int, floors: bool) -> list[MinuteCount]:
    created_minute = _minute_of(messages.c.created_at, floors)
    created = dict(
        conn.execute(
            select(created_minute, func.count()).where(messages.c.created_at >= start).group_by(created_minute)
        ).all()
    )

    def first_reached(status_ids: tuple[int, ...]) -> dict[int, int]:
        # Each message counts once, at the first report that moved it into the group.
        first = (
            select(status_reports.c.message_id, func.min(status_reports.c.reported_at).label("at"))
            .where(
                status_reports.c.id > reports_after,
                status_reports.c.reported_at >= start,
                status_reports.c.applied.is_(True),
                status_reports.c.status_id.in_(status_ids),
            )
            .group_by(status_reports.c.message_id)
            .subquery()
        )
        minute = _minute_of(first.c.at, floors)
        return dict(conn.execute(select(minute, func.count()).group_by(minute)).all())

    delivered, failed = first_reached(REACHED_SUCCESS), first_reached(REACHED_FAILURE)
    first_minute, last_minute = int(start // 60), int(now // 60)
    return [
        MinuteCount(float(m * 60), int(created.get(m, 0)), int(delivered.get(m, 0)), int(failed.get(m, 0)))
        for m in range(first_minute, last_minute + 1)
    ]


def _by_status(conn: Connection, start: float) -> dict[str, int]:
    rows = conn.execute(
        select(messages.c.status_id, func.count()).where(messages.c.created_at >= start).group_by(messages.c.status_id)
    ).all()
    counts: dict[str, int] = {}
    for status_id, count in rows:
        name = (statuses.by_id(status_id) or statuses.UNKNOWN).name
        counts[name] = counts.get(name, 0) + int(count)
    return counts


def _by_delivery_state(conn: Connection, start: float) -> dict[str, int]:
    rows = conn.execute(
        select(deliveries.c.state, func.count())
        .join(messages, messages.c.id == deliveries.c.message_id)
        .where(messages.c.created_at >= start)
        .group_by(deliveries.c.state)
    ).all()
    return {state: int(count) for state, count in rows}


def _queue(conn: Connection, now: float) -> dict[str, Any]:
    # Both read the (state, next_attempt_at) index only. A claimed job's time is its lease's end,
    # so in-flight jobs are pending but not due.
    due = deliveries.c.next_attempt_at <= now
    pending = conn.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((due, 1), else_=0)), 0),
            func.min(case((due, deliveries.c.next_attempt_at), else_=None)),
        ).where(deliveries.c.state == "pending")
    ).one()
    dead = conn.execute(select(func.count()).where(deliveries.c.state == "dead")).scalar_one()
    return {
        "queue_depth": int(pending[0]),
        "due_now": int(pending[1]),
        "oldest_due_at": float(pending[2]) if pending[2] is not None else None,
        "dead": int(dead),
    }


def _handlers(conn: Connection, start: float, attempts_after: int) -> list[HandlerHealth]:
    in_window = and_(attempts.c.id > attempts_after, attempts.c.started_at >= start)
    ok = and_(attempts.c.http_status >= 200, attempts.c.http_status < 300)
    by_sender = (
        select(
            messages.c.sender_id,
            func.count().label("attempts"),
            func.coalesce(func.sum(case((ok, 1), else_=0)), 0).label("succeeded"),
            func.max(attempts.c.started_at).label("last_at"),
            func.max(case((ok, None), else_=attempts.c.id)).label("last_failed_id"),
        )
        .join(messages, messages.c.id == attempts.c.message_id)
        .where(in_window, messages.c.sender_id.is_not(None))
        .group_by(messages.c.sender_id)
        .subquery()
    )
    rows = conn.execute(
        select(by_sender, senders.c.code, senders.c.handler, apps.c.client_id)
        .join(senders, senders.c.id == by_sender.c.sender_id)
        .join(apps, apps.c.id == senders.c.app_id)
    ).all()
    if not rows:
        return []
    failed_ids = [row.last_failed_id for row in rows if row.last_failed_id is not None]
    last_errors = {
        row.id: row.error or f"HTTP {row.http_status}"
        for row in conn.execute(
            select(attempts.c.id, attempts.c.error, attempts.c.http_status).where(attempts.c.id.in_(failed_ids))
        )
    }
    durations = _latest_durations(conn, in_window, [row.sender_id for row in rows])
    health = []
    for row in rows:
        total, succeeded = int(row.attempts), int(row.succeeded)
        p50, p95 = _percentiles(durations.get(row.sender_id, []))
        health.append(
            HandlerHealth(
                sender_id=row.sender_id,
                app_client_id=row.client_id,
                sender_code=row.code,
                handler=row.handler,
                attempts=total,
                succeeded=succeeded,
                failed=total - succeeded,
                success_rate=succeeded / total if total else None,
                p50_ms=p50,
                p95_ms=p95,
                last_error=last_errors.get(row.last_failed_id),
                last_attempt_at=float(row.last_at) if row.last_at is not None else None,
            )
        )
    health.sort(key=lambda h: (-h.attempts, h.sender_id))
    return health


def _latest_durations(conn: Connection, in_window: Any, sender_ids: list[int]) -> dict[int, list[float]]:
    """Each sender's latest LATENCY_SAMPLE attempt durations in the window (a window function, both engines)."""
    ranked = (
        select(
            messages.c.sender_id,
            attempts.c.duration_ms,
            func.row_number().over(partition_by=messages.c.sender_id, order_by=attempts.c.id.desc()).label("recency"),
        )
        .join(messages, messages.c.id == attempts.c.message_id)
        .where(in_window, messages.c.sender_id.in_(sender_ids))
        .subquery()
    )
    durations: dict[int, list[float]] = {}
    for sender_id, duration in conn.execute(
        select(ranked.c.sender_id, ranked.c.duration_ms).where(ranked.c.recency <= LATENCY_SAMPLE)
    ):
        durations.setdefault(sender_id, []).append(float(duration))
    return durations


def _percentiles(samples: list[float]) -> tuple[float | None, float | None]:
    if not samples:
        return None, None
    if len(samples) == 1:
        return samples[0], samples[0]
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[94]
