"""Two real `serve` processes over one database enforce one rate limit and one sign-in brake."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pytest
import requests
from cryptography.fernet import Fernet

from messageservice.config import Settings
from messageservice.core import apps as app_service
from messageservice.core import portal as portal_service
from messageservice.core.context import Core
from messageservice.core.logins import ACCOUNT_RULE, ADDRESS_RULE, set_password
from messageservice.core.tokens import mint_for_user
from messageservice.store.db import migrate
from messageservice.store.limits import DatabaseBrakeStore
from tests.conftest import new_database_url
from tests.postgres import free_port
from tests.test_serve import _wait

COMMAND = [sys.executable, "-m", "messageservice.cli"]
BURST = 10
T = TypeVar("T")
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')

# One worker runs this module under `make test` (--dist loadgroup): its two `serve` processes start once per
# engine, not once in every worker that gets one of its tests.
pytestmark = pytest.mark.xdist_group("limits_across_processes")


@dataclass
class Installation:
    settings: Settings
    # The first process believes X-Forwarded-For from 127.0.0.1 (a named proxy); the second believes nobody.
    trusting: str
    plain: str

    def run(self, work: Callable[[Core], Awaitable[T]]) -> T:
        async def main() -> T:
            core = Core.open(self.settings)
            try:
                return await work(core)
            finally:
                await core.close()

        return asyncio.run(main())

    def new_token(self) -> str:
        """An app of its own, so that each test has a bucket of its own."""

        async def work(core: Core) -> str:
            app, _ = await app_service.add_app(core, "L", "http://127.0.0.1:9/", "messageservice")
            await app_service.install_app(core, app.client_id, 1)
            return str((await mint_for_user(core, app.client_id, 1))["access_token"])

        return self.run(work)

    def new_admin(self) -> tuple[str, str]:
        login, password = "op" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex

        async def work(core: Core) -> None:
            user = await portal_service.add_user(core, "Operator", admin=True)
            await set_password(core, user.id, password, login=login)

        self.run(work)
        return login, password


@pytest.fixture(scope="module")
def installation(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Installation]:
    folder = tmp_path_factory.mktemp(f"limits-{backend}")
    settings = Settings(
        database_url=new_database_url(request, backend, folder),
        data_dir=folder / "data",
        secret_key=Fernet.generate_key().decode(),
        _env_file=None,  # type: ignore[call-arg]
    )
    migrate(settings.database_url)
    installation = Installation(settings, "", "")
    installation.run(lambda core: portal_service.init_portal(core, "limits.test"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSAGESERVICE_")}
    env |= {
        "MESSAGESERVICE_DATABASE_URL": settings.database_url,
        "MESSAGESERVICE_DATA_DIR": str(settings.data_dir),
        "MESSAGESERVICE_SECRET_KEY": settings.secret_key or "",
        "MESSAGESERVICE_RATE_LIMIT_BURST": str(BURST),
        # Next to nothing drains during a test: what is admitted is the burst.
        "MESSAGESERVICE_RATE_LIMIT_PER_SECOND": "0.001",
        "MESSAGESERVICE_EVENT_RETRY_SCHEDULE": "",
    }
    processes, urls = [], []
    for trusted in ("127.0.0.1/32", ""):
        port = free_port()
        processes.append(
            subprocess.Popen(
                [*COMMAND, "serve", "--port", str(port), "--log-level", "warning"],
                env=env | {"MESSAGESERVICE_TRUSTED_PROXIES": trusted},
                stdout=(folder / f"serve-{port}.log").open("w"),
                stderr=subprocess.STDOUT,
            )
        )
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            _wait(url + "/health", timeout=90)
        installation.trusting, installation.plain = urls
        yield installation
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_two_processes_enforce_one_rate_limit(installation: Installation) -> None:
    token = installation.new_token()

    def call(i: int) -> requests.Response:
        base = (installation.trusting, installation.plain)[i % 2]
        return requests.post(base + "/rest/messageservice.sender.list", json={"auth": token}, timeout=30)

    # One by one, alternating between the processes: the burst, not twice it. (Which requests get it may
    # vary: a process holds its reservation until its next settle.)
    answers = [call(i) for i in range(3 * BURST)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == BURST, statuses
    assert set(statuses[-BURST:]) == {503}, statuses
    assert answers[-1].json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


def test_two_processes_enforce_one_rate_limit_under_concurrent_load(installation: Installation) -> None:
    token = installation.new_token()

    def call(i: int) -> int:
        base = (installation.trusting, installation.plain)[i % 2]
        answer = requests.post(base + "/rest/messageservice.sender.list", json={"auth": token}, timeout=30)
        return answer.status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(call, range(8 * BURST)))
    # At most one settle in flight per process may spend beyond the burst (the stated tolerance).
    assert BURST <= statuses.count(200) <= BURST + 2, statuses
    assert set(statuses) == {200, 503}


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = requests.Session()
        self.http.headers["Origin"] = base
        page = self.http.get(base + "/console/login", timeout=30)
        match = CSRF_FIELD.search(page.text)
        assert match is not None
        self.csrf = match.group(1)

    def sign_in(self, login: str, password: str, forwarded_for: str | None = None) -> requests.Response:
        headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
        return self.http.post(
            self.base + "/console/login",
            data={"csrf": self.csrf, "login": login, "password": password},
            headers=headers,
            timeout=30,
            allow_redirects=False,
        )


def test_the_sign_in_brake_holds_across_processes(installation: Installation) -> None:
    login, password = installation.new_admin()
    first, second = Browser(installation.trusting), Browser(installation.plain)
    # Eight wrong passwords for the admin from one client address, spread over both processes.
    statuses = [(first, second)[i % 2].sign_in(login, "guess").status_code for i in range(8)]
    assert statuses == [401] * (ACCOUNT_RULE.free + 1) + [429] * (7 - ACCOUNT_RULE.free), statuses
    # The right password waits too, in either process; after the wait it works (no lock-out).
    braked = second.sign_in(login, password)
    assert braked.status_code == 429
    assert first.sign_in(login, password).status_code == 429
    wait = int(braked.headers["retry-after"])
    assert 0 < wait <= ACCOUNT_RULE.first_delay
    time.sleep(wait)
    assert second.sign_in(login, password).status_code == 303


def test_forwarded_for_counts_only_from_a_named_proxy(installation: Installation) -> None:
    def guesses(browser: Browser) -> list[int]:
        # Made-up logins, so that only the brake per client address can stop them; the free tries at once
        # (each failure is answered 0.5 s late), then one more.
        def guess(i: int) -> int:
            login = "nobody" + uuid.uuid4().hex[:8]
            return browser.sign_in(login, "guess", forwarded_for=f"198.51.100.{i}").status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(guess, range(ADDRESS_RULE.free)))
        return [*statuses, guess(ADDRESS_RULE.free), guess(ADDRESS_RULE.free + 1)]

    # A sign-in clears its address's count, left by the other tests from this same 127.0.0.1.
    login, password = installation.new_admin()
    assert Browser(installation.plain).sign_in(login, password).status_code == 303
    # Behind a named proxy each forwarded address is a client of its own...
    assert set(guesses(Browser(installation.trusting))) == {401}
    # ...elsewhere the header is ignored: it is all one address, braked after its free tries.
    statuses = guesses(Browser(installation.plain))
    rows = installation.run(lambda core: DatabaseBrakeStore(core.store).failures(["address:127.0.0.1"]))
    assert statuses == [401] * (ADDRESS_RULE.free + 1) + [429], (str(statuses), rows)
