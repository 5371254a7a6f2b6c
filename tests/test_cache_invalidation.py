"""The REST cache (src/messageservice/cache/): what it keeps, and that every kind of change, made by another
process or another Core on the same database, is seen by the next request.

SQLite: the next request checks the change counter itself, so it sees the change with no wait at all.
PostgreSQL: a change reaches the server as a NOTIFY on its listener's connection; the tests wait for that
notice (normally well under a millisecond), then assert what the next request answers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from messageservice.cache.changes import CHANNEL, changing
from messageservice.cache.freshness import RequestScope, cached, current_generation
from messageservice.cache.memory import RestCache
from messageservice.core import apps as app_service
from messageservice.core import console_queries
from messageservice.core import senders as sender_service
from messageservice.core import webhooks as webhook_service
from messageservice.core.context import Core
from messageservice.core.errors import CoreError
from messageservice.core.secrets import hash_secret
from messageservice.core.tokens import OAuthError, TokenAuth, refresh
from messageservice.delivery.wakeups import QueueListener
from messageservice.rest.auth import token_caller
from messageservice.store.change_signal import ChangeSignal, signal_path
from messageservice.store.errors import StoreError
from messageservice.store.features import POSTGRESQL, SQLITE
from messageservice.store.tables import webhooks
from messageservice.supervisor import Backoff
from tests.conftest import BACKENDS
from tests.portal import InProcessServer, LivePortal
from tests.postgres import TempPostgres

HANDLER = "http://127.0.0.1:9000/handler"

# --------------------------------------------------------------------------------------------------
# The cache's logic, without a server.
# --------------------------------------------------------------------------------------------------


def test_kept_values_are_served_until_anything_changes() -> None:
    cache = RestCache()
    generation = cache.generation()
    cache.put("a", 1, generation)
    cache.put("b", 2, generation)
    assert cache.get("a") == 1 and cache.get("b") == 2
    cache.invalidate()
    assert cache.get("a") is None and cache.get("b") is None and len(cache) == 0


def test_a_read_that_a_change_overtook_is_not_kept() -> None:
    cache = RestCache()
    before = cache.generation()
    cache.invalidate()  # a change lands while the read is under way
    cache.put("a", "old", before)
    assert cache.get("a") is None
    cache.put("a", "new", cache.generation())
    assert cache.get("a") == "new"


def test_the_cache_is_bypassed_while_a_change_of_this_process_is_open() -> None:
    cache = RestCache()
    before = cache.generation()
    cache.put("a", "old", before)
    cache.hold()
    assert cache.generation() is None and cache.get("a") is None
    cache.put("a", "during", before)
    cache.put("b", "during", None)
    assert len(cache) == 0
    cache.release()
    after = cache.generation()
    assert after is not None and after != before
    cache.put("a", "late", before)  # read before the change committed: not kept
    assert cache.get("a") is None


def test_postgres_uses_the_cache_only_while_listening() -> None:
    cache = RestCache()
    assert cache.generation(needs_listener=True) is None  # no listener yet
    cache.listening(True)
    generation = cache.generation(needs_listener=True)
    assert generation is not None
    cache.put("a", 1, generation)
    assert cache.get("a") == 1
    cache.listening(False)  # connection lost: notices may be missed from now on
    assert cache.generation(needs_listener=True) is None and cache.get("a") is None
    cache.put("a", 1, generation)
    assert len(cache) == 0


def test_the_oldest_entry_goes_when_full() -> None:
    cache = RestCache(max_entries=2)
    generation = cache.generation()
    for key in ("a", "b", "c"):
        cache.put(key, key, generation)
    assert "a" not in cache and cache.get("b") == "b" and cache.get("c") == "c"
    cache.put("b", "again", generation)  # replacing an entry evicts nothing
    assert len(cache) == 2 and cache.get("c") == "c"


class FakeSqliteStore:
    """`fetch` of the counter row, as the read connection answers it; with `signal`, the shared counter
    beside the file (without, as where it cannot be mapped: the row is read at every request)."""

    features = SQLITE

    def __init__(self, signal: ChangeSignal | None = None) -> None:
        self.counter = 0
        self.counter_reads = 0
        self.change_signal = signal

    async def fetch(self, statement: Any, params: Any) -> Sequence[Any]:
        assert "cache_generations" in str(statement), statement
        self.counter_reads += 1
        return [(self.counter,)]


def fake_core(store: Any, clock: Callable[[], float] = time.time) -> Any:
    return SimpleNamespace(store=store, cache=RestCache(), clock=clock)


async def sqlite_counter_is_read_once_per_request() -> None:
    store = FakeSqliteStore()
    core = fake_core(store)
    with RequestScope():
        first = await current_generation(core)
        core.cache.put("a", 1, first)
        assert await current_generation(core) == first and core.cache.get("a") == 1
    assert store.counter_reads == 1  # one read for the whole request
    with RequestScope():
        assert await current_generation(core) == first and core.cache.get("a") == 1
    assert store.counter_reads == 2  # every request reads it again
    store.counter += 1  # another process changed something cached
    with RequestScope():
        moved = await current_generation(core)
        assert moved is not None and moved != first and core.cache.get("a") is None
        core.cache.hold()  # this process changes something within the request: look again
        core.cache.release()
        assert await current_generation(core) not in (None, moved)
    assert store.counter_reads == 4
    # Outside a request (the CLI, a background loop) every use reads the counter.
    await current_generation(core)
    await current_generation(core)
    assert store.counter_reads == 6


def test_sqlite_counter_is_read_once_per_request() -> None:
    asyncio.run(sqlite_counter_is_read_once_per_request())


async def shared_signal_replaces_the_counter_read(path: Path) -> None:
    store = FakeSqliteStore(ChangeSignal(path))
    core = fake_core(store)
    other_process = ChangeSignal(path)  # another process's mapping of the same file
    first = await current_generation(core)
    core.cache.put("a", 1, first)
    assert store.counter_reads == 1  # the first look reads the row as well
    for _ in range(5):
        with RequestScope():
            assert await current_generation(core) == first and core.cache.get("a") == 1
    assert store.counter_reads == 1  # within the backstop's second, the shared counter alone
    other_process.move()
    moved = await current_generation(core)
    assert moved not in (None, first) and core.cache.get("a") is None
    assert store.counter_reads == 1
    core.cache.put("a", 2, moved)
    # A writer that died between its COMMIT and its move: only the row says so, read once the second is up.
    store.counter += 1
    assert await current_generation(core) == moved and core.cache.get("a") == 2
    core.cache.row_read_due = 0.0
    assert await current_generation(core) not in (None, moved) and core.cache.get("a") is None
    assert store.counter_reads == 2


def test_sqlite_shared_signal_replaces_the_counter_read(tmp_path: Path) -> None:
    asyncio.run(shared_signal_replaces_the_counter_read(tmp_path / "messageservice.db-changes"))


def test_the_shared_signal_is_one_counter_for_every_mapping(tmp_path: Path) -> None:
    database = tmp_path / "messageservice.db"
    first = ChangeSignal.beside(database)
    second = ChangeSignal.beside(database)
    assert first is not None and second is not None
    assert first.read() == second.read() == 0
    first.move()
    second.move()
    assert first.read() == second.read() == 2
    assert signal_path(database).stat().st_mode & 0o777 == 0o600
    first.close()
    first.move()  # a change ending after its store closed (a stop) moves nothing, and does not fail
    assert ChangeSignal.beside(database).read() == 2  # type: ignore[union-attr]  # kept in the file


def test_no_shared_signal_where_its_file_cannot_be_made(tmp_path: Path) -> None:
    assert ChangeSignal.beside(tmp_path / "missing-folder" / "messageservice.db") is None


class NoCounterStore(FakeSqliteStore):
    """A database from before migration 0011."""

    async def fetch(self, statement: Any, params: Any) -> Sequence[Any]:
        raise StoreError("no such table: cache_generations")


async def without_the_counter_nothing_is_kept() -> None:
    core = fake_core(NoCounterStore())
    reads: list[int] = []

    async def read() -> str:
        reads.append(1)
        return "value"

    with RequestScope():
        assert await cached(core, "k", read) == "value"
        assert await cached(core, "k", read) == "value"
    assert len(reads) == 2 and len(core.cache) == 0


def test_without_the_counter_table_the_cache_is_bypassed() -> None:
    asyncio.run(without_the_counter_nothing_is_kept())


async def a_task_started_by_a_request_checks_again_after_it() -> None:
    store = FakeSqliteStore()
    core = fake_core(store)
    with RequestScope():
        await current_generation(core)
        later = asyncio.Event()

        async def child() -> None:
            await later.wait()
            await current_generation(core)

        task = asyncio.create_task(child())
    assert store.counter_reads == 1
    later.set()
    await task
    assert store.counter_reads == 2


def test_a_task_started_by_a_request_checks_again_after_it() -> None:
    asyncio.run(a_task_started_by_a_request_checks_again_after_it())


async def only_what_was_found_is_kept() -> None:
    core = fake_core(SimpleNamespace(features=POSTGRESQL))
    core.cache.listening(True)
    reads: list[str] = []

    async def read_missing() -> None:
        reads.append("missing")
        return None

    async def read_found() -> str:
        reads.append("found")
        return "value"

    assert await cached(core, "k", read_missing) is None
    assert await cached(core, "k", read_missing) is None
    assert await cached(core, "f", read_found) == "value"
    assert await cached(core, "f", read_found) == "value"
    assert reads == ["missing", "missing", "found"]
    core.cache.listening(False)
    assert await cached(core, "f", read_found) == "value"
    assert await cached(core, "f", read_found) == "value"
    assert reads == ["missing", "missing", "found", "found", "found"]


def test_only_what_was_found_is_kept_and_nothing_without_a_listener() -> None:
    asyncio.run(only_what_was_found_is_kept())


async def cached_token_expires_by_the_clock() -> None:
    now = [1_000.0]
    core = fake_core(SimpleNamespace(features=POSTGRESQL), clock=lambda: now[0])
    core.cache.listening(True)
    auth = TokenAuth(app_id=1, client_id="c", user_id=1, is_admin=True, scopes=frozenset(["x"]), expires_at=1_010.0)
    core.cache.put(("token", hash_secret("t0k3n")), auth, core.cache.generation(needs_listener=True))
    assert (await token_caller(core, "t0k3n")).app_id == 1  # from the cache: no store to read
    now[0] = 1_011.0
    with pytest.raises(CoreError) as failure:
        await token_caller(core, "t0k3n")
    assert failure.value.code == "expired_token"


def test_a_cached_token_expires_by_the_clock() -> None:
    asyncio.run(cached_token_expires_by_the_clock())


class FakeConnection:
    def __init__(self, features: Any) -> None:
        self.features = features
        self.executed: list[str] = []

    async def execute(self, statement: Any, parameters: Any = None) -> None:
        self.executed.append(str(statement))


class FakeTransactionStore:
    def __init__(self, features: Any, cache: RestCache, signal: ChangeSignal | None = None) -> None:
        self.features = features
        self.cache = cache
        self.conn = FakeConnection(features)
        self.held_inside: bool | None = None
        self.change_signal = signal
        self.signal_at_commit: list[int] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeConnection]:
        yield self.conn
        self.held_inside = self.cache.generation() is None  # at commit: still held
        if self.change_signal is not None:
            self.signal_at_commit.append(self.change_signal.read())


async def a_change_announces_itself(features: Any, signal: ChangeSignal | None = None) -> list[str]:
    cache = RestCache()
    store = FakeTransactionStore(features, cache, signal)
    core: Any = SimpleNamespace(store=store, cache=cache)
    before = cache.generation()
    async with changing(core) as conn:
        assert cache.generation() is None
        assert conn is store.conn
    assert store.held_inside is True
    assert cache.generation() not in (None, before)
    with pytest.raises(RuntimeError):
        async with changing(core):
            raise RuntimeError("rolled back")
    assert cache.generation() is not None  # released after a failure too
    if signal is not None:
        # Moved before each transaction and after each one ended (the failed one has no commit).
        assert store.signal_at_commit == [1] and signal.read() == 4
    return store.conn.executed


def test_a_change_announces_itself_in_its_transaction(tmp_path: Path) -> None:
    assert asyncio.run(a_change_announces_itself(POSTGRESQL)) == [f"NOTIFY {CHANNEL}"] * 2
    for signal in (None, ChangeSignal(tmp_path / "db-changes")):
        bumps = asyncio.run(a_change_announces_itself(SQLITE, signal))
        assert len(bumps) == 2 and all("cache_generations" in sql and "generation + 1" in sql for sql in bumps)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def listener_scenario(url: str) -> None:
    cache = RestCache()
    core: Any = SimpleNamespace(settings=SimpleNamespace(database_url=url), cache=cache)
    listener = QueueListener(core, lambda: None, backoff=Backoff(first=0.05, cap=0.2), wakeups=False)
    admin = await asyncpg.connect(url)
    listener.start()
    try:
        await until(lambda: cache.generation(needs_listener=True) is not None)
        cache.put("a", 1, cache.generation(needs_listener=True))
        await admin.execute(f"NOTIFY {CHANNEL}")  # what `changing()` sends on commit
        await until(lambda: "a" not in cache)
        cache.put("a", 1, cache.generation(needs_listener=True))
        [pid] = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()", f"LISTEN%{CHANNEL}%"
        )
        await admin.execute("SELECT pg_terminate_backend($1)", pid["pid"])
        # Lost: bypassed at once (the connection's end is reported, not found at the next ping) ...
        await until(lambda: cache.generation(needs_listener=True) is None)
        assert "a" not in cache
        # ... and used again once it listens again.
        await until(lambda: cache.generation(needs_listener=True) is not None)
        assert listener.health.restarts == 1
    finally:
        await listener.stop()
        await admin.close()
    assert cache.generation(needs_listener=True) is None  # stopped: nothing listens, nothing is cached


@pytest.mark.skipif("postgres" not in BACKENDS, reason="PostgreSQL not in MESSAGESERVICE_TEST_BACKENDS")
def test_postgres_cache_follows_its_listener(postgres: TempPostgres) -> None:
    asyncio.run(listener_scenario(postgres.create_database("ms_cache_" + uuid.uuid4().hex[:8])))


# --------------------------------------------------------------------------------------------------
# Against a server: each kind of change, made elsewhere, seen by the next request.
# --------------------------------------------------------------------------------------------------


def server_cache(portal: LivePortal) -> RestCache:
    assert isinstance(portal.server, InProcessServer)
    cache = portal.server.app.state.core.cache
    assert isinstance(cache, RestCache)
    return cache


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Watch:
    """The server's cache around a change made elsewhere."""

    def __init__(self, portal: LivePortal, token: str) -> None:
        self.portal = portal
        self.cache = server_cache(portal)
        if portal.backend == "postgres":
            wait_for(lambda: self.cache.generation(needs_listener=True) is not None, "the server's listener")
        # Warm: the token (and whatever the call reads) is now held by the server's cache. On PostgreSQL
        # the notice of an earlier change (this test's own setup) may still arrive and drop it: warm again.
        key = ("token", hash_secret(token))
        for _ in range(50):
            assert portal.call("messageservice.sender.list", token=token).status_code == 200
            self.epoch = self.cache.epoch
            if key in self.cache or portal.backend != "postgres":
                break
            time.sleep(0.02)
        assert key in self.cache, "the server does not cache tokens"

    def seen(self) -> None:
        """PostgreSQL: the change's NOTIFY reached the server (SQLite's next request checks by itself)."""
        if self.portal.backend == "postgres":
            wait_for(lambda: self.cache.epoch != self.epoch, "the change's notice at the server")


def add_sender(portal: LivePortal, token: str, code: str) -> None:
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "Provider"}
    answer = portal.call("messageservice.sender.add", params, token=token).json()
    assert answer.get("result") is True, answer


def sender_codes(portal: LivePortal, token: str) -> Any:
    return portal.call("messageservice.sender.list", token=token).json()


def cli(portal: LivePortal, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "messageservice.cli", *args],
        env=portal.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_uninstall_by_the_cli_is_seen_by_the_next_request(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    add_sender(local_portal, app.access_token, "cache.cli")
    watch = Watch(local_portal, app.access_token)
    assert sender_codes(local_portal, app.access_token)["result"] == ["cache.cli"]
    cli(local_portal, "app", "uninstall", app.client_id)
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["error"] == "invalid_token"


def test_a_refreshed_and_a_revoked_token_family_are_seen_by_the_next_request(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    Watch(local_portal, app.access_token)

    async def rotate(core: Core) -> dict[str, Any]:
        return await refresh(core, app.client_id, app.client_secret, app.refresh_token)

    rotated = local_portal.run(rotate)
    # A refresh issues new tokens, usable at once (an unknown token is never cached as unknown); the old
    # access token stays valid until it expires, as the database says. Both end up cached; on PostgreSQL
    # the refresh's own notice may arrive late and drop them: warm both again until it has.
    rotated_key = ("token", hash_secret(rotated["access_token"]))
    for _ in range(50):
        assert sender_codes(local_portal, rotated["access_token"])["result"] == []
        watch = Watch(local_portal, app.access_token)
        if rotated_key in watch.cache:
            break
    assert rotated_key in watch.cache

    with pytest.raises(OAuthError, match="invalid_grant"):
        local_portal.run(rotate)  # the spent refresh token again: a replay, the whole family is revoked
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["error"] == "invalid_token"
    assert sender_codes(local_portal, rotated["access_token"])["error"] == "invalid_token"


def test_an_expired_token_is_seen_by_the_next_request(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    watch = Watch(local_portal, app.access_token)
    local_portal.expire_access_token(app.access_token)
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["error"] == "expired_token"


def test_a_sender_deleted_elsewhere_is_gone_at_the_next_request(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    add_sender(local_portal, app.access_token, "cache.one")
    add_sender(local_portal, app.access_token, "cache.two")
    watch = Watch(local_portal, app.access_token)
    assert ("senders", app_id_of(local_portal, app.client_id)) in watch.cache
    app_id = app_id_of(local_portal, app.client_id)
    local_portal.run(lambda core: sender_service.delete_sender(core, app_id, {"CODE": "cache.one"}))
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["result"] == ["cache.two"]


def test_a_sender_updated_elsewhere_drops_the_cache(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    add_sender(local_portal, app.access_token, "cache.upd")
    watch = Watch(local_portal, app.access_token)
    app_id = app_id_of(local_portal, app.client_id)
    local_portal.run(lambda core: sender_service.update_sender(core, app_id, {"CODE": "cache.upd", "NAME": "Renamed"}))
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["result"] == ["cache.upd"]
    assert watch.cache.epoch != watch.epoch  # the server dropped what it held
    # A new version of the app (an update that removes every sender, as in Bitrix) empties the list at once.
    watch = Watch(local_portal, app.access_token)
    local_portal.run(lambda core: app_service.update_app(core, app.client_id, version=2))
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["result"] == []


def test_scopes_and_admin_flags_changed_elsewhere_apply_at_the_next_request(local_portal: LivePortal) -> None:
    user_id = local_portal.add_user("Cache admin", admin=True)
    app = local_portal.add_app(user_id=user_id)
    watch = Watch(local_portal, app.access_token)
    local_portal.run(lambda core: console_queries.set_user_flags(core, user_id, is_admin=False, active=True))
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["error"] == "ACCESS_DENIED"
    # Back to admin; its notice must have dropped the denied caller before the next watch warms up (on
    # PostgreSQL a request right after the commit may still meet the cached caller until the notice lands).
    watch.epoch = watch.cache.epoch
    local_portal.run(lambda core: console_queries.set_user_flags(core, user_id, is_admin=True, active=True))
    watch.seen()
    watch = Watch(local_portal, app.access_token)
    local_portal.run(lambda core: app_service.update_app(core, app.client_id, scopes="user"))
    watch.seen()
    assert sender_codes(local_portal, app.access_token)["error"] == "insufficient_scope"


@pytest.mark.parametrize("how", ["delete", "switch off"])
def test_a_webhook_deleted_or_switched_off_elsewhere_stops_at_the_next_request(
    local_portal: LivePortal, how: str
) -> None:
    app = local_portal.add_app()  # for Watch: the server's listener and cache
    url = local_portal.add_webhook(1, "messageservice,user")
    watch = Watch(local_portal, app.access_token)
    call = local_portal.session.post(url + "user.admin", json={}, timeout=30)
    assert call.json()["result"] is True
    code = url.rstrip("/").rsplit("/", 1)[-1]
    assert ("webhook", hash_secret(code)) in watch.cache
    webhook_id = webhook_id_of(local_portal, code)
    if how == "delete":
        assert local_portal.run(lambda core: webhook_service.delete_webhook(core, webhook_id))
    else:
        assert local_portal.run(lambda core: console_queries.set_webhook_active(core, webhook_id, False))
    watch.seen()
    answer = local_portal.session.post(url + "user.admin", json={}, timeout=30).json()
    assert answer["error"] == "INVALID_CREDENTIALS", answer


def test_a_sender_added_on_another_server_is_listed_at_once(local_fresh_portal: LivePortal) -> None:
    # A portal of its own: a second server records its own public URL in the shared database.
    local_portal = local_fresh_portal
    app = local_portal.add_app()
    add_sender(local_portal, app.access_token, "cache.a")
    watch = Watch(local_portal, app.access_token)
    other = LivePortal(local_portal.settings, InProcessServer(local_portal.settings).start(), local_portal.backend)
    try:
        add_sender(other, app.access_token, "cache.b")
        watch.seen()
        assert sender_codes(local_portal, app.access_token)["result"] == ["cache.a", "cache.b"]
        # And back: a delete on this server reaches the other one.
        watch = Watch(other, app.access_token)
        answer = local_portal.call("messageservice.sender.delete", {"CODE": "cache.a"}, token=app.access_token)
        assert answer.json()["result"] is True
        watch.seen()
        assert sender_codes(other, app.access_token)["result"] == ["cache.b"]
    finally:
        other.stop()


def test_this_servers_own_change_is_seen_by_its_next_request(local_portal: LivePortal) -> None:
    app = local_portal.add_app()
    Watch(local_portal, app.access_token)
    add_sender(local_portal, app.access_token, "cache.own")  # no wait for any notice, on either engine
    assert sender_codes(local_portal, app.access_token)["result"] == ["cache.own"]
    answer = local_portal.call("messageservice.sender.delete", {"CODE": "cache.own"}, token=app.access_token)
    assert answer.json()["result"] is True
    assert sender_codes(local_portal, app.access_token)["result"] == []


def app_id_of(portal: LivePortal, client_id: str) -> int:
    return portal.run(lambda core: app_service.get_app(core, client_id)).id


def webhook_id_of(portal: LivePortal, code: str) -> int:
    from sqlalchemy import select

    async def find(core: Core) -> int:
        async with core.store.connection() as conn:
            statement = select(webhooks.c.id).where(webhooks.c.code_hash == hash_secret(code))
            return int((await conn.execute(statement)).scalar_one())

    return portal.run(find)
