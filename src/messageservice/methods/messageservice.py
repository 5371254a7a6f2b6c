"""The messageservice scope: sender registration (spec 1.2-1.6)."""

from __future__ import annotations

from typing import Any

from messageservice.core import senders
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
