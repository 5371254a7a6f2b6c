"""Shared limits in the database, so that every process of an installation enforces the same ones.

Leaky buckets (`rate_buckets`): a process reserves tokens from a key's bucket and gives back what it did not
spend, in one atomic upsert per key, so that no row lock is held across statements on either engine. The
arithmetic is `rest.limiter.reserve`'s, written as SQL.

Sign-in brake (`signin_brakes`): failures per key and the time of the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, Integer, case, cast, delete, func, literal, select, tuple_

from messageservice.store.store import Store
from messageservice.store.tables import operating_seconds, rate_buckets, signin_brakes


class DatabaseLimitStore:
    """`rest.limiter.LimitStore` over the installation's database (SQLite or PostgreSQL)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._floor = func.floor if store.features.cast_rounds else (lambda x: cast(x, Integer))

    def _statement(self, key: str, returned: int, want: int, capacity: float, rate: float, now: float) -> Any:
        t = rate_buckets
        now_ = literal(now, Float)
        elapsed = case((t.c.updated_at < now_, now_ - t.c.updated_at), else_=literal(0.0, Float))
        drained = t.c.level - elapsed * literal(rate, Float) - literal(float(returned), Float)
        base = case((drained > 0, drained), else_=literal(0.0, Float))
        room = literal(float(capacity), Float) - base
        # Floor of a non-negative room (SQLite's CAST truncates, PostgreSQL's rounds: hence floor there).
        whole = self._floor(case((room > 0, room), else_=literal(0.0, Float)))
        granted = case((whole < want, whole), else_=literal(float(want), Float))
        first = float(min(want, int(capacity))) if want > 0 else 0.0
        return (
            self._store.features.upsert(t)
            .values(key=key, level=first, updated_at=now, granted=first)
            .on_conflict_do_update(
                index_elements=[t.c.key],
                set_={
                    "level": base + granted,
                    "updated_at": case((t.c.updated_at < now_, now_), else_=t.c.updated_at),
                    "granted": granted,
                },
            )
            .returning(t.c.granted)
        )

    async def reserve(
        self, asks: Sequence[tuple[str, int, int]], *, capacity: float, rate: float, now: float
    ) -> list[int]:
        """For each (key, returned, want): give back `returned` tokens, then grant up to `want` within room."""
        grants: list[int] = []
        async with self._store.transaction() as conn:
            for key, returned, want in asks:
                result = await conn.execute(self._statement(key, returned, want, capacity, rate, now))
                grants.append(int(result.scalar_one()))
        return grants

    async def add_operating(
        self, spent: Sequence[tuple[str, str, int, float]], keys: Sequence[tuple[str, str]], oldest_minute: int
    ) -> dict[tuple[str, str], dict[int, float]]:
        """Add each (key, method, minute, seconds) spent; return the minutes since `oldest_minute` of `keys`,
        as every process has counted them. Older minutes are deleted."""
        t = operating_seconds
        totals: dict[tuple[str, str], dict[int, float]] = {}
        async with self._store.transaction() as conn:
            await conn.execute(delete(t).where(t.c.minute < oldest_minute))
            for key, method, minute, seconds in spent:
                await conn.execute(
                    self._store.features.upsert(t)
                    .values(key=key, method=method, minute=minute, seconds=seconds)
                    .on_conflict_do_update(
                        index_elements=[t.c.key, t.c.method, t.c.minute],
                        set_={"seconds": t.c.seconds + seconds},
                    )
                )
            if keys:
                rows = await conn.execute(
                    select(t.c.key, t.c.method, t.c.minute, t.c.seconds).where(
                        tuple_(t.c.key, t.c.method).in_(list(keys)), t.c.minute >= oldest_minute
                    )
                )
                for row in rows:
                    totals.setdefault((row.key, row.method), {})[row.minute] = row.seconds
        return totals


class DatabaseBrakeStore:
    """The sign-in brake's failure counts (`core.logins.BrakeStore`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def failures(self, keys: Sequence[str]) -> dict[str, tuple[int, float]]:
        async with self._store.connection() as conn:
            rows = await conn.execute(
                select(signin_brakes.c.key, signin_brakes.c.failures, signin_brakes.c.last_failure_at).where(
                    signin_brakes.c.key.in_(list(keys))
                )
            )
            return {row.key: (row.failures, row.last_failure_at) for row in rows}

    async def add_failure(self, keys: Sequence[str], now: float, forget_before: float) -> None:
        """Count a failure on each key; a key quiet since `forget_before` starts again from one."""
        t = signin_brakes
        async with self._store.transaction() as conn:
            # Sign-ins are rare: pruning here keeps the table as small as the recent failures.
            await conn.execute(delete(t).where(t.c.last_failure_at < forget_before))
            for key in keys:
                await conn.execute(
                    self._store.features.upsert(t)
                    .values(key=key, failures=1, last_failure_at=now)
                    .on_conflict_do_update(
                        index_elements=[t.c.key],
                        set_={"failures": t.c.failures + 1, "last_failure_at": now},
                    )
                )

    async def clear(self, keys: Sequence[str]) -> None:
        async with self._store.transaction() as conn:
            await conn.execute(delete(signin_brakes).where(signin_brakes.c.key.in_(list(keys))))
