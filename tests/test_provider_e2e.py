"""End to end: the official Python SDK (b24pysdk, unchanged from PyPI) is the provider.

A small provider app listens on a loopback port. The portal POSTs it the HANDLER call; the app checks
auth[application_token] against the token it got at install (the check Bitrix recommends to providers),
answers 200 at once, and then, in a worker thread, builds a b24pysdk client from nothing but what the call
carried (the portal's address from auth[client_endpoint], the token from auth[access_token]) and reports
`delivered` with messageservice.message.status.update. The sender is registered and the messages are sent
through the SDK too; the server's view is read with raw requests (messageservice.message.get).
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from b24pysdk import BitrixAppLocal, BitrixTokenLocal, Client
from b24pysdk.api.requesters.bitrix_oauth_requester import BitrixOAuthRequester

from tests.loopback_http import serve_in_background
from tests.portal import AppCredentials, LivePortal

HTTP_TIMEOUT = 10.0
WAIT_TIMEOUT = 20.0


@dataclass
class Report:
    """One status report the provider made through the SDK for one HANDLER call."""

    form: dict[str, str]
    domain: str
    result: Any = None
    error: BaseException | None = None


@dataclass
class SdkProvider:
    """A provider app: HANDLER calls in over http, status reports out through b24pysdk over https."""

    client_id: str
    client_secret: str
    application_token: str
    calls: list[dict[str, str]] = field(default_factory=list)  # accepted HANDLER calls, in arrival order
    refused: list[dict[str, str]] = field(default_factory=list)  # calls whose application_token did not match
    reports: list[Report] = field(default_factory=list)  # finished SDK reports
    # The carrier's delivery receipt: a report waits for it. Set = report as soon as the call is answered.
    carrier: threading.Event = field(default_factory=threading.Event)
    changed: threading.Condition = field(default_factory=threading.Condition)
    workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> SdkProvider:
        self.carrier.set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                form = dict(parse_qsl(body.decode(), keep_blank_values=True))
                status = owner.accept(self.path, form)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK" if status == 200 else b"NO")
                self.wfile.flush()
                if status == 200:
                    # Answered first; the report goes out afterwards, as a provider's queue would send it.
                    owner.report_later(form)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = serve_in_background(Handler)
        self.port = self.httpd.server_address[1]
        return self

    @property
    def handler_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/handler"

    def accept(self, path: str, form: dict[str, str]) -> int:
        if path != "/handler":
            return 404
        with self.changed:
            if form.get("auth[application_token]") != self.application_token:
                self.refused.append(form)
                self.changed.notify_all()
                return 403
            self.calls.append(form)
            self.changed.notify_all()
        return 200

    def report_later(self, form: dict[str, str]) -> None:
        worker = threading.Thread(target=self.report, args=(form,), daemon=True)
        with self.changed:
            self.workers.append(worker)
        worker.start()

    def report(self, form: dict[str, str]) -> None:
        # The SDK pastes the domain into https://{domain}/rest/: host:port of the endpoint the call named.
        domain = urlsplit(form["auth[client_endpoint]"]).netloc
        done = Report(form, domain)
        try:
            if not self.carrier.wait(WAIT_TIMEOUT):
                raise TimeoutError("no carrier receipt")
            app = BitrixAppLocal(domain=domain, client_id=self.client_id, client_secret=self.client_secret)
            token = BitrixTokenLocal(
                auth_token=form["auth[access_token]"],
                expires=datetime.fromtimestamp(int(form["auth[expires]"]), UTC),
                expires_in=int(form["auth[expires_in]"]),
                bitrix_app=app,
            )
            client = Client(token, timeout=HTTP_TIMEOUT, max_retries=1)
            request = client.messageservice.message.status.update(form["code"], form["message_id"], "delivered")
            done.result = request.result
        except BaseException as exc:  # recorded for the test to show, not swallowed
            done.error = exc
        with self.changed:
            self.reports.append(done)
            self.changed.notify_all()

    def wait_reports(self, count: int) -> list[Report]:
        with self.changed:
            reached = self.changed.wait_for(lambda: len(self.reports) >= count, timeout=WAIT_TIMEOUT)
            assert reached, f"{len(self.reports)} of {count} SDK reports after {WAIT_TIMEOUT} s"
            return list(self.reports)

    def stop(self) -> None:
        self.carrier.set()  # let a held worker finish
        self.httpd.shutdown()
        self.httpd.server_close()
        for worker in list(self.workers):
            worker.join(timeout=WAIT_TIMEOUT)


@pytest.fixture
def sdk_portal(https_portal: LivePortal, monkeypatch: pytest.MonkeyPatch) -> Iterator[LivePortal]:
    """The https portal, trusted by requests (the SDK has no TLS setting of its own)."""
    cert = https_portal.server.cert_path
    assert cert is not None
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    # No token here has a refresh token; should the SDK try to refresh anyway, it stays on this server.
    monkeypatch.setattr(BitrixOAuthRequester, "_OAUTH_TOKEN_URL", f"{https_portal.base_url}/oauth/token/")
    yield https_portal
    # Idle keep-alive TLS connections hold up the server's shutdown: close ours and collect the SDK's.
    https_portal.session.close()
    gc.collect()


@pytest.fixture
def app(sdk_portal: LivePortal) -> AppCredentials:
    return sdk_portal.add_app(name="SDK provider")


@pytest.fixture
def provider(app: AppCredentials) -> Iterator[SdkProvider]:
    server = SdkProvider(app.client_id, app.client_secret, app.application_token).start()
    yield server
    server.stop()


def sdk_token(portal: LivePortal, app: AppCredentials, access_token: str) -> BitrixTokenLocal:
    bitrix_app = BitrixAppLocal(
        domain=urlsplit(portal.base_url).netloc, client_id=app.client_id, client_secret=app.client_secret
    )
    return BitrixTokenLocal(auth_token=access_token, bitrix_app=bitrix_app)


def register(portal: LivePortal, app: AppCredentials, provider: SdkProvider) -> str:
    """sender.add through the SDK, by the installing admin; returns MESSAGE_FROM."""
    code = "sdkp_" + uuid.uuid4().hex[:10]
    client = Client(sdk_token(portal, app, app.access_token), timeout=HTTP_TIMEOUT, max_retries=1)
    added = client.messageservice.sender.add(code, "SMS", provider.handler_url, {"en": "SDK provider"})
    assert added.result is True
    return f"{app.client_id}|{code}"


def send(portal: LivePortal, app: AppCredentials, access_token: str, **params: Any) -> dict[str, Any]:
    """The server's extension method, through the SDK's generic call_method."""
    answer = sdk_token(portal, app, access_token).call_method("messageservice.message.send", params)
    result = answer["result"]
    assert result["STATUS"] == "pending", answer
    return result


def get(portal: LivePortal, token: str, message_id: int) -> dict[str, Any]:
    response = portal.call("messageservice.message.get", {"ID": message_id}, token=token)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def wait_status(
    portal: LivePortal, token: str, message_id: int, status: str, *, settled: bool = False
) -> dict[str, Any]:
    """The message once it has `status` (and, with `settled`, once the dispatcher has written its attempt)."""
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        message = get(portal, token, message_id)
        if message["STATUS"] == status and (not settled or message["DELIVERY"]["STATE"] != "pending"):
            return message
        assert time.monotonic() < deadline, f"message {message_id} not yet {status}: {message}"
        time.sleep(0.05)


def assert_reported(report: Report, portal: LivePortal) -> None:
    assert report.error is None, repr(report.error)
    assert report.result is True
    assert report.domain == urlsplit(portal.base_url).netloc


def test_sdk_provider_reports_delivered_with_the_handler_token(
    sdk_portal: LivePortal, app: AppCredentials, provider: SdkProvider
) -> None:
    message_from = register(sdk_portal, app, provider)
    # The author is a plain user: the report is accepted only because the HANDLER token acts for them.
    author = sdk_portal.add_user("Author")
    author_token = sdk_portal.token(app.client_id, author)["access_token"]

    provider.carrier.clear()  # hold the receipt until the server has recorded `sent`
    sent = send(
        sdk_portal,
        app,
        author_token,
        MESSAGE_FROM=message_from,
        MESSAGE_TO="+1 (555) 000-1234",
        MESSAGE_BODY="Your code: 1234 & more",
    )
    message = wait_status(sdk_portal, author_token, sent["ID"], "sent")
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [200]
    assert message["DELIVERY"]["STATE"] == "done"
    assert provider.reports == []
    provider.carrier.set()

    message = wait_status(sdk_portal, author_token, sent["ID"], "delivered")
    (report,) = provider.wait_reports(1)
    assert_reported(report, sdk_portal)

    (call,) = provider.calls
    assert call is report.form
    assert call["code"] == message_from.split("|")[1] and call["message_id"] == sent["MESSAGE_ID"]
    assert call["message_to"] == "+15550001234" and call["message_body"] == "Your code: 1234 & more"
    assert call["auth[user_id]"] == str(author)
    assert call["auth[client_endpoint]"] == sdk_portal.rest_url
    assert call["auth[application_token]"] == app.application_token
    # A token of its own for this call, not one the app or the author already held.
    assert call["auth[access_token]"] not in (app.access_token, author_token)
    assert provider.refused == []

    assert message["STATUS_SEMANTIC"] == "success" and message["AUTHOR_ID"] == author
    history = message["HISTORY"]
    assert [(h["STATUS"], h["APPLIED"]) for h in history] == [("pending", True), ("sent", True), ("delivered", True)]
    pending, dispatched, delivered = history
    assert pending["USER_ID"] == author and pending["APP_ID"] is not None
    assert dispatched["USER_ID"] is None and dispatched["APP_ID"] is None  # the dispatcher's own entry
    assert delivered["USER_ID"] == author and delivered["APP_ID"] == pending["APP_ID"]
    assert delivered["STATUS_ID"] == message["STATUS_ID"] == 14
    assert pending["DATE"] <= dispatched["DATE"] <= delivered["DATE"]

    status_get = sdk_portal.call("messageservice.message.status.get", {"MESSAGE_ID": sent["ID"]}, token=author_token)
    assert status_get.json()["result"] == "delivered"


def test_sdk_provider_refuses_a_foreign_application_token(
    sdk_portal: LivePortal, app: AppCredentials, provider: SdkProvider
) -> None:
    """The provider-side check: a HANDLER call that does not carry the app's application_token is not acted on."""
    forged = {
        "code": "sdkp_x",
        "message_id": uuid.uuid4().hex,
        "auth[access_token]": "0" * 70,
        "auth[client_endpoint]": sdk_portal.rest_url,
        "auth[application_token]": uuid.uuid4().hex,
    }
    with requests.Session() as session:
        answer = session.post(provider.handler_url, data=forged, timeout=HTTP_TIMEOUT)
        assert answer.status_code == 403
        forged.pop("auth[application_token]")
        assert session.post(provider.handler_url, data=forged, timeout=HTTP_TIMEOUT).status_code == 403
    assert len(provider.refused) == 2 and provider.calls == [] and provider.workers == []


def test_sdk_provider_delivers_crm_and_bizproc_sends(
    sdk_portal: LivePortal, app: AppCredentials, provider: SdkProvider
) -> None:
    """Reports go out the moment the call is answered: whichever of `sent` and `delivered` lands first,
    the message ends delivered."""
    message_from = register(sdk_portal, app, provider)
    bindings = [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}, {"OWNER_TYPE_ID": 2, "OWNER_ID": 7}]
    crm = send(
        sdk_portal,
        app,
        app.access_token,
        MESSAGE_FROM=message_from,
        MESSAGE_TO="8 (999) 000-00-00",
        MESSAGE_BODY="From a CRM card",
        BINDINGS=bindings,
    )
    bizproc = send(
        sdk_portal,
        app,
        app.access_token,
        MESSAGE_FROM=message_from,
        MESSAGE_TO="+15550009999",
        MESSAGE_BODY="From an automation rule",
        MODULE_ID="bizproc",
        WORKFLOW_ID="59ce38567ff2a5.26351167",
        DOCUMENT_ID=["crm", "CCrmDocumentLead", "LEAD_98"],
        DOCUMENT_TYPE=["crm", "CCrmDocumentLead", "LEAD"],
    )

    # A report that beats the dispatcher's write-back leaves the delivery `pending` for a moment: wait for both.
    crm_message = wait_status(sdk_portal, app.access_token, crm["ID"], "delivered", settled=True)
    bizproc_message = wait_status(sdk_portal, app.access_token, bizproc["ID"], "delivered", settled=True)
    reports = {r.form["message_id"]: r for r in provider.wait_reports(2)}
    assert set(reports) == {crm["MESSAGE_ID"], bizproc["MESSAGE_ID"]}
    for report in reports.values():
        assert_reported(report, sdk_portal)
    assert provider.refused == []

    crm_call = reports[crm["MESSAGE_ID"]].form
    assert crm_call["module_id"] == "crm" and crm_call["message_to"] == "+79990000000"
    assert crm_call["bindings[0][OWNER_TYPE_ID]"] == "3" and crm_call["bindings[1][OWNER_ID]"] == "7"
    assert crm_message["BINDINGS"] == bindings

    bizproc_call = reports[bizproc["MESSAGE_ID"]].form
    assert bizproc_call["module_id"] == "bizproc" and bizproc_call["workflow_id"] == "59ce38567ff2a5.26351167"
    assert bizproc_call["document_id[2]"] == "LEAD_98" and bizproc_call["document_type[2]"] == "LEAD"
    assert bizproc_message["WORKFLOW_ID"] == "59ce38567ff2a5.26351167"
    assert bizproc_message["DOCUMENT_ID"] == ["crm", "CCrmDocumentLead", "LEAD_98"]

    for message in (crm_message, bizproc_message):
        assert message["STATUS_SEMANTIC"] == "success" and message["DELIVERY"]["STATE"] == "done"
        assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [200]
        history = message["HISTORY"]
        # `sent` is the dispatcher's note; if the provider's report beat it, it is rightly not written at all.
        applied = [h["STATUS"] for h in history if h["APPLIED"]]
        assert applied in (["pending", "sent", "delivered"], ["pending", "delivered"]), history
        assert all(h["APPLIED"] for h in history), history
        delivered = history[-1]
        assert delivered["STATUS"] == "delivered"
        assert delivered["USER_ID"] == message["AUTHOR_ID"] == 1
        assert delivered["APP_ID"] is not None and delivered["APP_ID"] == history[0]["APP_ID"]
