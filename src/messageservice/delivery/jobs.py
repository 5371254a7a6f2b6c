"""The outbox's units of work, whichever queue they come from (HANDLER deliveries, app events)."""

from __future__ import annotations

from dataclasses import dataclass

from messageservice.delivery.retry import Outcome


@dataclass(frozen=True)
class Job:
    key: int  # the row's id in its queue: a message's internal id, an app event's id
    app_id: int
    attempt: int  # 1-based number of this attempt (counted when it was claimed)
    queued_at: float
    url: str | None  # where to POST; None: nowhere any more (the sender or its app is gone)
    body: str
    member: int | None = None  # what the claim skips while the job's gate is blocked (sender id, app id)
    external_id: str = ""  # the 32-hex message_id: Standard Webhooks' webhook-id
    signing_secret: str | None = None
    retry_delays: list[float] | None = None  # the sender's own schedule; None: the queue's
    label: str = ""  # for the logs: "ONAPPINSTALL", "message 1234"
    sender: str = ""  # for the logs: the message's "client_id|CODE"
    error: str | None = None  # the call could not be built: this attempt fails with it, unsent


@dataclass(frozen=True)
class Result:
    job: Job
    outcome: Outcome
    started_at: float
    duration_ms: float
