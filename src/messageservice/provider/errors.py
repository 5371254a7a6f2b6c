"""What can go wrong for a provider, each as its own exception under one base."""

from __future__ import annotations


class ProviderError(Exception):
    """Base of every error the provider kit raises."""


class MalformedCall(ProviderError, ValueError):
    """A HANDLER call or app event body that is not what Bitrix24 sends: answer it with 400."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.reason = reason
        self.field = field


class ForeignCall(ProviderError):
    """The call's auth[application_token] is not the one this app was installed with: answer it with 403."""


class MissingAuth(ProviderError):
    """The call carries no auth block (or no access token), so there is nothing to report status with."""


class BitrixError(ProviderError):
    """The portal answered a REST call with Bitrix's error envelope (or something that is not JSON)."""

    def __init__(self, error: str, error_description: str, http_status: int, method: str) -> None:
        super().__init__(f"{method}: {error}: {error_description} (HTTP {http_status})")
        self.error = error
        self.error_description = error_description
        self.http_status = http_status
        self.method = method


class PortalUnreachable(ProviderError):
    """The REST call did not get an answer: refused, timed out, TLS or DNS failure."""

    def __init__(self, method: str, origin: str, cause: BaseException) -> None:
        # Only the origin: a webhook's URL path carries its secret.
        super().__init__(f"{method}: no answer from {origin}: {type(cause).__name__}: {cause}")
        self.method = method
        self.origin = origin
        self.cause = cause
