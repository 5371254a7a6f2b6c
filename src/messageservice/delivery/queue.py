"""The delivery queue in the database: claiming due jobs in batches and recording their outcomes in batches.

A claim moves `next_attempt_at` past a lease and counts the attempt, in one statement for the whole
batch (FOR UPDATE SKIP LOCKED on PostgreSQL, so several workers share the queue). A worker that dies
leaves its jobs to be claimed again when the lease runs out: delivery is at least once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, update

from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.orphans import APP_GONE
from messageservice.core.portal import portal_from_row
from messageservice.core.secrets import hash_secret, new_hex
from messageservice.delivery.payload import HandlerMessage, handler_body
from messageservice.delivery.retry import Outcome
from messageservice.store.tables import access_tokens, apps, attempts, deliveries, messages, senders, status_reports
from messageservice.store.tables import portal as portal_table


@dataclass(frozen=True)
class Job:
    message_id: int  # the internal id
    attempt: int  # 1-based number of this attempt
    queued_at: float
    handler: str | None  # None: the sender or its app is gone
    body: str
    sender_id: int | None = None
    external_id: str = ""  # the 32-hex message_id: Standard Webhooks' webhook-id
    signing_secret: str | None = None


@dataclass(frozen=True)
class Result:
    job: Job
    outcome: Outcome
    started_at: float
    duration_ms: float


@dataclass(frozen=True)
class _Claimed:
    portal: Any
    attempts: dict[int, Any]  # message id -> (attempts, created_at)
    rows: list[Any]
    tokens: dict[tuple[int, int], str]  # (app id, author id) -> the access token minted for them
    expires: int


async def claim_due(core: Core, limit: int, lease_seconds: float, skip_senders: list[int] | None = None) -> list[Job]:
    """Claim up to `limit` due jobs; `skip_senders` are senders whose handler cannot take more now."""
    now = core.clock()
    due = (
        select(deliveries.c.message_id)
        .where(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if skip_senders:
        # NULL NOT IN (...) is never true: a message whose sender is gone must still be claimed (to fail).
        due = due.join(messages, messages.c.id == deliveries.c.message_id).where(
            or_(messages.c.sender_id.is_(None), messages.c.sender_id.not_in(skip_senders))
        )
    if core.engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    claim = (
        update(deliveries)
        .where(deliveries.c.message_id.in_(due.scalar_subquery()))
        .values(next_attempt_at=now + lease_seconds, attempts=deliveries.c.attempts + 1)
        .returning(deliveries.c.message_id, deliveries.c.attempts, deliveries.c.created_at)
    )
    expires = int(now + core.settings.access_token_ttl)

    def transaction(conn: Connection) -> _Claimed | None:
        claimed = {row.message_id: row for row in conn.execute(claim)}
        if not claimed:
            return None
        rows = conn.execute(_JOB_ROWS, {"ids": list(claimed)}).all()
        # One fresh token per app and author in a claim: each call still carries a token minted for
        # its own author, and a claim of a hundred messages writes a row or two instead of a hundred.
        tokens = {(row.app_id, row.author_id): new_hex(35) for row in rows if row.handler and row.installed}
        if tokens:
            conn.execute(
                insert(access_tokens),
                [
                    {"token_hash": hash_secret(token), "app_id": app_id, "user_id": user_id, "expires_at": expires}
                    for (app_id, user_id), token in tokens.items()
                ],
            )
        portal_row = conn.execute(_PORTAL).first()
        return _Claimed(portal_row, claimed, rows, tokens, expires)

    claimed = await core.writes.run(transaction)
    return [] if claimed is None else _jobs(core, claimed)


_JOB_ROWS = (
    select(
        messages,
        senders.c.type.label("sender_type"),
        senders.c.handler,
        apps.c.scopes,
        apps.c.status.label("app_status"),
        apps.c.installed,
        apps.c.application_token_enc,
        apps.c.signing_secret_enc,
    )
    .outerjoin(senders, senders.c.id == messages.c.sender_id)
    .join(apps, apps.c.id == messages.c.app_id)
    .where(messages.c.id.in_(bindparam("ids", expanding=True)))
)
_PORTAL = select(portal_table).where(portal_table.c.id == 1)


def _jobs(core: Core, claimed: _Claimed) -> list[Job]:
    """Build each claimed message's HANDLER call (outside the transaction: it holds no lock)."""
    portal = portal_from_row(claimed.portal, core.settings.public_url)
    decrypted: dict[str, str] = {}

    def decrypt(value: str) -> str:
        # The same app's secrets come up for every message of a claim; Fernet is not free.
        if value not in decrypted:
            decrypted[value] = core.box.decrypt(value)
        return decrypted[value]

    jobs = []
    for row in claimed.rows:
        claim = claimed.attempts[row.id]
        if row.handler is None or not row.installed:
            jobs.append(Job(row.id, claim.attempts, claim.created_at, None, ""))
            continue
        auth = {
            "access_token": claimed.tokens[(row.app_id, row.author_id)],
            "expires": claimed.expires,
            "expires_in": core.settings.access_token_ttl,
            "scope": row.scopes,
            "domain": portal.domain,
            "server_endpoint": portal.client_endpoint,
            "status": row.app_status,
            "client_endpoint": portal.client_endpoint,
            "member_id": portal.member_id,
            "user_id": row.author_id,
            "application_token": decrypt(row.application_token_enc) if row.application_token_enc else "",
        }
        message = HandlerMessage(
            module_id=row.module_id,
            headers=json.loads(row.headers),
            sender_type=row.sender_type,
            sender_code=row.sender_code,
            message_id=row.message_id,
            message_to=row.message_to,
            message_body=row.message_body,
            ts=int(row.created_at),
        )
        secret = decrypt(row.signing_secret_enc) if row.signing_secret_enc else None
        body = handler_body(message, auth)
        jobs.append(
            Job(row.id, claim.attempts, claim.created_at, row.handler, body, row.sender_id, row.message_id, secret)
        )
    return jobs


# Statuses a dispatcher event may still move forward from (the message's rank is below the new one).
def _below(rank: int) -> list[int]:
    return [s.id for s in statuses.BY_ID.values() if s.rank < rank]


_SET_DELIVERY = (
    update(deliveries)
    .where(deliveries.c.message_id == bindparam("b_id"), deliveries.c.state == "pending")
    .values(state=bindparam("b_state"), next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error"))
)


async def record(core: Core, results: list[Result], decisions: dict[int, tuple[str, float | None, str | None]]) -> None:
    """Write a batch of outcomes: attempts, delivery states and message statuses, in one transaction.

    `decisions` maps a message to ("done" | "retry" | "defer" | "dead", next attempt time or None,
    error to keep). A deferred job was not tried: it gets no attempt row and its claim is not counted.
    """
    now = core.clock()
    deferred = [m for m, d in decisions.items() if d[0] == "defer"]
    attempt_rows = [
        {
            "message_id": r.job.message_id,
            "number": r.job.attempt,
            "started_at": r.started_at,
            "duration_ms": r.duration_ms,
            "http_status": r.outcome.http_status,
            "error": r.outcome.error,
            "response_head": r.outcome.response_head,
        }
        for r in results
        if r.job.handler is not None and decisions[r.job.message_id][0] != "defer"
    ]
    finished: list[int] = []  # done without an error to keep: the common case, one statement for all
    delivery_rows = []
    sent: list[int] = []
    errored: dict[int, str] = {}
    for r in results:
        state, next_at, error = decisions[r.job.message_id]
        if state == "done" and error is None:
            finished.append(r.job.message_id)
        else:
            delivery_rows.append(
                {
                    "b_id": r.job.message_id,
                    "b_state": "pending" if state in ("retry", "defer") else state,
                    "b_next": next_at if next_at is not None else now,
                    "b_error": error,
                }
            )
        if state == "done":
            sent.append(r.job.message_id)
        elif state == "dead":
            errored[r.job.message_id] = error or APP_GONE

    def transaction(conn: Connection) -> None:
        if attempt_rows:
            conn.execute(insert(attempts), attempt_rows)
        if finished:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id.in_(finished), deliveries.c.state == "pending")
                .values(state="done", next_attempt_at=now, last_error=None)
            )
        if delivery_rows:
            conn.execute(_SET_DELIVERY, delivery_rows)
        if deferred:
            conn.execute(
                update(deliveries)
                .where(deliveries.c.message_id.in_(deferred))
                .values(attempts=deliveries.c.attempts - 1)
            )
        _advance(conn, {m: (statuses.SENT, None) for m in sent}, now)
        _advance(conn, {m: (statuses.ERROR, e) for m, e in errored.items()}, now)

    await core.writes.run(transaction)


def _advance(conn: Connection, changes: dict[int, tuple[statuses.Status, str | None]], now: float) -> None:
    """Move messages forward (never back) and note each move in their status history."""
    if not changes:
        return
    ids = list(changes)
    # Locked, so that a provider's report cannot land between this read and the update below.
    query = select(messages.c.id, messages.c.status_id).where(messages.c.id.in_(ids)).with_for_update()
    current: dict[int, int] = {row.id: row.status_id for row in conn.execute(query)}
    moving = [m for m in ids if m in current and statuses.moves_forward(current[m], changes[m][0])]
    if not moving:
        return
    # One UPDATE per (status, error): an IN list cannot be part of an executemany.
    groups: dict[tuple[int, str | None], list[int]] = {}
    for m in moving:
        groups.setdefault((changes[m][0].id, changes[m][1]), []).append(m)
    for (status_id, error), group in groups.items():
        conn.execute(
            update(messages)
            .where(messages.c.id.in_(group), messages.c.status_id.in_(_below(statuses.ERROR.rank)))
            .values(status_id=status_id, exec_error=error, updated_at=now)
        )
    conn.execute(
        insert(status_reports),
        [
            {
                "message_id": m,
                "status": changes[m][0].name,
                "status_id": changes[m][0].id,
                "applied": True,
                "reporter_user_id": None,
                "reporter_app_id": None,
                "reported_at": now,
            }
            for m in moving
        ],
    )
