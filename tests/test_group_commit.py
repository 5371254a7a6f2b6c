"""Sends that share one transaction (store/group_commit.py) keep every send's own outcome and order."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import urlencode

import aiohttp
import pytest
from sqlalchemy import select

from messageservice.core.context import Core
from messageservice.store.errors import StoreConflict
from messageservice.store.group_commit import GroupCommit
from messageservice.store.queues import seconds_until_due
from messageservice.store.tables import deliveries, messages, status_reports
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver
from tests.test_messages import get, handler_url, register, wait_for


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app()


def send_command(message_from: str, to: str, body: str = "Hi", **extra: str) -> str:
    params = {"MESSAGE_FROM": message_from, "MESSAGE_TO": to, "MESSAGE_BODY": body, **extra}
    return "messageservice.message.send?" + urlencode(params)


# GroupCommit itself, without a database.


def test_concurrent_submissions_share_one_group_and_each_gets_its_own_result() -> None:
    groups: list[list[int]] = []

    async def work(items: Sequence[int]) -> list[object]:
        groups.append(list(items))
        return [ValueError(item) if item == 3 else item * 10 for item in items]

    async def scenario() -> list[object]:
        commit = GroupCommit()
        return await asyncio.gather(*(commit.submit("k", work, n) for n in range(5)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert groups == [[0, 1, 2, 3, 4]]
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], ValueError)


def test_a_failed_group_is_run_again_item_by_item() -> None:
    groups: list[list[int]] = []

    async def work(items: Sequence[int]) -> list[object]:
        groups.append(list(items))
        if 2 in items:
            raise StoreConflict("one item's unique key")
        return list(items)

    async def scenario() -> list[object]:
        commit = GroupCommit()
        return await asyncio.gather(*(commit.submit("k", work, n) for n in range(4)), return_exceptions=True)

    results = asyncio.run(scenario())
    assert groups == [[0, 1, 2, 3], [0], [1], [2], [3]]
    assert results[0] == 0 and results[1] == 1 and results[3] == 3
    assert isinstance(results[2], StoreConflict)


def test_a_batch_of_sends_keeps_each_result_and_error_in_its_place(
    portal: LivePortal, app: AppCredentials, handler: Receiver
) -> None:
    message_from = register(portal, app, handler_url(handler))
    cmd = {f"m{i}": send_command(message_from, f"+7999000{i:04d}", f"text {i}") for i in range(40)}
    cmd["m7"] = send_command(message_from, "+79990000007", "")  # empty body: its own error
    cmd["m20"] = send_command(app.client_id + "|nosuchcode", "+79990000020")  # fails inside the group
    result = portal.call("batch", {"cmd": cmd}, token=app.access_token).json()["result"]
    assert set(result["result_error"]) == {"m7", "m20"}
    assert result["result_error"]["m7"]["error"] == "ERROR_MESSAGE_VALIDATION_FAILURE"
    not_found = {"error": "ERROR_SENDER_NOT_FOUND", "error_description": "Sender not found!"}
    assert result["result_error"]["m20"] == not_found
    sent = result["result"]
    assert list(sent) == [key for key in cmd if key not in ("m7", "m20")]
    ids = [sent[key]["ID"] for key in sent]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "ids follow the order of the commands"
    assert set(result["result_time"]) == set(sent)
    handler.wait_for(38)
    for key in ("m0", "m19", "m39"):
        message = get(portal, app.access_token, sent[key]["ID"])
        assert message["MESSAGE_BODY"] == f"text {key[1:]}" and message["MESSAGE_TO"] == f"+7999000{int(key[1:]):04d}"


def test_halt_runs_sends_one_by_one_and_stops_at_the_first_error(portal: LivePortal, app: AppCredentials) -> None:
    message_from = register(portal, app, "http://127.0.0.1:9/never")
    marker = uuid.uuid4().hex
    cmd = [send_command(message_from, "+79990000001", f"{marker} {i}") for i in range(6)]
    cmd[2] = send_command(message_from, "+79990000001", "")
    result = portal.call("batch", {"cmd": cmd, "halt": 1}, token=app.access_token).json()["result"]
    assert len(result["result"]) == 2 and list(result["result_error"]) == ["2"]

    async def bodies(core: Core) -> list[str]:
        async with core.engine.connect() as conn:
            rows = await conn.execute(select(messages.c.message_body).where(messages.c.message_body.like(f"{marker}%")))
            return sorted(row[0] for row in rows)

    assert portal.run(bodies) == [f"{marker} 0", f"{marker} 1"], "nothing after the failed command was sent"


def test_one_idempotency_key_twice_in_a_batch_is_one_message(portal: LivePortal, app: AppCredentials) -> None:
    message_from = register(portal, app, "http://127.0.0.1:9/never")
    key = uuid.uuid4().hex
    cmd = [send_command(message_from, "+79990000001", "once", IDEMPOTENCY_KEY=key) for _ in range(3)]
    cmd.append(send_command(message_from, "+79990000001", "other"))
    result = portal.call("batch", {"cmd": cmd}, token=app.access_token).json()["result"]
    ids = [item["ID"] for item in result["result"]]
    assert ids[0] == ids[1] == ids[2] and ids[3] != ids[0]
    again = portal.call("batch", {"cmd": cmd[:1]}, token=app.access_token).json()["result"]
    assert again["result"][0]["ID"] == ids[0]


def test_a_reference_to_an_earlier_result_still_sees_it(portal: LivePortal, app: AppCredentials) -> None:
    message_from = register(portal, app, "http://127.0.0.1:9/never")
    cmd = {
        "first": send_command(message_from, "+79990000001", "first"),
        "second": send_command(message_from, "+79990000002", "after $result[first][MESSAGE_ID]"),
    }
    result = portal.call("batch", {"cmd": cmd}, token=app.access_token).json()["result"]
    second = get(portal, app.access_token, result["result"]["second"]["ID"])
    assert second["MESSAGE_BODY"] == f"after {result['result']['first']['MESSAGE_ID']}"


def test_concurrent_single_sends_each_commit_with_their_history(
    portal: LivePortal, app: AppCredentials, handler: Receiver
) -> None:
    message_from = register(portal, app, handler_url(handler))
    count = 48  # enough to arrive together and be committed in groups

    async def blast() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> dict[str, object]:
                params = {"MESSAGE_FROM": message_from, "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": f"c{i}"}
                async with session.post(
                    portal.rest_url + "messageservice.message.send", json={**params, "auth": app.access_token}
                ) as response:
                    assert response.status == 200, await response.text()
                    return (await response.json())["result"]

            return await asyncio.gather(*(one(i) for i in range(count)))

    results = asyncio.run(blast())
    ids = [int(str(r["ID"])) for r in results]
    assert len(set(ids)) == count
    assert len(handler.wait_for(count)) >= count

    async def rows(core: Core) -> tuple[int, int]:
        async with core.engine.connect() as conn:
            query = select(deliveries.c.message_id).where(deliveries.c.message_id.in_(ids))
            jobs = len((await conn.execute(query)).all())
            first = (
                await conn.execute(
                    select(status_reports.c.message_id).where(
                        status_reports.c.message_id.in_(ids), status_reports.c.status == "pending"
                    )
                )
            ).all()
            return jobs, len(first)

    assert portal.run(rows) == (count, count), "each message has its delivery job and its first history entry"


@pytest.mark.parametrize("fresh_portal", [{"retry_schedule": "30,30"}], indirect=True)
def test_the_dispatcher_knows_when_the_next_retry_is_due(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    message_from = register(fresh_portal, app, "http://127.0.0.1:9/never")
    sent = fresh_portal.call(
        "messageservice.message.send",
        {"MESSAGE_FROM": message_from, "MESSAGE_TO": "+79990000001", "MESSAGE_BODY": "x", "auth": app.access_token},
    ).json()["result"]
    # The first attempt is written back (not only claimed: a claim's lease looks like a due time too).
    retried = wait_for(lambda: (m := get(fresh_portal, app.access_token, sent["ID"]))["ATTEMPTS"] and m)
    due = fresh_portal.run(lambda core: seconds_until_due(core.store, deliveries, core.clock()))
    expected = retried["DELIVERY"]["NEXT_ATTEMPT_AT"] - time.time()
    assert due is not None and 20 < due <= 36 and abs(due - expected) < 2, (due, expected)
