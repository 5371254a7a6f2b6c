"""Providers: every app's senders with their names per language, HANDLER, health and stuck messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.breakers import breaker_of, breaker_states
from messageservice.console.web import Console, guarded
from messageservice.core.apps import list_apps
from messageservice.core.logins import Operator
from messageservice.core.senders import list_senders
from messageservice.core.stats import collect
from messageservice.core.stuck import own_times, stuck_per_sender_id

HEALTH_WINDOW = 3600


def build_routes(console: Console) -> list[Route]:
    async def page(request: Request, operator: Operator) -> Response:
        core = console.core
        apps = await list_apps(core)
        senders = await list_senders(core)
        health = {h.sender_id: h for h in (await collect(core, HEALTH_WINDOW)).handlers}
        states = await breaker_states(core)
        stuck, times = await stuck_per_sender_id(core), await own_times(core)
        groups = [
            {
                "app": app,
                "senders": [
                    {
                        "s": s,
                        "health": health.get(s.id),
                        "breaker": breaker_of(app.client_id, s.handler, states),
                        "stuck": stuck.get(s.id, 0),
                        "stuck_after": times.get(s.id, core.settings.stuck_after_seconds),
                    }
                    for s in senders
                    if s.app_id == app.id
                ],
            }
            for app in apps
        ]
        context = {
            "groups": groups,
            "window_minutes": HEALTH_WINDOW // 60,
            "stuck_after": core.settings.stuck_after_seconds,
        }
        return console.render(request, "providers.html", context)

    return [Route("/providers", guarded(console, page), methods=["GET"])]
