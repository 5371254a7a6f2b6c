"""Every sender's label (name, code, app), read once per page: pages show names, not `client_id|CODE`."""

from __future__ import annotations

from messageservice.console.presenting import SenderLabel, sender_name
from messageservice.core.apps import list_apps
from messageservice.core.context import Core
from messageservice.core.senders import list_senders


async def sender_labels(core: Core) -> dict[str, SenderLabel]:
    """By MESSAGE_FROM (client_id|CODE), for every sender that exists."""
    apps = {app.id: app for app in await list_apps(core)}
    labels = {}
    for sender in await list_senders(core):
        app = apps.get(sender.app_id)
        if app is None:
            continue
        message_from = f"{app.client_id}|{sender.code}"
        labels[message_from] = SenderLabel(message_from, sender_name(sender.names, sender.code), sender.code, app.name)
    return labels
