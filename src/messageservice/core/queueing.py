"""Committing validated sends, many at a time: each message with its delivery job and first history entry.

Sends are grouped (store/group_commit.py) and each group is queued in one transaction:
* generic (SQLite): a few statements through SQLAlchemy in the store's writer;
* with the store's bulk_send_statement (PostgreSQL): one generated statement (store/sends.py).
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
from messageservice.store.sends import wake_workers
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
    # What was queued now, (app_id, sender_id); None for an earlier send's message (an IDEMPOTENCY_KEY).
    work: tuple[int, int] | None = None


def _sender_not_found() -> CoreError:
    return CoreError("ERROR_SENDER_NOT_FOUND", "Sender not found!")


async def queue(core: Core, draft: Draft) -> Queued:
    """Queue one send in the next group; returns once its group has committed."""

    async def work(drafts: Sequence[Draft]) -> list[Queued | CoreError]:
        if core.store.features.bulk_send_statement:
            return await _queue_in_one_statement(core, drafts)
        notify = core.store.features.listen_notify
        return await core.store.write(lambda conn: queue_drafts(conn, drafts, notify=notify))

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


def queue_drafts(conn: Connection, drafts: Sequence[Draft], *, notify: bool = False) -> list[Queued | CoreError]:
    """Queue many sends in one transaction (any engine); `notify` wakes other processes on commit."""
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
        for (index, values), row in zip(fresh, inserted, strict=True):
            results[index] = Queued(
                row.id, row.message_id, statuses.PENDING.id, (values["app_id"], values["sender_id"])
            )
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
        if notify:
            wake_workers(conn, ((values["app_id"], values["sender_id"]) for _, values in fresh))
    for index, draft in enumerate(drafts):
        if results[index] is None:
            key = draft.idempotency
            assert key is not None
            results[index] = known.get(key) or results[claimed[key]]
    return [result for result in results if result is not None]


async def _queue_in_one_statement(core: Core, drafts: Sequence[Draft]) -> list[Queued | CoreError]:
    rows = [{**d.values, "reporter_app_id": d.reporter_app_id} for d in drafts]
    inserted_rows = await core.store.insert_sends(rows, statuses.PENDING.id, statuses.PENDING.name)
    inserted = {
        row["message_id"]: Queued(row["id"], row["message_id"], statuses.PENDING.id, (row["app_id"], row["sender_id"]))
        for row in inserted_rows
    }
    missing = [d.idempotency for d in drafts if d.values["message_id"] not in inserted and d.idempotency]
    known: dict[tuple[str, str], Queued] = {}
    if missing:
        known = {
            (r["idempotency_scope"], r["idempotency_key"]): Queued(r["id"], r["message_id"], r["status_id"])
            for r in await core.store.known_sends(missing)
        }
    results: list[Queued | CoreError] = []
    for draft in drafts:
        queued = inserted.get(draft.values["message_id"])
        if queued is None and draft.idempotency is not None:
            queued = known.get(draft.idempotency)
        results.append(queued if queued is not None else _sender_not_found())
    return results
