"""Housekeeping's clean-up of shared delivery state: breaker rows closed for a day, or of apps that are gone."""

from __future__ import annotations

from sqlalchemy import insert, select

from messageservice.core.context import Core
from messageservice.housekeeping import CLOSED_BREAKER_SECONDS, purge_once
from messageservice.store.tables import apps, delivery_breakers
from tests.portal import LivePortal


def test_closed_breakers_and_those_of_gone_apps_are_forgotten(local_fresh_portal: LivePortal) -> None:
    app = local_fresh_portal.add_app()

    async def work(core: Core) -> set[tuple[int, str]]:
        now = core.clock()
        async with core.store.connection() as conn:
            app_id = (await conn.execute(select(apps.c.id).where(apps.c.client_id == app.client_id))).scalar_one()
        old = now - CLOSED_BREAKER_SECONDS - 60
        rows = [
            (app_id, "http://closed-long-ago:80", 0, 0.0, old),  # forgotten
            (app_id, "http://closed-just-now:80", 0, 0.0, now),  # kept: other processes may still adopt it
            (app_id, "http://failing-long:80", 3, now + 30, old),  # kept: still failing
            (app_id + 1000, "http://gone-app:80", 2, now + 30, now),  # forgotten: no such app
        ]
        async with core.store.transaction() as conn:
            await conn.execute(
                insert(delivery_breakers),
                [{"app_id": a, "origin": o, "failures": f, "open_until": u, "updated_at": t} for a, o, f, u, t in rows],
            )
        await purge_once(core)
        async with core.store.connection() as conn:
            kept = await conn.execute(select(delivery_breakers.c.app_id, delivery_breakers.c.origin))
            return {(row.app_id - app_id, row.origin) for row in kept}

    assert local_fresh_portal.run(work) == {(0, "http://closed-just-now:80"), (0, "http://failing-long:80")}
