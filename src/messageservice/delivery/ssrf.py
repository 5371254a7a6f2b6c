"""SSRF guard for outbound calls: only globally routable addresses, plus the networks the operator allows.

App URLs and HANDLERs come from apps, so a POST must not reach this host's private neighbours
(10/8, 169.254.169.254, ...). The check runs on the addresses aiohttp actually connects to:

* names: `GuardedResolver` refuses the whole lookup if ANY record is refused (no rebinding
  across records, and nothing refused is put into aiohttp's DNS cache);
* literal IPs: aiohttp (3.14) never calls the resolver for them (`TCPConnector._resolve_host`
  returns them as they are), so the connector's `socket_factory` checks every socket address
  right before the socket is made. That is also a backstop for names: whatever path an address
  takes, no socket is created for a refused one.

Use it as:

    async with aiohttp.ClientSession(connector=guarded_connector(settings.allowed_handler_networks)) as s:
        try:
            async with s.post(url, data=body, allow_redirects=False) as response: ...
        except aiohttp.ClientError as exc:
            if (reason := refused_reason(exc)) is not None: ...  # record it, do not retry

A refused call raises `aiohttp.ClientConnectorError` (`ClientConnectorDNSError` for names) whose
`os_error` is the `HandlerAddressRefused`. Keep `trust_env=False` (aiohttp's default) and pass no
`proxy=`: through a proxy the guard would see only the proxy's address.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

SETTING = "MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Either the setting's text or its parsed form.
Allowed = str | Sequence[IPNetwork]

# Never reachable from the internet, whatever this Python's `is_global` says (its tables change
# between patch releases, and it calls fec0::/10 and the 6to4 relay range global).
_NOT_GLOBAL: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",  # "this network": connect() to 0.0.0.0 reaches this host
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relays (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",
        "3fff::/20",  # documentation
        "fc00::/7",  # unique local (fd00:ec2::254 is AWS metadata)
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
# IPv6 ranges that carry an IPv4 address the packet ends up at (RFC 6052 NAT64, RFC 3056 6to4).
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class HandlerAddressRefused(OSError):
    """An outbound call would reach an address the SSRF guard refuses.

    An OSError so that aiohttp treats it like any connect failure: it arrives wrapped in
    `aiohttp.ClientConnectorError` (`.os_error`), and `refused_reason` digs it out.
    """

    def __init__(self, host: str | None, address: str) -> None:
        self.host = host
        self.address = address
        where = f" (for {host})" if host and host != address else ""
        self.message = f"handler address {address}{where} is not allowed; see {SETTING}"
        super().__init__(errno.EACCES, self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[HandlerAddressRefused], tuple[str | None, str]]:
        return type(self), (self.host, self.address)


def parse_networks(text: str) -> list[IPNetwork]:
    """Comma-separated CIDRs ("127.0.0.0/8, ::1/128"); a bare address is a /32 or /128."""
    networks: list[IPNetwork] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            # strict=False: "10.1.2.3/8" means 10.0.0.0/8, as it does in most firewall configs.
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"{SETTING}: {part!r} is not a network like 10.0.0.0/8 or fd00::/8 ({exc})") from None
    return networks


def _networks(allowed: Allowed) -> list[IPNetwork]:
    return parse_networks(allowed) if isinstance(allowed, str) else list(allowed)


def _parse_address(ip: str) -> IPAddress | None:
    # Brackets come with URL hosts, "%eth0" scope ids with link-local answers from getaddrinfo.
    try:
        return ipaddress.ip_address(ip.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _is_public(address: IPAddress) -> bool:
    if not address.is_global or address.is_multicast or address.is_reserved or address.is_unspecified:
        return False
    return not any(address in net for net in _NOT_GLOBAL)


def is_address_allowed(ip: str, allowed: Allowed) -> bool:
    """True if a connection to `ip` may be made: a public address, or one inside `allowed`.

    Anything that does not parse as an address is refused (e.g. "127.1", which socket calls would
    quietly turn into 127.0.0.1).
    """
    address = _parse_address(ip)
    if address is None:
        return False
    # ::ffff:10.0.0.1 is 10.0.0.1 on the wire: judge (and allow) it as that.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in _networks(allowed)):
        return True
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64:
            # The gateway forwards to the embedded IPv4 address: public only if that one is.
            return _is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if address.sixtofour is not None and not _is_public(address.sixtofour):
            return False
    return _is_public(address)


def check_address(ip: str, allowed: Allowed, host: str | None = None) -> None:
    """Raise HandlerAddressRefused unless `ip` is allowed; `host` names what it was resolved from."""
    if not is_address_allowed(ip, allowed):
        raise HandlerAddressRefused(host, ip)


def check_literal_host(host: str, allowed: Allowed) -> None:
    """Refuse a URL host that is an IP literal outside `allowed`; names pass (they are checked after DNS).

    The connector already does this on every connect; call it to refuse a HANDLER URL early, when
    it is registered. Numeric forms that are not plain addresses ("2130706433", "127.1") are refused.
    """
    bare = host.strip("[]")
    if _parse_address(bare) is not None or ":" in bare or bare.replace(".", "").isdigit():
        check_address(bare, allowed, host)


_LABEL = re.compile(r"[a-z0-9_-]{1,63}", re.IGNORECASE | re.ASCII)
_NUMERIC_LABEL = re.compile(r"0x[0-9a-f]*|[0-9]+", re.IGNORECASE | re.ASCII)


def handler_url_refusal(url: str, allowed: Allowed) -> str | None:
    """Why delivery would surely refuse `url`, checked when a HANDLER is registered; None if it may work.

    Refused: what aiohttp's URL parser (yarl) cannot read or IDNA-encode, a malformed host name (an
    empty label as in `a..b`, a label or name too long, characters no resolver takes), an IP literal
    outside the allowed networks, and numeric forms such as `0x7f.1` that resolvers read as addresses.
    Names are left to the resolver: what they resolve to is checked on every connect.
    """
    try:
        parsed = yarl.URL(url)
        host = parsed.raw_host or ""
        parsed.host  # noqa: B018 - decoding a bad punycode label raises here
    except (ValueError, UnicodeError) as exc:
        return f"not a URL aiohttp can call ({exc})"
    bare = host.strip("[]")
    try:
        check_literal_host(bare, allowed)
    except HandlerAddressRefused as exc:
        return str(exc)
    if _parse_address(bare) is not None:
        return None
    labels = bare.removesuffix(".").split(".")
    if len(bare) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a valid host name"
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        return str(HandlerAddressRefused(None, host))
    return None


# Loopback: what local development needs, and only while the server cannot be reached from elsewhere.
LOOPBACK_NETWORKS = "127.0.0.0/8,::1/128"


def listening_nowhere(configured: str | None) -> str:
    """The networks for a process that serves no HTTP (the CLI) and so resolved no rule: the operator's
    list, else loopback (no listening address reaches beyond it)."""
    return LOOPBACK_NETWORKS if configured is None else configured


def is_loopback_host(host: str) -> bool:
    """A listening address that only this machine reaches ("" and 0.0.0.0 and :: listen everywhere)."""
    if host.lower() == "localhost":
        return True
    address = _parse_address(host)
    return address is not None and address.is_loopback


def handler_networks(configured: str | None, listening: Sequence[str] | None) -> tuple[str, str]:
    """The networks HANDLERs may reach beside public addresses, and one line saying which rule is in force.

    The operator's list wins. Unset, it follows where the server listens: loopback while every listening
    address is loopback (or nothing listens: a worker, a test), nothing private otherwise; an exposed
    server must not let apps read this host's loopback services through the answers they get back.
    `listening` None means not known, and is treated as exposed.
    """
    if configured is not None:
        shown = configured.strip() or "none"
        return configured, f"HANDLERs may reach public addresses and {shown} ({SETTING} is set)"
    if listening is not None and all(is_loopback_host(host) for host in listening):
        return LOOPBACK_NETWORKS, (
            f"HANDLERs may reach public addresses and loopback ({LOOPBACK_NETWORKS}): this server listens on "
            f"loopback only; set {SETTING} to change"
        )
    return "", (
        f"HANDLERs may reach public addresses only: this server listens beyond loopback; {SETTING} lists "
        "private networks to allow"
    )


class GuardedResolver(AbstractResolver):
    """Resolves with `resolver` (default: aiohttp's ThreadedResolver) and refuses the lookup if any
    answer is refused, so a name with one public and one private record cannot reach the private one.

    ThreadedResolver is aiohttp's DefaultResolver unless aiodns is installed; pinning it keeps name
    lookups on the system resolver (/etc/hosts included) either way, and it holds nothing to close
    (TCPConnector never closes a resolver it was given).
    """

    def __init__(self, allowed: Allowed, resolver: AbstractResolver | None = None) -> None:
        self._allowed = _networks(allowed)
        self._resolver = resolver if resolver is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        for result in results:
            check_address(result["host"], self._allowed, host)
        return results

    async def close(self) -> None:
        await self._resolver.close()


SocketFactory = Callable[[tuple[int, int, int, str, tuple[object, ...]]], socket.socket]


def guarded_socket_factory(allowed: Allowed) -> SocketFactory:
    """aiohttp `socket_factory`: refuses the address before a socket exists, else makes the socket
    aiohttp would have made. It sees every address connected to, IP literals included."""
    networks = _networks(allowed)

    def factory(addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        check_address(str(sockaddr[0]), networks)
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def guarded_connector(
    allowed: Allowed, *, resolver: AbstractResolver | None = None, **kwargs: Any
) -> aiohttp.TCPConnector:
    """A TCPConnector that connects only to allowed addresses; `kwargs` go to TCPConnector.

    Needs a running event loop (as TCPConnector does) and aiohttp >= 3.12 (`socket_factory`).
    `resolver` replaces the ThreadedResolver that does the lookups (it is wrapped, not trusted).
    """
    networks = _networks(allowed)
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(networks, resolver),
        socket_factory=guarded_socket_factory(networks),
        **kwargs,
    )


def refused_reason(exc: BaseException) -> str | None:
    """The guard's message if `exc` is (or wraps) a HandlerAddressRefused: record it, do not retry."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, HandlerAddressRefused):
            return str(current)
        if isinstance(current, aiohttp.ClientConnectorError):
            pending.append(current.os_error)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        pending.extend((current.__cause__, current.__context__))
    return None
