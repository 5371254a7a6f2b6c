"""A handler's origin: the key its concurrency limit and breaker are kept under.

`scheme://host:port` with the host lowercased, the port always explicit (80/443 filled in) and no
userinfo, so `http://u1@Example.com/h` and `http://example.com:80/x` are one origin: an app cannot
multiply its share of a provider by spelling one URL many ways.
"""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str:
    """The normalised origin of `url`; a URL that does not parse is its own (lowercased) origin."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname  # lowercased, userinfo and brackets stripped
        port = parts.port
    except ValueError:  # a port out of range or not a number, an unbalanced bracket
        return "invalid:" + url.strip().lower()
    scheme = parts.scheme.lower()
    if not host:
        return "invalid:" + url.strip().lower()
    if port is None:
        port = DEFAULT_PORTS.get(scheme)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")
