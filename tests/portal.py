"""A live portal for tests: a real server on a loopback port over a real database, and admin helpers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import update

from messageservice.app import create_app
from messageservice.config import Settings
from messageservice.core import apps as app_service
from messageservice.core import portal as portal_service
from messageservice.core import webhooks as webhook_service
from messageservice.core.context import Core
from messageservice.core.secrets import hash_secret
from messageservice.core.tokens import mint_for_user
from messageservice.store.db import migrate
from messageservice.store.tables import access_tokens
from messageservice.tls import ensure_certificate
from tests.postgres import free_port

T = TypeVar("T")


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
            create_app(settings, public_url=self.base_url),
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


@dataclass
class LivePortal:
    """The portal under test. Admin actions go through the same core services the CLI uses."""

    settings: Settings
    server: ServerThread
    backend: str
    session: requests.Session = field(default_factory=requests.Session)

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
        async def main() -> T:
            core = Core.open(self.settings)
            try:
                return await work(core)
            finally:
                await core.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            under_a_loop = False
        else:
            under_a_loop = True
        if not under_a_loop:
            return asyncio.run(main())
        # Called under a running loop (Playwright's sync API keeps one): run the work on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def stop(self) -> None:
        self.session.close()
        self.server.stop()

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
            async with core.engine.begin() as conn:
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
        _env_file=None,  # type: ignore[call-arg]
    )


def start_portal(settings: Settings, backend: str, *, tls_dir: Path | None = None) -> LivePortal:
    migrate(settings.database_url)

    async def init(core: Core) -> None:
        await portal_service.init_portal(core, "portal.test")

    portal = LivePortal(settings, ServerThread(settings, tls_dir=tls_dir), backend)
    portal.run(init)
    portal.server.start()
    return portal


def ssl_context_for(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))
