"""Providers: every app's senders with their names per language, HANDLER, health and stuck messages."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.breakers import breaker_of, breaker_states
from messageservice.console.presenting import handler_failing, name_lines
from messageservice.console.web import Console, guarded
from messageservice.core.apps import list_apps
from messageservice.core.logins import Operator
from messageservice.core.senders import list_senders
from messageservice.core.stats import collect
from messageservice.core.stuck import own_times, stuck_per_sender_id

HEALTH_WINDOW = 3600
# ?show=: the dashboard's cards lead here with only the failing handlers, or only the open breakers.
SHOWS = {"failing": "failing handlers", "open": "open breakers"}


def shown(row: dict[str, Any], show: str) -> bool:
    if show == "failing":
        return handler_failing(row["health"])
    if show == "open":
        return row["breaker"] != "closed"
    return True


def build_routes(console: Console) -> list[Route]:
    async def page(request: Request, operator: Operator) -> Response:
        core = console.core
        apps = await list_apps(core)
        senders = await list_senders(core)
        health = {h.sender_id: h for h in (await collect(core, HEALTH_WINDOW)).handlers}
        states = await breaker_states(core)
        stuck, times = await stuck_per_sender_id(core), await own_times(core)
        show = request.query_params.get("show", "")
        show = show if show in SHOWS else ""
        groups = [
            {
                "app": app,
                "senders": [
                    row
                    for row in (
                        {
                            "s": s,
                            "health": health.get(s.id),
                            "breaker": breaker_of(app.client_id, s.handler, states),
                            "stuck": stuck.get(s.id, 0),
                            "stuck_after": times.get(s.id, core.settings.stuck_after_seconds),
                        }
                        for s in senders
                        if s.app_id == app.id
                    )
                    if shown(row, show)
                ],
            }
            for app in apps
        ]
        if show:
            groups = [g for g in groups if g["senders"]]
        context = {
            "groups": groups,
            "window_minutes": HEALTH_WINDOW // 60,
            "stuck_after": core.settings.stuck_after_seconds,
            "show": show,
            "shows": SHOWS,
            "name_lines": name_lines,
        }
        return console.render(request, "providers.html", context)

    return [Route("/providers", guarded(console, page), methods=["GET"])]
