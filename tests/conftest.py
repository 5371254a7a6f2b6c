"""Fixtures: every portal test runs on SQLite and on a real PostgreSQL started by the test run.

MESSAGESERVICE_TEST_BACKENDS=sqlite (or postgres) narrows a local run to one engine.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.portal import LivePortal, make_settings, start_portal
from tests.postgres import TempPostgres

BACKENDS = [b for b in os.environ.get("MESSAGESERVICE_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    server = TempPostgres().start()
    try:
        yield server
    finally:
        server.stop()


def new_database_url(request: pytest.FixtureRequest, backend: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder}/messageservice.db"
    pg: TempPostgres = request.getfixturevalue("postgres")
    return pg.create_database("ms_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """One running server per engine for the whole session; tests make their own apps and users."""
    folder = tmp_path_factory.mktemp(f"portal-{backend}")
    settings = make_settings(new_database_url(request, backend, folder), folder)
    live = start_portal(settings, backend)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def https_portal(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LivePortal]:
    """The same kind of portal, served over https with the server's own self-signed certificate."""
    folder = tmp_path_factory.mktemp(f"tls-portal-{backend}")
    settings = make_settings(new_database_url(request, backend, folder), folder)
    live = start_portal(settings, backend, tls_dir=folder / "tls")
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, for tests that change portal-wide settings."""
    settings = make_settings(new_database_url(request, backend, tmp_path), tmp_path)
    overrides = getattr(request, "param", {}) or {}
    settings = settings.model_copy(update=overrides)
    live = start_portal(settings, backend)
    try:
        yield live
    finally:
        live.stop()
