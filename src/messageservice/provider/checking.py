"""check-provider from a provider's own pytest suite: the battery as fixtures of the kit's plugin.

    def test_my_provider_passes_check_provider(provider_checks):
        portal = provider_checks.portal                   # started: point the provider at portal.base_url
        url = start_my_provider(portal=portal.base_url)   # the app's install URL
        report = provider_checks.run(url)                 # every check; only=..., skip=... to narrow
        assert report.ok, report_text(report)

Override `provider_check_options` to change the timeouts (seconds) for the whole suite.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when used: messageservice.checks itself builds on this plugin's server
    from messageservice.checks import CheckPortal, Options, Report

START_TIMEOUT = 15.0


def report_text(report: Report) -> str:
    """The failures, one paragraph each: what an assertion message should show."""
    lines = [f"check-provider: {len(report.failures)} of {len(report.results)} checks failed"]
    for r in report.failures:
        lines.append(f"- {r.name}: {r.title}\n  expected: {r.expected}\n  happened: {r.happened}\n  fix: {r.fix}")
    return "\n".join(lines)


@dataclass
class ProviderChecks:
    portal: CheckPortal
    options: Options

    def run(self, provider_url: str, *, only: Iterable[str] = (), skip: Iterable[str] = (), **timeouts: Any) -> Report:
        from messageservice.checks import check_provider

        options = replace(self.options, only=frozenset(only), skip=frozenset(skip), **timeouts)
        return check_provider(provider_url, options, portal=self.portal)


class ServedApp:
    """An ASGI app (a provider) served by uvicorn on a free loopback port, in a thread.

    `make_app(url)` gets the app's own base URL first: a provider registers its HANDLER under it.
    """

    def __init__(self, make_app: Callable[[str], Any]) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(make_app(self.url), log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def start(self) -> ServedApp:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@pytest.fixture
def provider_check_options() -> Options:
    """The battery's timeouts for this suite; override to change them."""
    from messageservice.checks import Options

    return Options(handler_timeout=2.0, report_timeout=10.0)


@pytest.fixture
def provider_checks(
    provider_check_options: Options, messageservice_settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProviderChecks]:
    """A throwaway, recorded portal to run check-provider on (`.portal`, `.run(url)`), stopped after the test."""
    from messageservice.checks import CheckPortal, throwaway_settings

    folder: Path = tmp_path_factory.mktemp("check-provider")
    timeout = provider_check_options.hard_timeout
    settings = throwaway_settings(folder, handler_timeout=timeout, **messageservice_settings)
    with CheckPortal(settings) as portal:
        yield ProviderChecks(portal, provider_check_options)
