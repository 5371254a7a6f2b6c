"""The protocol's own errors, with Bitrix's codes, texts and HTTP statuses (spec 3.3, 3.5)."""

from __future__ import annotations

from messageservice.core.errors import CoreError


def method_not_found() -> CoreError:
    return CoreError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def no_auth_found() -> CoreError:
    return CoreError("NO_AUTH_FOUND", "Wrong authorization data", 401)


def expired_token() -> CoreError:
    return CoreError("expired_token", "The access token provided has expired", 401)


def invalid_token() -> CoreError:
    # Bitrix's OAuth server text is unknown (spec open question 5); this is the usual OAuth2-server wording.
    return CoreError("invalid_token", "The access token provided is invalid", 401)


def invalid_credentials() -> CoreError:
    return CoreError("INVALID_CREDENTIALS", "Invalid request credentials", 401)


def https_required() -> CoreError:
    return CoreError("INVALID_REQUEST", "Https required.", 401)


def insufficient_scope(webhook: bool, *, in_batch: bool = False) -> CoreError:
    if in_batch:
        return CoreError("insufficient_scope", "", 401)
    holder = "webhook" if webhook else "access"
    return CoreError(
        "insufficient_scope",
        f"The request requires higher privileges than provided by the {holder} token",
        401,
    )


def query_limit_exceeded() -> CoreError:
    return CoreError("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)


def operation_time_limit() -> CoreError:
    return CoreError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit", 429)


def wrong_encoding() -> CoreError:
    return CoreError("WRONG_ENCODING", "Wrong request encoding", 400)


def body_too_large(limit: int) -> CoreError:
    # Bitrix's front end answers 413 with an HTML page; we keep the JSON envelope.
    return CoreError("ERROR_REQUEST_TOO_LARGE", f"Request body is larger than {limit} bytes", 413)


def body_timeout() -> CoreError:
    return CoreError("REQUEST_TIMEOUT", "Request body not received in time", 408)


def internal_error() -> CoreError:
    return CoreError("ERROR_CORE", "Internal server error", 500)


def sql_error() -> CoreError:
    return CoreError("ERROR_CORE", "SQL query error!", 500)


# Seconds a client is asked to wait when storage cannot take the request (full, read-only, unreachable).
STORE_RETRY_AFTER_SECONDS = 5


def store_unavailable() -> CoreError:
    # Bitrix's SQL failures are ERROR_CORE; 503 (with Retry-After) says that trying again later helps,
    # and SDKs retry on it (b24pysdk on 503, fast_bitrix24 on any 5xx).
    return CoreError("ERROR_CORE", "Storage is unavailable; try again later", 503)
