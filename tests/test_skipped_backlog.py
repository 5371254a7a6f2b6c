"""Claims left out while every due job is one the claim would skip (delivery/skipped.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from messageservice.background import stop_loops
from messageservice.core.context import Core
from messageservice.delivery.decision import Decision, Defer, Done
from messageservice.delivery.dispatcher import Dispatcher
from messageservice.delivery.jobs import Job, Result
from messageservice.delivery.queue import HandlerOutbox
from messageservice.delivery.skipped import SkippedBacklog
from messageservice.store.sends import MAX_NAMED, wake_payload, woken_work
from messageservice.store.tables import deliveries
from tests.portal import LivePortal
from tests.receiver import Receiver, Reply
from tests.test_messages import register, send

# -- the rule -----------------------------------------------------------------------------------------


def short_claim(skipped: SkippedBacklog, apps: list[int], members: list[int]) -> None:
    skipped.claim_started(apps, members)
    skipped.claim_ended(short=True)


def test_nothing_is_known_until_a_claim_that_skipped_something_comes_back_short() -> None:
    skipped = SkippedBacklog()
    assert not skipped.covers([1], [7])
    short_claim(skipped, [], [])  # short without skipping anything: the queue is empty, nothing to hold
    assert not skipped.known and not skipped.covers([1], [7])
    short_claim(skipped, [1], [7])
    assert skipped.known


def test_a_claim_is_pointless_only_while_it_skips_at_least_as_much() -> None:
    skipped = SkippedBacklog()
    short_claim(skipped, [1, 2], [7])
    assert skipped.covers([1, 2], [7]) and skipped.covers([1, 2, 3], [7, 8])
    assert not skipped.covers([1], [7])  # app 2 has room again: its jobs may be claimed
    assert not skipped.covers([1, 2], [])  # sender 7's gate opened


def test_new_work_for_a_skipped_app_or_sender_changes_nothing_any_other_does() -> None:
    skipped = SkippedBacklog()
    short_claim(skipped, [1, 2], [7])
    skipped.queued(frozenset({(2, 20), (3, 7)}))  # (app, sender): app 2 is skipped, and so is sender 7
    assert skipped.covers([1, 2], [7])
    skipped.queued(frozenset({(2, 20), (3, 30)}))
    assert not skipped.known
    short_claim(skipped, [1], [])
    skipped.queued(None)  # a wake-up that names nothing: anyone may have work
    assert not skipped.known
    skipped.claim_started([1], [], now=10.0)
    skipped.claim_ended(short=True, now=10.001)
    assert skipped.forget(now=11.0)  # a due time passed, or the sweep
    assert not skipped.known


def test_after_a_due_time_a_costly_look_waits_until_it_takes_a_small_share_of_the_time() -> None:
    """A claim that skips reads every skipped job: with a large backlog it is slow, and a due time
    passing (the sweep, each second) must not make it run every time."""
    skipped = SkippedBacklog()
    skipped.claim_started([1], [7], now=100.0)
    skipped.claim_ended(short=True, now=100.1)  # 100 ms: the next look no sooner than 2 s after it
    assert not skipped.forget(now=101.1) and skipped.known
    assert not skipped.forget(now=102.0) and skipped.covers([1], [7])
    assert skipped.forget(now=102.2) and not skipped.known
    # New work for another app or sender does not wait.
    skipped.claim_started([1], [7], now=200.0)
    skipped.claim_ended(short=True, now=200.1)
    skipped.queued(frozenset({(2, 20)}))
    assert not skipped.known


def test_work_queued_for_others_while_a_claim_runs_is_not_taken_as_seen() -> None:
    """The claim's transaction may have begun before that send committed: it proves nothing about it."""
    skipped = SkippedBacklog()
    skipped.claim_started([1], [])
    skipped.queued(frozenset({(2, 20)}))
    skipped.claim_ended(short=True)
    assert not skipped.known
    skipped.claim_started([1], [])
    skipped.queued(frozenset({(1, 10)}))  # for the app it skips: nothing it could have taken
    skipped.claim_ended(short=True)
    assert skipped.known
    skipped.claim_started([1], [])
    skipped.claim_ended(short=False)  # a full claim: more may be due; what was known still holds
    assert skipped.known


def test_a_wake_up_names_its_work_unless_there_is_too_much_to_name() -> None:
    assert wake_payload([(3, 30), (1, 10), (3, 30)]) == "1:10,3:30"
    assert woken_work("1:10,3:30") == frozenset({(1, 10), (3, 30)})
    many = [(1, n) for n in range(MAX_NAMED + 1)]
    assert wake_payload(many) == ""  # a NOTIFY payload must stay under 8,000 bytes
    assert woken_work("") is None and woken_work("7") is None and woken_work("a:b") is None


# -- the dispatcher -----------------------------------------------------------------------------------


class CountingOutbox(HandlerOutbox):
    """The real handler queue, counting the claims made on it."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0

    async def claim(
        self, core: Core, limit: int, lease: float, skip_members: list[int], skip_apps: list[int]
    ) -> list[Job]:
        self.claims += 1
        return await super().claim(core, limit, lease, skip_members, skip_apps)


DEAD_HANDLER = {
    "serve_dispatch": False,  # the portal answers REST only; the test runs the dispatcher it watches
    "allowed_handler_networks": "127.0.0.0/8",
    "breaker_failures": 1,
    "breaker_cooldown_seconds": 600.0,
    "retry_schedule": "600",
    "dispatch_sweep_seconds": 0.5,
}


@pytest.mark.parametrize("local_fresh_portal", [DEAD_HANDLER], indirect=True)
def test_a_dead_handlers_backlog_is_not_claimed_over_and_over(local_fresh_portal: LivePortal) -> None:
    """Its breaker open, every due job is one the claim skips: before, the idle loop claimed (and found
    nothing) as fast as it could, a core's worth of CPU; now once a sweep."""
    portal = local_fresh_portal
    # Its own install URL elsewhere: breakers are per app and origin, shared by HANDLER calls and app
    # events, so a failed ONAPPINSTALL to the HANDLER's origin would open this breaker before any attempt.
    app = portal.add_app(url="http://127.0.0.1:7/")
    code = "d" + uuid.uuid4().hex[:8]
    added = portal.call(
        "messageservice.sender.add",
        {"CODE": code, "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9/h", "NAME": "Dead"},
        token=app.access_token,
    )
    assert added.status_code == 200, added.text
    for _ in range(30):
        send(portal, app.access_token, f"{app.client_id}|{code}")

    async def watch(core: Core) -> tuple[int, int, Any]:
        outbox = CountingOutbox()
        dispatcher = Dispatcher(core, outbox)
        dispatcher.start()
        try:
            async with asyncio.timeout(15):
                while not dispatcher.gates.blocked_members(time.time()):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the failed attempt's write-back and the short claim after it
            before = outbox.claims
            await asyncio.sleep(2.0)
            during = outbox.claims - before
            assert dispatcher.health.ready()
        finally:
            await stop_loops([dispatcher], 1.0)
        async with core.store.connection() as conn:
            states = (await conn.execute(select(deliveries.c.state, deliveries.c.attempts))).all()
        return during, before, states

    claims, claims_before, states = portal.run(watch)
    # Four sweeps in 2 s, each one claim; a spinning loop made thousands.
    assert claims <= 8, (claims, claims_before)
    # Nothing lost: one attempt failed (and opened the breaker), the rest wait for it to close.
    assert len(states) == 30 and {s.state for s in states} == {"pending"}
    assert sum(s.attempts for s in states) >= 1, (states, claims, claims_before)


class RecordingOutbox(CountingOutbox):
    """The real handler queue, keeping every decision it writes."""

    def __init__(self) -> None:
        super().__init__()
        self.decisions: list[Decision] = []

    async def record(self, core: Core, results: list[Result], decisions: dict[int, Decision]) -> None:
        self.decisions.extend(decisions.values())
        await super().record(core, results, decisions)


BUSY_HANDLER = {
    "serve_dispatch": False,
    "allowed_handler_networks": "127.0.0.0/8",
    "handler_concurrency": 2,
    "dispatch_concurrency": 64,
}


@pytest.mark.parametrize("local_fresh_portal", [BUSY_HANDLER], indirect=True)
def test_a_busy_handlers_backlog_is_claimed_as_it_can_take_it_and_never_deferred(
    local_fresh_portal: LivePortal,
) -> None:
    """40 jobs for a handler of 2 call slots that answers in 30 ms: a claim takes no more than the
    handler's calls and waiting room can hold. Before, a claim right after another one did not see the
    first one's jobs (they had not asked for a slot yet), took more, and deferred them: each a
    write-back and a claim for nothing."""
    portal = local_fresh_portal
    handler = Receiver(script=[Reply(200, delay=0.03)] * 40).start()
    try:
        app = portal.add_app(url="http://127.0.0.1:7/")
        message_from = register(portal, app, handler.url + "h")
        for _ in range(40):
            send(portal, app.access_token, message_from)

        async def run(core: Core) -> RecordingOutbox:
            outbox = RecordingOutbox()
            dispatcher = Dispatcher(core, outbox)
            dispatcher.start()
            try:
                async with asyncio.timeout(20):
                    while sum(isinstance(d, Done) for d in outbox.decisions) < 40:
                        await asyncio.sleep(0.02)
            finally:
                await stop_loops([dispatcher], 1.0)
            return outbox

        outbox = portal.run(run)
        assert len(handler.requests) == 40
        deferred = [d for d in outbox.decisions if isinstance(d, Defer)]
        assert not deferred, f"{len(deferred)} deferred: {deferred[:3]}"
    finally:
        handler.stop()
