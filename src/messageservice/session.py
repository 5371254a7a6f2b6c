"""The console's session cookie, for pages outside the console that need to know who is signed in.

The console's SessionMiddleware (Starlette) writes the cookie: base64 JSON signed by itsdangerous'
TimestampSigner with a key derived from the server's secret key. /oauth/authorize/ reads it here
with the same signer and key, so that a signed-in admin gets codes for themselves.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode

import itsdangerous
from starlette.requests import Request

from messageservice.core.context import Core
from messageservice.core.logins import Operator, current_operator

COOKIE = "messageservice_console"
SESSION_SECONDS = 8 * 3600
PURPOSE = "console-session"


def session_key(core: Core) -> str:
    return core.box.derive(PURPOSE)


async def signed_in_operator(core: Core, request: Request) -> Operator | None:
    """The admin signed in to the console in this browser, still an active admin with that password."""
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(b64decode(itsdangerous.TimestampSigner(session_key(core)).unsign(raw, SESSION_SECONDS)))
    except (itsdangerous.BadSignature, binascii.Error, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, stamp = data.get("user_id"), data.get("stamp")
    if not isinstance(user_id, int) or not isinstance(stamp, str):
        return None
    return await current_operator(core, user_id, stamp)
