"""A live portal for tests: a real server on a loopback port over a real database, and admin helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import http.client
import os
import ssl
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pytest
import requests
import requests.adapters
import uvicorn
from cryptography.fernet import Fernet
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from sqlalchemy import update

from messageservice.app import create_app
from messageservice.cache.changes import changing
from messageservice.config import Settings
from messageservice.core import apps as app_service
from messageservice.core import portal as portal_service
from messageservice.core import webhooks as webhook_service
from messageservice.core.context import Core
from messageservice.core.secrets import hash_secret
from messageservice.core.tokens import mint_for_user
from messageservice.store.db import migrate
from messageservice.store.group_commit import GroupCommit
from messageservice.store.tables import access_tokens
from messageservice.tls import ensure_certificate
from tests.databases import new_database_url
from tests.postgres import free_port

T = TypeVar("T")
_STATUSES = {status.value for status in http.HTTPStatus}


@dataclass
class AppCredentials:
    client_id: str
    client_secret: str
    application_token: str
    access_token: str
    refresh_token: str
    user_id: int


class ServerThread:
    """uvicorn in a background thread; `stop()` shuts it down cleanly."""

    def __init__(self, settings: Settings, *, tls_dir: Path | None = None) -> None:
        self.port = free_port()
        scheme = "https" if tls_dir else "http"
        self.base_url = f"{scheme}://127.0.0.1:{self.port}"
        ssl_options: dict[str, Any] = {}
        self.cert_path: Path | None = None
        if tls_dir is not None:
            cert, key = ensure_certificate(tls_dir)
            self.cert_path = cert
            ssl_options = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        config = uvicorn.Config(
            create_app(settings, public_url=self.base_url, listening=["127.0.0.1"]),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            # An idle TLS keep-alive would otherwise hold shutdown for the 30 s SSL close timeout.
            timeout_graceful_shutdown=2,
            # The session-wide client reuses connections across tests; a server closing one idle
            # connection just as the client sends on it loses that request (RemoteDisconnected).
            timeout_keep_alive=600,
            **ssl_options,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ServerThread:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                return self
            if not self.thread.is_alive():
                break
            threading.Event().wait(0.02)
        raise RuntimeError("test server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


class InProcessServer:
    """The same ASGI app with its lifespan (so the dispatcher and the other loops run), on an event loop
    in a background thread, with no socket: requests reach it through `InProcessAdapter`, mounted on
    `base_url` of a requests.Session. For tests about HTTP semantics; the wire (SDKs, TLS, raw bytes,
    other processes) needs a `ServerThread`."""

    def __init__(self, settings: Settings) -> None:
        self.port: int | None = None
        self.cert_path: Path | None = None
        # A name no resolver knows: a request that misses the adapter fails at once instead of going astray.
        self.base_url = f"http://inprocess-{id(self):x}.test"
        self.app = create_app(settings, public_url=self.base_url, listening=())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.lifespan_in: asyncio.Queue[dict[str, Any]] | None = None
        self.lifespan_out: asyncio.Queue[dict[str, Any]] | None = None
        self.lifespan_task: asyncio.Task[None] | None = None

    def call(self, work: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def start(self) -> InProcessServer:
        self.thread.start()
        self.call(self._lifespan("startup"), timeout=60)
        return self

    def stop(self) -> None:
        try:
            self.call(self._lifespan("shutdown"), timeout=15)
        except concurrent.futures.TimeoutError:
            # As ServerThread.stop does (its join times out silently): a slow shutdown does not fail the test.
            pass
        finally:
            self.loop.call_soon_threadsafe(self._cancel_everything)
            self.thread.join(timeout=15)
            if not self.thread.is_alive():
                self.loop.close()

    def _cancel_everything(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.loop.call_soon(self.loop.stop)

    async def _lifespan(self, phase: str) -> None:
        """The ASGI lifespan protocol, as uvicorn speaks it."""
        if self.lifespan_task is None:
            self.lifespan_in, self.lifespan_out = asyncio.Queue(), asyncio.Queue()
            scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
            self.lifespan_task = asyncio.create_task(self.app(scope, self.lifespan_in.get, self.lifespan_out.put))
        assert self.lifespan_in is not None and self.lifespan_out is not None
        await self.lifespan_in.put({"type": f"lifespan.{phase}"})
        answer = await self.lifespan_out.get()
        if answer["type"] != f"lifespan.{phase}.complete":
            raise RuntimeError(f"in-process app {phase} failed: {answer.get('message', answer)}")
        if phase == "shutdown":
            await self.lifespan_task

    async def roundtrip(self, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        """One HTTP exchange with the app, with the scope uvicorn would build from these exact bytes."""
        parts = urlsplit(url)
        raw_path = (parts.path or "/").encode("ascii")
        sent_headers = [(b"host", parts.netloc.encode("ascii"))] + [
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers
        ]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": (parts.hostname, parts.port or 80),
            "client": ("127.0.0.1", 40000),
            "scheme": parts.scheme,
            "method": method,
            "root_path": "",
            "path": unquote(raw_path.decode("ascii")),
            "raw_path": raw_path,
            "query_string": parts.query.encode("ascii"),
            "headers": sent_headers,
            "state": {},
        }
        answer = Answer()
        finished = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                if method != "HEAD":  # as a server does: headers only
                    answer.body += message.get("body", b"")
                if not message.get("more_body", False):
                    finished.set()

        try:
            await self.app(scope, receive, send)
        except Exception:
            if answer.status:
                raise
            # What uvicorn answers when the app raises before it starts a response.
            answer.status, answer.headers, answer.body = 500, [("content-type", "text/plain")], b"Internal Server Error"
        finally:
            finished.set()
        return answer

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount(self.base_url, InProcessAdapter(self))
        return session


@dataclass
class Answer:
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class _Raw:
    """What requests reads cookies from (`_original_response.msg`) and closes."""

    def __init__(self, headers: http.client.HTTPMessage) -> None:
        self._original_response = self
        self.msg = headers

    def read(self, *args: Any, **kwargs: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class InProcessAdapter(requests.adapters.BaseAdapter):
    """A requests transport that hands each request to an `InProcessServer` instead of a socket."""

    def __init__(self, server: InProcessServer) -> None:
        super().__init__()
        self.server = server

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None, **_: Any) -> Any:
        body = request.body or b""
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        seconds = timeout[1] if isinstance(timeout, tuple) else timeout
        exchange = self.server.roundtrip(str(request.method), str(request.url), list(request.headers.items()), body)
        answer = self.server.call(exchange, seconds)
        message = http.client.HTTPMessage()
        joined: CaseInsensitiveDict[str] = CaseInsensitiveDict()
        for name, value in answer.headers:
            message[name] = value
            joined[name] = f"{joined[name]}, {value}" if name in joined else value
        response = requests.Response()
        response.status_code = answer.status
        response.reason = http.HTTPStatus(answer.status).phrase if answer.status in _STATUSES else ""
        response.headers = joined
        response.encoding = get_encoding_from_headers(joined)
        response.url = str(request.url)
        response.request = request
        response.connection = self
        response.raw = _Raw(message)
        response._content = answer.body
        response._content_consumed = True
        extract_cookies_to_jar(response.cookies, request, response.raw)
        return response

    def close(self) -> None:
        pass


class AdminRunner:
    """One Core on an event loop of its own thread; safe to call from any thread, under a running loop
    too (Playwright's sync API keeps one in the test's thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def open_core() -> Core:
            return Core.open(settings)  # on its loop: whatever it binds to a loop binds to this one

        self.core = asyncio.run_coroutine_threadsafe(open_core(), self.loop).result()

    def run(self, work: Callable[[Core], Awaitable[T]]) -> T:
        async def main() -> T:
            # A Core per call, so that work which changes its state (a clock, listeners) leaves no trace, on
            # the one store kept open: a store per call cost a new engine and its first connections (on
            # PostgreSQL the driver's set-up queries) every time, for each app, user and token a test made.
            shared = self.core
            core = Core(store=shared.store, settings=self.settings, box=shared.box, group_commit=GroupCommit())
            return await work(core)

        return asyncio.run_coroutine_threadsafe(main(), self.loop).result()

    def close(self) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.core.close(), self.loop).result(timeout=15)
        except concurrent.futures.TimeoutError:
            pass  # a pool slow to close under load is no test's failure
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=15)
            self.loop.close()


@dataclass
class LivePortal:
    """The portal under test. Admin actions go through the same core services the CLI uses."""

    settings: Settings
    server: ServerThread | InProcessServer
    backend: str
    session: requests.Session = field(default_factory=requests.Session)
    _admin: AdminRunner | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.server, InProcessServer):
            self.session.mount(self.server.base_url, InProcessAdapter(self.server))

    @property
    def in_process(self) -> bool:
        return isinstance(self.server, InProcessServer)

    def new_session(self) -> requests.Session:
        """A session of its own (its own cookies) that reaches this portal, whichever server it runs on."""
        return self.server.session() if isinstance(self.server, InProcessServer) else requests.Session()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def rest_url(self) -> str:
        return self.base_url + "/rest/"

    @property
    def env(self) -> dict[str, str]:
        """Environment for running the `messageservice` command against this portal's database."""
        return {
            **os.environ,
            "MESSAGESERVICE_DATABASE_URL": self.settings.database_url,
            "MESSAGESERVICE_DATA_DIR": str(self.settings.data_dir),
            "MESSAGESERVICE_SECRET_KEY": self.settings.secret_key or "",
        }

    def run(self, work: Callable[[Core], Awaitable[T]]) -> T:
        """Run admin work against the portal's database, on a Core kept open for the portal's lifetime
        (opening one per call cost a new engine and its connections every time)."""
        if self._admin is None or self._admin.settings is not self.settings:
            if self._admin is not None:
                self._admin.close()
            self._admin = AdminRunner(self.settings)
        return self._admin.run(work)

    def stop(self) -> None:
        self.session.close()
        try:
            self.server.stop()
        finally:
            if self._admin is not None:
                self._admin.close()
                self._admin = None

    def add_user(self, name: str = "User", *, admin: bool = False) -> int:
        return self.run(lambda core: portal_service.add_user(core, name, admin=admin)).id

    def add_app(
        self, *, scopes: str = "messageservice", url: str = "http://127.0.0.1:9/", user_id: int = 1, name: str = "App"
    ) -> AppCredentials:
        """Register and install an app, and mint a token for `user_id`."""

        async def work(core: Core) -> AppCredentials:
            app, secret = await app_service.add_app(core, name, url, scopes)
            application_token = await app_service.install_app(core, app.client_id, 1)
            tokens = await mint_for_user(core, app.client_id, user_id)
            return AppCredentials(
                app.client_id, secret, application_token, tokens["access_token"], tokens["refresh_token"], user_id
            )

        return self.run(work)

    def token(self, client_id: str, user_id: int) -> dict[str, Any]:
        return self.run(lambda core: mint_for_user(core, client_id, user_id))

    def add_webhook(self, user_id: int = 1, scopes: str = "messageservice") -> str:
        return self.run(lambda core: webhook_service.add_webhook(core, user_id, scopes)).url

    def expire_access_token(self, token: str) -> None:
        async def work(core: Core) -> None:
            async with changing(core) as conn:  # every server's REST cache drops the token
                await conn.execute(
                    update(access_tokens)
                    .where(access_tokens.c.token_hash == hash_secret(token))
                    .values(expires_at=core.clock() - 1)
                )

        self.run(work)

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        json_body: bool = True,
        http: str = "POST",
    ) -> requests.Response:
        """Call a REST method the way most SDKs do: POST JSON with `auth` in the body."""
        body = dict(params or {})
        if token is not None:
            body["auth"] = token
        url = self.rest_url + method
        if http == "GET":
            return self.session.get(url, params=body, timeout=30)
        if json_body:
            return self.session.post(url, json=body, timeout=30)
        return self.session.post(url, data=body, timeout=30)


def make_settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        secret_key=Fernet.generate_key().decode(),
        # A test portal stops when its test (or the session) ends: the HANDLER calls still under way (a
        # hanging handler's) are cut off, not waited for up to the production 15 s (stop_loops' grace).
        shutdown_grace_seconds=0.5,
        _env_file=None,  # type: ignore[call-arg]
    )


def start_portal(
    settings: Settings,
    backend: str,
    *,
    tls_dir: Path | None = None,
    in_process: bool = False,
    migrated: bool = False,
) -> LivePortal:
    """Migrate (unless the database is a migrated copy), create the portal and start its server:
    uvicorn on a loopback port, or the app in-process with no socket."""
    if not migrated:
        migrate(settings.database_url)

    async def init(core: Core) -> None:
        await portal_service.init_portal(core, "portal.test")

    if in_process:
        if tls_dir is not None:
            raise ValueError("TLS needs a real server")
        server: ServerThread | InProcessServer = InProcessServer(settings)
    else:
        server = ServerThread(settings, tls_dir=tls_dir)
    portal = LivePortal(settings, server, backend)
    portal.run(init)
    portal.server.start()
    return portal


def ssl_context_for(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def open_fresh_portal(
    request: pytest.FixtureRequest, backend: str, folder: Path, *, in_process: bool
) -> Iterator[LivePortal]:
    """A portal of its own on a new database; settings overrides come from indirect parametrization
    (`request.param`). The generator behind `fresh_portal` and its in-process kin."""
    settings = make_settings(new_database_url(request, backend, folder), folder)
    overrides = getattr(request, "param", {}) or {}
    live = start_portal(settings.model_copy(update=overrides), backend, in_process=in_process, migrated=True)
    try:
        yield live
    finally:
        live.stop()
