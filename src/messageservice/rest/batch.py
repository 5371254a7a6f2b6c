"""`batch`: up to 50 calls in one request, with `$result[...]` references (spec 3.6)."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from messageservice.core.errors import CoreError
from messageservice.php import php_empty
from messageservice.phpquery import EncodingError, parse_str
from messageservice.rest import errors
from messageservice.rest.dispatch import invoke
from messageservice.rest.envelope import Timing
from messageservice.rest.params import check_text, split_auth
from messageservice.rest.registry import CallContext, MethodResult

MAX_LENGTH = 50
REFERENCE = re.compile(r"\$(result|result_error|result_total|result_next|result_time)\[([^\]]+)\]((?:\[[^\]]*\])*)")
NOT_BATCHABLE = ("batch", "download", "upload")


def _lookup(results: dict[str, dict[str, Any]], match: re.Match[str]) -> tuple[bool, Any]:
    value: Any = results[match.group(1)].get(match.group(2))
    if value is None:
        return False, None
    for step in re.findall(r"\[([^\]]*)\]", match.group(3)):
        if isinstance(value, dict) and step in value:
            value = value[step]
        elif (
            isinstance(value, list) and step.isascii() and step.isdigit() and len(step) < 10 and int(step) < len(value)
        ):
            value = value[int(step)]
        else:
            return False, None
    return True, value


def _substitute(value: Any, results: dict[str, dict[str, Any]]) -> Any:
    """Replace `$result[key][field]` with earlier results; a whole-value reference keeps arrays whole."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result" not in value:
        return value
    whole = REFERENCE.fullmatch(value)
    if whole is not None:
        found, item = _lookup(results, whole)
        return item if found else value

    def text(match: re.Match[str]) -> str:
        found, item = _lookup(results, match)
        if not found:
            return match.group(0)
        if isinstance(item, bool):
            return "1" if item else ""
        return str(item) if not isinstance(item, dict | list) else match.group(0)

    return REFERENCE.sub(text, value)


def _commands(cmd: Any) -> list[tuple[str, Any]]:
    if isinstance(cmd, list):
        return [(str(i), c) for i, c in enumerate(cmd)]
    if isinstance(cmd, dict):
        return [(str(k), c) for k, c in cmd.items()]
    return []


def _shape(values: dict[str, Any]) -> Any:
    # PHP arrays: keys 0..n-1 in order print as a list, anything else as an object, empty as [].
    if not values:
        return []
    if all(key == str(i) for i, key in enumerate(values)):
        return list(values.values())
    return values


@dataclass
class _Done:
    started: float
    finished: float
    outcome: MethodResult | CoreError


async def run_batch(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
    upper = {str(k).upper(): v for k, v in params.items()}
    commands = _commands(upper.get("CMD"))
    halt = not php_empty(upper.get("HALT"))
    results: dict[str, dict[str, Any]] = {
        name: {} for name in ("result", "result_error", "result_total", "result_next", "result_time")
    }
    sub_ctx = replace(ctx, in_batch=True)
    listed = commands[:MAX_LENGTH]
    position = 0
    while position < len(listed):
        run = listed[position : position + 1]
        if not halt:
            while position + len(run) < len(listed) and all(
                _independent(sub_ctx, command) for command in (run[0][1], listed[position + len(run)][1])
            ):
                run.append(listed[position + len(run)])
        position += len(run)
        done = await asyncio.gather(*(_timed(sub_ctx, command, results) for _, command in run))
        halted = False
        for (key, _), item in zip(run, done, strict=True):
            outcome = item.outcome
            if isinstance(outcome, CoreError):
                results["result_error"][key] = {"error": outcome.code, "error_description": outcome.description}
                halted = halt
                continue
            results["result"][key] = outcome.result
            if outcome.next is not None:
                results["result_next"][key] = outcome.next
            if outcome.total is not None:
                results["result_total"][key] = outcome.total
            results["result_time"][key] = Timing(item.started, item.finished, item.finished - item.started).block()
        if halted:
            break
    else:
        for key, _ in commands[MAX_LENGTH:]:
            results["result_error"][key] = {
                "error": "ERROR_BATCH_LENGTH_EXCEEDED",
                "error_description": "Max batch length exceeded",
            }
    return MethodResult({name: _shape(values) for name, values in results.items()})


def _independent(ctx: CallContext, command: Any) -> bool:
    """May this command run beside its neighbours? Only calls of independent methods with no references."""
    # A `$` in any spelling (raw or %24) may be a reference: such commands run in order, as in Bitrix.
    if not isinstance(command, str) or "$" in command or "%24" in command.lower():
        return False
    name = _method_name(command.partition("?")[0])
    method = ctx.registry.get(name) if name is not None else None
    return method is not None and method.independent


async def _timed(ctx: CallContext, command: Any, results: dict[str, dict[str, Any]]) -> _Done:
    started = time.time()
    try:
        outcome: MethodResult | CoreError = await _one(ctx, command, results)
    except CoreError as exc:
        outcome = exc
    return _Done(started, time.time(), outcome)


def _method_name(path: str) -> str | None:
    try:
        path = urlsplit(path).path
    except ValueError:
        return None
    name = path.strip("/").lower()
    return name[: -len(".json")] if name.endswith(".json") else name


async def _one(ctx: CallContext, command: Any, results: dict[str, dict[str, Any]]) -> MethodResult:
    if not isinstance(command, str):
        raise errors.method_not_found()
    path, _, query = command.partition("?")
    name = _method_name(path)
    if name is None:
        raise errors.method_not_found()
    method = ctx.registry.get(name)
    if method is None:
        raise errors.method_not_found()
    if not method.batchable or name in NOT_BATCHABLE:
        raise CoreError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")
    try:
        raw = parse_str(query)
    except EncodingError:
        raise errors.wrong_encoding() from None
    check_text(raw)
    _, sub_params, start = split_auth(raw, None)
    sub_params = _substitute(sub_params, results)
    return await invoke(replace(ctx, start=start), method, sub_params)
