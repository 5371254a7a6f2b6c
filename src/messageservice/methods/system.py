"""Methods every caller has: batch, app.info, scope, methods, method.get, server.time, profile, user.admin."""

from __future__ import annotations

import time
from typing import Any

from messageservice.core.apps import get_app
from messageservice.core.errors import AccessDenied
from messageservice.core.portal import get_user
from messageservice.php import php_empty
from messageservice.rest.batch import run_batch
from messageservice.rest.envelope import iso_date
from messageservice.rest.params import upper_keys
from messageservice.rest.registry import GLOBAL_SCOPE, CallContext, MethodResult, Registry

LICENSE = "en_selfhosted"


def _flag(params: dict[str, Any], name: str) -> bool:
    value = upper_keys(params).get(name)
    return not php_empty(value) and value not in ("false", "N", "n")


def register(registry: Registry) -> None:
    @registry.method("batch", scope=GLOBAL_SCOPE, summary="Run up to 50 calls in one request.")
    async def batch(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return await run_batch(ctx, params)

    @registry.method("app.info", scope=GLOBAL_SCOPE, summary="The calling application.")
    async def app_info(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        caller = ctx.caller
        if caller.is_webhook:
            return MethodResult({"SCOPE": sorted(caller.scopes), "LICENSE": LICENSE})
        if caller.client_id is None:
            raise AccessDenied("Application context required")
        app = await get_app(ctx.core, caller.client_id)
        return MethodResult(
            {
                "ID": app.id,
                "CODE": app.client_id,
                "VERSION": app.version,
                "STATUS": app.status,
                "INSTALLED": app.installed,
                "PAYMENT_EXPIRED": "N",
                "DAYS": None,
                "LANGUAGE_ID": app.language_id,
                "LICENSE": LICENSE,
            }
        )

    @registry.method("scope", scope=GLOBAL_SCOPE, summary="The caller's scopes, or every scope with full=true.")
    async def scope(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        if _flag(params, "FULL"):
            return MethodResult(registry.scopes())
        return MethodResult(sorted(ctx.caller.scopes))

    @registry.method("methods", scope=GLOBAL_SCOPE, summary="Method names (deprecated in Bitrix24).")
    async def methods(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        upper = upper_keys(params)
        every = registry.methods.values()
        if _flag(params, "FULL"):
            chosen = list(every)
        elif isinstance(upper.get("SCOPE"), str) and upper["SCOPE"]:
            chosen = [m for m in every if m.scope == upper["SCOPE"].lower()]
        else:
            chosen = [m for m in every if registry.available(m, ctx.caller)]
        return MethodResult([m.name for m in chosen])

    @registry.method("method.get", scope=GLOBAL_SCOPE, summary="Whether a method exists and may be called.")
    async def method_get(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        name = upper_keys(params).get("NAME")
        found = registry.get(name) if isinstance(name, str) else None
        return MethodResult(
            {
                "isExisting": found is not None,
                "isAvailable": found is not None and registry.available(found, ctx.caller),
            }
        )

    @registry.method("server.time", scope=GLOBAL_SCOPE, summary="The server's time, ISO 8601.")
    async def server_time(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(iso_date(time.time()))

    @registry.method("profile", scope=GLOBAL_SCOPE, summary="The calling user.")
    async def profile(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        user = await get_user(ctx.core, ctx.caller.user_id)
        if user is None or not user.active:
            return MethodResult([])
        offset = time.localtime().tm_gmtoff
        return MethodResult(
            {
                "ID": user.id,
                "ADMIN": user.is_admin,
                "NAME": user.name,
                "LAST_NAME": user.last_name,
                "PERSONAL_GENDER": "",
                "TIME_ZONE": user.time_zone,
                "TIME_ZONE_OFFSET": offset,
            }
        )

    @registry.method("user.admin", scope=GLOBAL_SCOPE, summary="Whether the calling user is an admin.")
    async def user_admin(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(ctx.caller.is_admin)
