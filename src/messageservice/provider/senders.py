"""Registering the app's sender with the token an install event carried (messageservice.sender.add, spec 1.3).

A reinstall finds the sender still there (ERROR_SENDER_ALREADY_INSTALLED): it is then updated to the
HANDLER and names given, with sender.update where the portal has it, else deleted and added again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from messageservice.provider.calls import Auth
from messageservice.provider.errors import BitrixError
from messageservice.provider.rest import RestClient, SyncRestClient

ALREADY_INSTALLED = "ERROR_SENDER_ALREADY_INSTALLED"


@dataclass(frozen=True)
class SenderSpec:
    code: str  # letters, digits, . - _ ; unique per app
    handler: str  # the URL the portal POSTs messages to; its host must contain a dot (127.0.0.1, not localhost)
    name: str | Mapping[str, str]  # a string, or {language: name}
    description: str | Mapping[str, str] | None = None
    type: str = "SMS"

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"CODE": self.code, "TYPE": self.type, "HANDLER": self.handler, "NAME": self.name}
        if self.description is not None:
            params["DESCRIPTION"] = self.description
        return params

    def changes(self) -> dict[str, Any]:
        """What sender.update takes: everything but TYPE, which cannot change."""
        return {key: value for key, value in self.params().items() if key != "TYPE"}


class Registration(StrEnum):
    ADDED = "added"
    UPDATED = "updated"
    REPLACED = "replaced"  # the portal has no sender.update: deleted and added again


def _method_missing(error: BitrixError) -> bool:
    return error.http_status == 404 or error.error.endswith("METHOD_NOT_FOUND")


async def register_sender(portal: Auth | RestClient, sender: SenderSpec) -> Registration:
    """Add the sender, or bring an existing one up to date. Needs an admin's token (the installer's is one)."""
    if isinstance(portal, RestClient):
        return await _register(portal, sender)
    async with RestClient.from_auth(portal) as client:
        return await _register(client, sender)


async def _register(client: RestClient, sender: SenderSpec) -> Registration:
    try:
        await client.call("messageservice.sender.add", sender.params())
        return Registration.ADDED
    except BitrixError as error:
        if error.error != ALREADY_INSTALLED:
            raise
    try:
        await client.call("messageservice.sender.update", sender.changes())
        return Registration.UPDATED
    except BitrixError as error:
        if not _method_missing(error):
            raise
    await client.call("messageservice.sender.delete", {"CODE": sender.code})
    await client.call("messageservice.sender.add", sender.params())
    return Registration.REPLACED


def register_sender_sync(portal: Auth | SyncRestClient, sender: SenderSpec) -> Registration:
    """The same without an event loop."""
    client = portal if isinstance(portal, SyncRestClient) else SyncRestClient.from_auth(portal)
    try:
        client.call("messageservice.sender.add", sender.params())
        return Registration.ADDED
    except BitrixError as error:
        if error.error != ALREADY_INSTALLED:
            raise
    try:
        client.call("messageservice.sender.update", sender.changes())
        return Registration.UPDATED
    except BitrixError as error:
        if not _method_missing(error):
            raise
    client.call("messageservice.sender.delete", {"CODE": sender.code})
    client.call("messageservice.sender.add", sender.params())
    return Registration.REPLACED
