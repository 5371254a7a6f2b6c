"""What an attempt's answer means for the message: done, try again (and when), or give up."""

from __future__ import annotations

import datetime
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    DELIVERED = "delivered"  # the handler took it (2xx)
    RETRY = "retry"  # worth another attempt
    FAIL = "fail"  # the handler refused it for good (4xx) or it may not be sent (SSRF)
    DEFER = "defer"  # not tried: the handler is busy or its breaker is open; not an attempt


@dataclass(frozen=True)
class Outcome:
    verdict: Verdict
    http_status: int | None
    error: str | None
    response_head: str | None
    retry_after: float | None = None  # seconds the answer (Retry-After) or the gate asks us to wait


# Client errors that say "later", not "never".
TRANSIENT_4XX = frozenset({408, 425, 429})


def judge(
    status: int, response_head: str, retry_after_header: str | None, cap: float, now: float | None = None
) -> Outcome:
    if 200 <= status < 300:
        return Outcome(Verdict.DELIVERED, status, None, response_head)
    wait = parse_retry_after(retry_after_header, cap, now) if status in (429, 503) else None
    if 300 <= status < 400:
        # A failed attempt, retried, never followed: the target could be anywhere (as Svix and Stripe do).
        return Outcome(Verdict.RETRY, status, f"HTTP {status} (redirects are not followed)", response_head)
    if status >= 500 or status in TRANSIENT_4XX or status < 200:
        return Outcome(Verdict.RETRY, status, f"HTTP {status}", response_head, wait)
    # Other 4xx: the handler refused it for good.
    return Outcome(Verdict.FAIL, status, f"HTTP {status}", response_head)


def parse_retry_after(value: str | None, cap: float, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent or bad.

    `now` (Unix seconds) is what an HTTP date is measured from; the wall clock unless given."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), cap)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000" dates parse naive: they are UTC all the same
        moment = moment.replace(tzinfo=datetime.UTC)
    now = time.time() if now is None else now
    return min(max(0.0, moment.timestamp() - now), cap)


JITTER = 0.2
# Our own generator: the process-wide `random` state stays the embedding program's (a test seeding it,
# Hypothesis checking that nothing else draws from it while a server runs in one of its threads).
draw_jitter = random.Random().uniform


def backoff(attempt: int, delays: list[float], jitter: Callable[[float, float], float] = draw_jitter) -> float | None:
    """The wait after failed attempt number `attempt` (1-based), with +-20% jitter; None when out of tries.

    `jitter(a, b)` draws the factor's offset (uniformly; tests pass a fixed one)."""
    if attempt < 1 or attempt > len(delays):
        return None
    base = delays[attempt - 1]
    # Jitter spreads the retries of a handler's many failed messages, so they do not return in one burst.
    return max(0.0, base * (1 + jitter(-JITTER, JITTER)))
