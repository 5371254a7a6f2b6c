"""Fixtures: every portal test runs on SQLite and on a real PostgreSQL started by the test run.

MESSAGESERVICE_TEST_BACKENDS=sqlite (or postgres) narrows a local run to one engine.

The tiers (see the README's "Tests"):
- `portal`, `https_portal`, `fresh_portal`: a real uvicorn server on a loopback port, for the wire (SDKs,
  TLS, raw HTTP bytes, other processes calling in).
- `local_portal`, `local_fresh_portal`: the same app in-process (no socket), for HTTP semantics.
- `any_portal`, `any_fresh_portal`: in-process on the first engine only, for checks whose outcome does
  not depend on the engine (parsing, routing, validation, envelopes): they run once, not once per engine.
- `-m e2e`: real `serve`/`worker` processes, SIGKILL, SDKs, the browser, scale-out.

Every database is a copy of one migrated template (tests/databases.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import BACKENDS, DatabaseFactory, new_database_url
from tests.portal import LivePortal, make_settings, open_fresh_portal, start_portal
from tests.postgres import TempPostgres

__all__ = ["BACKENDS", "new_database_url"]  # test modules import these

# The end-to-end tier (`-m e2e`, `-m "not e2e"`): real processes, real SDKs, the browser, SIGKILL.
# New modules of that kind mark themselves with `pytestmark = pytest.mark.e2e`.
E2E_MODULES = {
    "test_clients",
    "test_console_browser",
    "test_crash",
    "test_demo_provider",
    "test_provider_e2e",
    "test_provider_plugin",
    "test_scale_out",
    "test_serve",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.stem in E2E_MODULES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    server = TempPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> DatabaseFactory:
    return DatabaseFactory(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _session_portal(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, backend: str, **options: Any
) -> Iterator[LivePortal]:
    folder = factory.mktemp(f"portal-{backend}")
    settings = make_settings(new_database_url(request, backend, folder), folder)
    if options.get("tls"):
        options = {**options, "tls_dir": folder / "tls"}
    options.pop("tls", None)
    live = start_portal(settings, backend, migrated=True, **options)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """One running server per engine for the whole session; tests make their own apps and users."""
    yield from _session_portal(request, tmp_path_factory, backend)


@pytest.fixture(scope="session")
def https_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """The same kind of portal, served over https with the server's own self-signed certificate."""
    yield from _session_portal(request, tmp_path_factory, backend, tls=True)


@pytest.fixture(scope="session")
def local_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """One in-process portal per engine for the whole session (no socket; `portal.session` reaches it)."""
    yield from _session_portal(request, tmp_path_factory, backend, in_process=True)


@pytest.fixture(scope="session")
def any_portal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePortal]:
    """An in-process portal on one engine only: for checks of input that is refused before the engine."""
    yield from _session_portal(request, tmp_path_factory, BACKENDS[0], in_process=True)


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own (a real server), for tests that change portal-wide settings."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=False)


@pytest.fixture
def local_fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, in-process; settings overrides as for `fresh_portal` (indirect parametrize)."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=True)


@pytest.fixture
def any_fresh_portal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LivePortal]:
    """`local_fresh_portal` on one engine only: portal-wide settings whose effect does not reach the engine."""
    yield from open_fresh_portal(request, BACKENDS[0], tmp_path, in_process=True)
