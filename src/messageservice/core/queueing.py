"""Committing validated sends, many at a time: each message with its delivery job and first history entry.

Sends are grouped (store/group_commit.py) and each group is queued in one transaction:
* generic (SQLite): a few statements through SQLAlchemy in the writer thread;
* PostgreSQL: one statement (data-modifying CTEs, atomic on its own) on a bare asyncpg connection.
  A group then costs one round trip instead of seven; with the SQLAlchemy transaction a group of
  twenty took 10-16 ms on the wire, and single sends queued up behind it.
Both answer the same: per send, the queued message, the message an IDEMPOTENCY_KEY already names,
or ERROR_SENDER_NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from messageservice.core import statuses
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.delivery.wakeups import CHANNEL, announce
from messageservice.store.tables import apps, deliveries, messages, senders, status_reports


@dataclass(frozen=True)
class Draft:
    """A validated send: the message row's values (without app and sender) and who reports it."""

    values: dict[str, Any]
    reporter_app_id: int | None

    @property
    def idempotency(self) -> tuple[str, str] | None:
        key = self.values["idempotency_key"]
        return (self.values["idempotency_scope"], key) if key else None


@dataclass(frozen=True)
class Queued:
    id: int
    message_id: str
    status_id: int


def _sender_not_found() -> CoreError:
    return CoreError("ERROR_SENDER_NOT_FOUND", "Sender not found!")


async def queue(core: Core, draft: Draft) -> Queued:
    """Queue one send in the next group; returns once its group has committed."""

    async def work(drafts: Sequence[Draft]) -> list[Queued | CoreError]:
        if core.direct is not None:
            return await _queue_on_postgres(core, drafts)
        return await core.writes.run(lambda conn: queue_drafts(conn, drafts))

    result: Queued = await core.group_commit.submit("sends", work, draft)
    return result


# Built once, executed with parameters: building a statement per send cost more than SQLite's work.
_SENDER = (
    select(senders.c.id, senders.c.app_id, senders.c.code)
    .join(apps, apps.c.id == senders.c.app_id)
    .where(apps.c.client_id == bindparam("client_id"), senders.c.code == bindparam("code"), apps.c.installed)
)
# sort_by_parameter_order: one multi-row INSERT for a group, its ids matched to the rows sent.
_INSERT_MESSAGE = insert(messages).returning(messages.c.id, messages.c.message_id, sort_by_parameter_order=True)
_INSERT_DELIVERY = insert(deliveries)
_INSERT_REPORT = insert(status_reports)
_BY_IDEMPOTENCY = select(
    messages.c.id, messages.c.message_id, messages.c.status_id, messages.c.idempotency_scope, messages.c.idempotency_key
).where(
    messages.c.idempotency_scope.in_(bindparam("scopes", expanding=True)),
    messages.c.idempotency_key.in_(bindparam("keys", expanding=True)),
)


def _known(conn: Connection, drafts: Sequence[Draft]) -> dict[tuple[str, str], Queued]:
    keyed = {d.idempotency for d in drafts if d.idempotency is not None}
    if not keyed:
        return {}
    rows = conn.execute(_BY_IDEMPOTENCY, {"scopes": list({s for s, _ in keyed}), "keys": [k for _, k in keyed]})
    return {(r.idempotency_scope, r.idempotency_key): Queued(r.id, r.message_id, r.status_id) for r in rows}


def queue_drafts(conn: Connection, drafts: Sequence[Draft]) -> list[Queued | CoreError]:
    """Queue many sends in one transaction (any engine)."""
    results: list[Queued | CoreError | None] = [None] * len(drafts)
    # An IDEMPOTENCY_KEY already used (or used twice in this group) answers with the first message.
    known = _known(conn, drafts)
    sender_rows: dict[str, Any] = {}
    fresh: list[tuple[int, dict[str, Any]]] = []
    claimed: dict[tuple[str, str], int] = {}
    for index, draft in enumerate(drafts):
        key = draft.idempotency
        if key is not None and (key in known or key in claimed):
            continue  # answered below, once the first one has its id
        message_from = draft.values["message_from"]
        if message_from not in sender_rows:
            client_id, _, code = message_from.partition("|")
            sender_rows[message_from] = conn.execute(_SENDER, {"client_id": client_id, "code": code}).first()
        sender = sender_rows[message_from]
        if sender is None:
            results[index] = _sender_not_found()
            continue
        if key is not None:
            claimed[key] = index
        row = {"app_id": sender.app_id, "sender_id": sender.id, "sender_code": sender.code, **draft.values}
        fresh.append((index, row))
    if fresh:
        inserted = conn.execute(_INSERT_MESSAGE, [row for _, row in fresh]).all()
        for (index, _), row in zip(fresh, inserted, strict=True):
            results[index] = Queued(row.id, row.message_id, statuses.PENDING.id)
        conn.execute(
            _INSERT_DELIVERY,
            [
                {
                    "message_id": row.id,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": values["created_at"],
                    "created_at": values["created_at"],
                }
                for (_, values), row in zip(fresh, inserted, strict=True)
            ],
        )
        conn.execute(
            _INSERT_REPORT,
            [
                {
                    "message_id": row.id,
                    "status": statuses.PENDING.name,
                    "status_id": statuses.PENDING.id,
                    "applied": True,
                    "reporter_user_id": values["author_id"],
                    "reporter_app_id": drafts[index].reporter_app_id,
                    "reported_at": values["created_at"],
                }
                for (index, values), row in zip(fresh, inserted, strict=True)
            ],
        )
        announce(conn)
    for index, draft in enumerate(drafts):
        if results[index] is None:
            key = draft.idempotency
            assert key is not None
            results[index] = known.get(key) or results[claimed[key]]
    return [result for result in results if result is not None]


# The input arrives as one array per column; the sender is resolved like _SENDER (client_id before
# the first "|", CODE after it). A row whose IDEMPOTENCY_KEY is taken (before or earlier in this
# statement) is skipped by ON CONFLICT and looked up afterwards. NOTIFY is sent on commit, only if
# something was queued. Column names come from store/tables.py; tests/test_migrations.py keeps
# the schema and tables.py equal.
_QUEUE_SQL = f"""
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::text[],
        $8::text[], $9::text[], $10::double precision[], $11::integer[]
    ) WITH ORDINALITY AS t(message_id, message_from, author_id, module_id, headers, message_to, message_body,
                           idempotency_scope, idempotency_key, created_at, reporter_app_id, position)
),
queued AS (
    INSERT INTO messages (message_id, app_id, sender_id, sender_code, message_from, author_id, module_id,
                          headers, message_to, message_body, status_id, idempotency_scope, idempotency_key,
                          created_at, updated_at)
    SELECT i.message_id, s.app_id, s.id, s.code, i.message_from, i.author_id, i.module_id,
           i.headers, i.message_to, i.message_body, $12, i.idempotency_scope, i.idempotency_key,
           i.created_at, i.created_at
    FROM input i
    JOIN apps a ON a.client_id = split_part(i.message_from, '|', 1) AND a.installed
    JOIN senders s ON s.app_id = a.id AND s.code = substr(i.message_from, strpos(i.message_from, '|') + 1)
    ORDER BY i.position  -- ids are drawn in this order: they follow the sends, as sequential ones would
    ON CONFLICT DO NOTHING
    RETURNING id, message_id, author_id, created_at
),
jobs AS (
    INSERT INTO deliveries (message_id, state, attempts, next_attempt_at, created_at)
    SELECT id, 'pending', 0, created_at, created_at FROM queued
),
history AS (
    INSERT INTO status_reports (message_id, status, status_id, applied, reporter_user_id, reporter_app_id,
                                reported_at)
    SELECT q.id, $13, $12, true, q.author_id, i.reporter_app_id, q.created_at
    FROM queued q JOIN input i ON i.message_id = q.message_id
),
announced AS (
    SELECT pg_notify('{CHANNEL}', '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued
)
SELECT q.id, q.message_id, (SELECT count(*) FROM announced) AS announced FROM queued q
"""

_COLUMNS = (
    "message_id",
    "message_from",
    "author_id",
    "module_id",
    "headers",
    "message_to",
    "message_body",
    "idempotency_scope",
    "idempotency_key",
    "created_at",
)

_KNOWN_SQL = """
SELECT id, message_id, status_id, idempotency_scope, idempotency_key FROM messages
WHERE (idempotency_scope, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
"""


async def _queue_on_postgres(core: Core, drafts: Sequence[Draft]) -> list[Queued | CoreError]:
    assert core.direct is not None
    columns: list[list[Any]] = [[d.values[name] for d in drafts] for name in _COLUMNS]
    columns.append([d.reporter_app_id for d in drafts])
    rows = await core.direct.fetch_sql(_QUEUE_SQL, *columns, statuses.PENDING.id, statuses.PENDING.name)
    inserted = {row["message_id"]: Queued(row["id"], row["message_id"], statuses.PENDING.id) for row in rows}
    missing = [d.idempotency for d in drafts if d.values["message_id"] not in inserted and d.idempotency]
    known: dict[tuple[str, str], Queued] = {}
    if missing:
        found = await core.direct.fetch_sql(_KNOWN_SQL, [s for s, _ in missing], [k for _, k in missing])
        known = {
            (r["idempotency_scope"], r["idempotency_key"]): Queued(r["id"], r["message_id"], r["status_id"])
            for r in found
        }
    results: list[Queued | CoreError] = []
    for draft in drafts:
        queued = inserted.get(draft.values["message_id"])
        if queued is None and draft.idempotency is not None:
            queued = known.get(draft.idempotency)
        results.append(queued if queued is not None else _sender_not_found())
    return results
