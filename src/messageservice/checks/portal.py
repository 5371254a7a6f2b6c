"""The portal the battery plays against: a throwaway messageservice server on a loopback port, recorded.

Everything it does to the provider goes through the server's own code: apps are installed, updated and
uninstalled by core.apps and their events posted by the event outbox; messages are sent with
messageservice.message.send and delivered by the server's dispatcher; the few HANDLER calls the server
would never make (a wrong application_token, a repeat) are built by core.payload and posted by the
dispatcher's own Poster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from messageservice.checks.recorder import SINK, RestRecorder
from messageservice.core.context import Core
from messageservice.provider.calls import parse_app_event
from messageservice.provider.rest import SyncRestClient
from messageservice.provider.testing import InstalledApp, MessageserviceServer
from messageservice.store.tables import app_events


@dataclass(frozen=True)
class EventOutcome:
    delivered: bool
    detail: str  # "HTTP 200 OK", or the last error


@dataclass(frozen=True)
class HandlerAnswer:
    http_status: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.http_status is not None and 200 <= self.http_status < 300

    def describe(self) -> str:
        return f"HTTP {self.http_status}" if self.http_status is not None else (self.error or "no answer")


def throwaway_settings(folder: Path, *, handler_timeout: float, **overrides: Any) -> Any:
    from cryptography.fernet import Fernet

    from messageservice.config import Settings

    values: dict[str, Any] = {
        "database_url": f"sqlite:///{folder}/messageservice.db",
        "data_dir": folder,
        "secret_key": Fernet.generate_key().decode(),
        "public_url": None,
        # One attempt per call and event: the battery judges first answers; retries would blur them.
        "retry_schedule": "3600",
        "event_retry_schedule": "3600",
        "handler_timeout_seconds": handler_timeout,
        "breaker_failures": 1000,  # every send gets its attempt, however the ones before it went
        "event_timeout_seconds": handler_timeout,
        # The provider under check may run on this machine or the local network; public addresses are allowed anyway.
        "allowed_handler_networks": "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7",
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class CheckPortal:
    """A started server with its recorder; sync methods, each running core work on the server's database."""

    def __init__(self, settings: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.recorder: RestRecorder | None = None

        def wrap(app: Any) -> RestRecorder:
            self.recorder = RestRecorder(app)
            return self.recorder

        self.server = MessageserviceServer(settings, wrap=wrap, host=host, port=port)
        self._clients: dict[int, SyncRestClient] = {}

    def start(self) -> CheckPortal:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> CheckPortal:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def rest(self) -> RestRecorder:
        assert self.recorder is not None, "start() first"
        return self.recorder

    def run(self, work: Any) -> Any:
        return self.server.run(work)

    # -- apps -----------------------------------------------------------------------------------------

    def install(self, url: str, name: str = "Provider under check") -> InstalledApp:
        return self.server.add_app(url, name=name)

    def app_id(self, client_id: str) -> int:
        from messageservice.core import apps

        async def work(core: Core) -> int:
            return (await apps.get_app(core, client_id)).id

        return int(self.run(work))

    def update(self, client_id: str, timeout: float) -> EventOutcome:
        """A new version: the server deletes the app's senders and posts ONAPPUPDATE."""
        from messageservice.core import apps

        async def work(core: Core) -> None:
            app = await apps.get_app(core, client_id)
            await apps.update_app(core, client_id, version=app.version + 1)

        self.run(work)
        return self.event_outcome(client_id, "ONAPPUPDATE", timeout)

    def uninstall(self, client_id: str, timeout: float) -> EventOutcome:
        from messageservice.core import apps

        self.run(lambda core: apps.uninstall_app(core, client_id))
        return self.event_outcome(client_id, "ONAPPUNINSTALL", timeout)

    def event_outcome(self, client_id: str, event: str, timeout: float) -> EventOutcome:
        """The first attempt at the app's newest `event`: posted now, unless the server's worker has it already."""
        from messageservice.delivery.app_events import post_event_now

        attempt = self.run(lambda core: post_event_now(core, client_id, event, timeout + 5))
        if attempt is None:
            return EventOutcome(False, "no attempt finished in time")
        return EventOutcome(attempt.ok, "answered 2xx" if attempt.ok else attempt.detail)

    def event_tokens(self, client_id: str) -> set[str]:
        """The access tokens the app's events carried (the event bodies are kept, encrypted, in the outbox)."""
        app_id = self.app_id(client_id)

        async def work(core: Core) -> set[str]:
            async with core.store.connection() as conn:
                rows = (await conn.execute(select(app_events.c.body).where(app_events.c.app_id == app_id))).all()
            tokens = set()
            for row in rows:
                auth = parse_app_event(core.box.decrypt(row.body)).auth
                if auth.access_token:
                    tokens.add(auth.access_token)
            return tokens

        result: set[str] = self.run(work)
        return result

    def sender_codes(self, client_id: str) -> list[str]:
        from messageservice.core import senders

        app_id = self.app_id(client_id)
        return list(self.run(lambda core: senders.list_codes(core, app_id)))

    def senders(self, client_id: str) -> list[Any]:
        from messageservice.core import senders

        app_id = self.app_id(client_id)
        return list(self.run(lambda core: senders.list_senders(core, app_id)))

    def other_app_token(self) -> str:
        """Another app on this portal, installed (its events go to the recorder's sink): its application_token."""
        from messageservice.core import apps

        async def work(core: Core) -> str:
            app, _ = await apps.add_app(core, "Another app", self.base_url + SINK, "messageservice")
            return await apps.install_app(core, app.client_id, 1)

        return str(self.run(work))

    # -- users and messages ---------------------------------------------------------------------------

    def add_admin(self, name: str) -> int:
        from messageservice.core import portal

        async def work(core: Core) -> int:
            return (await portal.add_user(core, name, admin=True)).id

        return int(self.run(work))

    def client(self, user_id: int = 1) -> SyncRestClient:
        """A REST client through an incoming webhook of `user_id` (made once)."""
        if user_id not in self._clients:
            from messageservice.core import webhooks

            url = self.run(lambda core: webhooks.add_webhook(core, user_id, "messageservice")).url
            self._clients[user_id] = SyncRestClient(url)
        return self._clients[user_id]

    def send(self, message_from: str, message_to: str, body: str, *, user_id: int = 1, **params: Any) -> Any:
        fields = {"MESSAGE_FROM": message_from, "MESSAGE_TO": message_to, "MESSAGE_BODY": body, **params}
        return self.client(user_id).call("messageservice.message.send", fields)

    def message(self, message_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self.client(1).call("messageservice.message.get", {"ID": message_id})
        return result

    def first_attempt(self, message_id: int, timeout: float) -> dict[str, Any] | None:
        """The message's first HANDLER attempt once it is recorded (None if none in `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            attempts = self.message(message_id)["ATTEMPTS"]
            if attempts:
                return dict(attempts[0])
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)

    # -- HANDLER calls the server would not make by itself --------------------------------------------

    def post_handler_call(
        self,
        client_id: str,
        handler: str,
        message: dict[str, Any],
        *,
        application_token: str | None = None,
        timeout: float = 10.0,
    ) -> HandlerAnswer:
        """POST `message` (a message.get view) to `handler` again, with a fresh token of its author.

        `application_token` replaces the app's own (a forged call). Built by core.payload and posted by the
        dispatcher's Poster: the same bytes and headers as any HANDLER call of this server.
        """
        from messageservice.core import apps, tokens
        from messageservice.core.payload import HandlerMessage, handler_body
        from messageservice.delivery.jobs import Job
        from messageservice.delivery.sending import Poster

        headers = {key.lower(): message.get(key) for key in ("BINDINGS", "WORKFLOW_ID", "DOCUMENT_ID", "DOCUMENT_TYPE")}
        headers = {key: value for key, value in headers.items() if value not in (None, [], "")}

        async def work(core: Core) -> HandlerAnswer:
            minted = await tokens.mint_for_user(core, client_id, int(message["AUTHOR_ID"] or 1))
            own = await apps.application_token(core, client_id)
            auth = {**minted, "application_token": application_token or own}
            payload = HandlerMessage(
                module_id=message["MODULE_ID"] or "crm",
                headers=headers,
                sender_type="SMS",
                sender_code=message["SENDER_CODE"],
                message_id=message["MESSAGE_ID"],
                message_to=message["MESSAGE_TO"],
                message_body=message["MESSAGE_BODY"],
                ts=int(message["DATE_CREATE"]),
            )
            job = Job(0, 0, 1, core.clock(), handler, handler_body(payload, auth), external_id=payload.message_id)
            started = time.monotonic()
            async with Poster(core.settings, 1, timeout) as poster:
                outcome = await poster.post(job)
            return HandlerAnswer(outcome.http_status, outcome.error, time.monotonic() - started)

        answer: HandlerAnswer = self.run(work)
        return answer
