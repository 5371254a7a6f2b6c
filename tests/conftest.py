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

`make test` runs the suite in pytest-xdist workers (`-n 3`), then the tests marked `alone`
(latency bounds) by themselves. Each worker is a session of its own: its own PostgreSQL, templates and portals;
tests take ports from the OS and files under tmp_path, and their ids must not vary between workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messageservice.console import auth as console_auth
from messageservice.core import logins, passwords
from tests.databases import BACKENDS, DatabaseFactory, new_database_url
from tests.portal import LivePortal, make_settings, open_fresh_portal, start_portal
from tests.postgres import TempPostgres

__all__ = ["BACKENDS", "SIGN_IN_FAILURE_DELAY", "new_database_url"]  # test modules import these

# Console passwords hashed in this process cost 1/16 of the real scrypt work (about 4 ms instead of 70, for
# each password set and each sign-in): the hash is scrypt all the same, and carries its cost, so that a
# `serve` process checks it as it is. Nothing tests the cost itself.
passwords.N = 2**10
# The hash an unknown login is checked against, so that it costs what a known one does (as in `serve`).
logins._DUMMY_HASH = passwords.hash_password("not a real password")
# A failed sign-in is answered late (0.5 s in `serve`), here 0.02 s: the brake tests make dozens of failures.
# The one test of the pause itself puts the product's value back (SIGN_IN_FAILURE_DELAY).
SIGN_IN_FAILURE_DELAY = console_auth.FAILURE_DELAY_SECONDS
console_auth.FAILURE_DELAY_SECONDS = 0.02

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


class SessionPortals:
    """The session-wide portals of one engine, started on first use and kept until the session ends.

    Kept here rather than in the engine-parametrized fixtures themselves: pytest tears a parametrized session
    fixture down whenever the next test wants the other engine, and under pytest-xdist a worker's tests
    alternate between engines, so each switch would start every portal again."""

    def __init__(self, factory: pytest.TempPathFactory, backend: str) -> None:
        self.factory = factory
        self.backend = backend
        self.started: dict[str, LivePortal] = {}

    def get(
        self, request: pytest.FixtureRequest, kind: str, *, tls: bool = False, in_process: bool = False
    ) -> LivePortal:
        if kind not in self.started:
            folder = self.factory.mktemp(f"{kind}-{self.backend}")
            settings = make_settings(new_database_url(request, self.backend, folder), folder)
            tls_dir = folder / "tls" if tls else None
            self.started[kind] = start_portal(
                settings, self.backend, migrated=True, tls_dir=tls_dir, in_process=in_process
            )
        return self.started[kind]

    def stop(self) -> None:
        for live in self.started.values():
            live.stop()


@pytest.fixture(scope="session")
def _portals_sqlite(tmp_path_factory: pytest.TempPathFactory, databases: DatabaseFactory) -> Iterator[SessionPortals]:
    portals = SessionPortals(tmp_path_factory, "sqlite")
    yield portals
    portals.stop()


@pytest.fixture(scope="session")
def _portals_postgres(
    tmp_path_factory: pytest.TempPathFactory, databases: DatabaseFactory, postgres: TempPostgres
) -> Iterator[SessionPortals]:
    # Depends on `postgres`, so that its portals stop before the server does.
    portals = SessionPortals(tmp_path_factory, "postgres")
    yield portals
    portals.stop()


def _session_portal(request: pytest.FixtureRequest, backend: str, kind: str, **options: Any) -> LivePortal:
    portals: SessionPortals = request.getfixturevalue(f"_portals_{backend}")
    return portals.get(request, kind, **options)


def portal_on_one_engine(request: pytest.FixtureRequest, preferred: str) -> LivePortal:
    """The session's real server on one engine: `preferred` when this run tests it, else the run's first.

    For the browser's modules: what a page shows does not depend on the engine (the console's queries are
    checked on both by the in-process console tests), and a browser per engine doubled their time."""
    return _session_portal(request, preferred if preferred in BACKENDS else BACKENDS[0], "portal")


@pytest.fixture(scope="session")
def portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """One running server per engine for the whole session; tests make their own apps and users."""
    yield _session_portal(request, backend, "portal")


@pytest.fixture(scope="session")
def https_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """The same kind of portal, served over https with the server's own self-signed certificate."""
    yield _session_portal(request, backend, "https", tls=True)


@pytest.fixture(scope="session")
def local_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """One in-process portal per engine for the whole session (no socket; `portal.session` reaches it)."""
    yield _session_portal(request, backend, "local", in_process=True)


@pytest.fixture(scope="session")
def any_portal(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePortal]:
    """An in-process portal on one engine only: for checks of input that is refused before the engine."""
    yield _session_portal(request, BACKENDS[0], "any", in_process=True)


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
