"""The statements that claim due HANDLER calls: move them past a lease, count the attempt, and return
what the calls are built from.

Two shapes of one claim, chosen by the store's features:
* `UPDATE[variant]` then `JOB_ROWS` in one transaction (SQLite: its single writer serialises claims);
* `JOINED[variant]`: one statement on the bare driver, the UPDATE in a CTE joined with the jobs' rows
  (PostgreSQL, FOR UPDATE SKIP LOCKED so that workers share the queue). One round trip, no ORM.

A variant is (skipping senders, skipping apps): senders whose handler gate is blocked, and apps that
hold their share of the dispatcher's slots (delivery/fairness.py). Each is built once: building a
statement per claim (and its cache key) cost more than running it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sqlalchemy import ARRAY, Integer, Select, all_, bindparam, or_, select, update

from messageservice.store.tables import apps, deliveries, messages, senders

Variant = tuple[bool, bool]
VARIANTS: tuple[Variant, ...] = ((False, False), (False, True), (True, False), (True, True))


class Claim(NamedTuple):
    attempts: int  # this attempt's number
    created_at: float  # when the job was queued


class Fields:
    """Attribute access to a driver record (asyncpg's Record is a mapping), as SQLAlchemy rows give."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        try:
            return self._record[name]
        except KeyError:
            raise AttributeError(name) from None


# What a HANDLER call is built from: the message, its sender and its app.
JOB_COLUMNS = (
    messages,
    senders.c.type.label("sender_type"),
    senders.c.handler,
    senders.c.retry_schedule,
    apps.c.scopes,
    apps.c.status.label("app_status"),
    apps.c.installed,
    apps.c.application_token_enc,
    apps.c.signing_secret_enc,
)

JOB_ROWS = (
    select(*JOB_COLUMNS)
    .outerjoin(senders, senders.c.id == messages.c.sender_id)
    .join(apps, apps.c.id == messages.c.app_id)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
)


def _due(skipping: bool, skipping_apps: bool, *, arrays: bool) -> Select[Any]:
    """The due jobs a claim takes, oldest due first. `arrays`: skip lists as array parameters (one
    statement compiled once for the bare driver) rather than expanding IN lists."""
    due = (
        select(deliveries.c.message_id)
        .where(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= bindparam("now"))
        .order_by(deliveries.c.next_attempt_at)
        .limit(bindparam("limit"))
    )
    if skipping or skipping_apps:
        due = due.join(messages, messages.c.id == deliveries.c.message_id)
    if skipping:
        skip = (
            messages.c.sender_id != all_(bindparam("skip", type_=ARRAY(Integer)))
            if arrays
            else (messages.c.sender_id.not_in(bindparam("skip", expanding=True)))
        )
        # NULL NOT IN (...) is never true: a message whose sender is gone must still be claimed (to fail).
        due = due.where(or_(messages.c.sender_id.is_(None), skip))
    if skipping_apps:
        due = due.where(
            messages.c.app_id != all_(bindparam("skip_apps", type_=ARRAY(Integer)))
            if arrays
            else messages.c.app_id.not_in(bindparam("skip_apps", expanding=True))
        )
    return due


def _update(skipping: bool, skipping_apps: bool) -> Any:
    """Claim (serial: the caller holds the only writer) and return (message_id, attempts, created_at)."""
    due = _due(skipping, skipping_apps, arrays=False)
    return (
        update(deliveries)
        .where(deliveries.c.message_id.in_(due.scalar_subquery()))
        .values(next_attempt_at=bindparam("lease_until"), attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.message_id, deliveries.c.attempts, deliveries.c.created_at)
    )


def _joined(skipping: bool, skipping_apps: bool) -> Select[Any]:
    """Claim with FOR UPDATE SKIP LOCKED and return the jobs' rows, with `claim_attempts` and
    `claim_created_at`, in one statement."""
    due = _due(skipping, skipping_apps, arrays=True).with_for_update(of=deliveries, skip_locked=True).cte("due")
    claimed = (
        update(deliveries)
        .where(deliveries.c.message_id == due.c.message_id)
        .values(next_attempt_at=bindparam("lease_until"), attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.message_id, deliveries.c.attempts, deliveries.c.created_at)
        .cte("claimed")
    )
    return (
        select(claimed.c.attempts.label("claim_attempts"), claimed.c.created_at.label("claim_created_at"), *JOB_COLUMNS)
        .select_from(claimed)
        .join(messages, messages.c.id == claimed.c.message_id)
        .outerjoin(senders, senders.c.id == messages.c.sender_id)
        .join(apps, apps.c.id == messages.c.app_id)
    )


UPDATE = {variant: _update(*variant) for variant in VARIANTS}
JOINED = {variant: _joined(*variant) for variant in VARIANTS}
