"""The dispatcher: claims due deliveries, POSTs them to their HANDLERs, and records what happened.

It wakes when a send commits (in this process) and when the next retry falls due; while idle it
looks for work from other processes every `dispatch_sweep_seconds`. Up to `dispatch_concurrency`
calls run at once; finished calls are written back in batches, one transaction per batch.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time

import aiohttp
import standardwebhooks

from messageservice.background import BackgroundLoop
from messageservice.config import Settings
from messageservice.core.context import Core
from messageservice.core.orphans import APP_GONE
from messageservice.delivery.breaker import Gates
from messageservice.delivery.queue import ClaimMemory, Job, Result, claim_due, record
from messageservice.delivery.retry import Outcome, Verdict, backoff, judge
from messageservice.delivery.ssrf import guarded_connector, parse_networks, refused_reason
from messageservice.store.queues import seconds_until_due
from messageservice.store.statistics import YoungTables
from messageservice.store.tables import deliveries

log = logging.getLogger("messageservice.dispatcher")

USER_AGENT = "Bitrix24 Webhook Engine"
RESPONSE_HEAD_BYTES = 512


def signature_headers(secret: str, message_id: str, body: str) -> dict[str, str]:
    """Standard Webhooks headers beside the unchanged Bitrix body; webhook-id is the stable message_id."""
    now = datetime.datetime.now(datetime.UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(message_id, now, body),
    }


Decision = tuple[str, float | None, str | None]  # (done | retry | dead, next attempt time, error to keep)


def decide(result: Result, settings: Settings, now: float) -> Decision:
    job, outcome = result.job, result.outcome
    if job.handler is None:
        return "dead", None, APP_GONE
    if settings.delivery_profile == "strict":
        # Bitrix24 posts once and ignores the answer.
        return "done", None, outcome.error
    if outcome.verdict is Verdict.DELIVERED:
        return "done", None, None
    if outcome.verdict is Verdict.FAIL:
        return "dead", None, outcome.error
    if outcome.verdict is Verdict.DEFER:
        return "defer", outcome.retry_after, outcome.error
    delays = job.retry_delays if job.retry_delays is not None else settings.retry_delays
    delay = outcome.retry_after if outcome.retry_after is not None else backoff(job.attempt, delays)
    if delay is None or now + delay - job.queued_at > settings.retry_max_age_seconds:
        return "dead", None, f"{outcome.error} (gave up after {job.attempt} attempts)"
    return "retry", now + delay, outcome.error


class Dispatcher(BackgroundLoop):
    name = "dispatcher"

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self._wakeup = asyncio.Event()
        self._work = True  # new or due messages may be waiting: claim before sleeping again
        self._backlog = False  # the last claim was full: there is more to take as slots free up
        self._inflight: set[asyncio.Task[None]] = set()
        self._finished: list[Result] = []
        self._memory = ClaimMemory()
        # When the next known job falls due: learnt on a sweep, and from the retries this loop schedules.
        self._next_due: float | None = None
        self._sweeping = True
        self._young_tables = YoungTables()
        self._statistics_checked = 0.0
        settings = core.settings
        self.gates = Gates(settings.handler_concurrency, settings.breaker_failures, settings.breaker_cooldown_seconds)
        core.queued_listeners.append(self.wake)

    def wake(self) -> None:
        """Messages were queued (here or, through NOTIFY, elsewhere)."""
        self._work = True
        self._wakeup.set()

    async def run(self) -> None:
        settings = self._core.settings
        connector = guarded_connector(
            parse_networks(settings.allowed_handler_networks), limit=settings.dispatch_concurrency
        )
        timeout = aiohttp.ClientTimeout(total=settings.handler_timeout_seconds)
        loop = asyncio.get_running_loop()
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                while True:
                    self.mark_active()
                    started = loop.time()
                    self._wakeup.clear()
                    await self._write_finished()
                    if self._work or self._backlog:
                        self._work = False
                        await self._claim_more(session)
                    await self._idle()
                    if self._inflight:
                        # Busy: let a tick's worth of finished calls and new messages gather.
                        await asyncio.sleep(max(0.0, settings.dispatch_tick_seconds - (loop.time() - started)))
            finally:
                for task in self._inflight:
                    task.cancel()
                await asyncio.gather(*self._inflight, return_exceptions=True)
                # What finished is written; what was cut off is claimed again when its lease runs out.
                await asyncio.shield(self._write_finished())

    async def _claim_more(self, session: aiohttp.ClientSession) -> None:
        settings = self._core.settings
        # Long enough for a wait for a free slot plus the call itself, with room for the write-back.
        lease = settings.handler_timeout_seconds * 2 + 10
        self._backlog = False
        while (free := settings.dispatch_concurrency - len(self._inflight)) > 0:
            # No more at a time than one handler can take (its calls plus as many waiting): a claim
            # for a single busy provider would otherwise be deferred and claimed over and over.
            want = min(free, settings.dispatch_batch_size, settings.handler_concurrency * 2)
            try:
                jobs = await claim_due(self._core, want, lease, self.gates.blocked_senders(time.time()), self._memory)
            except Exception:
                log.exception("claiming deliveries failed")
                return
            if jobs:
                await self._check_statistics()
            for job in jobs:
                task = asyncio.create_task(self._deliver(session, job))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            # Under a backlog this loop runs on; what finished meanwhile is written now, not after it.
            await self._write_finished()
            if len(jobs) < want:
                # Nothing more is due now: a due time already passed was this claim's.
                if self._next_due is not None and self._next_due <= self._core.clock():
                    self._next_due = None
                if self._sweeping:
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
        if self._finished or self._wakeup.is_set() or self._work:
            return
        wait = self._core.settings.dispatch_sweep_seconds
        if self._next_due is not None:
            wait = min(wait, max(0.0, self._next_due - self._core.clock()))
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=wait)
        except TimeoutError:
            # A retry fell due, or the sweep: look for it, and for work queued elsewhere (SQLite).
            self._work = self._sweeping = True

    async def _learn_next_due(self) -> None:
        """After a sweep's claim: when the queue's next job falls due (one read a sweep, not one per idle)."""
        self._sweeping = False
        try:
            due = await seconds_until_due(self._core, deliveries)
        except Exception:
            log.exception("reading the queue failed")
            due = None
        self._next_due = None if due is None else self._core.clock() + due

    async def _deliver(self, session: aiohttp.ClientSession, job: Job) -> None:
        started = time.time()
        clock = time.perf_counter()
        gate = self.gates.for_job(job.handler, job.sender_id) if job.handler is not None else None
        later = gate.admit(started) if gate is not None else None
        while gate is not None and later is not None and gate.may_wait(time.time()):
            await gate.wait_for_slot()
            later = gate.admit(time.time())
        if gate is not None and later is not None:
            outcome = Outcome(Verdict.DEFER, None, f"handler {gate.state(started)}", None, later)
        else:
            try:
                outcome = await self._post(session, job)
            except BaseException:
                if gate is not None:
                    gate.release(time.time(), handler_failed=False)
                raise
            if gate is not None:
                gate.release(time.time(), handler_failed=outcome.verdict is Verdict.RETRY)
        self._finished.append(Result(job, outcome, started, (time.perf_counter() - clock) * 1000))
        self._wakeup.set()

    async def _post(self, session: aiohttp.ClientSession, job: Job) -> Outcome:
        if job.handler is None:
            return Outcome(Verdict.FAIL, None, APP_GONE, None)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT}
        if job.signing_secret is not None:
            headers.update(signature_headers(job.signing_secret, job.external_id, job.body))
        try:
            async with session.post(
                job.handler,
                data=job.body.encode(),
                headers=headers,
                # A redirect could point anywhere, past the address check.
                allow_redirects=False,
            ) as response:
                head = (await response.content.read(RESPONSE_HEAD_BYTES)).decode("utf-8", "replace")
                cap = self._core.settings.retry_after_cap_seconds
                return judge(response.status, head, response.headers.get("Retry-After"), cap)
        except aiohttp.InvalidURL as exc:
            return Outcome(Verdict.FAIL, None, f"invalid handler URL: {exc}", None)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = refused_reason(exc)
            if refused is not None:
                return Outcome(Verdict.FAIL, None, refused, None)
            text = str(exc) or type(exc).__name__
            return Outcome(Verdict.RETRY, None, f"{type(exc).__name__}: {text}"[:500], None)

    async def _write_finished(self) -> None:
        if not self._finished:
            return
        batch, self._finished = self._finished, []
        now = self._core.clock()
        decisions = {r.job.message_id: decide(r, self._core.settings, now) for r in batch}
        for state, next_at, _ in decisions.values():
            if state in ("retry", "defer") and next_at is not None:
                self._next_due = next_at if self._next_due is None else min(self._next_due, next_at)
        try:
            await record(self._core, batch, decisions)
        except Exception:
            # Not written: the leases run out and the messages are sent again (at least once).
            log.exception("recording %d delivery results failed", len(batch))
