"""App lifecycle events (ONAPPINSTALL, ONAPPUPDATE, ONAPPUNINSTALL): an outbox with retries.

An event is committed together with the change that caused it, then POSTed form-encoded to the
app's URL as Bitrix's queue servers do. Failures are retried on `event_retry_schedule` and logged.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from messageservice.background import BackgroundLoop
from messageservice.core.context import Core
from messageservice.phpquery import http_build_query
from messageservice.store.queues import seconds_until_due
from messageservice.store.tables import app_events

log = logging.getLogger("messageservice.events")

USER_AGENT = "Bitrix24 Webhook Engine"
# How long a claimed event stays invisible to other workers while its POST runs.
LEASE_SECONDS = 120.0


@dataclass(frozen=True)
class AttemptResult:
    event_id: int
    ok: bool
    detail: str


async def enqueue_event(
    core: Core,
    conn: AsyncConnection,
    app_row: Any,
    event: str,
    data: dict[str, Any],
    auth: dict[str, Any],
) -> int:
    now = core.clock()
    body = http_build_query({"event": event, "data": data, "ts": int(now), "auth": auth})
    # The body carries live tokens (refresh_token included), so it is encrypted at rest.
    result = await conn.execute(
        insert(app_events)
        .values(
            app_id=app_row.id,
            event=event,
            url=app_row.url,
            body=core.box.encrypt(body),
            state="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        .returning(app_events.c.id)
    )
    return int(result.scalar_one())


async def _claim_due(core: Core, limit: int = 20) -> list[Any]:
    now = core.clock()
    async with core.engine.begin() as conn:
        rows = (
            await conn.execute(
                select(app_events)
                .where(app_events.c.state == "pending", app_events.c.next_attempt_at <= now)
                .order_by(app_events.c.next_attempt_at)
                .limit(limit)
            )
        ).all()
        claimed = []
        for row in rows:
            # Optimistic claim: only one worker moves next_attempt_at from the value it read.
            result = await conn.execute(
                update(app_events)
                .where(app_events.c.id == row.id, app_events.c.next_attempt_at == row.next_attempt_at)
                .values(next_attempt_at=now + LEASE_SECONDS)
            )
            if result.rowcount == 1:
                claimed.append(row)
    return claimed


async def _post(session: aiohttp.ClientSession, row: Any, body: str, timeout: float) -> tuple[bool, str]:
    try:
        async with session.post(
            row.url,
            data=body.encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            head = (await response.content.read(200)).decode("utf-8", "replace")
            return 200 <= response.status < 300, f"HTTP {response.status} {head}".strip()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"


async def _record(core: Core, row: Any, ok: bool, detail: str) -> None:
    now = core.clock()
    attempts = row.attempts + 1
    delays = core.settings.event_retry_delays
    values: dict[str, Any] = {"attempts": attempts, "last_error": None if ok else detail[:1000]}
    if ok:
        values.update(state="delivered", finished_at=now)
        log.info("%s delivered to %s (attempt %d)", row.event, row.url, attempts)
    elif attempts > len(delays):
        values.update(state="failed", finished_at=now)
        log.warning("%s to %s failed for good after %d attempts: %s", row.event, row.url, attempts, detail)
    else:
        values["next_attempt_at"] = now + delays[attempts - 1]
        log.warning("%s to %s failed (attempt %d), retrying: %s", row.event, row.url, attempts, detail)
    async with core.engine.begin() as conn:
        await conn.execute(update(app_events).where(app_events.c.id == row.id).values(**values))


async def deliver_due(core: Core) -> list[AttemptResult]:
    """One pass: POST every due event once. Used by the worker and by the CLI right after an install."""
    rows = await _claim_due(core)
    if not rows:
        return []
    results = []
    async with aiohttp.ClientSession() as session:
        timeout = core.settings.event_timeout_seconds
        outcomes = await asyncio.gather(*(_post(session, row, core.box.decrypt(row.body), timeout) for row in rows))
        for row, (ok, detail) in zip(rows, outcomes, strict=True):
            await _record(core, row, ok, detail)
            results.append(AttemptResult(row.id, ok, detail))
    return results


class EventWorker(BackgroundLoop):
    """Delivers app events in the server process."""

    name = "app-event-worker"

    @property
    def quiet_seconds(self) -> float:  # type: ignore[override]
        return self._core.settings.event_sweep_seconds

    async def run(self) -> None:
        while True:
            self.mark_active()
            try:
                await deliver_due(self._core)
                wait = await seconds_until_due(self._core, app_events)
            except Exception:  # the worker must outlive a database hiccup
                log.exception("app event worker pass failed")
                wait = 5.0
            # The sweep picks up events queued by another process (the CLI): one indexed query.
            sweep = self._core.settings.event_sweep_seconds
            wait = sweep if wait is None else min(wait, sweep)
            await asyncio.sleep(wait)
