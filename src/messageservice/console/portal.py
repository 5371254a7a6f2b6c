"""The portal: users (and their console logins), incoming webhooks, and settings."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.forms import FormError
from messageservice.console.web import Console, describe, flash, guarded, posted, redirect
from messageservice.core import console_queries as queries
from messageservice.core import portal as portal_service
from messageservice.core import webhooks as webhook_service
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator, set_password
from messageservice.core.passwords import MAX_LENGTH

# Shown read-only: they are read once at start-up (environment or .env), so they change on restart.
SHOWN_SETTINGS = (
    "database_url",
    "delivery_profile",
    "retry_schedule",
    "retry_max_age_seconds",
    "handler_timeout_seconds",
    "handler_concurrency",
    "breaker_failures",
    "breaker_cooldown_seconds",
    "dispatch_concurrency",
    "rate_limit_burst",
    "rate_limit_per_second",
    "retention_days",
    "allowed_handler_networks",
    "webhook_require_https",
)


def _database_url(url: str) -> str:
    """Without a password, if the URL has one."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def page(
        request: Request, *, error: str | None = None, values: dict[str, str] | None = None, revealed: Any = None
    ) -> Response:
        portal = await portal_service.get_portal(core)
        settings = {name: getattr(core.settings, name) for name in SHOWN_SETTINGS}
        settings["database_url"] = _database_url(str(settings["database_url"]))
        context = {
            "portal": portal,
            "users": await portal_service.list_users(core),
            "logins": await queries.user_logins(core),
            "webhooks": await queries.list_webhooks(core),
            "settings": settings,
            "public_url_fixed": bool(core.settings.public_url),
            "error": error,
            "v": values or {},
            "revealed": revealed,
        }
        return console.render(request, "portal.html", context, status=400 if error else 200)

    async def show(request: Request, operator: Operator) -> Response:
        return await page(request)

    async def action(request: Request, operator: Operator) -> Response:
        what = request.path_params["action"]
        form = posted(request)
        try:
            if what == "user-add":
                user = await portal_service.add_user(
                    core,
                    form.text("name", "Name"),
                    admin=form.checked("admin"),
                    last_name=form.text("last_name", "Last name", required=False),
                )
                flash(request, f"User {user.id} added.")
            elif what == "user-flags":
                user_id = form.integer("user_id", "User")
                admin, active = form.checked("admin"), form.checked("active")
                if user_id == operator.id and not (admin and active):
                    raise FormError("You cannot take away your own admin rights or deactivate yourself.")
                assert user_id is not None
                if not await queries.set_user_flags(core, user_id, is_admin=admin, active=active):
                    raise FormError("There is no such user.")
                flash(request, f"User {user_id} updated.")
            elif what == "user-password":
                user_id = form.integer("user_id", "User")
                login = form.text("login", "Login", required=False, max_length=64) or None
                password = form.text("password", "Password", max_length=MAX_LENGTH, strip=False, free_text=True)
                assert user_id is not None
                await set_password(core, user_id, password, login=login)
                flash(request, f"Console password set for user {user_id}.")
            elif what == "webhook-add":
                user_id = form.integer("user_id", "User")
                assert user_id is not None
                scopes = form.text("scopes", "Scopes", max_length=1000)
                title = form.text("title", "Title", required=False)
                hook = await webhook_service.add_webhook(core, user_id, scopes, title)
                return await page(request, revealed={"webhook_url": hook.url})
            elif what == "webhook-active":
                webhook_id = form.integer("webhook_id", "Webhook")
                assert webhook_id is not None
                if not await queries.set_webhook_active(core, webhook_id, form.checked("active")):
                    raise FormError("There is no such webhook.")
                flash(request, f"Webhook {webhook_id} {'enabled' if form.checked('active') else 'disabled'}.")
            elif what == "public-url":
                url = form.text("public_url", "Public URL", max_length=1000)
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
                    raise FormError("Public URL must be an http(s) URL such as https://sms.example.com.")
                await portal_service.set_public_url(core, url.rstrip("/"))
                flash(request, "Public URL saved: new tokens and events name it as client_endpoint.")
            else:
                return console.error_page(request, 404, "There is no such action.")
        except (FormError, CoreError, ValueError) as exc:
            text = describe(exc) if not isinstance(exc, ValueError) else "That value could not be read."
            return await page(request, error=text, values=form.values())
        return redirect("/portal")

    return [
        Route("/portal", guarded(console, show), methods=["GET"]),
        Route("/portal/{action}", guarded(console, action), methods=["POST"]),
    ]
