"""The request body deadline (rest/deadline.py) as pure ASGI, without a server: what it cancels and what not."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from messageservice.rest.deadline import BodyDeadline

SCOPE = {"type": "http", "headers": [(b"content-length", b"10")]}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


class Client:
    """A client that sends `parts` of the body, then (unless `finishes`) never the rest."""

    def __init__(self, parts: list[bytes], finishes: bool = True) -> None:
        self.parts, self.finishes, self.sent = list(parts), finishes, []

    async def receive(self) -> dict[str, Any]:
        if self.parts:
            part = self.parts.pop(0)
            return {"type": "http.request", "body": part, "more_body": bool(self.parts) or not self.finishes}
        await asyncio.Event().wait()  # a body that never comes
        raise AssertionError("unreachable")

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m["status"] for m in self.sent if m["type"] == "http.response.start"]
        return starts[0] if starts else None


async def reading_app(scope: Any, receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_a_body_in_time_is_answered_by_the_app() -> None:
    client = Client([b"12345", b"67890"])
    run(BodyDeadline(reading_app, 5.0)(SCOPE, client.receive, client.send))
    assert client.status == 200


def test_a_body_that_stops_half_way_gets_408_and_close() -> None:
    client = Client([b"12345"], finishes=False)
    run(asyncio.wait_for(BodyDeadline(reading_app, 0.05)(SCOPE, client.receive, client.send), 5))
    assert client.status == 408
    start = next(m for m in client.sent if m["type"] == "http.response.start")
    assert (b"connection", b"close") in start["headers"]


def test_the_deadline_never_interrupts_the_apps_own_work() -> None:
    """Past the deadline while the app is busy elsewhere (a database call): that work runs to its end,
    and the app's next read of the body ends at once."""
    finished_work = []

    async def busy_app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.1)  # past the 0.02 s deadline, not in a read
        finished_work.append(True)
        assert (await receive())["type"] == "http.disconnect"

    client = Client([], finishes=False)
    run(asyncio.wait_for(BodyDeadline(busy_app, 0.02)(SCOPE, client.receive, client.send), 5))
    assert finished_work == [True] and client.status == 408


def test_a_cancellation_from_elsewhere_still_cancels() -> None:
    async def main() -> None:
        client = Client([b"1"], finishes=False)
        task = asyncio.create_task(BodyDeadline(reading_app, 60.0)(SCOPE, client.receive, client.send))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main())


def test_a_request_without_a_body_is_left_alone() -> None:
    client = Client([b""])
    scope = {"type": "http", "headers": []}
    run(BodyDeadline(reading_app, 0.0)(scope, client.receive, client.send))
    assert client.status == 200


def test_an_answer_before_the_body_is_sent_at_once_and_closes() -> None:
    """An app may refuse a request from its headers alone (a declared body over the limit, an unknown
    method): it answers at once, though the body never comes, and the connection is closed."""

    async def refusing_app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b"too large"})

    client = Client([], finishes=False)
    run(asyncio.wait_for(BodyDeadline(refusing_app, 30.0)(SCOPE, client.receive, client.send), 5))
    assert client.status == 413
    start = next(m for m in client.sent if m["type"] == "http.response.start")
    assert (b"connection", b"close") in start["headers"]
