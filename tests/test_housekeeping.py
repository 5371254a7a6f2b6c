"""Housekeeping's clean-up: breaker rows closed for a day, or of apps that are gone; messages past retention."""

from __future__ import annotations

from sqlalchemy import insert, select

from messageservice.core.context import Core
from messageservice.housekeeping import CLOSED_BREAKER_SECONDS, OLDEST_FINISHED, purge_messages, purge_once
from messageservice.store.tables import apps, deliveries, delivery_breakers, messages
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


def test_the_retention_purge_goes_in_chunks_oldest_first_and_keeps_what_is_pending(
    local_fresh_portal: LivePortal,
) -> None:
    app = local_fresh_portal.add_app()

    async def work(core: Core) -> tuple[list[str], int, list[str]]:
        now = core.clock()
        async with core.store.connection() as conn:
            app_id = (await conn.execute(select(apps.c.id).where(apps.c.client_id == app.client_id))).scalar_one()
        # name, age in days, delivery state
        made = [(f"old-{n}", 20 + n, "done") for n in range(5)]
        made += [("old-dead", 30, "dead"), ("old-pending", 40, "pending"), ("young", 1, "done")]
        async with core.store.transaction() as conn:
            for name, days, state in made:
                row = {
                    "message_id": name,
                    "app_id": app_id,
                    "sender_code": "sms",
                    "message_from": f"{app.client_id}|sms",
                    "author_id": 1,
                    "module_id": "crm",
                    "headers": "{}",
                    "message_to": "+15550001234",
                    "message_body": "hello",
                    "status_id": 14,
                    "created_at": now - days * 86400,
                    "updated_at": now,
                }
                message_id = (await conn.execute(insert(messages).values(row).returning(messages.c.id))).scalar_one()
                await conn.execute(
                    insert(deliveries).values(
                        message_id=message_id, state=state, attempts=1, next_attempt_at=now, created_at=now
                    )
                )
        before = now - 14 * 86400
        async with core.store.connection() as conn:
            # One chunk: the two oldest finished messages (the older pending one is not among them).
            first = (await conn.execute(OLDEST_FINISHED, {"before": before, "chunk": 2})).scalars().all()
            names = select(messages.c.message_id).where(messages.c.id.in_(first))
            first_chunk = sorted((await conn.execute(names)).scalars())
        purged = await purge_messages(core, before, chunk=2)
        async with core.store.connection() as conn:
            left = (await conn.execute(select(messages.c.message_id).order_by(messages.c.message_id))).scalars()
            return first_chunk, purged, list(left)

    assert local_fresh_portal.run(work) == (["old-4", "old-dead"], 6, ["old-pending", "young"])
