"""Checks: run check-provider against an app's URL and show the report.

The battery plays on a throwaway portal of its own (a loopback server with a temporary database), never
on this one: it installs, updates and uninstalls the app there. It runs in a worker thread, one run at a
time, and the page waits for it (seconds to a minute, by the timeouts chosen).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.forms import Form, FormError
from messageservice.console.web import Console, describe, guarded, posted
from messageservice.core import apps as app_service
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator

_one_run = threading.Lock()  # a battery starts a server; two at once would only slow each other down


def run_battery(url: str, handler_timeout: float, report_timeout: float, port: int) -> Any:
    from messageservice.checks import CheckPortal, Options, check_provider, throwaway_settings

    options = Options(handler_timeout=handler_timeout, report_timeout=report_timeout)
    with _one_run, tempfile.TemporaryDirectory(prefix="check-provider-") as folder:
        settings = throwaway_settings(Path(folder), handler_timeout=options.hard_timeout)
        with CheckPortal(settings, port=port) as portal:
            return check_provider(url, options, portal=portal)


def _seconds(form: Form, name: str, label: str, default: float, high: float) -> float:
    text = form.text(name, label, required=False, max_length=10)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise FormError(f"{label}: a number of seconds.") from None
    if not 0.1 <= value <= high:
        raise FormError(f"{label}: from 0.1 to {high:g} seconds.")
    return value


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def page(
        request: Request, *, values: dict[str, str] | None = None, error: str | None = None, report: Any = None
    ) -> Response:
        apps = [app for app in await app_service.list_apps(core) if app.installed]
        context = {
            "apps": apps,
            "v": values or {"handler_timeout": "5", "report_timeout": "15", "port": "0"},
            "error": error,
            "report": report,
        }
        return console.render(request, "checks.html", context, status=400 if error else 200)

    async def show(request: Request, operator: Operator) -> Response:
        return await page(request)

    async def run(request: Request, operator: Operator) -> Response:
        form = posted(request)
        try:
            client_id = form.text("client_id", "App", required=False, max_length=128)
            url = form.text("url", "URL", required=False, max_length=1000)
            if client_id:
                url = (await app_service.get_app(core, client_id)).url
            if not url or not url.startswith(("http://", "https://")):
                raise FormError("Choose an app, or give the http(s) URL of a provider app.")
            handler_timeout = _seconds(form, "handler_timeout", "HANDLER timeout", 5.0, 60.0)
            report_timeout = _seconds(form, "report_timeout", "Report timeout", 15.0, 300.0)
            port = form.integer("port", "Port", required=False, low=0, high=65535) or 0
        except (FormError, CoreError) as exc:
            return await page(request, values=form.values(), error=describe(exc))
        try:
            report = await asyncio.to_thread(run_battery, url, handler_timeout, report_timeout, port)
        except OSError as exc:
            return await page(request, values=form.values(), error=f"The throwaway portal could not start: {exc}")
        return await page(request, values=form.values(), report=report)

    return [
        Route("/checks", guarded(console, show), methods=["GET"]),
        Route("/checks", guarded(console, run), methods=["POST"]),
    ]
