"""The dashboard: message flow per minute, statuses, the queue, failing handlers and open breakers; live."""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from messageservice.console.breakers import BreakerStates, breaker_of, breaker_states
from messageservice.console.labels import sender_labels
from messageservice.console.presenting import SenderLabel, handler_failing, sender_label
from messageservice.console.web import Console, guarded
from messageservice.core.logins import Operator
from messageservice.core.stats import Stats, collect

WINDOWS = {"900": "15 minutes", "3600": "1 hour", "21600": "6 hours", "86400": "24 hours"}
REFRESH_MS = 3000


def _percent(rate: float | None) -> str | None:
    return None if rate is None else f"{rate * 100:.0f}%"


def _ms(value: float | None) -> str | None:
    return None if value is None else f"{value:.0f} ms"


def stats_json(stats: Stats, states: BreakerStates, labels: dict[str, SenderLabel]) -> dict[str, Any]:
    handlers = [
        {
            "sender": f"{h.app_client_id}|{h.sender_code}",
            "sender_name": sender_label(f"{h.app_client_id}|{h.sender_code}", labels).name,
            "sender_detail": sender_label(f"{h.app_client_id}|{h.sender_code}", labels).detail,
            "handler": h.handler,
            "attempts": h.attempts,
            "success_rate": _percent(h.success_rate),
            "p50_ms": _ms(h.p50_ms),
            "p95_ms": _ms(h.p95_ms),
            "breaker": breaker_of(h.app_client_id, h.handler, states),
            "last_error": h.last_error,
        }
        for h in stats.handlers
    ]
    failing = [h for h in stats.handlers if handler_failing(h)]
    oldest = None if stats.oldest_due_at is None else max(0.0, stats.generated_at - stats.oldest_due_at)
    return {
        "generated_at": stats.generated_at,
        "window_seconds": stats.window_seconds,
        "per_minute": [
            {"minute": m.minute, "created": m.created, "delivered": m.delivered, "failed": m.failed}
            for m in stats.per_minute
        ],
        "by_status": stats.by_status,
        "by_delivery_state": stats.by_delivery_state,
        "created": sum(m.created for m in stats.per_minute),
        "delivered": sum(m.delivered for m in stats.per_minute),
        "queue_depth": stats.queue_depth,
        "due_now": stats.due_now,
        "oldest_due": None if oldest is None else f"{oldest:.0f} s",
        "dead": stats.dead,
        "failing_handlers": len(failing),
        "open_breakers": sum(1 for state in states.values() if state != "closed"),
        "handlers": handlers,
    }


def tile_links(window_start: float) -> dict[str, str]:
    """Where each dashboard card leads: the list it counts, filtered (paths under the console's prefix)."""
    # The messages filter takes a datetime-local value read as UTC; rounded down so the list holds them all.
    since = datetime.datetime.fromtimestamp(window_start, datetime.UTC).strftime("%Y-%m-%dT%H:%M")
    pending = "/messages?delivery=pending"
    return {
        "created": f"/messages?since={since}",
        "delivered": f"/messages?status=delivered&since={since}",
        "queue_depth": pending,
        "due_now": pending,
        "oldest_due": pending,
        "dead": "/messages?delivery=dead",
        "failing_handlers": "/providers?show=failing",
        "open_breakers": "/providers?show=open",
    }


def build_routes(console: Console) -> list[Route]:
    def window_of(request: Request) -> str:
        chosen = request.query_params.get("window", "3600")
        return chosen if chosen in WINDOWS else "3600"

    async def page(request: Request, operator: Operator) -> Response:
        window = window_of(request)
        stats = await collect(console.core, int(window))
        data = stats_json(stats, await breaker_states(console.core), await sender_labels(console.core))
        context = {
            "s": data,
            "window": window,
            "windows": WINDOWS,
            "refresh_ms": REFRESH_MS,
            "links": tile_links(stats.generated_at - int(window)),
        }
        return console.render(request, "dashboard.html", context)

    async def numbers(request: Request, operator: Operator) -> Response:
        stats = await collect(console.core, int(window_of(request)))
        labels = await sender_labels(console.core)
        return JSONResponse(stats_json(stats, await breaker_states(console.core), labels))

    return [
        Route("/", guarded(console, page), methods=["GET"]),
        Route("/stats.json", guarded(console, numbers, json=True), methods=["GET"]),
    ]
