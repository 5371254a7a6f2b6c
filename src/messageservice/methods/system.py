"""Methods every caller has: batch, app.info, scope, methods, method.get, server.time, profile, user.admin."""

from __future__ import annotations

import time
from typing import Any

from messageservice.core.apps import get_app
from messageservice.core.errors import AccessDenied
from messageservice.core.portal import get_user
from messageservice.methods.declare import Failure, Param, declare
from messageservice.php import php_empty
from messageservice.rest import errors
from messageservice.rest.batch import MAX_LENGTH, NOT_BATCHABLE, run_batch
from messageservice.rest.envelope import iso_date
from messageservice.rest.params import upper_keys
from messageservice.rest.registry import GLOBAL_SCOPE, CallContext, MethodResult, Registry

LICENSE = "en_selfhosted"


def _flag(params: dict[str, Any], name: str) -> bool:
    value = upper_keys(params).get(name)
    return not php_empty(value) and value not in ("false", "N", "n")


ANYONE = "Any app or webhook; no scope needed."
FLAG = "`true`, `Y`, `1` (anything but empty, `0`, `false`, `N`)"
IN_BATCH = None  # these are reported per command in `result_error`; the batch itself answers 200


def register(registry: Registry) -> None:
    @registry.method("batch", scope=GLOBAL_SCOPE, summary="Run up to 50 calls in one request.")
    @declare(
        caller=ANYONE + " Each command is checked as if called alone (scope, limits).",
        params=(
            Param(
                "cmd",
                "map {key: string} or list of strings",
                True,
                f"at most {MAX_LENGTH} commands",
                "Each command is `method?query` (a URL query string, PHP brackets allowed). "
                "`$result[key][FIELD]` in a query is replaced by an earlier command's result.",
            ),
            Param("halt", "flag", False, "`1` or `0`", "Stop at the first command that fails."),
        ),
        answer="`{result, result_error, result_total, result_next, result_time}`, each keyed like `cmd` "
        "(a map for a map, a list for a list; `[]` when empty). `result_error` items are "
        "`{error, error_description}`.",
        errors=(
            Failure(
                "ERROR_BATCH_LENGTH_EXCEEDED",
                "Max batch length exceeded",
                IN_BATCH,
                f"For each command after the first {MAX_LENGTH}.",
            ),
            Failure(
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "Method is not allowed for batch usage",
                IN_BATCH,
                "The command calls " + ", ".join(f"`{name}`" for name in NOT_BATCHABLE) + ".",
            ),
            Failure(
                errors.method_not_found().code,
                errors.method_not_found().description,
                IN_BATCH,
                "The command names no method.",
            ),
            Failure(
                "insufficient_scope",
                errors.insufficient_scope(False, in_batch=True).description,
                IN_BATCH,
                "The caller lacks the command's scope (the description is empty, as in Bitrix24).",
            ),
            Failure(
                errors.wrong_encoding().code,
                errors.wrong_encoding().description,
                IN_BATCH,
                "The command's query is not valid UTF-8 or holds a NUL.",
            ),
        ),
        notes="A command's own errors (as documented for its method) land in `result_error` too.",
    )
    async def batch(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return await run_batch(ctx, params)

    @registry.method("app.info", scope=GLOBAL_SCOPE, summary="The calling application.")
    @declare(
        caller=ANYONE,
        answer="For an app: `ID`, `CODE` (its client_id), `VERSION`, `STATUS`, `INSTALLED`, `PAYMENT_EXPIRED` "
        f"(`N`), `DAYS` (`null`), `LANGUAGE_ID`, `LICENSE` (`{LICENSE}`). For a webhook: `SCOPE`, `LICENSE`.",
        errors=(Failure.of(AccessDenied("Application context required"), "Neither an app nor a webhook."),),
    )
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
    @declare(
        caller=ANYONE,
        params=(Param("full", "flag", False, FLAG, "Every scope the server has, not only the caller's."),),
        answer='A list of scope names, e.g. `["messageservice"]`.',
    )
    async def scope(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        if _flag(params, "FULL"):
            return MethodResult(registry.scopes())
        return MethodResult(sorted(ctx.caller.scopes))

    @registry.method("methods", scope=GLOBAL_SCOPE, summary="Method names (deprecated in Bitrix24).")
    @declare(
        caller=ANYONE,
        params=(
            Param("full", "flag", False, FLAG, "Every method."),
            Param("scope", "string", False, "a scope name", "The methods of one scope."),
        ),
        answer="A list of method names; without parameters, the ones the caller may call.",
    )
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
    @declare(
        caller=ANYONE,
        params=(Param("name", "string", True, "", "A method name (any case)."),),
        answer='`{"isExisting": bool, "isAvailable": bool}`: available when the caller has its scope.',
    )
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
    @declare(caller=ANYONE, answer='A string such as `"2026-03-25T10:00:00+00:00"`.')
    async def server_time(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(iso_date(time.time()))

    @registry.method("profile", scope=GLOBAL_SCOPE, summary="The calling user.")
    @declare(
        caller=ANYONE,
        answer="`ID`, `ADMIN`, `NAME`, `LAST_NAME`, `PERSONAL_GENDER`, `TIME_ZONE`, `TIME_ZONE_OFFSET` "
        "(seconds); `[]` for an inactive user.",
    )
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
    @declare(caller=ANYONE, answer="`true` or `false`.")
    async def user_admin(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(ctx.caller.is_admin)
