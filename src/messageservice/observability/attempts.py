"""After the outbox engine wrote a batch of outcomes: count them, and log one line per HANDLER call.

Called only once the write committed, so that the counters and the lines say what the database says
(a batch whose write failed is claimed and tried again, and counted then)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from messageservice.delivery.decision import Decision
from messageservice.delivery.origin import origin
from messageservice.observability.metrics import DELIVERED, attempt_outcome, metrics_for

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.delivery.jobs import Result

log = logging.getLogger("messageservice.delivery")


def recorded(core: Core, kind: str, results: Sequence[Result], decisions: dict[int, Decision]) -> None:
    metrics_for(core).recorded(kind, results, decisions)
    if kind != "handler":
        return  # app events log their own line per attempt (delivery/app_events.py)
    for result in results:
        outcome = attempt_outcome(result, decisions[result.job.key])
        if outcome is None:
            continue
        level = logging.INFO if outcome == DELIVERED else logging.WARNING
        if log.isEnabledFor(level):
            _line(level, result, outcome)


def _line(level: int, result: Result, outcome: str) -> None:
    job, answer = result.job, result.outcome
    sender = job.sender or None
    detail = answer.error or (f"HTTP {answer.http_status}" if answer.http_status is not None else "")
    log.log(
        level,
        "attempt %d of message %s to %s: %s (%s, %.0f ms)",
        job.attempt,
        job.external_id,
        origin(job.url or ""),
        outcome,
        detail,
        result.duration_ms,
        extra={
            "message_id": job.external_id or None,
            "sender": sender,
            "app": sender.partition("|")[0] if sender else None,
            "outcome": outcome,
            "attempt": job.attempt,
            "http_status": answer.http_status,
            "duration_ms": round(result.duration_ms, 3),
            "origin": origin(job.url or ""),
        },
    )
