"""`Retry now` after a replay, in-process on both engines: a dead letter is replayed from the console, the
replay's first attempt fails and waits an hour; the message page offers `Retry now` again, and it works."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from messageservice.core.context import Core
from messageservice.store.tables import deliveries
from tests.console_helpers import ConsoleClient, add_admin, add_sender
from tests.portal import LivePortal
from tests.receiver import Receiver, Reply
from tests.test_messages import wait_for

RETRY_BUTTON = 'id="retry"'


@pytest.fixture
def handler() -> Iterator[Receiver]:
    receiver = Receiver().start()
    yield receiver
    receiver.stop()


def delivery(portal: LivePortal, message_id: int) -> tuple[str, int, float]:
    """(state, attempts, next_attempt_at) of a message's delivery."""

    async def read(core: Core) -> tuple[str, int, float]:
        async with core.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(deliveries.c.state, deliveries.c.attempts, deliveries.c.next_attempt_at).where(
                        deliveries.c.message_id == message_id
                    )
                )
            ).one()
        return row.state, row.attempts, row.next_attempt_at

    return portal.run(read)


def test_retry_now_is_offered_and_works_after_a_replay(local_portal: LivePortal, handler: Receiver) -> None:
    portal = local_portal
    client = ConsoleClient(portal).login(add_admin(portal))
    app = portal.add_app()
    sender = add_sender(portal, app, handler.url)
    # The first delivery: refused for good (a dead letter at once). The replay's first attempt: busy for an
    # hour. Then OK.
    handler.script = [Reply(400), Reply(503, (("Retry-After", "3600"),))]
    sent = portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": sender, "MESSAGE_TO": "+15550107101", "MESSAGE_BODY": "again"},
        token=app.access_token,
    ).json()
    message_id = int(sent["result"]["ID"])
    wait_for(lambda: delivery(portal, message_id)[0] == "dead", timeout=30)

    replayed = client.post(f"/messages/{message_id}/replay", {})
    assert replayed.status_code == 200 and "Replayed" in replayed.text
    handler.wait_for(2)
    # Recorded and waiting: one attempt in this round, the next one an hour away.
    wait_for(lambda: (d := delivery(portal, message_id))[1] == 1 and d[2] > time.time() + 1000, timeout=30)

    page = client.get(f"/messages/{message_id}")
    assert page.status_code == 200
    assert "Replay 1" in page.text and RETRY_BUTTON in page.text, page.text

    retried = client.post(f"/messages/{message_id}/retry", {})
    assert retried.status_code == 200 and "The next attempt starts now." in retried.text
    assert len(handler.wait_for(3)) == 3
    wait_for(lambda: delivery(portal, message_id)[0] == "done", timeout=30)
    done = client.get(f"/messages/{message_id}")
    assert RETRY_BUTTON not in done.text
    again = client.post(f"/messages/{message_id}/retry", {})
    assert "Nothing to retry now" in again.text
