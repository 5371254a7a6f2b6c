"""The outbox engine: claims due jobs, POSTs them, and records what happened. One engine, two queues.

HANDLER calls (`delivery/queue.py`) and app events (`delivery/app_events.py`) are two outboxes run
by this same loop: the same batch claims with leases, gates and breakers per (app, origin), fair
shares of the call slots per app (`delivery/fairness.py`), one SSRF-guarded sending path
(`delivery/sending.py`), retries with jitter and dead letters (`delivery/decision.py`).

It wakes when a send commits (in this process) and when the next retry falls due; while idle it
looks for work from other processes every sweep. Up to `dispatch_concurrency` calls run at once;
finished calls are written back in batches, one transaction per batch. Once a second it shares its
breakers and its heartbeat with the other processes' dispatchers (`delivery/shared.py`); while busy on
PostgreSQL it vacuums the queue table when autovacuum's own rule says it is due (`store/vacuum.py`).

A graceful stop (SIGTERM, `background.stop_loops`) claims nothing more, hands back at once the jobs it
claimed but did not start (still waiting for a slot of their handler: recorded as not tried, due now,
so the next process takes them without waiting for a lease), lets the calls under way finish within
the grace, writes their results and returns. Nothing already POSTed is handed back: a restart sends
nothing twice. A call cut off by the end of the grace keeps its lease (at least once, as after a crash).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from typing import Protocol

from sqlalchemy import Table

from messageservice.background import BackgroundLoop
from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.delivery.breaker import Gates, HandlerGate
from messageservice.delivery.decision import Decision, Defer, Retry, RetryPolicy, decide
from messageservice.delivery.fairness import apps_at_share, claim_room
from messageservice.delivery.jobs import Job, Result
from messageservice.delivery.queue import HandlerOutbox
from messageservice.delivery.retry import Outcome, Verdict
from messageservice.delivery.sending import RESPONSE_HEAD_BYTES, USER_AGENT, Poster, failure, signature_headers
from messageservice.delivery.shared import SYNC_SECONDS, SharedState
from messageservice.delivery.skipped import SkippedBacklog
from messageservice.observability.attempts import recorded as observed
from messageservice.store.queues import seconds_until_due
from messageservice.store.sends import NewWork
from messageservice.store.statistics import YoungTables
from messageservice.store.vacuum import QueueVacuum

log = logging.getLogger("messageservice.dispatcher")

HANDED_BACK = "handed back at shutdown, not tried"

# What the benchmark (bench/send_bench.py) and older imports take from here.
__all__ = [
    "RESPONSE_HEAD_BYTES",
    "USER_AGENT",
    "Dispatcher",
    "Outbox",
    "decide_all",
    "deliver_once",
    "signature_headers",
]


class Outbox(Protocol):
    """A queue the engine runs: how its jobs are claimed and recorded, and its retry rules."""

    kind: str
    table: Table
    listens: bool  # woken by `core.notify_queued` (sends); otherwise found by the sweep
    gone_reason: str

    def policy(self, settings: Settings) -> RetryPolicy: ...

    def timeout(self, settings: Settings) -> float: ...

    def sweep_seconds(self, settings: Settings) -> float: ...

    async def claim(
        self, core: Core, limit: int, lease: float, skip_members: list[int], skip_apps: list[int]
    ) -> list[Job]: ...

    async def record(self, core: Core, results: list[Result], decisions: dict[int, Decision]) -> None: ...


# Not tried, due now: a Defer, so the claim is not counted and no attempt is recorded.
HAND_BACK = Outcome(Verdict.DEFER, None, HANDED_BACK, None, 0.0)


def lease_seconds(timeout: float, margin: float) -> float:
    # Long enough for a wait for a free slot plus the call itself, with room for the write-back.
    return timeout * 2 + margin


def decide_all(outbox: Outbox, settings: Settings, results: list[Result], now: float) -> dict[int, Decision]:
    policy = outbox.policy(settings)
    decisions = {}
    for r in results:
        job = r.job
        rules = policy if job.retry_delays is None else dataclasses.replace(policy, delays=tuple(job.retry_delays))
        gone = outbox.gone_reason if job.url is None else None
        decisions[job.key] = decide(
            r.outcome, attempt=job.attempt, queued_at=job.queued_at, policy=rules, now=now, gone=gone
        )
    return decisions


async def deliver_once(core: Core, outbox: Outbox, limit: int = 20) -> list[tuple[Result, Decision]]:
    """One pass without a running loop (the CLI, the console right after an install): claim what is
    due, POST each once on the guarded path, record. Same claims, rules and records as the loop."""
    settings = core.settings
    timeout = outbox.timeout(settings)
    jobs = await outbox.claim(core, limit, lease_seconds(timeout, settings.lease_margin_seconds), [], [])
    if not jobs:
        return []
    async with Poster(settings, limit=limit, timeout=timeout) as poster:

        async def attempt(job: Job) -> Result:
            started, clock = time.time(), time.perf_counter()
            outcome = await _send(poster, job)
            return Result(job, outcome, started, (time.perf_counter() - clock) * 1000)

        results = list(await asyncio.gather(*(attempt(job) for job in jobs)))
    decisions = decide_all(outbox, settings, results, core.clock())
    await outbox.record(core, results, decisions)
    observed(core, outbox.kind, results, decisions)
    return [(r, decisions[r.job.key]) for r in results]


async def _send(poster: Poster, job: Job) -> Outcome:
    if job.url is None:
        return Outcome(Verdict.FAIL, None, None, None)
    if job.error is not None:
        return Outcome(Verdict.RETRY, None, job.error, None)
    return await poster.post(job)


class Dispatcher(BackgroundLoop):
    name = "dispatcher"

    def __init__(self, core: Core, outbox: Outbox | None = None) -> None:
        super().__init__(core)
        self.outbox: Outbox = outbox if outbox is not None else HandlerOutbox()
        self._wakeup = asyncio.Event()
        self._work = True  # new or due jobs may be waiting: claim before sleeping again
        self._backlog = False  # the last claim was full, or left jobs skipped: more to take as slots free up
        self._skipped = SkippedBacklog()  # when the due jobs are all of apps and senders a claim skips
        self._inflight: set[asyncio.Task[None]] = set()
        self._per_app: Counter[int] = Counter()  # calls in flight (or waiting for a gate) per app
        self._finished: list[Result] = []
        # The batch being written (one at a time): claims go on meanwhile, on another connection.
        self._recording: asyncio.Task[None] | None = None
        # When the next known job falls due: learnt on a sweep, and from the retries this loop schedules.
        self._next_due: float | None = None
        self._sweeping = True
        self._sweep_at: float | None = None  # when the idle loop looks for work queued elsewhere
        self._young_tables = YoungTables()
        self._queue_vacuum = QueueVacuum()
        self._draining = asyncio.Event()  # a graceful stop: no claims, unstarted jobs handed back
        self._statistics_checked = 0.0
        settings = core.settings
        self.slots = settings.dispatch_concurrency
        self.gates = Gates(settings.handler_concurrency, settings.breaker_failures, settings.breaker_cooldown_seconds)
        self.shared = SharedState(self.outbox.kind, settings.handler_concurrency)
        if self.outbox.listens:
            core.queued_listeners.append(self.wake)

    def wake(self, work: NewWork | None = None) -> None:
        """Jobs were queued (here or, through NOTIFY, elsewhere): (app_id, sender_id) pairs, None: any."""
        self._skipped.queued(work)
        self._work = True
        self._wakeup.set()

    def begin_stop(self) -> bool:
        self._draining.set()
        self.gates.wake_all()  # the jobs waiting for a slot see the stop and are handed back
        self._wakeup.set()
        return True

    @property
    def _drained(self) -> bool:
        return not self._inflight and not self._finished and not self._writing

    async def run(self) -> None:
        settings = self._core.settings
        loop = asyncio.get_running_loop()
        async with Poster(settings, limit=self.slots, timeout=self.outbox.timeout(settings)) as poster:
            try:
                while True:
                    self.mark_active()
                    started = loop.time()
                    self._wakeup.clear()
                    await self._share_state()
                    await self._write_finished()
                    if self._draining.is_set():
                        if self._drained:
                            return
                        # Nothing more is claimed. Left set, these made `_idle` return at once: with only a
                        # write under way the loop spun without yielding, and the write (and the stop)
                        # waited for the grace to run out.
                        self._work = self._backlog = False
                    elif self._work or self._backlog:
                        self._work = False
                        await self._claim_more(poster)
                    await self._idle()
                    if self._inflight:
                        # Busy: let a tick's worth of finished calls and new jobs gather.
                        await asyncio.sleep(max(0.0, settings.dispatch_tick_seconds - (loop.time() - started)))
            finally:
                if self._inflight:
                    log.warning(
                        "%d %s calls cut off at shutdown: sent again when their lease runs out",
                        len(self._inflight),
                        self.outbox.kind,
                    )
                for task in self._inflight:
                    task.cancel()
                await asyncio.gather(*self._inflight, return_exceptions=True)
                # What finished is written; what was cut off is claimed again when its lease runs out.
                await asyncio.shield(self._flush())
                await asyncio.shield(self.shared.leave(self._core))
                await self._queue_vacuum.stop()

    async def _share_state(self) -> None:
        if self.shared.due(self._core.clock()):
            await self.shared.sync(self._core, self.gates)

    async def _claim_more(self, poster: Poster) -> None:
        settings = self._core.settings
        lease = lease_seconds(self.outbox.timeout(settings), settings.lease_margin_seconds)
        self._backlog = False
        while (free := self.slots - len(self._inflight)) > 0:
            # No more at a time than one handler has call slots: a claim stops once the handlers it may
            # take from have their slots spoken for (gates count held jobs), so all of one claim can at
            # worst wait for a slot, and none is deferred and claimed over and over. And no more than the
            # app with the least room left may take (fair shares per app).
            want = min(free, settings.dispatch_batch_size, self.gates.limit, claim_room(self._per_app, self.slots))
            blocked = self.gates.blocked_members(time.time())
            full = apps_at_share(self._per_app, self.slots)
            if self._skipped.covers(full, blocked):
                # Only skipped jobs are due: no query until a call ends, a gate opens or work arrives.
                self._backlog = True
                return
            self._skipped.claim_started(full, blocked)
            try:
                jobs = await self.outbox.claim(self._core, want, lease, blocked, full)
            except Exception:
                self._skipped.claim_ended(short=False)
                log.exception("claiming %s jobs failed", self.outbox.kind)
                return
            self._skipped.claim_ended(short=len(jobs) < want)
            if jobs and self.outbox.kind == "handler":
                self._queue_vacuum.maybe_start(self._core)
                await self._check_statistics()
            for job in jobs:
                self._per_app[job.app_id] += 1
                gate = None if job.url is None or job.error is not None else self._gate(job)
                task = asyncio.create_task(self._deliver(poster, job, gate))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            # Under a backlog this loop runs on; what finished meanwhile is written now, not after it.
            await self._write_finished()
            if len(jobs) < want:
                # Nothing more is due now (for the apps and handlers that may take more): a due time
                # already passed was this claim's.
                if self._next_due is not None and self._next_due <= self._core.clock():
                    self._next_due = None
                self._backlog = self._skipped.known
                if self._sweeping:
                    if self._skipped.known:
                        self._sweeping = False  # the earliest due job is a skipped one: no use as a wake-up
                    else:
                        await self._learn_next_due()
                return
        self._backlog = True

    async def _check_statistics(self) -> None:
        """While busy, once a second, until the hot tables have planner statistics (PostgreSQL)."""
        now = time.monotonic()
        if self._young_tables.settled or now - self._statistics_checked < 1.0:
            return
        self._statistics_checked = now
        try:
            await self._young_tables.analyze_if_needed(self._core)
        except Exception:
            log.exception("analyzing young tables failed")

    async def _idle(self) -> None:
        if (self._finished and not self._writing) or self._wakeup.is_set() or self._work:
            return
        now = self._core.clock()
        if self._sweep_at is None:
            self._sweep_at = now + self.outbox.sweep_seconds(self._core.settings)
        due = self._sweep_at if self._next_due is None else min(self._sweep_at, self._next_due)
        # However long the wait, the heartbeat and the breakers are shared every SYNC_SECONDS (shared.py).
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(0.0, min(due - now, SYNC_SECONDS)))
        except TimeoutError:
            if self._core.clock() >= due:
                # A retry fell due, or the sweep: look for it, and for work queued elsewhere (SQLite).
                # A look that the skipped backlog puts off is taken at a later sweep.
                self._work = self._sweeping = True
                self._sweep_at = None
                if self._next_due is not None and self._next_due <= self._core.clock():
                    self._next_due = None
                self._skipped.forget()

    async def _learn_next_due(self) -> None:
        """After a sweep's claim: when the queue's next job falls due (one read a sweep, not one per idle)."""
        self._sweeping = False
        try:
            due = await seconds_until_due(self._core.store, self.outbox.table, self._core.clock())
        except Exception:
            log.exception("reading the %s queue failed", self.outbox.kind)
            due = None
        self._next_due = None if due is None else self._core.clock() + due

    def _gate(self, job: Job) -> HandlerGate:
        assert job.url is not None
        gate = self.gates.for_job(job.app_id, job.url, job.member)
        gate.hold()
        return gate

    async def _deliver(self, poster: Poster, job: Job, gate: HandlerGate | None) -> None:
        started = time.time()
        clock = time.perf_counter()
        try:
            outcome = await self._attempt(poster, job, gate)
        except Exception as exc:
            # A bug of ours (a gate, a header): still an attempt, recorded, retried, never lost.
            log.exception("delivering %s failed", job.label or job.key)
            outcome = failure(exc)
        finally:
            if gate is not None:
                gate.let_go()
            self._per_app[job.app_id] -= 1
            if self._per_app[job.app_id] <= 0:
                del self._per_app[job.app_id]
        self._finished.append(Result(job, outcome, started, (time.perf_counter() - clock) * 1000))
        self._wakeup.set()

    async def _attempt(self, poster: Poster, job: Job, gate: HandlerGate | None) -> Outcome:
        if self._draining.is_set():
            return HAND_BACK
        if gate is None:
            return await _send(poster, job)
        now = time.time()
        later = gate.admit(now)
        while later is not None and gate.may_wait(time.time()):
            await gate.wait_for_slot()
            if self._draining.is_set():
                return HAND_BACK
            later = gate.admit(time.time())
        if later is not None:
            now = time.time()
            return Outcome(Verdict.DEFER, None, f"handler {gate.state(now)}", None, max(0.0, later - now))
        failed = False
        try:
            outcome = await poster.post(job)
            failed = outcome.verdict is Verdict.RETRY
            return outcome
        finally:
            gate.release(time.time(), handler_failed=failed)

    @property
    def _writing(self) -> bool:
        return self._recording is not None and not self._recording.done()

    async def _write_finished(self) -> None:
        """Start writing what finished, unless a write is under way (then it goes with the next batch)."""
        if not self._finished or self._writing:
            return
        batch, self._finished = self._finished, []
        decisions = decide_all(self.outbox, self._core.settings, batch, self._core.clock())
        for decision in decisions.values():
            if isinstance(decision, Retry | Defer):
                self._next_due = decision.at if self._next_due is None else min(self._next_due, decision.at)
        self._recording = asyncio.create_task(self._record(batch, decisions))

    async def _record(self, batch: list[Result], decisions: dict[int, Decision]) -> None:
        try:
            await self.outbox.record(self._core, batch, decisions)
        except Exception:
            # Not written: the leases run out and the jobs are sent again (at least once).
            log.exception("recording %d %s results failed", len(batch), self.outbox.kind)
        else:
            observed(self._core, self.outbox.kind, batch, decisions)
        finally:
            self._wakeup.set()

    async def _flush(self) -> None:
        """At shutdown: the write under way, then whatever finished after it."""
        if self._recording is not None:
            await asyncio.gather(self._recording, return_exceptions=True)
        await self._write_finished()
        if self._recording is not None:
            await asyncio.gather(self._recording, return_exceptions=True)
