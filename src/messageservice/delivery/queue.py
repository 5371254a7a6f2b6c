"""The delivery queue in the database: claiming due jobs in batches and recording their outcomes in batches.

A claim moves `next_attempt_at` past a lease and counts the attempt, in one statement for the whole
batch (FOR UPDATE SKIP LOCKED on PostgreSQL, so several workers share the queue). A worker that dies
leaves its jobs to be claimed again when the lease runs out: delivery is at least once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from messageservice.config import Settings
from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.orphans import APP_GONE
from messageservice.core.payload import auth_block, encoded_auth, handler_body_with, stored_message
from messageservice.core.portal import portal_from_row
from messageservice.core.schedules import parse_schedule
from messageservice.core.secrets import SecretBox, hash_secret, new_hex
from messageservice.delivery import claims
from messageservice.delivery.decision import Dead, Decision, Defer, Done, Retry, RetryPolicy
from messageservice.delivery.jobs import Job, Result
from messageservice.observability.metrics import metrics_for
from messageservice.store import writebacks
from messageservice.store.tables import access_tokens, attempts, deliveries, messages, status_reports
from messageservice.store.tables import portal as portal_table

log = logging.getLogger("messageservice.dispatcher")


# A token minted this recently is handed out again: a steady trickle of claims then writes a token
# row a minute per app and author, not one per claim. Such tokens live this much longer, so that the
# `expires_in` a call reports is always true.
TOKEN_REUSE_SECONDS = 60.0
PORTAL_REREAD_SECONDS = 10.0  # the portal's domain and member_id never change; its public URL rarely


@dataclass(frozen=True)
class _Minted:
    token: str
    minted_at: float


@dataclass
class ClaimMemory:
    """What one dispatcher's claims reuse for a short while (updated only after a claim commits)."""

    portal: Any = None
    portal_read_at: float = float("-inf")
    # (app id, author id, the app's encrypted application token: a reinstall starts afresh) -> token
    tokens: dict[tuple[int, int, str | None], _Minted] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # encrypted -> decrypted app secrets

    def fresh_token(self, key: tuple[int, int, str | None], now: float) -> str | None:
        minted = self.tokens.get(key)
        return minted.token if minted is not None and now - minted.minted_at < TOKEN_REUSE_SECONDS else None

    def remember(self, claimed: _Claimed) -> None:
        if claimed.portal_read:
            self.portal, self.portal_read_at = claimed.portal, claimed.now
        if claimed.minted:
            self.tokens = {k: v for k, v in self.tokens.items() if claimed.now - v.minted_at < TOKEN_REUSE_SECONDS}
            self.tokens.update(claimed.minted)
        if len(self.secrets) > 10_000:
            self.secrets.clear()

    def decrypt(self, box: SecretBox, value: str) -> str:
        # The same app's secrets come up for every message; Fernet is not free.
        if value not in self.secrets:
            self.secrets[value] = box.decrypt(value)
        return self.secrets[value]


@dataclass(frozen=True)
class _Claimed:
    now: float
    portal: Any
    portal_read: bool
    attempts: dict[int, Any]  # message id -> (attempts, created_at)
    rows: list[Any]
    tokens: dict[tuple[int, int, str | None], str]  # the token each (app, author, install) gets
    minted: dict[tuple[int, int, str | None], _Minted]  # of those, the ones minted by this claim


async def claim_due(
    core: Core,
    limit: int,
    lease_seconds: float,
    skip_senders: list[int] | None = None,
    memory: ClaimMemory | None = None,
    skip_apps: list[int] | None = None,
) -> list[Job]:
    """Claim up to `limit` due jobs; `skip_senders` are senders whose handler cannot take more now,
    `skip_apps` apps that hold their share of the dispatcher's slots."""
    memory = memory if memory is not None else ClaimMemory()
    now = core.clock()
    skip_senders, skip_apps = skip_senders or [], skip_apps or []
    params: dict[str, Any] = {
        "now": now,
        "limit": limit,
        "lease_until": now + lease_seconds,
        "skip": skip_senders,
        "skip_apps": skip_apps,
    }
    variant = (bool(skip_senders), bool(skip_apps))
    token_expires = now + core.settings.access_token_ttl + TOKEN_REUSE_SECONDS
    portal_read = memory.portal is None or now - memory.portal_read_at > PORTAL_REREAD_SECONDS

    if core.store.features.outbox_statements:
        # One statement claims and returns the jobs' rows; the rare token and portal work follows in a
        # transaction of its own. Should that fail, the claimed jobs wait for their lease to run out, as
        # after a crash (their attempt is counted, none is recorded): at least once, never lost.
        records = await core.store.fetch(claims.JOINED[variant], params)
        if not records:
            return []
        rows = [claims.Fields(record) for record in records]
        attempts = {row.id: claims.Claim(row.claim_attempts, row.claim_created_at) for row in rows}
        tokens, minted = _tokens_for(rows, memory, now)
        portal_row = memory.portal
        if minted or portal_read:

            def rest(conn: Connection) -> Any:
                _insert_tokens(conn, minted, token_expires)
                return conn.execute(_PORTAL).first() if portal_read else memory.portal

            portal_row = await core.writes.run(rest)
        claimed = _Claimed(now, portal_row, portal_read, attempts, rows, tokens, minted)
    else:

        def transaction(conn: Connection) -> _Claimed | None:
            taken = {
                row.message_id: claims.Claim(row.attempts, row.created_at)
                for row in conn.execute(claims.UPDATE[variant], params)
            }
            if not taken:
                return None
            rows = conn.execute(claims.JOB_ROWS, {"ids": list(taken)}).all()
            tokens, minted = _tokens_for(rows, memory, now)
            _insert_tokens(conn, minted, token_expires)
            portal_row = conn.execute(_PORTAL).first() if portal_read else memory.portal
            return _Claimed(now, portal_row, portal_read, taken, rows, tokens, minted)

        found = await core.writes.run(transaction)
        if found is None:
            return []
        claimed = found
    memory.remember(claimed)
    return _jobs(core, claimed, memory)


_TokenKey = tuple[int, int, str | None]


def _tokens_for(rows: Any, memory: ClaimMemory, now: float) -> tuple[dict[_TokenKey, str], dict[_TokenKey, _Minted]]:
    """Each call carries a token minted for its own author, fresh or at most a minute old."""
    tokens: dict[_TokenKey, str] = {}
    minted: dict[_TokenKey, _Minted] = {}
    for row in rows:
        key = (row.app_id, row.author_id, row.application_token_enc)
        if row.handler and row.installed and key not in tokens:
            reused = memory.fresh_token(key, now)
            tokens[key] = reused if reused is not None else new_hex(35)
            if reused is None:
                minted[key] = _Minted(tokens[key], now)
    return tokens, minted


def _insert_tokens(conn: Connection, minted: dict[_TokenKey, _Minted], expires_at: float) -> None:
    if minted:
        conn.execute(
            _INSERT_TOKEN,
            [
                {"token_hash": hash_secret(m.token), "app_id": app_id, "user_id": user_id, "expires_at": expires_at}
                for (app_id, user_id, _), m in minted.items()
            ],
        )


_PORTAL = select(portal_table).where(portal_table.c.id == 1)
_INSERT_TOKEN = insert(access_tokens)


def _jobs(core: Core, claimed: _Claimed, memory: ClaimMemory) -> list[Job]:
    """Build each claimed message's HANDLER call (outside the transaction: it holds no lock)."""
    portal = portal_from_row(claimed.portal, core.settings.public_url)
    expires = int(claimed.now + core.settings.access_token_ttl)

    def decrypt(value: str) -> str:
        return memory.decrypt(core.box, value)

    jobs = []
    auths: dict[tuple[Any, ...], str] = {}
    for row in claimed.rows:
        claim = claimed.attempts[row.id]
        if row.handler is None or not row.installed:
            jobs.append(Job(row.id, row.app_id, claim.attempts, claim.created_at, None, "", label=f"message {row.id}"))
            continue
        try:
            jobs.append(_job(core, claimed, row, claim, decrypt, portal, expires, auths))
        except Exception as exc:
            # Whatever breaks while building the call is this attempt's failure, recorded like any other.
            log.exception("building the HANDLER call of message %d failed", row.id)
            jobs.append(
                Job(
                    row.id,
                    row.app_id,
                    claim.attempts,
                    claim.created_at,
                    row.handler,
                    "",
                    member=row.sender_id,
                    label=f"message {row.id}",
                    error=f"could not build the call: {type(exc).__name__}: {exc}"[:500],
                )
            )
    return jobs


def _job(
    core: Core,
    claimed: _Claimed,
    row: Any,
    claim: Any,
    decrypt: Callable[[str], str],
    portal: Any,
    expires: int,
    auths: dict[tuple[Any, ...], str],
) -> Job:
    # The same author of the same app gets the same auth[...] in every call of a claim: encoded once.
    auth_key = (row.app_id, row.author_id, row.application_token_enc, row.scopes, row.app_status)
    auth = auths.get(auth_key)
    if auth is None:
        block = auth_block(
            portal,
            row,
            access_token=claimed.tokens[(row.app_id, row.author_id, row.application_token_enc)],
            expires=expires,
            expires_in=core.settings.access_token_ttl,
            application_token=decrypt(row.application_token_enc) if row.application_token_enc else "",
        )
        auth = auths[auth_key] = encoded_auth(block)
    message = stored_message(row)
    secret = decrypt(row.signing_secret_enc) if row.signing_secret_enc else None
    body = handler_body_with(message, auth)
    delays = parse_schedule(row.retry_schedule) if row.retry_schedule else None
    return Job(
        row.id,
        row.app_id,
        claim.attempts,
        claim.created_at,
        row.handler,
        body,
        member=row.sender_id,
        external_id=row.message_id,
        signing_secret=secret,
        retry_delays=delays,
        label=f"message {row.id}",
        sender=row.message_from,
    )


def _not_below(new: statuses.Status) -> list[int]:
    """Statuses a dispatcher event (sent, error) must not move a message from: as high as it, or higher."""
    return [s.id for s in statuses.BY_ID.values() if not statuses.moves_forward(s.id, new)]


_SET_DELIVERY = (
    update(deliveries)
    .where(deliveries.c.message_id == bindparam("b_id"), deliveries.c.state == "pending")
    .values(state=bindparam("b_state"), next_attempt_at=bindparam("b_next"), last_error=bindparam("b_error"))
)
# SQLite keeps no planner statistics here and takes `state = 'pending'` for a selective test: beside a list
# of ids it walked ix_deliveries_due over the whole backlog for every batch (two thirds of a server's time
# with 800,000 due). A test on an expression of the column uses no index, so each id is looked up by key.
_STILL_PENDING = deliveries.c.state.concat("") == "pending"
_FINISH = (
    update(deliveries)
    .where(deliveries.c.message_id.in_(bindparam("ids", expanding=True)), _STILL_PENDING)
    .values(state="done", next_attempt_at=bindparam("now"), last_error=None)
)
_UNCOUNT = (
    update(deliveries)
    .where(deliveries.c.message_id.in_(bindparam("ids", expanding=True)))
    .values(attempts=deliveries.c.attempts - 1)
)
_INSERT_ATTEMPTS = insert(attempts)
_INSERT_REPORTS = insert(status_reports)
# Check and move in one statement: a provider's report cannot land between a read and the update.
_MOVE = (
    update(messages)
    .where(
        messages.c.id.in_(bindparam("ids", expanding=True)),
        messages.c.status_id.not_in(bindparam("not_below", expanding=True)),
    )
    .values(status_id=bindparam("b_status"), exec_error=bindparam("b_error"), updated_at=bindparam("b_now"))
    .returning(messages.c.id)
)


async def record(core: Core, results: list[Result], decisions: dict[int, Decision]) -> None:
    """Write a batch of outcomes: attempts, delivery states and message statuses, in one transaction.

    `decisions` maps a message to what happens next. A deferred job was not tried: it gets no
    attempt row and its claim is not counted.
    """
    now = core.clock()
    deferred = [m for m, d in decisions.items() if isinstance(d, Defer)]
    attempt_rows = [
        {
            "message_id": r.job.key,
            "number": r.job.attempt,
            "started_at": r.started_at,
            "duration_ms": r.duration_ms,
            "http_status": r.outcome.http_status,
            "error": r.outcome.error,
            "response_head": r.outcome.response_head,
        }
        for r in results
        if r.job.url is not None and not isinstance(decisions[r.job.key], Defer)
    ]
    finished: list[int] = []  # done without an error to keep: the common case, one statement for all
    delivery_rows = []
    sent: list[int] = []
    errored: dict[int, str] = {}
    for r in results:
        decision = decisions[r.job.key]
        match decision:
            case Done(error=None):
                finished.append(r.job.key)
                sent.append(r.job.key)
            case Done(error=error):
                delivery_rows.append({"b_id": r.job.key, "b_state": "done", "b_next": now, "b_error": error})
                sent.append(r.job.key)
            case Retry(at=at, error=error) | Defer(at=at, reason=error):
                delivery_rows.append({"b_id": r.job.key, "b_state": "pending", "b_next": at, "b_error": error})
            case Dead(reason=reason):
                delivery_rows.append({"b_id": r.job.key, "b_state": "dead", "b_next": now, "b_error": reason})
                errored[r.job.key] = reason or APP_GONE

    if core.store.features.outbox_statements:
        moved = await _write_back_in_one_statement(
            core, attempt_rows, finished, delivery_rows, deferred, sent, errored, now
        )
    else:

        def transaction(conn: Connection) -> list[tuple[int, str]]:
            if attempt_rows:
                conn.execute(_INSERT_ATTEMPTS, attempt_rows)
            if finished:
                conn.execute(_FINISH, {"ids": finished, "now": now})
            if delivery_rows:
                conn.execute(_SET_DELIVERY, delivery_rows)
            if deferred:
                conn.execute(_UNCOUNT, {"ids": deferred})
            return _advance(conn, {m: (statuses.SENT, None) for m in sent}, now) + _advance(
                conn, {m: (statuses.ERROR, e) for m, e in errored.items()}, now
            )

        moved = await core.writes.run(transaction)
    _count_moves(core, results, moved)


def _count_moves(core: Core, results: list[Result], moved: Sequence[tuple[int, str]]) -> None:
    """The status changes a committed write-back made, for the metrics (by sender and status)."""
    if not moved:
        return
    sender_of = {r.job.key: r.job.sender for r in results}
    counts: dict[tuple[str, str], int] = {}
    for message_id, status in moved:
        key = (sender_of.get(message_id) or "", status)
        counts[key] = counts.get(key, 0) + 1
    metrics = metrics_for(core)
    for (sender, status), count in counts.items():
        metrics.status_changed(sender, status, count)


async def _write_back_in_one_statement(
    core: Core,
    attempt_rows: list[dict[str, Any]],
    finished: list[int],
    delivery_rows: list[dict[str, Any]],
    deferred: list[int],
    sent: list[int],
    errored: dict[int, str],
    now: float,
) -> Sequence[tuple[int, str]]:
    """`record`'s transaction as one statement (store/writebacks.py): the messages that moved."""
    uncounted = set(deferred)
    jobs = [
        {"message_id": m, "state": "done", "next_attempt_at": now, "last_error": None, "uncount": 0} for m in finished
    ] + [
        {
            "message_id": row["b_id"],
            "state": row["b_state"],
            "next_attempt_at": row["b_next"],
            "last_error": row["b_error"],
            "uncount": 1 if row["b_id"] in uncounted else 0,
        }
        for row in delivery_rows
    ]
    arguments = writebacks.arguments(
        attempt_rows,
        jobs,
        now=now,
        sent_ids=sent,
        sent_id=statuses.SENT.id,
        sent_name=statuses.SENT.name,
        sent_not_from=_not_below(statuses.SENT),
        error_ids=list(errored),
        error_texts=list(errored.values()),
        error_id=statuses.ERROR.id,
        error_name=statuses.ERROR.name,
        error_not_from=_not_below(statuses.ERROR),
    )
    return [(row[0], row[1]) for row in await core.store.write_back(arguments)]


class HandlerOutbox:
    """HANDLER calls of sent messages: the `deliveries` queue."""

    kind = "handler"
    table: Table = deliveries
    listens = True  # woken by sends, here and (NOTIFY) elsewhere
    gone_reason = APP_GONE

    def __init__(self) -> None:
        self._memory = ClaimMemory()

    def policy(self, settings: Settings) -> RetryPolicy:
        return RetryPolicy(
            tuple(settings.retry_delays), settings.retry_max_age_seconds, strict=settings.delivery_profile == "strict"
        )

    def timeout(self, settings: Settings) -> float:
        return settings.handler_timeout_seconds

    def sweep_seconds(self, settings: Settings) -> float:
        return settings.dispatch_sweep_seconds

    async def claim(
        self, core: Core, limit: int, lease: float, skip_members: list[int], skip_apps: list[int]
    ) -> list[Job]:
        return await claim_due(core, limit, lease, skip_members, self._memory, skip_apps)

    async def record(self, core: Core, results: list[Result], decisions: dict[int, Decision]) -> None:
        await record(core, results, decisions)


def _advance(
    conn: Connection, changes: dict[int, tuple[statuses.Status, str | None]], now: float
) -> list[tuple[int, str]]:
    """Move messages forward (never back) and note each move in their status history: the moves made."""
    if not changes:
        return []
    # One UPDATE per (status, error): an IN list cannot be part of an executemany.
    groups: dict[tuple[statuses.Status, str | None], list[int]] = {}
    for m, change in changes.items():
        groups.setdefault(change, []).append(m)
    moving: list[int] = []
    for (status, error), group in groups.items():
        params = {"ids": group, "not_below": _not_below(status), "b_status": status.id, "b_error": error, "b_now": now}
        moving += [row.id for row in conn.execute(_MOVE, params)]
    if not moving:
        return []
    conn.execute(
        _INSERT_REPORTS,
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
    return [(m, changes[m][0].name) for m in moving]
