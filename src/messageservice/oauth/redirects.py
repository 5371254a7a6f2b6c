"""Where /oauth/authorize/ may send an app's code: a clean URL under the app's own URL.

A browser resolves dot segments before it sends a request, so `https://app/appA/../evil/x` lands on
`/evil/x` although its text starts with `/appA/`. Such URLs (spelt with dots, percent-encoded dots,
encoded slashes or backslashes) are refused outright rather than resolved: no real app needs them.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from messageservice.core.tokens import OAuthError

MAX_LENGTH = 1000
# Percent-encoded "." (a dot segment in disguise) and "/" or "\" (a segment split in disguise).
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_ENCODED_SLASH = re.compile(r"%(2f|5c)", re.IGNORECASE)


def _refuse(why: str) -> OAuthError:
    return OAuthError("invalid_request", f"redirect_uri {why}")


def clean_redirect_uri(uri: str) -> str:
    """The URI in one canonical spelling (scheme and host in lower case), or invalid_request."""
    if len(uri) > MAX_LENGTH or not uri.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in uri):
        raise _refuse("must be an absolute http(s) URL of printable ASCII, at most 1000 characters")
    if "\\" in uri:
        raise _refuse("must not contain a backslash")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise _refuse("is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _refuse("must be an absolute http(s) URL")
    if "@" in parts.netloc:
        raise _refuse("must not carry a user name or password")
    if parts.fragment or "#" in uri:
        raise _refuse("must not have a fragment")
    path = parts.path
    if _ENCODED_SLASH.search(path):
        raise _refuse("must not contain encoded slashes")
    if any(segment in (".", "..") for segment in _ENCODED_DOT.sub(".", path).split("/")):
        raise _refuse("must not contain dot segments (. or ..)")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, path or "/", parts.query, ""))


def within_app(redirect: str, app_url: str) -> bool:
    """The redirect lies under the app's URL: same origin, and under the folder of the app's path."""
    target, app = urlsplit(redirect), urlsplit(app_url)
    base = app.path if app.path.endswith("/") else app.path.rsplit("/", 1)[0] + "/"
    same_origin = (target.scheme, target.netloc.lower()) == (app.scheme.lower(), app.netloc.lower())
    return same_origin and (target.path + "/").startswith(base or "/")
