"""Reporting a message's delivery status back: messageservice.message.status.update (spec 1.7).

The report goes to the portal the HANDLER call came from (`auth[client_endpoint]`) with the token that
call carried (`auth[access_token]`, which acts for the message's author), so it works the same against
this server and a Bitrix24 portal, and needs no stored credentials.
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from types import TracebackType
from typing import Any

import aiohttp

from messageservice.provider.calls import HandlerCall
from messageservice.provider.errors import BitrixError
from messageservice.provider.rest import DEFAULT_TIMEOUT, RestClient, SyncRestClient

METHOD = "messageservice.message.status.update"


class DeliveryStatus(StrEnum):
    """What status.update accepts, exactly (the portal compares case-sensitively)."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


def _params(call: HandlerCall, status: DeliveryStatus | str) -> dict[str, str]:
    # DeliveryStatus(...) raises ValueError for anything the portal would refuse anyway.
    return {"CODE": call.code, "MESSAGE_ID": call.message_id, "STATUS": DeliveryStatus(status).value}


def _check(result: Any) -> None:
    if result is not True:
        raise BitrixError("ERROR_UNEXPECTED_ANSWER", f"result is {result!r}, not true", 200, METHOD)


class StatusReporter:
    """Reports statuses for many calls over one aiohttp session (made here unless one is passed)."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._session = session
        self._owns_session = session is None
        self._options: dict[str, Any] = {"timeout": timeout, "ssl_context": ssl_context}

    async def report(self, call: HandlerCall, status: DeliveryStatus | str) -> None:
        """Raises BitrixError (the portal refused: error, error_description), PortalUnreachable or MissingAuth."""
        params = _params(call, status)
        if self._session is None:
            self._session = aiohttp.ClientSession()
        client = RestClient.from_auth(call.auth, session=self._session, **self._options)
        _check(await client.call(METHOD, params))

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> StatusReporter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


async def report_status(
    call: HandlerCall,
    status: DeliveryStatus | str,
    *,
    session: aiohttp.ClientSession | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """One report; pass a session when making many."""
    async with StatusReporter(session, timeout=timeout, ssl_context=ssl_context) as reporter:
        await reporter.report(call, status)


def report_status_sync(
    call: HandlerCall,
    status: DeliveryStatus | str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """The same without an event loop."""
    params = _params(call, status)
    client = SyncRestClient.from_auth(call.auth, timeout=timeout, ssl_context=ssl_context)
    _check(client.call(METHOD, params))
