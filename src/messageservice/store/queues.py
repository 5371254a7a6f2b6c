"""What the outboxes (app events, message deliveries) ask of the database beyond their own claims:
when the next job is due, and the state every dispatcher process shares (breakers, heartbeats)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, Select, Table, delete, func, literal_column, or_, select

from messageservice.store.features import features_of
from messageservice.store.store import Store
from messageservice.store.tables import apps, delivery_breakers, dispatchers


async def seconds_until_due(store: Store, table: Table, now: float) -> float | None:
    """Seconds until the earliest pending job of a table with `state` and `next_attempt_at`; None if none."""
    query = _EARLIEST.get(table.name)
    if query is None:
        # Built once per table: the hot-path reads compile a statement once and keep it by identity.
        # No bound parameters (a LIMIT would be one): the hot-path readers pass only what we give them.
        query = _EARLIEST[table.name] = select(func.min(table.c.next_attempt_at)).where(
            table.c.state == literal_column("'pending'")
        )
    rows = await store.fetch(query, {})
    due = rows[0][0] if rows else None
    return None if due is None else max(0.0, due - now)


_EARLIEST: dict[str, Select[Any]] = {}


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: both engines speak it, each through its own dialect."""
    statement = features_of(conn).upsert(table)
    changed = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), rows)


def heartbeat(conn: Connection, dispatcher_id: str, kind: str, started_at: float, now: float, stale: float) -> int:
    """Note this dispatcher alive, forget the ones silent for `stale` seconds; how many of `kind` are live."""
    _upsert(
        conn,
        dispatchers,
        [{"id": dispatcher_id, "kind": kind, "started_at": started_at, "heartbeat_at": now}],
        ["id"],
    )
    conn.execute(delete(dispatchers).where(dispatchers.c.heartbeat_at < now - stale))
    count = select(func.count()).select_from(dispatchers).where(dispatchers.c.kind == kind)
    return int(conn.execute(count).scalar_one())


def forget_dispatcher(conn: Connection, dispatcher_id: str) -> None:
    conn.execute(delete(dispatchers).where(dispatchers.c.id == dispatcher_id))


def write_breakers(conn: Connection, rows: list[dict[str, Any]], now: float) -> None:
    """Rows of app_id, origin, failures, open_until: the breakers that opened or closed in this process."""
    if rows:
        _upsert(conn, delivery_breakers, [{**row, "updated_at": now} for row in rows], ["app_id", "origin"])


_BREAKERS = select(delivery_breakers)


def forget_closed_breakers(conn: Connection, before: float) -> None:
    """Rows of breakers closed since before `before`, and of apps that are gone: no row is a closed
    breaker, so nothing changes for the dispatchers, and the table stays as small as what is failing."""
    conn.execute(
        delete(delivery_breakers).where(
            or_(
                (delivery_breakers.c.failures == 0) & (delivery_breakers.c.updated_at < before),
                delivery_breakers.c.app_id.not_in(select(apps.c.id)),
            )
        )
    )


def read_breakers(conn: Connection) -> Sequence[Row[Any]]:
    return conn.execute(_BREAKERS).all()


_BREAKERS_OF_APPS = select(delivery_breakers, apps.c.client_id).join(apps, apps.c.id == delivery_breakers.c.app_id)


async def breakers(store: Store) -> Sequence[Row[Any]]:
    """Every breaker of an existing app as the dispatchers last wrote it, with the app's client_id
    (for the console, in any process)."""
    return await store.fetch(_BREAKERS_OF_APPS, {})
