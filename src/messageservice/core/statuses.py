"""Bitrix's message statuses (spec 4.1, 4.2) and the forward-only order we keep them in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Status:
    id: int
    name: str
    description: str  # English text, as messageservice.message.status.get answers it
    semantic: str  # process | success | failure: the colour the CRM timeline shows
    rank: int  # the current status only moves to a higher rank


# The rank of the end states is shared: once delivered, undelivered, failed or errored, a message stays.
PENDING = Status(0, "pending", "sending now", "process", 0)
ERROR = Status(1, "error", "error", "failure", 3)
EXCEPTION = Status(2, "exception", "system error", "failure", 3)
DEFERRED = Status(3, "deferred", "deferred", "process", 0)
ACCEPTED = Status(10, "accepted", "sending now", "process", 1)
QUEUED = Status(11, "queued", "sending now", "process", 1)
SENDING = Status(12, "sending", "sending now", "process", 1)
SENT = Status(13, "sent", "sent", "success", 2)
DELIVERED = Status(14, "delivered", "delivered", "success", 3)
UNDELIVERED = Status(15, "undelivered", "not delivered", "failure", 3)
FAILED = Status(16, "failed", "delivery error", "failure", 3)
READ = Status(17, "read", "read", "success", 3)
UNKNOWN = Status(64, "unknown", "sending now", "process", 0)

BY_ID = {
    s.id: s
    for s in (
        PENDING,
        ERROR,
        EXCEPTION,
        DEFERRED,
        ACCEPTED,
        QUEUED,
        SENDING,
        SENT,
        DELIVERED,
        UNDELIVERED,
        FAILED,
        READ,
        UNKNOWN,
    )
}
# What status.update accepts: exactly these, case-sensitive (Sender\Sms\Rest::resolveStatus).
REPORTABLE = {"queued": QUEUED, "sent": SENT, "delivered": DELIVERED, "undelivered": UNDELIVERED, "failed": FAILED}


def by_id(status_id: int) -> Status | None:
    return BY_ID.get(status_id)


def moves_forward(current_id: int, new: Status) -> bool:
    """Whether a report changes the current status: only to a higher rank.

    The dispatcher's own ERROR (all attempts failed) yields to a provider's end state: a provider
    that says delivered has the message, whatever our last attempt saw.
    """
    current = BY_ID.get(current_id, UNKNOWN)
    if current.id == ERROR.id and new.rank == 3 and new.id != ERROR.id:
        return True
    return new.rank > current.rank
