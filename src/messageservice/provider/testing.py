"""A pytest plugin for providers' own tests: a throwaway messageservice server per test.

Installed with messageservice (entry point `pytest11`), so a provider's test just asks for it:

    def test_my_provider_delivers(messageservice_server, my_provider_url):
        app = messageservice_server.add_app(my_provider_url)        # ONAPPINSTALL reaches the provider now
        sent = messageservice_server.send(f"{app.client_id}|my_code", "+15550001234", "Hello")
        message = messageservice_server.wait_for_status(sent["ID"], "delivered")
        assert [h["STATUS"] for h in message["HISTORY"]][-1] == "delivered"

The server is real (uvicorn on a free loopback port, in a thread; SQLite in the test's tmp dir) with its
dispatcher, so HANDLER calls reach the provider and its status reports are kept. Override the
`messageservice_settings` fixture to change settings (e.g. `{"retry_schedule": "0.2"}`, or a PostgreSQL
`database_url`).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from messageservice.provider.rest import SyncRestClient

if TYPE_CHECKING:
    import uvicorn

    from messageservice.config import Settings
    from messageservice.core.context import Core

T = TypeVar("T")

PORTAL_DOMAIN = "messageservice.test"
START_TIMEOUT = 15.0


@dataclass(frozen=True)
class InstalledApp:
    client_id: str
    client_secret: str
    application_token: str
    onappinstall_delivered: bool  # whether the app's URL answered ONAPPINSTALL with a 2xx
    onappinstall_detail: str  # e.g. "HTTP 200 ok", or why it was not delivered


class MessageserviceServer:
    """A running server and what a provider's test does with it."""

    def __init__(
        self, settings: Settings, *, wrap: Callable[[Any], Any] | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.settings = settings
        self._wrap = wrap  # e.g. check-provider's recorder around the server's ASGI app
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._webhook: str | None = None
        self.base_url = ""

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> MessageserviceServer:
        import uvicorn

        from messageservice.app import create_app
        from messageservice.core import portal as portal_service
        from messageservice.store.db import migrate

        migrate(self.settings.database_url)
        self.run(lambda core: portal_service.init_portal(core, PORTAL_DOMAIN))
        # Bound here and handed over, so no other process can take the port in between.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self.base_url = f"http://{self._host}:{sock.getsockname()[1]}"
        # Where it listens decides whether loopback HANDLERs are allowed (delivery/ssrf.py).
        app = create_app(self.settings, public_url=self.base_url, listening=[self._host])
        config = uvicorn.Config(
            self._wrap(app) if self._wrap is not None else app,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the messageservice test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)

    def run(self, work: Callable[[Core], Awaitable[T]]) -> T:
        """Run core work (the services the CLI uses) on this server's database."""
        from messageservice.core.context import Core

        async def main() -> T:
            core = Core.open(self.settings)
            try:
                return await work(core)
            finally:
                await core.close()

        return asyncio.run(main())

    # -- what a provider's test needs -----------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        """The portal's REST endpoint: what HANDLER calls and events carry as auth[client_endpoint]."""
        return self.base_url + "/rest/"

    def add_app(self, url: str, *, name: str = "Provider under test", scope: str = "messageservice") -> InstalledApp:
        """Register an app and install it as admin user 1: ONAPPINSTALL is POSTed to `url` before this returns."""
        from messageservice.core import apps as app_service
        from messageservice.delivery.app_events import post_event_now

        async def work(core: Core) -> InstalledApp:
            app, secret = await app_service.add_app(core, name, url, scope)
            token = await app_service.install_app(core, app.client_id, 1)
            # The server's own event worker may claim the event first; then its attempt is the answer.
            wait = core.settings.event_timeout_seconds + 5
            attempt = await post_event_now(core, app.client_id, "ONAPPINSTALL", wait)
            delivered = attempt is not None and attempt.ok
            detail = attempt.detail if attempt is not None else "queued; the server retries it"
            return InstalledApp(app.client_id, secret, token, delivered, detail)

        return self.run(work)

    @property
    def webhook_url(self) -> str:
        """An incoming webhook of admin user 1 with the messageservice scope (made on first use)."""
        if self._webhook is None:
            from messageservice.core import webhooks as webhook_service

            self._webhook = self.run(lambda core: webhook_service.add_webhook(core, 1, "messageservice")).url
        return self._webhook

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Any REST method through the admin's webhook; raises BitrixError on an error answer."""
        return SyncRestClient(self.webhook_url).call(method, params)

    def send(self, message_from: str, message_to: str, message_body: str, **params: Any) -> dict[str, Any]:
        """messageservice.message.send as a CRM card would (MODULE_ID crm unless given): {ID, MESSAGE_ID, STATUS}.

        `message_from` is "client_id|CODE"; extra params (BINDINGS, MODULE_ID, WORKFLOW_ID, ...) pass through.
        """
        body = {"MESSAGE_FROM": message_from, "MESSAGE_TO": message_to, "MESSAGE_BODY": message_body, **params}
        result: dict[str, Any] = self.call("messageservice.message.send", body)
        return result

    def get_message(self, message_id: int | str) -> dict[str, Any]:
        """messageservice.message.get: by internal ID (int) or the 32-hex MESSAGE_ID the provider saw (str)."""
        key = "ID" if isinstance(message_id, int) else "MESSAGE_ID"
        result: dict[str, Any] = self.call("messageservice.message.get", {key: message_id})
        return result

    def wait_for_status(self, message_id: int | str, status: str, *, timeout: float = 15.0) -> dict[str, Any]:
        """The message once its STATUS is `status` (e.g. "delivered"); AssertionError with the last view if not."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.get_message(message_id)
            if message["STATUS"] == status:
                return message
            if time.monotonic() > deadline:
                raise AssertionError(f"message {message_id} is {message['STATUS']}, not {status}: {message}")
            time.sleep(0.05)


@pytest.fixture
def messageservice_settings() -> dict[str, Any]:
    """Overrides for the throwaway server's settings; override this fixture to change them."""
    return {}


@pytest.fixture
def messageservice_server(
    messageservice_settings: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MessageserviceServer]:
    """A throwaway messageservice server with one portal (admin user 1), stopped after the test."""
    from cryptography.fernet import Fernet

    from messageservice.config import Settings

    folder: Path = tmp_path_factory.mktemp("messageservice")
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{folder}/messageservice.db",
        "data_dir": folder,
        "secret_key": Fernet.generate_key().decode(),
        "public_url": None,
        **messageservice_settings,
    }
    server = MessageserviceServer(Settings(_env_file=None, **values)).start()  # type: ignore[call-arg]
    try:
        yield server
    finally:
        server.stop()


# check-provider's fixtures (provider_checks, provider_check_options) come with the plugin.
from messageservice.provider.checking import provider_check_options, provider_checks  # noqa: E402

__all__ = [
    "MessageserviceServer",
    "messageservice_server",
    "messageservice_settings",
    "provider_check_options",
    "provider_checks",
]
