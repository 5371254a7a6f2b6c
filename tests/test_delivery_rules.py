"""Unit tests of the outbox engine's pure logic, no server, on a fake clock: retry decisions, backoff
with jitter, Retry-After, gates and breakers per (app, origin), origins, fair shares per app."""

from __future__ import annotations

import asyncio
import email.utils
import random

import aiohttp
import pytest

from messageservice.delivery.breaker import BreakerRow, Gates, HandlerGate, breaker_state
from messageservice.delivery.decision import Dead, Defer, Done, Retry, RetryPolicy, decide
from messageservice.delivery.fairness import app_share, apps_at_share, claim_room
from messageservice.delivery.origin import origin
from messageservice.delivery.retry import Outcome, Verdict, backoff, judge, parse_retry_after
from messageservice.delivery.sending import failure
from messageservice.delivery.shared import concurrency_share
from messageservice.delivery.ssrf import HandlerAddressRefused

NOW = 1_000_000.0
POLICY = RetryPolicy((1.0, 5.0, 30.0), max_age=3600.0)


def no_jitter(low: float, high: float) -> float:
    return 0.0


def outcome(
    verdict: Verdict, status: int | None = None, error: str | None = "boom", wait: float | None = None
) -> Outcome:
    return Outcome(verdict, status, error, None, wait)


def decided(result: Outcome, attempt: int = 1, policy: RetryPolicy = POLICY, **kwargs: object) -> object:
    return decide(result, attempt=attempt, queued_at=NOW - 10, policy=policy, now=NOW, jitter=no_jitter, **kwargs)


# Decisions: typed values, one per case.


def test_a_delivered_job_is_done() -> None:
    assert decided(outcome(Verdict.DELIVERED, 200, None)) == Done()


def test_a_failed_attempt_is_retried_on_the_schedule_then_dead() -> None:
    assert decided(outcome(Verdict.RETRY, 500, "HTTP 500"), attempt=1) == Retry(NOW + 1.0, "HTTP 500")
    assert decided(outcome(Verdict.RETRY, 500, "HTTP 500"), attempt=3) == Retry(NOW + 30.0, "HTTP 500")
    assert decided(outcome(Verdict.RETRY, 500, "HTTP 500"), attempt=4) == Dead("HTTP 500 (gave up after 4 attempts)")


def test_retries_stop_at_the_maximum_age() -> None:
    young = RetryPolicy((100.0,), max_age=120.0)
    assert isinstance(decided(outcome(Verdict.RETRY), policy=young), Retry)  # 10 s old + 100 s: within 120
    old = RetryPolicy((200.0,), max_age=120.0)
    assert decided(outcome(Verdict.RETRY), policy=old) == Dead("boom (gave up after 1 attempts)")


def test_retry_after_overrides_the_schedule() -> None:
    assert decided(outcome(Verdict.RETRY, 503, "HTTP 503", wait=42.0)) == Retry(NOW + 42.0, "HTTP 503")


def test_a_refusal_is_dead_at_once_and_a_gone_sender_too() -> None:
    assert decided(outcome(Verdict.FAIL, 404, "HTTP 404")) == Dead("HTTP 404")
    assert decided(outcome(Verdict.RETRY), gone="sender deleted") == Dead("sender deleted")


def test_a_deferred_job_is_asked_again_later_not_counted() -> None:
    assert decided(outcome(Verdict.DEFER, error="handler open", wait=7.0)) == Defer(NOW + 7.0, "handler open")


def test_the_strict_profile_posts_once_and_keeps_the_error() -> None:
    strict = RetryPolicy((1.0,), strict=True)
    assert decided(outcome(Verdict.RETRY, 500, "HTTP 500"), policy=strict) == Done("HTTP 500")
    assert decided(outcome(Verdict.DELIVERED, 200, None), policy=strict) == Done()


# Judging an answer.


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_attempt_retried_never_followed(status: int) -> None:
    judged = judge(status, "", None, 3600.0)
    assert judged.verdict is Verdict.RETRY and judged.http_status == status
    assert judged.error == f"HTTP {status} (redirects are not followed)"
    assert isinstance(decided(judged), Retry)


def test_answers_are_judged() -> None:
    assert judge(200, "ok", None, 60).verdict is Verdict.DELIVERED
    assert judge(204, "", None, 60).verdict is Verdict.DELIVERED
    assert judge(400, "", None, 60).verdict is Verdict.FAIL
    assert judge(404, "", None, 60).verdict is Verdict.FAIL
    assert judge(500, "", None, 60).verdict is Verdict.RETRY
    assert judge(408, "", None, 60).verdict is Verdict.RETRY
    limited = judge(429, "", "12", 60)
    assert (limited.verdict, limited.retry_after) == (Verdict.RETRY, 12.0)
    assert judge(500, "", "12", 60).retry_after is None  # Retry-After counts on 429 and 503 only


def test_every_exception_is_an_outcome_refusals_final_the_rest_retried() -> None:
    refused = aiohttp.ClientConnectorError(
        aiohttp.client_reqrep.ConnectionKey("h", 80, False, True, None, None, None),
        HandlerAddressRefused("h", "10.0.0.1"),
    )
    judged = failure(refused)
    assert judged.verdict is Verdict.FAIL and "10.0.0.1" in (judged.error or "")
    idna = UnicodeError("encoding with 'idna' codec failed (UnicodeError: label empty or too long)")
    for exc in (idna, KeyError("x"), TimeoutError(), aiohttp.InvalidURL("http://[::1/h")):
        judged = failure(exc)
        assert judged.verdict is Verdict.RETRY and judged.error and type(exc).__name__ in judged.error
        assert isinstance(decided(judged), Retry)


# Retry-After and backoff.


def test_retry_after_in_seconds_and_as_a_date_on_a_fake_clock() -> None:
    assert parse_retry_after("30", 3600, NOW) == 30.0
    assert parse_retry_after(" 7200 ", 3600, NOW) == 3600.0  # capped
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    assert parse_retry_after(date, 3600, NOW) == pytest.approx(90.0)
    assert parse_retry_after(email.utils.formatdate(NOW + 45), 3600, NOW) == pytest.approx(45.0)  # "-0000"
    assert parse_retry_after(email.utils.formatdate(NOW - 90, usegmt=True), 3600, NOW) == 0.0  # past: now
    for bad in (None, "", "soon", "-5", "1.5", "٣"):
        assert parse_retry_after(bad, 3600, NOW) is None, bad


def test_backoff_follows_the_schedule_within_the_jitter_bounds() -> None:
    delays = [1.0, 10.0, 100.0]
    assert backoff(2, delays, jitter=no_jitter) == 10.0
    assert backoff(2, delays, jitter=lambda low, high: low) == pytest.approx(8.0)
    assert backoff(2, delays, jitter=lambda low, high: high) == pytest.approx(12.0)
    seeded = random.Random(7)
    waits = [backoff(3, delays, jitter=seeded.uniform) for _ in range(2000)]
    assert all(w is not None and 80.0 <= w <= 120.0 for w in waits)
    assert len({round(w or 0, 3) for w in waits}) > 1000  # spread, not one burst
    assert backoff(4, delays) is None and backoff(0, delays) is None


# Origins.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080/h", "http://127.0.0.1:8080"),
        ("http://u1@127.0.0.1:8080/h", "http://127.0.0.1:8080"),
        ("http://u2:secret@127.0.0.1:8080/other?x=1", "http://127.0.0.1:8080"),
        ("HTTP://Example.COM/h", "http://example.com:80"),
        ("http://example.com:80/h", "http://example.com:80"),
        ("https://example.com/h", "https://example.com:443"),
        ("https://example.com:443", "https://example.com:443"),
        ("https://example.com:8443/", "https://example.com:8443"),
        ("http://[::1]:9000/h", "http://[::1]:9000"),
        ("http://a..b/h", "http://a..b:80"),
    ],
)
def test_origins_are_normalised(url: str, expected: str) -> None:
    assert origin(url) == expected


def test_unparseable_urls_are_their_own_origin() -> None:
    assert origin("http://h:99999/x").startswith("invalid:")
    assert origin("not a url").startswith("invalid:")


# Gates and breakers.


def test_a_gate_admits_up_to_its_limit() -> None:
    gate = HandlerGate(limit=2, failures_to_open=3, cooldown=30.0)
    assert gate.admit(NOW) is None and gate.admit(NOW) is None
    assert gate.admit(NOW) == pytest.approx(NOW + 0.2)
    assert gate.may_wait(NOW)
    gate.release(NOW, handler_failed=False)
    assert gate.admit(NOW) is None


def test_a_claim_leaves_a_gate_alone_once_it_holds_more_jobs_than_call_slots() -> None:
    """Held from the claim on, before any of them asks for a slot: the next claim sees them."""
    gate = HandlerGate(limit=2, failures_to_open=3, cooldown=30.0)
    gate.hold()
    gate.hold()
    assert not gate.blocked(NOW)  # a claim of up to 2 more fills the calls and the waiting room
    gate.hold()
    assert gate.blocked(NOW)
    gate.let_go()
    assert not gate.blocked(NOW)
    gate.let_go()
    gate.let_go()
    gate.let_go()  # never below nothing
    assert gate.held == 0


def test_a_breaker_opens_half_opens_with_one_probe_and_closes() -> None:
    gate = HandlerGate(limit=10, failures_to_open=3, cooldown=30.0)
    for _ in range(3):
        assert gate.admit(NOW) is None
        gate.release(NOW, handler_failed=True)
    assert gate.state(NOW) == "open" and gate.dirty
    assert gate.admit(NOW + 1) == NOW + 30.0  # turned away until the cool-down ends
    assert gate.blocked(NOW + 1) and not gate.may_wait(NOW + 1)
    assert gate.state(NOW + 30) == "half-open"
    assert gate.admit(NOW + 30) is None  # the probe
    assert gate.admit(NOW + 30) is not None  # one probe at a time
    gate.release(NOW + 31, handler_failed=True)  # the probe failed: open again
    assert gate.state(NOW + 32) == "open" and gate.open_until == NOW + 61
    assert gate.admit(NOW + 61) is None
    gate.release(NOW + 61, handler_failed=False)  # the probe succeeded: closed
    assert gate.state(NOW + 61) == "closed" and gate.failures == 0


def test_a_success_resets_the_count_of_failures() -> None:
    gate = HandlerGate(limit=10, failures_to_open=3, cooldown=30.0)
    for failed in (True, True, False, True, True):
        gate.admit(NOW)
        gate.release(NOW, handler_failed=failed)
    assert gate.state(NOW) == "closed"


def test_breakers_are_per_app_on_one_origin() -> None:
    gates = Gates(limit=4, failures_to_open=2, cooldown=30.0)
    a = gates.for_job(1, "http://u1@Provider.test/a", member=11)
    b = gates.for_job(2, "http://provider.test:80/b", member=22)
    assert a is not b
    assert gates.for_job(1, "http://u2@provider.test/other", member=12) is a  # one origin per app
    for _ in range(2):
        a.admit(NOW)
        a.release(NOW, handler_failed=True)
    assert gates.states(NOW) == {(1, "http://provider.test:80"): "open", (2, "http://provider.test:80"): "closed"}
    assert sorted(gates.blocked_members(NOW)) == [11, 12]
    assert b.admit(NOW) is None


def test_breakers_travel_between_processes_as_rows() -> None:
    here = Gates(limit=4, failures_to_open=2, cooldown=30.0)
    there = Gates(limit=4, failures_to_open=2, cooldown=30.0)
    gate = here.for_job(1, "http://p.test/a", member=None)
    for _ in range(2):
        gate.admit(NOW)
        gate.release(NOW, handler_failed=True)
    rows = here.take_dirty()
    assert rows == [BreakerRow(1, "http://p.test:80", 2, NOW + 30.0)] and here.take_dirty() == []
    here.mark_written(rows, version=NOW)
    there.adopt([(row, NOW) for row in rows])  # a process that never called that handler
    assert there.states(NOW + 1) == {(1, "http://p.test:80"): "open"}
    there.adopt([(BreakerRow(1, "http://p.test:80", 0, 0.0), NOW - 5)])  # older: ignored
    assert there.states(NOW + 1) == {(1, "http://p.test:80"): "open"}
    there.adopt([(BreakerRow(1, "http://p.test:80", 0, 0.0), NOW + 2)])  # closed elsewhere later
    assert there.states(NOW + 3) == {(1, "http://p.test:80"): "closed"}
    here.adopt([(rows[0], NOW)])  # its own write: nothing changes
    assert here.states(NOW + 1) == {(1, "http://p.test:80"): "open"}


def test_a_dispatcher_takes_its_share_of_a_handler_limit() -> None:
    assert [concurrency_share(16, n) for n in (0, 1, 2, 3, 16, 40)] == [16, 16, 8, 5, 1, 1]
    gates = Gates(limit=16, failures_to_open=5, cooldown=30.0)
    gate = gates.for_job(1, "http://p.test/", None)
    gates.set_limit(concurrency_share(16, 4))
    assert gate.limit == 4 and gates.limit == 4


def test_breaker_state_is_one_rule() -> None:
    assert breaker_state(4, NOW + 10, 5, NOW) == "closed"
    assert breaker_state(5, NOW + 10, 5, NOW) == "open"
    assert breaker_state(5, NOW - 1, 5, NOW) == "half-open"


def test_a_waiting_job_is_woken_when_a_slot_frees() -> None:
    async def scenario() -> bool:
        gate = HandlerGate(limit=1, failures_to_open=5, cooldown=30.0)
        assert gate.admit(NOW) is None
        waiter = asyncio.create_task(gate.wait_for_slot())
        await asyncio.sleep(0)
        assert gate.waiting == 1
        gate.release(NOW, handler_failed=False)
        await asyncio.wait_for(waiter, 1)
        return gate.admit(NOW) is None

    assert asyncio.run(scenario())


# Fair shares of the dispatcher's slots.


def test_an_app_alone_leaves_a_quarter_free_and_apps_share_equally() -> None:
    assert app_share(64, 0) == app_share(64, 1) == 48
    assert app_share(64, 2) == 32 and app_share(64, 3) == 21 and app_share(64, 100) == 1


def test_apps_at_their_share_are_skipped_by_the_claim() -> None:
    assert apps_at_share({}, 64) == []
    assert apps_at_share({1: 47}, 64) == [] and apps_at_share({1: 48}, 64) == [1]
    assert apps_at_share({1: 40, 2: 3}, 64) == [1]  # two apps: 32 each
    assert apps_at_share({1: 32, 2: 32}, 64) == [1, 2]


def test_a_claim_never_takes_more_than_the_tightest_room() -> None:
    assert claim_room({}, 64) == 48  # whoever comes first may take three quarters
    assert claim_room({1: 40}, 64) == 8  # the oldest work may be app 1's: it has 8 left
    assert claim_room({1: 48}, 64) == 32  # app 1 is skipped; a newcomer would get half
    assert claim_room({1: 30, 2: 1}, 64) == 2
    assert claim_room({1: 32, 2: 32}, 64) == 21
