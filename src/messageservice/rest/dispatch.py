"""Calling one method on behalf of a caller: the scope check, then the handler."""

from __future__ import annotations

from typing import Any

from messageservice.rest import errors
from messageservice.rest.registry import CallContext, Method, MethodResult


async def invoke(ctx: CallContext, method: Method, params: dict[str, Any]) -> MethodResult:
    if not ctx.registry.available(method, ctx.caller):
        raise errors.insufficient_scope(ctx.caller.is_webhook, in_batch=ctx.in_batch)
    return await method.handler(ctx, params)
