"""The provider kit (messageservice.provider): parsing what the portal POSTs, checking it, and calling back.

Bodies come from our payload builder and from a real server's calls to a real loopback handler; status
reports and sender registrations go to a real server on both backends.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from messageservice.core import apps as app_service
from messageservice.core.context import Core
from messageservice.core.payload import HandlerMessage, handler_body
from messageservice.delivery.app_events import deliver_due
from messageservice.phpquery import http_build_query
from messageservice.provider import (
    ONAPPINSTALL,
    ONAPPUNINSTALL,
    Auth,
    Binding,
    BitrixError,
    DeliveryStatus,
    ForeignCall,
    HandlerCall,
    MalformedCall,
    MissingAuth,
    PortalUnreachable,
    Registration,
    RestClient,
    SenderSpec,
    StatusReporter,
    SyncRestClient,
    application_token_matches,
    parse_app_event,
    parse_handler_call,
    register_sender,
    register_sender_sync,
    report_status,
    report_status_sync,
    verify_application_token,
)
from tests.portal import AppCredentials, LivePortal
from tests.receiver import Receiver

AUTH = {
    "access_token": "a" * 70,
    "expires": 1742899200,
    "expires_in": 3600,
    "scope": "crm,messageservice",
    "domain": "x.bitrix24.ru",
    "server_endpoint": "https://oauth.bitrix.info/rest/",
    "status": "L",
    "client_endpoint": "https://x.bitrix24.ru/rest/",
    "member_id": "b" * 32,
    "user_id": 7,
    "application_token": "c" * 32,
}


def crm_message(**changes: Any) -> HandlerMessage:
    message = HandlerMessage(
        module_id="crm",
        headers={"bindings": [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}, {"OWNER_TYPE_ID": 2, "OWNER_ID": 7}]},
        sender_type="SMS",
        sender_code="provider1",
        message_id="72dd742c8270db0ddbbab92f98877537",
        message_to="+79990000000",
        message_body="Hello & <b>ü</b> 100% [x]",
        ts=1742895600,
    )
    return replace(message, **changes)


# -- parsing what our payload builder writes -------------------------------------------------------------


def test_parses_a_crm_call_as_built_for_the_wire() -> None:
    call = parse_handler_call(handler_body(crm_message(), AUTH).encode())
    assert call.code == "provider1" and call.type == "SMS" and call.module_id == "crm"
    assert call.message_id == "72dd742c8270db0ddbbab92f98877537"
    assert call.message_to == "+79990000000" and call.message_body == "Hello & <b>ü</b> 100% [x]"
    assert call.ts == 1742895600
    assert call.bindings == (Binding(3, 123), Binding(2, 7))
    assert call.properties == {"phone_number": "+79990000000", "message_text": "Hello & <b>ü</b> 100% [x]"}
    assert call.workflow_id is None and call.document_id == ()
    assert call.auth == Auth(
        access_token="a" * 70,
        expires=1742899200,
        expires_in=3600,
        scope=("crm", "messageservice"),
        domain="x.bitrix24.ru",
        server_endpoint="https://oauth.bitrix.info/rest/",
        status="L",
        client_endpoint="https://x.bitrix24.ru/rest/",
        member_id="b" * 32,
        user_id=7,
        application_token="c" * 32,
    )
    # Tokens stay out of logs.
    assert "a" * 70 not in repr(call) and "c" * 32 not in repr(call)


def test_parses_a_bizproc_call_from_str_and_a_call_without_auth() -> None:
    headers = {
        "workflow_id": "59ce38567ff2a5.26351167",
        "document_id": ["crm", "CCrmDocumentLead", "LEAD_98"],
        "document_type": ["crm", "CCrmDocumentLead", "LEAD"],
    }
    call = parse_handler_call(handler_body(crm_message(module_id="bizproc", headers=headers), None))
    assert call.module_id == "bizproc" and call.workflow_id == "59ce38567ff2a5.26351167"
    assert call.document_id == ("crm", "CCrmDocumentLead", "LEAD_98")
    assert call.document_type == ("crm", "CCrmDocumentLead", "LEAD")
    assert call.bindings == () and call.auth is None
    with pytest.raises(MissingAuth):
        report_status_sync(call, "delivered")


def event_body(event: str = "ONAPPINSTALL", **changes: Any) -> str:
    fields: dict[str, Any] = {
        "event": event,
        "data": {"VERSION": "3", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"},
        "ts": "1742895600",
        "auth": {**AUTH, "refresh_token": "r" * 70},
    }
    fields.update(changes)
    return http_build_query({k: v for k, v in fields.items() if v is not None})


def test_parses_an_app_event() -> None:
    event = parse_app_event(event_body("onAppInstall"))
    assert event.event == ONAPPINSTALL and event.version == 3 and event.language_id == "en"
    assert event.ts == 1742895600 and event.data["ACTIVE"] == "Y"
    assert event.auth.refresh_token == "r" * 70 and event.auth.application_token == "c" * 32
    assert "r" * 70 not in repr(event)


# -- malformed bodies --------------------------------------------------------------------------------------


def good_call_fields() -> dict[str, Any]:
    return {
        "code": "provider1",
        "message_id": "72dd742c8270db0ddbbab92f98877537",
        "message_to": "+79990000000",
        "message_body": "Hello",
        "type": "SMS",
        "ts": "1742895600",
        "auth": dict(AUTH),
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"code": None}, "code"),
        ({"message_id": ""}, "message_id"),
        ({"message_to": ["+1", "+2"]}, "message_to"),
        ({"message_body": {"a": "b"}}, "message_body"),
        ({"type": None}, "type"),
        ({"ts": "yesterday"}, "ts"),
        ({"bindings": "3:123"}, "bindings"),
        ({"bindings": [{"OWNER_TYPE_ID": "3"}]}, "bindings[0]"),
        ({"bindings": [{"OWNER_TYPE_ID": "lead", "OWNER_ID": "1"}]}, "bindings[0][OWNER_TYPE_ID]"),
        ({"document_id": "LEAD_98"}, "document_id"),
        ({"properties": "x"}, "properties"),
        ({"auth": "token"}, "auth"),
        ({"auth": {**AUTH, "user_id": "admin"}}, "auth[user_id]"),
        ({"auth": {**AUTH, "access_token": ["a", "b"]}}, "auth[access_token]"),
        ({"event": "ONAPPINSTALL"}, "event"),
    ],
)
def test_malformed_calls_name_the_field(change: dict[str, Any], field: str) -> None:
    fields = {**good_call_fields(), **change}
    body = http_build_query({k: v for k, v in fields.items() if v is not None})
    with pytest.raises(MalformedCall) as caught:
        parse_handler_call(body)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty"),
        (b"&&&", "empty"),
        (b"code=%FF%FE&message_id=1", "UTF-8"),
        (b"x" * 1_048_577, "more than"),
    ],
)
def test_bodies_that_are_not_calls_at_all(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedCall, match=reason):
        parse_handler_call(body)
    with pytest.raises(MalformedCall, match=reason):
        parse_app_event(body)


def test_a_good_body_parses_and_a_wrong_type_is_refused() -> None:
    assert parse_handler_call(http_build_query(good_call_fields())).auth is not None
    with pytest.raises(MalformedCall, match="bytes or str"):
        parse_handler_call(123)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": None}, "event"),
        ({"auth": None}, "auth"),
        ({"auth": {**AUTH, "application_token": ""}}, "auth[application_token]"),
        ({"auth": "x"}, "auth"),
        ({"data": "x"}, "data"),
        ({"ts": "-"}, "ts"),
    ],
)
def test_malformed_events_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(MalformedCall) as caught:
        parse_app_event(event_body(**change))
    assert caught.value.field == field


# -- the application_token check -----------------------------------------------------------------------------


def test_application_token_check() -> None:
    call = parse_handler_call(handler_body(crm_message(), AUTH))
    verify_application_token(call, "c" * 32)
    for expected in ("d" * 32, "c" * 31, "c" * 33, "", None, "ç" * 32):
        assert not application_token_matches(expected, call.auth.application_token if call.auth else None)
        with pytest.raises(ForeignCall):
            verify_application_token(call, expected)
    assert application_token_matches("ç" * 3, "ç" * 3)  # non-ASCII tokens compare, they do not crash
    assert not application_token_matches(None, None) and not application_token_matches("", "")
    unsigned = parse_handler_call(handler_body(crm_message(), None))
    with pytest.raises(ForeignCall):
        verify_application_token(unsigned, "c" * 32)


# -- against a real server -----------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app(name="Kit provider")


def register(portal: LivePortal, app: AppCredentials, handler: str) -> str:
    code = "kit_" + uuid.uuid4().hex[:8]
    answer = portal.call(
        "messageservice.sender.add",
        {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": "Kit"},
        token=app.access_token,
    )
    assert answer.status_code == 200, answer.text
    return f"{app.client_id}|{code}"


def sent_call(portal: LivePortal, app: AppCredentials, receiver: Receiver, **extra: Any) -> tuple[dict, HandlerCall]:
    """Send through the server and parse the body its dispatcher POSTed to our handler."""
    message_from = register(portal, app, f"http://127.0.0.1:{receiver.port}/handler")
    params = {"MESSAGE_FROM": message_from, "MESSAGE_TO": "8 (999) 000-00-00", "MESSAGE_BODY": "Kit & ü", **extra}
    answer = portal.call("messageservice.message.send", params, token=app.access_token)
    assert answer.status_code == 200, answer.text
    sent = answer.json()["result"]
    (received,) = receiver.wait_for(1)
    return sent, parse_handler_call(received.body)


def get(portal: LivePortal, app: AppCredentials, message_id: int) -> dict[str, Any]:
    answer = portal.call("messageservice.message.get", {"ID": message_id}, token=app.access_token)
    assert answer.status_code == 200, answer.text
    return answer.json()["result"]


def test_a_real_call_parses_and_its_status_report_lands(
    portal: LivePortal, app: AppCredentials, receiver: Receiver
) -> None:
    bindings = [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}]
    sent, call = sent_call(portal, app, receiver, BINDINGS=bindings)
    assert call.message_id == sent["MESSAGE_ID"] and call.module_id == "crm"
    assert call.message_to == "+79990000000" and call.message_body == "Kit & ü"
    assert call.bindings == (Binding(3, 123),)
    assert call.auth is not None and call.auth.client_endpoint == portal.rest_url
    assert call.auth.user_id == 1 and call.auth.access_token
    verify_application_token(call, app.application_token)

    asyncio.run(report_status(call, DeliveryStatus.QUEUED))
    report_status_sync(call, "delivered")
    message = get(portal, app, sent["ID"])
    assert message["STATUS"] == "delivered"
    reports = [(h["STATUS"], h["USER_ID"]) for h in message["HISTORY"] if h["STATUS"] in ("queued", "delivered")]
    assert reports == [("queued", 1), ("delivered", 1)]


def test_status_errors_carry_bitrix_error_and_description(
    portal: LivePortal, app: AppCredentials, receiver: Receiver
) -> None:
    _, call = sent_call(portal, app, receiver)
    unknown = replace(call, message_id=uuid.uuid4().hex)

    async def reports() -> list[BaseException]:
        errors: list[BaseException] = []
        async with StatusReporter() as reporter:
            for target in (unknown, replace(call, code="bad code!")):
                try:
                    await reporter.report(target, "sent")
                except BitrixError as exc:
                    errors.append(exc)
        return errors

    not_found, wrong_code = asyncio.run(reports())
    assert isinstance(not_found, BitrixError) and isinstance(wrong_code, BitrixError)
    assert (not_found.error, not_found.error_description, not_found.http_status) == (
        "ERROR_MESSAGE_NOT_FOUND",
        "Message not found!",
        400,
    )
    assert not_found.method == "messageservice.message.status.update"
    assert (wrong_code.error, wrong_code.error_description) == ("ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!")

    with pytest.raises(BitrixError) as sync_error:
        report_status_sync(unknown, "delivered")
    assert sync_error.value.error == "ERROR_MESSAGE_NOT_FOUND" and sync_error.value.http_status == 400

    assert call.auth is not None
    forged = replace(call, auth=replace(call.auth, access_token="0" * 70))
    with pytest.raises(BitrixError) as auth_error:
        report_status_sync(forged, "delivered")
    assert auth_error.value.http_status == 401 and auth_error.value.error

    with pytest.raises(ValueError, match="'Delivered'"):
        report_status_sync(call, "Delivered")  # the portal compares case-sensitively; refused before sending


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_no_answer_and_a_non_json_answer(receiver: Receiver) -> None:
    call = parse_handler_call(handler_body(crm_message(), AUTH))
    assert call.auth is not None
    nowhere = replace(call, auth=replace(call.auth, client_endpoint=f"http://127.0.0.1:{closed_port()}/rest/"))
    with pytest.raises(PortalUnreachable) as sync_error:
        report_status_sync(nowhere, "sent", timeout=2)
    assert "a" * 70 not in str(sync_error.value)
    with pytest.raises(PortalUnreachable):
        asyncio.run(report_status(nowhere, "sent", timeout=2))

    # A 200 that is not Bitrix's JSON envelope (here: a plain "ok") is not taken for success.
    plain = replace(call, auth=replace(call.auth, client_endpoint=f"http://127.0.0.1:{receiver.port}/rest/"))
    with pytest.raises(BitrixError) as unexpected:
        asyncio.run(report_status(plain, "sent"))
    assert unexpected.value.error == "ERROR_UNEXPECTED_ANSWER" and unexpected.value.http_status == 200
    (request,) = receiver.wait_for(1)
    assert request.path == "/rest/messageservice.message.status.update"
    assert request.form == {"CODE": "provider1", "MESSAGE_ID": call.message_id, "STATUS": "sent", "auth": "a" * 70}

    with pytest.raises(ValueError, match="REST method"):
        SyncRestClient("http://127.0.0.1:1/rest/").call("../oauth/token")
    with pytest.raises(ValueError, match="http"):
        RestClient("ftp://x/rest/")


def install_to(portal: LivePortal, url: str) -> tuple[str, str]:
    """Add and install an app whose URL is `url`; the ONAPPINSTALL goes out now. Returns client_id, app token."""

    async def work(core: Core) -> tuple[str, str]:
        app, _ = await app_service.add_app(core, "Installed kit", url, "messageservice")
        token = await app_service.install_app(core, app.client_id, 1)
        await deliver_due(core)
        return app.client_id, token

    return portal.run(work)


def test_a_real_install_event_registers_the_sender(portal: LivePortal, receiver: Receiver) -> None:
    client_id, application_token = install_to(portal, receiver.url)
    (request,) = receiver.wait_for(1)
    event = parse_app_event(request.body)
    assert event.event == ONAPPINSTALL and event.version == 1 and event.data["INSTALLED"] == "Y"
    assert event.auth.client_endpoint == portal.rest_url and event.auth.refresh_token
    verify_application_token(event, application_token)

    code = "kit_" + uuid.uuid4().hex[:8]
    sender = SenderSpec(code, f"http://127.0.0.1:{receiver.port}/one", {"en": "Kit", "de": "Bausatz"}, "A kit sender")
    assert asyncio.run(register_sender(event.auth, sender)) is Registration.ADDED
    # A reinstall finds it there: it is brought up to date instead.
    moved = replace(sender, handler=f"http://127.0.0.1:{receiver.port}/two")
    assert register_sender_sync(event.auth, moved) is Registration.UPDATED
    listed = SyncRestClient.from_auth(event.auth).call("messageservice.sender.list")
    assert code in listed

    # A sender registered by someone who is not an admin is refused with Bitrix's error.
    user = portal.add_user("Not admin")
    plain = portal.token(client_id, user)["access_token"]
    with pytest.raises(BitrixError) as refused:
        register_sender_sync(SyncRestClient(portal.rest_url, plain), replace(sender, code=code + "x"))
    assert (refused.value.error, refused.value.http_status) == ("ACCESS_DENIED", 403)

    async def uninstall(core: Core) -> None:
        await app_service.uninstall_app(core, client_id)
        await deliver_due(core)

    portal.run(uninstall)
    gone = parse_app_event(receiver.wait_for(2)[1].body)
    assert gone.event == ONAPPUNINSTALL and gone.auth.access_token is None
    verify_application_token(gone, application_token)
