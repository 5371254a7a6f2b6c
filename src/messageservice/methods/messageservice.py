"""The messageservice scope: sender registration (spec 1.2-1.6), delivery status (1.7, 1.8), and our
extensions for sending and reading messages (Bitrix24 has no public REST method for these)."""

from __future__ import annotations

from typing import Any

from messageservice.core import messages, senders
from messageservice.core.errors import AccessDenied
from messageservice.rest.params import upper_keys
from messageservice.rest.registry import CallContext, MethodResult, Registry

SCOPE = "messageservice"


def _app_admin(ctx: CallContext) -> int:
    """Bitrix's common gate: application context first, then the admin check. Returns the app id."""
    if ctx.caller.client_id is None or ctx.caller.app_id is None:
        raise AccessDenied("Application context required")
    if not ctx.caller.is_admin:
        raise AccessDenied()
    return ctx.caller.app_id


def _actor(ctx: CallContext) -> messages.Actor:
    caller = ctx.caller
    return messages.Actor(caller.user_id, caller.is_admin, caller.app_id, caller.webhook_id)


def register(registry: Registry) -> None:
    @registry.method("messageservice.sender.add", scope=SCOPE, summary="Register an SMS provider.")
    async def sender_add(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.add_sender(ctx.core, app_id, ctx.caller.user_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.update", scope=SCOPE, summary="Change a provider's handler or names.")
    async def sender_update(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.update_sender(ctx.core, app_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.delete", scope=SCOPE, summary="Remove a provider.")
    async def sender_delete(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.delete_sender(ctx.core, app_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.list", scope=SCOPE, summary="The calling app's provider codes.")
    async def sender_list(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        return MethodResult(await senders.list_codes(ctx.core, app_id))

    @registry.method("messageservice.message.status.update", scope=SCOPE, summary="Report a message's delivery status.")
    async def status_update(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        if ctx.caller.app_id is None:
            raise AccessDenied("Application context required")
        await messages.report_status(ctx.core, _actor(ctx), upper_keys(params))
        return MethodResult(True)

    @registry.method(
        "messageservice.message.status.get", scope=SCOPE, summary="A message's status text, by its internal ID."
    )
    async def status_get(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(await messages.status_description(ctx.core, _actor(ctx), upper_keys(params)))

    @registry.method(
        "messageservice.message.send",
        scope=SCOPE,
        summary="Send a message as a CRM card (crm) or an automation rule (bizproc) would.",
        extension=True,
        independent=True,
    )
    async def message_send(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        result = await messages.send_message(ctx.core, _actor(ctx), upper_keys(params))
        ctx.core.notify_queued()
        return MethodResult(result)

    @registry.method(
        "messageservice.message.get",
        scope=SCOPE,
        summary="One message with its delivery attempts and status history.",
        extension=True,
    )
    async def message_get(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(await messages.get_message(ctx.core, _actor(ctx), upper_keys(params)))

    @registry.method(
        "messageservice.message.list",
        scope=SCOPE,
        summary="Messages, newest first, filtered by sender, status, recipient and time; 50 a page.",
        extension=True,
    )
    async def message_list(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        rows, total, offset = await messages.list_messages(ctx.core, _actor(ctx), upper_keys(params), ctx.start)
        following = offset + len(rows)
        return MethodResult(rows, next=following if following < total else None, total=total)

    @registry.method(
        "messageservice.message.replay",
        scope=SCOPE,
        summary="Send dead letters again from the first attempt (ID or IDS; admins only).",
        extension=True,
    )
    async def message_replay(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        replayed = await messages.replay(ctx.core, _actor(ctx), upper_keys(params))
        ctx.core.notify_queued()
        return MethodResult({"REPLAYED": replayed})
