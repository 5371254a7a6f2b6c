"""SSRF guard: the address table, the settings text, and real aiohttp requests through the guarded connector.

No traffic leaves loopback: every non-loopback target here must be refused before a socket exists.
"""

from __future__ import annotations

import asyncio
import pickle
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from messageservice.delivery.ssrf import (
    GuardedResolver,
    HandlerAddressRefused,
    check_literal_host,
    guarded_connector,
    guarded_socket_factory,
    is_address_allowed,
    parse_networks,
    refused_reason,
)

DEFAULT = "127.0.0.0/8,::1/128"  # the setting's default

REFUSED = [
    "0.0.0.0",  # connect() to it reaches this host
    "0.1.2.3",
    "10.0.0.1",
    "10.255.255.255",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "127.0.0.1",
    "127.8.9.10",
    "169.254.169.254",  # cloud metadata
    "172.16.0.1",
    "172.31.255.255",
    "192.0.0.9",
    "192.0.2.1",
    "192.88.99.1",
    "192.168.1.1",
    "198.18.0.1",  # benchmarking, 198.18/15
    "198.19.255.255",
    "198.51.100.7",
    "203.0.113.7",
    "224.0.0.1",  # multicast: Python calls it global
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::a00:1",  # IPv4-compatible (deprecated)
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b:1::1",
    "100::1",
    "2001::1",  # Teredo
    "2001:db8::1",
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",  # site-local: Python calls it global
    "ff02::1",
    "ff0e::1",
    "not-an-ip",
    "127.1",  # socket calls would read it as 127.0.0.1
    "2130706433",
    "",
]
PUBLIC = [
    "1.1.1.1",
    "8.8.8.8",
    "11.0.0.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "198.20.0.0",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "[2606:4700:4700::1111]",
]


@pytest.mark.parametrize("ip", REFUSED)
def test_refused_with_nothing_allowed(ip: str) -> None:
    assert not is_address_allowed(ip, [])


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_is_allowed(ip: str) -> None:
    assert is_address_allowed(ip, [])


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # judged as 127.0.0.1
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("169.254.169.254", False),
        ("fe80::1", False),
        ("8.8.8.8", True),
    ],
)
def test_default_allows_loopback_only(ip: str, allowed: bool) -> None:
    assert is_address_allowed(ip, parse_networks(DEFAULT)) is allowed
    assert is_address_allowed(ip, DEFAULT) is allowed  # the text works as well


def test_allowed_networks_override() -> None:
    allowed = parse_networks("10.0.0.0/8, fe80::/10, 169.254.169.254")
    assert is_address_allowed("10.1.2.3", allowed)
    assert is_address_allowed("::ffff:10.1.2.3", allowed)
    assert is_address_allowed("fe80::1%eth0", allowed)
    assert is_address_allowed("169.254.169.254", allowed)
    assert not is_address_allowed("169.254.169.253", allowed)
    assert not is_address_allowed("172.16.0.1", allowed)
    assert not is_address_allowed("127.0.0.1", allowed)  # loopback is only in the default
    assert is_address_allowed("2.2.2.2", parse_networks("0.0.0.0/0,::/0"))
    assert is_address_allowed("192.168.0.1", parse_networks("0.0.0.0/0,::/0"))  # guard off


def test_parse_networks() -> None:
    assert parse_networks("") == []
    assert parse_networks("  ,  ") == []
    nets = parse_networks(" 10.0.0.0/8 ,fd00::/8,\t192.168.1.7/24 , 127.0.0.1 ,")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "fd00::/8", "192.168.1.0/24", "127.0.0.1/32"]


@pytest.mark.parametrize(
    "text", ["10.0.0.0/33", "nonsense", "10.0.0.0/8,example.com", "fd00::/129", "10.0.0.0/8 11.0.0.0/8"]
)
def test_parse_networks_errors(text: str) -> None:
    with pytest.raises(ValueError, match="MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS"):
        parse_networks(text)


def test_refused_exception() -> None:
    exc = HandlerAddressRefused("internal.example", "10.0.0.5")
    assert str(exc) == (
        "handler address 10.0.0.5 (for internal.example) is not allowed; see MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS"
    )
    assert (exc.host, exc.address) == ("internal.example", "10.0.0.5")
    assert isinstance(exc, OSError)
    assert str(HandlerAddressRefused("10.0.0.5", "10.0.0.5")).startswith("handler address 10.0.0.5 is not")
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), str(copy)) == (HandlerAddressRefused, str(exc))


def test_check_literal_host() -> None:
    for host in ("10.0.0.1", "[fd00::1]", "fd00::1", "0.0.0.0", "2130706433", "127.1"):
        with pytest.raises(HandlerAddressRefused):
            check_literal_host(host, DEFAULT)
    for host in ("127.0.0.1", "[::1]", "8.8.8.8", "internal.example", "localhost", "0x7f.1"):
        check_literal_host(host, DEFAULT)  # names are left to the resolver


def test_socket_factory_refuses_before_making_a_socket() -> None:
    factory = guarded_socket_factory(DEFAULT)
    with pytest.raises(HandlerAddressRefused):
        factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("10.0.0.1", 80)))
    with pytest.raises(HandlerAddressRefused):
        factory((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("fe80::1%lo", 80, 0, 0)))
    sock = factory((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 80)))
    sock.close()


def test_refused_reason_on_other_errors() -> None:
    assert refused_reason(ValueError("x")) is None
    try:
        try:
            raise HandlerAddressRefused("a.example", "10.0.0.1")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert refused_reason(outer) == str(HandlerAddressRefused("a.example", "10.0.0.1"))
    group = ExceptionGroup("many", [ValueError("x"), HandlerAddressRefused(None, "10.0.0.2")])
    assert refused_reason(group) is not None


# --- real requests -------------------------------------------------------------------------------------------


class Receiver:
    """A minimal HTTP server on 127.0.0.1 that counts TCP connections, to prove refusals never connect."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def run(test: Callable[[Receiver], Awaitable[None]]) -> None:
    async def main() -> None:
        async with Receiver() as receiver:
            await test(receiver)

    asyncio.run(main())


async def post(url: str, allowed: Any, resolver: AbstractResolver | None = None) -> str:
    """POST as the dispatcher does; returns the body, or raises what session.post raises."""
    async with (
        aiohttp.ClientSession(connector=guarded_connector(allowed, resolver=resolver)) as session,
        session.post(url, data=b"a=1", allow_redirects=False, timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return await response.text()


async def refused(url: str, allowed: Any, resolver: AbstractResolver | None = None) -> aiohttp.ClientConnectorError:
    started = time.monotonic()
    with pytest.raises(aiohttp.ClientConnectorError) as info:
        await post(url, allowed, resolver)
    assert time.monotonic() - started < 1.0
    assert isinstance(info.value.os_error, HandlerAddressRefused)
    assert refused_reason(info.value) == str(info.value.os_error)
    return info.value


def test_loopback_literal_allowed_by_default_refused_when_not() -> None:
    async def test(receiver: Receiver) -> None:
        url = f"http://127.0.0.1:{receiver.port}/"
        assert await post(url, DEFAULT) == "ok"
        assert receiver.connections == 1
        exc = await refused(url, "")
        assert type(exc) is aiohttp.ClientConnectorError
        assert str(exc.os_error) == (
            "handler address 127.0.0.1 is not allowed; see MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS"
        )
        assert receiver.connections == 1  # the refused POST never connected

    run(test)


def test_localhost_name_checked_after_resolution() -> None:
    async def test(receiver: Receiver) -> None:
        url = f"http://localhost:{receiver.port}/"
        exc = await refused(url, "")
        assert isinstance(exc, aiohttp.ClientConnectorDNSError)  # refused by the resolver
        assert exc.os_error.host == "localhost"  # type: ignore[attr-defined]
        assert "(for localhost)" in str(exc.os_error)
        assert receiver.connections == 0
        assert await post(url, DEFAULT) == "ok"
        assert receiver.connections == 1

    run(test)


def test_private_literals_refused_before_connecting() -> None:
    async def test(receiver: Receiver) -> None:
        for url in (
            "http://10.255.255.1/",
            "https://10.255.255.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[fd00::1]:8080/",
            "http://[::ffff:10.255.255.1]/",
            f"http://0.0.0.0:{receiver.port}/",  # would reach the receiver on Linux
            f"http://[::]:{receiver.port}/",
        ):
            exc = await refused(url, DEFAULT)
            assert "is not allowed" in str(exc)
        assert receiver.connections == 0

    run(test)


def test_numeric_host_forms_never_connect() -> None:
    async def test(receiver: Receiver) -> None:
        for host in ("2130706433", "127.1", "0x7f.0.0.1", "017700000001"):
            with pytest.raises(aiohttp.ClientError):  # aiohttp's own refusal or ours
                await post(f"http://{host}:{receiver.port}/", "")
        assert receiver.connections == 0

    run(test)


class FixedResolver(AbstractResolver):
    """Answers every name with the given addresses: a stand-in for a hostile DNS server."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=a,
                port=port,
                family=socket.AF_INET6 if ":" in a else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


def test_any_refused_record_refuses_the_name() -> None:
    async def test(receiver: Receiver) -> None:
        url = f"http://rebind.example:{receiver.port}/"
        # One allowed record and one refused one: nothing is tried, not even the allowed record.
        exc = await refused(url, DEFAULT, FixedResolver("127.0.0.1", "10.255.255.1"))
        assert exc.os_error.address == "10.255.255.1"  # type: ignore[attr-defined]
        assert "(for rebind.example)" in str(exc.os_error)
        assert receiver.connections == 0
        assert await post(url, DEFAULT, FixedResolver("127.0.0.1")) == "ok"
        assert receiver.connections == 1

    run(test)


def test_guarded_resolver_directly() -> None:
    async def main() -> None:
        resolver = GuardedResolver(DEFAULT, FixedResolver("8.8.8.8", "::ffff:192.168.0.1"))
        with pytest.raises(HandlerAddressRefused, match=r"192\.168\.0\.1 \(for x\.example\)"):
            await resolver.resolve("x.example", 443, socket.AF_UNSPEC)
        ok = GuardedResolver(DEFAULT, FixedResolver("8.8.8.8", "2606:4700:4700::1111"))
        assert [r["host"] for r in await ok.resolve("x.example", 443)] == ["8.8.8.8", "2606:4700:4700::1111"]
        await ok.close()
        local = GuardedResolver("")  # the real ThreadedResolver; localhost comes from /etc/hosts
        with pytest.raises(HandlerAddressRefused):
            await local.resolve("localhost", 80, socket.AF_UNSPEC)

    asyncio.run(main())


def test_refused_reason_none_for_ordinary_connect_failure() -> None:
    async def main() -> None:
        with socket.socket() as s:  # a loopback port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await post(f"http://127.0.0.1:{port}/", DEFAULT)
        assert refused_reason(info.value) is None

    asyncio.run(main())
