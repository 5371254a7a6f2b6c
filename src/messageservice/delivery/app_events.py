"""App lifecycle events (ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL): the second queue of the outbox engine.

An event is committed together with the change that caused it, then POSTed form-encoded to the
app's URL as Bitrix's queue servers do. It runs on the same engine as HANDLER calls
(`delivery/dispatcher.py`): batch claims with a lease, the SSRF-guarded sending path, gates and
breakers per (app, origin), retries on `event_retry_schedule` with jitter, and a dead letter
(state "failed") when the schedule runs out or the address is refused.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update

from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.core.orphans import APP_GONE
from messageservice.delivery.decision import Dead, Decision, Defer, Done, Retry, RetryPolicy
from messageservice.delivery.dispatcher import Dispatcher, deliver_once
from messageservice.delivery.jobs import Job, Result
from messageservice.store.tables import app_events, apps

log = logging.getLogger("messageservice.events")


@dataclass(frozen=True)
class AttemptResult:
    event_id: int
    ok: bool
    detail: str


def _claim_statement(postgres: bool, skipping: bool) -> Any:
    """Move due events past a lease and count the attempt, returning them (as the deliveries' claim)."""
    due = (
        select(app_events.c.id)
        .where(app_events.c.state == "pending", app_events.c.next_attempt_at <= bindparam("now"))
        .order_by(app_events.c.next_attempt_at)
        .limit(bindparam("limit"))
    )
    if skipping:
        due = due.where(app_events.c.app_id.not_in(bindparam("skip", expanding=True)))
    if postgres:
        due = due.with_for_update(skip_locked=True)
    return (
        update(app_events)
        .where(app_events.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=bindparam("lease_until"), attempts=app_events.c.attempts + 1)
        .returning(
            app_events.c.id,
            app_events.c.app_id,
            app_events.c.event,
            app_events.c.url,
            app_events.c.body,
            app_events.c.attempts,
            app_events.c.created_at,
        )
    )


_CLAIM = {(pg, skipping): _claim_statement(pg, skipping) for pg in (False, True) for skipping in (False, True)}
_SET = (
    update(app_events)
    .where(app_events.c.id == bindparam("b_id"), app_events.c.state == "pending")
    .values(
        state=bindparam("b_state"),
        next_attempt_at=bindparam("b_next"),
        last_error=bindparam("b_error"),
        finished_at=bindparam("b_finished"),
        attempts=app_events.c.attempts - bindparam("b_uncount"),
    )
)


class EventOutbox:
    """App events: the `app_events` queue. Gates and skips are per app (an event goes to the app's URL)."""

    kind = "event"
    table: Table = app_events
    listens = False  # queued by installs (CLI, console): found by the sweep, or posted at once by them
    gone_reason = APP_GONE

    def policy(self, settings: Settings) -> RetryPolicy:
        return RetryPolicy(tuple(settings.event_retry_delays))

    def timeout(self, settings: Settings) -> float:
        return settings.event_timeout_seconds

    def sweep_seconds(self, settings: Settings) -> float:
        return settings.event_sweep_seconds

    async def claim(
        self, core: Core, limit: int, lease: float, skip_members: list[int], skip_apps: list[int]
    ) -> list[Job]:
        now = core.clock()
        skip = sorted(set(skip_members) | set(skip_apps))
        statement = _CLAIM[(core.store.features.skip_locked, bool(skip))]
        params: dict[str, Any] = {"now": now, "limit": limit, "lease_until": now + lease}
        if skip:
            params["skip"] = skip
        rows = await core.writes.run(lambda conn: conn.execute(statement, params).all())
        return [_job(core, row) for row in rows]

    async def record(self, core: Core, results: list[Result], decisions: dict[int, Decision]) -> None:
        now = core.clock()
        rows = []
        for r in results:
            decision, job = decisions[r.job.key], r.job
            row = {"b_id": job.key, "b_next": now, "b_error": None, "b_finished": None, "b_uncount": 0}
            match decision:
                case Done():
                    row.update(b_state="delivered", b_finished=now)
                    log.info("%s delivered to %s (attempt %d)", job.label, job.url, job.attempt)
                case Retry(at=at, error=error):
                    row.update(b_state="pending", b_next=at, b_error=error[:1000])
                    log.warning("%s to %s failed (attempt %d), retrying: %s", job.label, job.url, job.attempt, error)
                case Defer(at=at, reason=reason):
                    row.update(b_state="pending", b_next=at, b_error=reason, b_uncount=1)
                case Dead(reason=reason):
                    row.update(b_state="failed", b_finished=now, b_error=reason[:1000])
                    log.warning("%s to %s failed for good (attempt %d): %s", job.label, job.url, job.attempt, reason)
            rows.append(row)

        def transaction(conn: Connection) -> None:
            conn.execute(_SET, rows)

        if rows:
            await core.writes.run(transaction)


def _job(core: Core, row: Any) -> Job:
    try:
        body, error = core.box.decrypt(row.body), None
    except Exception as exc:  # a key that changed: an attempt that fails, recorded, not a claim loop
        body, error = "", f"could not decrypt the event: {type(exc).__name__}"
    return Job(
        row.id, row.app_id, row.attempts, row.created_at, row.url, body, member=row.app_id, label=row.event, error=error
    )


def _detail(result: Result) -> str:
    outcome = result.outcome
    if outcome.error is None and outcome.http_status is not None:
        return f"HTTP {outcome.http_status} {outcome.response_head or ''}".strip()
    return " ".join(part for part in (outcome.error, outcome.response_head) if part)


async def deliver_due(core: Core) -> list[AttemptResult]:
    """One pass: POST every due event once. Used by the CLI and the console right after an install."""
    return [
        AttemptResult(result.job.key, isinstance(decision, Done), _detail(result))
        for result, decision in await deliver_once(core, EventOutbox())
    ]


async def post_event_now(core: Core, client_id: str, event: str, wait: float) -> AttemptResult | None:
    """The first attempt at the app's newest `event`: posted here, or, when a server's event worker claimed it
    first, that worker's attempt, waited for up to `wait` seconds. None when no attempt finished by then."""
    newest = (
        select(app_events.c.id, app_events.c.state, app_events.c.attempts, app_events.c.last_error)
        .join(apps, apps.c.id == app_events.c.app_id)
        .where(apps.c.client_id == client_id, app_events.c.event == event)
        .order_by(app_events.c.id.desc())
        .limit(1)
    )

    async def read() -> Any:
        async with core.store.connection() as conn:
            return (await conn.execute(newest)).first()

    queued = await read()
    if queued is None:
        return None
    for attempt in await deliver_due(core):
        if attempt.event_id == queued.id:
            return attempt
    deadline = time.monotonic() + wait
    while True:
        row = await read()
        if row is None or row.id != queued.id:
            return None
        if row.state == "delivered":
            return AttemptResult(row.id, True, "delivered by the server's event worker")
        if row.state == "failed" or row.last_error:
            return AttemptResult(row.id, False, row.last_error or row.state)
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)


class EventWorker(Dispatcher):
    """Delivers app events in the server process: the outbox engine on the app_events queue."""

    name = "app-event-worker"

    def __init__(self, core: Core) -> None:
        super().__init__(core, EventOutbox())

    @property
    def quiet_seconds(self) -> float:  # type: ignore[override]
        return self._core.settings.event_sweep_seconds
