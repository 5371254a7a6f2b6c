"""What to do with a job after an attempt: typed decisions, and the pure rule that picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from messageservice.delivery.retry import Outcome, Verdict, backoff, draw_jitter


@dataclass(frozen=True)
class Done:
    """Delivered (or, in the strict profile, posted once); `error` is kept when the answer was a failure."""

    error: str | None = None


@dataclass(frozen=True)
class Retry:
    """A failed attempt: try again at `at` (Unix seconds)."""

    at: float
    error: str


@dataclass(frozen=True)
class Defer:
    """Not tried (busy handler, open breaker): ask again at `at`; not counted as an attempt."""

    at: float
    reason: str


@dataclass(frozen=True)
class Dead:
    """Given up: a dead letter, with why."""

    reason: str


Decision = Done | Retry | Defer | Dead


@dataclass(frozen=True)
class RetryPolicy:
    delays: tuple[float, ...]  # the wait after attempt 1, 2, ...; their count + 1 is the attempt limit
    max_age: float = float("inf")  # no retry later than this many seconds after the job was queued
    strict: bool = False  # Bitrix24's own profile: one attempt, the answer ignored


def decide(
    outcome: Outcome,
    *,
    attempt: int,
    queued_at: float,
    policy: RetryPolicy,
    now: float,
    gone: str | None = None,
    jitter: Callable[[float, float], float] = draw_jitter,
) -> Decision:
    """`gone`: the job has nowhere to go any more (its sender or app was removed): why."""
    if gone is not None:
        return Dead(gone)
    if outcome.verdict is Verdict.DEFER:
        wait = outcome.retry_after if outcome.retry_after is not None else 0.0
        return Defer(now + wait, outcome.error or "deferred")
    if policy.strict:
        return Done(outcome.error)
    if outcome.verdict is Verdict.DELIVERED:
        return Done()
    error = outcome.error or "failed"
    if outcome.verdict is Verdict.FAIL:
        return Dead(error)
    delay = outcome.retry_after
    if delay is None:
        delay = backoff(attempt, list(policy.delays), jitter=jitter)
    if delay is None or now + delay - queued_at > policy.max_age:
        return Dead(f"{error} (gave up after {attempt} attempts)")
    return Retry(now + delay, error)
