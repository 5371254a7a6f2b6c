"""Where apps are told the portal is (auth[client_endpoint], tokens' client_endpoint): the portal's public URL.

Who decides, strongest first: the MESSAGESERVICE_PUBLIC_URL setting; `init --public-url`, or the domain
given to `init` when it is an address (`127.0.0.1:18555`, `localhost`, `sms.example.com:8443`); the
console's Portal page. `serve` records where it listens only when nothing is recorded yet, or when what is
recorded is a loopback address (its own earlier guess about this machine): an address someone chose for
the world outside is kept.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from messageservice.cli.errors import InputError


def checked_url(raw: str) -> str:
    """An http(s) URL with a host, without a trailing slash."""
    url = raw.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"not a public URL: {raw!r} (an http(s) URL such as https://sms.example.com)")
    return url


def _host_and_port(domain: str) -> tuple[str, int | None]:
    parts = urlsplit("//" + domain)
    try:
        return parts.hostname or "", parts.port
    except ValueError:  # a port that is not a number
        return parts.hostname or "", None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def from_domain(domain: str) -> str | None:
    """`http://DOMAIN` when the domain is an address one can connect to; None for a name that may be a label."""
    host, port = _host_and_port(domain.strip())
    if not host or "/" in domain:
        return None
    if port is not None or _is_ip(host) or host == "localhost":
        return f"http://{domain.strip()}"
    return None


def is_loopback(url: str | None) -> bool:
    """Whether the URL names this machine only (what `serve` records by itself)."""
    host = urlsplit(url or "").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def for_serve(setting: str | None, recorded: str | None, listening: str) -> tuple[str, str | None]:
    """(what apps are told, what `serve` records or None) for a server listening at `listening`."""
    if setting:
        return setting, None
    if recorded is None or is_loopback(recorded):
        return listening, listening
    return recorded, None
