"""The demo provider with one flaw each: what `messageservice check-provider` must catch.

    create_app(DemoConfig(...), "no_code")

Each flaw is one switch on the demo provider (examples/demo_provider); the tests run the battery against
each and expect exactly the check named in FLAWS to fail.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from demo_provider.app import PROGRESS, DemoConfig, DemoProvider
from demo_provider.app import create_app as create_demo_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from messageservice.provider import (
    ONAPPUPDATE,
    Auth,
    DeliveryStatus,
    HandlerCall,
    RestClient,
    StatusReporter,
)

# flaw -> the check it must fail
FLAWS: dict[str, str | tuple[str, ...]] = {
    "no_code": "status.code",
    "no_reregister": "update.reregisters",
    "no_token_check": ("security.wrong_token", "security.other_app"),  # another app's token is a wrong one too
    "numeric_id": "status.message_id",
    "backward": "status.order",
    "slow_handler": "handler.timely",
    "no_dedupe": "handler.repeat",
}
SLOW_SECONDS = 1.25  # the slow handler's delay: more than the tests' handler timeout (1 s); each call waits it


class _Reporter(StatusReporter):
    """Reports with changed params: without CODE, or with a number of its own for MESSAGE_ID."""

    def __init__(self, provider: DemoProvider, flaw: str) -> None:
        super().__init__(provider.session)
        self._provider, self._flaw = provider, flaw
        self._numbers: dict[str, int] = {}
        self._counter = itertools.count(1001)

    async def report(self, call: HandlerCall, status: DeliveryStatus | str) -> None:
        params: dict[str, Any] = {"CODE": call.code, "MESSAGE_ID": call.message_id, "STATUS": str(status)}
        if self._flaw == "no_code":
            del params["CODE"]
        if self._flaw == "numeric_id":
            params["MESSAGE_ID"] = str(self._numbers.setdefault(call.message_id, next(self._counter)))
        client = RestClient.from_auth(call.auth, session=self._provider.session)
        await client.call("messageservice.message.status.update", params)


class BrokenProvider(DemoProvider):
    def __init__(self, config: DemoConfig, flaw: str) -> None:
        super().__init__(config)
        if flaw not in FLAWS:
            raise ValueError(f"unknown flaw {flaw!r}; one of {', '.join(FLAWS)}")
        self.flaw = flaw

    async def start(self) -> None:
        await super().start()
        if self.flaw in ("no_code", "numeric_id"):
            self._reporter = _Reporter(self, self.flaw)

    async def _install(self, name: str, auth: Auth) -> Response:
        if self.flaw == "no_reregister" and name == ONAPPUPDATE:
            self.application_token = auth.application_token  # keeps the token, forgets the senders
            return PlainTextResponse("OK")
        return await super()._install(name, auth)

    async def on_message(self, request: Request) -> Response:
        if self.flaw == "slow_handler":
            await asyncio.sleep(SLOW_SECONDS)  # sends the SMS before answering
        return await super().on_message(request)

    def _remember(self, message_id: str) -> None:
        if self.flaw != "no_dedupe":  # sends a repeated message_id again, from queued
            super()._remember(message_id)

    def verify(self, call: HandlerCall) -> None:
        if self.flaw != "no_token_check":  # trusts any caller
            super().verify(call)

    async def _progress(self, call: HandlerCall) -> None:
        if self.flaw != "backward":
            await super()._progress(call)
            return
        order = (PROGRESS[0], PROGRESS[2], PROGRESS[1])  # queued, delivered, then sent
        for status, delay in zip(order, self.config.delays, strict=True):
            await asyncio.sleep(delay)
            if not await self._report(call, status):
                return


def create_app(config: DemoConfig, flaw: str) -> Starlette:
    return create_demo_app(config, BrokenProvider(config, flaw))
