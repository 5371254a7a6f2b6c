"""Calling one method on behalf of a caller: the scope check, the operating-time limit, the handler."""

from __future__ import annotations

import time
from typing import Any

from messageservice.rest import errors
from messageservice.rest.registry import CallContext, Method, MethodResult


async def invoke(ctx: CallContext, method: Method, params: dict[str, Any]) -> MethodResult:
    if not ctx.registry.available(method, ctx.caller):
        raise errors.insufficient_scope(ctx.caller.is_webhook, in_batch=ctx.in_batch)
    meter, key = ctx.meter, ctx.caller.limiter_key
    # Bitrix meters a batch's sub-calls, not the batch call itself (spec 3.7).
    counted = meter is not None and method.name != "batch"
    started = time.time()
    if counted and meter.blocked(key, method.name, started):
        raise errors.operation_time_limit()
    outcome = await method.handler(ctx, params)
    if meter is not None:
        spent = time.time() - started if counted else 0.0
        outcome.operating, outcome.operating_reset_at = meter.add(key, method.name, started, spent)
    return outcome
