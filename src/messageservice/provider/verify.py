"""Is this call from the portal the app was installed on? Bitrix24's answer: compare auth[application_token]
with the one ONAPPINSTALL (or ONAPPUPDATE) delivered (spec 2.4), in constant time."""

from __future__ import annotations

import hmac

from messageservice.provider.calls import AppEvent, HandlerCall
from messageservice.provider.errors import ForeignCall


def application_token_matches(expected: str | None, received: str | None) -> bool:
    """True only for two equal, non-empty tokens; the time taken does not depend on where they differ."""
    if not expected or not received:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), received.encode("utf-8"))


def verify_application_token(call: HandlerCall | AppEvent, expected: str | None) -> None:
    """Raise ForeignCall unless the call carries the expected application_token."""
    received = call.auth.application_token if call.auth is not None else None
    if not application_token_matches(expected, received):
        raise ForeignCall("auth[application_token] does not match this app's installation")
