"""Who is calling: an OAuth access token or an incoming webhook (spec 3.3)."""

from __future__ import annotations

from messageservice.core.context import Core
from messageservice.core.tokens import lookup_access_token
from messageservice.core.webhooks import find_webhook
from messageservice.rest import errors
from messageservice.rest.registry import Caller


async def webhook_caller(core: Core, user_id: str, code: str, https: bool) -> Caller:
    if core.settings.webhook_require_https and not https:
        raise errors.https_required()
    if not (user_id.isascii() and user_id.isdigit() and len(user_id) <= 10):
        raise errors.invalid_credentials()
    webhook = await find_webhook(core, int(user_id), code)
    if webhook is None:
        raise errors.invalid_credentials()
    return Caller(user_id=webhook.user_id, is_admin=webhook.is_admin, scopes=webhook.scopes, webhook_id=webhook.id)


async def token_caller(core: Core, token: str | None) -> Caller:
    if not token:
        raise errors.no_auth_found()
    found = await lookup_access_token(core, token)
    if found is None:
        raise errors.invalid_token()
    if found.expires_at < core.clock():
        raise errors.expired_token()
    return Caller(
        user_id=found.user_id,
        is_admin=found.is_admin,
        scopes=found.scopes,
        client_id=found.client_id,
        app_id=found.app_id,
    )
