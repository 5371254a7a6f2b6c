"""core.feed: the stream `messages follow` prints, on a real database with a real (in-process) dispatcher."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from messageservice.core import feed as feed_module
from messageservice.core.context import Core
from messageservice.core.feed import FeedEvent, MessageFeed
from messageservice.core.messages import Actor, send_message
from tests.portal import LivePortal, open_fresh_portal
from tests.receiver import Receiver
from tests.test_messages import handler_url, register

OPERATOR = Actor(user_id=1, is_admin=True, channel="cli")


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, in-process (settings overrides by indirect parametrization, as usual)."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=True)


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def test_feed_pages_narrows_and_never_repeats(
    fresh_portal: LivePortal, handler: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A small look-back and page, so that 15 messages take several pages.
    monkeypatch.setattr(feed_module, "OVERLAP", 3)
    app = fresh_portal.add_app()
    busy, quiet = register(fresh_portal, app, handler_url(handler)), register(fresh_portal, app, handler_url(handler))

    async def work(core: Core) -> tuple[list[int], list[list[FeedEvent]], list[FeedEvent]]:
        old = await send_message(
            core, OPERATOR, {"MESSAGE_FROM": busy, "MESSAGE_TO": "+15550000001", "MESSAGE_BODY": "old"}
        )
        everyone, narrowed = MessageFeed(core), MessageFeed(core, sender=quiet)
        await everyone.start()
        await narrowed.start()
        ids = []
        for i in range(15):
            sender = quiet if i % 5 == 4 else busy
            params = {"MESSAGE_FROM": sender, "MESSAGE_TO": f"+1555000{i:04d}", "MESSAGE_BODY": f"feed {i}"}
            ids.append((await send_message(core, OPERATOR, params))["ID"])
        assert old["ID"] < ids[0]
        pages = [await everyone.poll(limit=2) for _ in range(12)]
        return ids, pages, await narrowed.poll(limit=100)

    ids, pages, narrowed = fresh_portal.run(work)
    created = [e for page in pages for e in page if e.kind == "created"]
    # Every new message exactly once, in order, the one before the start never; a page held at most 2 + 3.
    assert [e.id for e in created] == ids
    assert all(len([e for e in page if e.kind == "created"]) <= 5 for page in pages)
    assert len([page for page in pages if any(e.kind == "created" for e in page)]) >= 3
    assert [e.text for e in created[:2]] == ["feed 0", "feed 1"] and created[0].status == "pending"
    statuses = [e for page in pages for e in page if e.kind == "status"]
    assert len({(e.id, e.status, e.at) for e in statuses}) == len(statuses)  # no status change twice
    assert all(e.status == "sent" and e.applied and e.reporter_user_id is None for e in statuses)
    # Narrowed to the quiet sender: its three messages only.
    assert [e.id for e in narrowed if e.kind == "created"] == [ids[4], ids[9], ids[14]]
    assert all(e.message_from == quiet for e in narrowed)
