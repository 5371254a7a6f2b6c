"""A demo SMS provider on the provider kit: it pretends to send each message and reports its progress.

On ONAPPINSTALL (or ONAPPUPDATE) it registers its sender with the installer's token and keeps the
application_token; every HANDLER call is checked against that token, answered at once, and then
reported as queued, sent and delivered, each after a small delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from messageservice.provider import (
    ONAPPINSTALL,
    ONAPPUNINSTALL,
    ONAPPUPDATE,
    Auth,
    BitrixError,
    DeliveryStatus,
    ForeignCall,
    HandlerCall,
    MalformedCall,
    PortalUnreachable,
    ProviderError,
    RestClient,
    SenderSpec,
    StatusReporter,
    parse_app_event,
    parse_handler_call,
    register_sender,
    verify_application_token,
)

MAX_BODY_BYTES = 1_048_576
REMEMBERED_MESSAGES = 10_000  # message_ids kept to drop repeated deliveries (the server retries)
REPORT_ATTEMPTS = 3
PROGRESS = (DeliveryStatus.QUEUED, DeliveryStatus.SENT, DeliveryStatus.DELIVERED)


@dataclass(frozen=True)
class DemoConfig:
    portal_url: str  # the portal this provider serves, e.g. http://127.0.0.1:8000; events from elsewhere are refused
    public_url: str  # where the portal reaches this app, e.g. http://127.0.0.1:9100
    code: str = "demo_sms"
    name: str = "Demo SMS"
    delays: tuple[float, float, float] = (0.5, 1.0, 1.0)  # seconds before reporting queued, sent, delivered

    @property
    def client_endpoint(self) -> str:
        return self.portal_url.rstrip("/") + "/rest/"

    @property
    def handler_url(self) -> str:
        return self.public_url.rstrip("/") + "/handler"


def say(text: str) -> None:
    print(f"{datetime.now():%H:%M:%S} [demo-provider] {text}", flush=True)


class DemoProvider:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.application_token: str | None = None  # the installation's, held in memory only
        self.sender: SenderSpec = SenderSpec(
            code=config.code,
            handler=config.handler_url,
            name={"en": config.name},
            description={"en": "Pretends to send an SMS, then reports queued, sent and delivered."},
        )
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._reporter: StatusReporter | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()
        self._reporter = StatusReporter(self._session)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "start() first"
        return self._session

    # -- the app's URL: lifecycle events --------------------------------------------------------------

    async def on_event(self, request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return PlainTextResponse("body too large", status_code=413)
        try:
            event = parse_app_event(body)
        except MalformedCall as exc:
            return PlainTextResponse(f"malformed event: {exc}", status_code=400)
        if event.auth.client_endpoint != self.config.client_endpoint:
            origin = event.auth.client_endpoint
            say(f"refused {event.event} from {origin!r}: this provider serves {self.config.portal_url}")
            return PlainTextResponse("this provider serves another portal", status_code=403)
        if event.event in (ONAPPINSTALL, ONAPPUPDATE):
            return await self._install(event.event, event.auth)
        if event.event == ONAPPUNINSTALL:
            try:
                verify_application_token(event, self.application_token)
            except ForeignCall:
                return PlainTextResponse("unknown application_token", status_code=403)
            self.application_token = None
            say("uninstalled; HANDLER calls are refused from now on")
        return PlainTextResponse("OK")

    async def _install(self, name: str, auth: Auth) -> Response:
        # Registering the sender with the event's token is also the proof that the event is genuine:
        # only the portal could have minted a token it accepts. Only then is the new application_token trusted.
        try:
            client = RestClient.from_auth(auth, session=self.session)
            registration = await register_sender(client, self.sender)
        except ProviderError as exc:
            say(f"{name}: could not register the sender: {exc}")
            return PlainTextResponse(f"sender registration failed: {exc}", status_code=502)
        self.application_token = auth.application_token
        say(f"{name}: sender {self.sender.code!r} {registration.value}, HANDLER {self.sender.handler}")
        return PlainTextResponse("OK")

    # -- HANDLER: messages to send --------------------------------------------------------------------

    async def on_message(self, request: Request) -> Response:
        body = await _body(request)
        if body is None:
            return PlainTextResponse("body too large", status_code=413)
        try:
            call = parse_handler_call(body)
            self.verify(call)
        except MalformedCall as exc:
            say(f"refused a malformed HANDLER call: {exc}")
            return PlainTextResponse(f"malformed call: {exc}", status_code=400)
        except ForeignCall:
            say("refused a HANDLER call with an unknown application_token")
            return PlainTextResponse("unknown application_token", status_code=403)
        if call.message_id in self._seen:
            say(f"message {call.message_id} again (a retried delivery): already on its way")
            return PlainTextResponse("OK")
        self._remember(call.message_id)
        say(f"message {call.message_id} to {call.message_to}: {call.message_body!r} - pretending to send it")
        task = asyncio.create_task(self._progress(call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return PlainTextResponse("OK")

    def verify(self, call: HandlerCall) -> None:
        """ForeignCall unless the call carries this installation's application_token."""
        verify_application_token(call, self.application_token)

    def _remember(self, message_id: str) -> None:
        self._seen[message_id] = None
        while len(self._seen) > REMEMBERED_MESSAGES:
            self._seen.popitem(last=False)

    async def _progress(self, call: HandlerCall) -> None:
        for status, delay in zip(PROGRESS, self.config.delays, strict=True):
            await asyncio.sleep(delay)
            if not await self._report(call, status):
                return
        say(f"message {call.message_id} delivered")

    async def _report(self, call: HandlerCall, status: DeliveryStatus) -> bool:
        assert self._reporter is not None
        for attempt in range(1, REPORT_ATTEMPTS + 1):
            try:
                await self._reporter.report(call, status)
                say(f"message {call.message_id}: reported {status.value}")
                return True
            except BitrixError as exc:
                if exc.http_status == 503 and attempt < REPORT_ATTEMPTS:  # busy: asked to try again later
                    await asyncio.sleep(attempt)
                    continue
                refusal = f"{exc.error}: {exc.error_description}"
                say(f"message {call.message_id}: the portal refused {status.value}: {refusal}")
                return False
            except PortalUnreachable as exc:
                if attempt == REPORT_ATTEMPTS:
                    say(f"message {call.message_id}: gave up reporting {status.value}: {exc}")
                    return False
                await asyncio.sleep(attempt)
            except ProviderError as exc:
                say(f"message {call.message_id}: cannot report {status.value}: {exc}")
                return False
        return False

    # -- for people and scripts -----------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "installed": self.application_token is not None,
                "sender": self.sender.code,
                "handler": self.sender.handler,
                "portal": self.config.portal_url,
                "in_progress": len(self._tasks),
            }
        )

    async def index(self, request: Request) -> Response:
        return PlainTextResponse(
            "Demo SMS provider. POST / takes app events (ONAPPINSTALL), POST /handler takes messages; GET /health.\n"
        )


async def _body(request: Request) -> bytes | None:
    """The body, or None when it is larger than any call Bitrix24 sends."""
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: DemoConfig, provider: DemoProvider | None = None) -> Starlette:
    provider = provider or DemoProvider(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await provider.start()
        try:
            yield
        finally:
            await provider.stop()

    routes = [
        Route("/", provider.on_event, methods=["POST"]),
        Route("/", provider.index, methods=["GET"]),
        Route("/handler", provider.on_message, methods=["POST"]),
        Route("/health", provider.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.provider = provider
    return app
