"""Apps: register, install, update, uninstall; client credentials, tokens for a user, the signing secret."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.forms import Form, FormError
from messageservice.console.presenting import name_lines
from messageservice.console.web import Console, describe, flash, guarded, posted, redirect
from messageservice.core import apps as app_service
from messageservice.core import console_queries as queries
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator
from messageservice.core.portal import list_users
from messageservice.core.senders import list_senders
from messageservice.core.tokens import OAuthError, mint_for_user

CLIENT_ID_MAX = 128


def read_app_fields(form: Form, *, required: bool) -> dict[str, Any]:
    return {
        "name": form.text("name", "Name", required=required) or None,
        "url": form.text("url", "URL", required=required, max_length=1000) or None,
        "scopes": form.text("scopes", "Scopes", required=required, max_length=1000) or None,
    }


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def listing_page(
        request: Request, values: dict[str, str] | None = None, error: str | None = None, created: Any = None
    ) -> Response:
        context = {
            "apps": await app_service.list_apps(core),
            "v": values or {"scopes": "messageservice"},
            "error": error,
            "created": created,
        }
        return console.render(request, "apps.html", context, status=400 if error else 200)

    async def listing(request: Request, operator: Operator) -> Response:
        return await listing_page(request)

    async def add(request: Request, operator: Operator) -> Response:
        form = posted(request)
        try:
            fields = read_app_fields(form, required=True)
            app, secret = await app_service.add_app(core, fields["name"], fields["url"], fields["scopes"])
        except (FormError, CoreError) as exc:
            return await listing_page(request, form.values(), describe(exc))
        # Shown on this page only: the secret is stored as a hash.
        return await listing_page(request, created={"client_id": app.client_id, "client_secret": secret})

    async def detail_page(
        request: Request,
        client_id: str,
        *,
        error: str | None = None,
        values: dict[str, str] | None = None,
        revealed: dict[str, Any] | None = None,
    ) -> Response:
        try:
            app = await app_service.get_app(core, client_id[:CLIENT_ID_MAX])
        except CoreError:
            return console.error_page(request, 404, "There is no such app.")
        context = {
            "app": app,
            "senders": await list_senders(core, app.id),
            "users": [u for u in await list_users(core) if u.active],
            "error": error,
            "v": values or {"name": app.name, "url": app.url, "scopes": ",".join(app.scopes)},
            "revealed": revealed,
            "name_lines": name_lines,
        }
        return console.render(request, "app.html", context, status=400 if error else 200)

    async def detail(request: Request, operator: Operator) -> Response:
        return await detail_page(request, request.path_params["client_id"])

    async def action(request: Request, operator: Operator) -> Response:
        client_id = str(request.path_params["client_id"])[:CLIENT_ID_MAX]
        what = request.path_params["action"]
        form = posted(request)
        try:
            app = await app_service.get_app(core, client_id)
        except CoreError:
            return console.error_page(request, 404, "There is no such app.")
        try:
            if what == "install":
                await app_service.install_app(core, client_id, operator.id)
                flash(request, "Installed; ONAPPINSTALL is on its way to the app's URL.")
            elif what == "update":
                fields = read_app_fields(form, required=False)
                version = form.integer("version", "Version", required=False, low=1, high=1_000_000)
                changes = {k: v for k, v in fields.items() if v is not None and v != _current(app, k)}
                await app_service.update_app(core, client_id, version=version, user_id=operator.id, **changes)
                flash(request, "Updated." + (" A new version: senders deleted, ONAPPUPDATE queued." if version else ""))
            elif what == "uninstall":
                await app_service.uninstall_app(core, client_id, clean=form.checked("clean"))
                flash(request, "Uninstalled; its senders and tokens are gone, ONAPPUNINSTALL is queued.")
            elif what == "client-secret":
                secret = await queries.reset_client_secret(core, client_id)
                return await detail_page(request, client_id, revealed={"client_secret": secret})
            elif what == "token":
                user_id = form.integer("user_id", "User")
                assert user_id is not None
                tokens = await mint_for_user(core, client_id, user_id)
                return await detail_page(request, client_id, revealed={"tokens": tokens})
            elif what == "signing-secret":
                choice = form.choice("do", "Signing secret", ("show", "rotate", "disable"))
                secret = await app_service.signing_secret(
                    core, client_id, rotate=choice == "rotate", disable=choice == "disable"
                )
                if secret is None:
                    flash(request, "Signing turned off: HANDLER calls carry no signature headers now.")
                else:
                    return await detail_page(request, client_id, revealed={"signing_secret": secret})
            else:
                return console.error_page(request, 404, "There is no such action.")
        except (FormError, CoreError, OAuthError) as exc:
            return await detail_page(request, client_id, error=describe(exc), values=form.values())
        if what in ("install", "update", "uninstall"):
            console.send_app_events_now()
        return redirect(f"/apps/{client_id}")

    return [
        Route("/apps", guarded(console, listing), methods=["GET"]),
        Route("/apps", guarded(console, add), methods=["POST"]),
        Route("/apps/{client_id}", guarded(console, detail), methods=["GET"]),
        Route("/apps/{client_id}/{action}", guarded(console, action), methods=["POST"]),
    ]


def _current(app: app_service.App, key: str) -> Any:
    return ",".join(app.scopes) if key == "scopes" else getattr(app, key)
