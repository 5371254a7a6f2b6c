"""Sending through a real HANDLER on a loopback port: the exact body, retries, statuses, access rules.

The portal runs in-process (the handler is real; nothing calls back into the portal over the wire);
checks of input refused before the engine run once (`any_portal`)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import text

from tests.portal import AppCredentials, LivePortal, open_fresh_portal
from tests.receiver import Receiver, Reply

# Fast retries so that a whole schedule runs in a test (the breaker has tests of its own).
FAST = {
    "retry_schedule": "0.2,0.2,0.2",
    "handler_timeout_seconds": 1.0,
    "dispatch_sweep_seconds": 0.2,
    "breaker_failures": 1000,
}


@pytest.fixture
def handler() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def handler_url(receiver: Receiver) -> str:
    return f"http://127.0.0.1:{receiver.port}/handler"


def register(portal: LivePortal, app: AppCredentials, url: str) -> str:
    code = "p" + uuid.uuid4().hex[:8]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": url, "NAME": "Provider"}
    response = portal.call("messageservice.sender.add", params, token=app.access_token)
    assert response.status_code == 200, response.text
    return f"{app.client_id}|{code}"


def send(portal: LivePortal, token: str, message_from: str, **extra: Any) -> dict[str, Any]:
    params = {"MESSAGE_FROM": message_from, "MESSAGE_TO": "8 (999) 000-00-00", "MESSAGE_BODY": "Hello <b> & ü", **extra}
    response = portal.call("messageservice.message.send", params, token=token)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def get(portal: LivePortal, token: str, message_id: int) -> dict[str, Any]:
    return portal.call("messageservice.message.get", {"ID": message_id}, token=token).json()["result"]


def wait_for(probe: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.time() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def settled(portal: LivePortal, token: str, message_id: int) -> dict[str, Any]:
    """The message once its delivery is no longer pending."""
    return wait_for(lambda: (m := get(portal, token, message_id))["DELIVERY"]["STATE"] != "pending" and m)


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture
def fresh_portal(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[LivePortal]:
    """A portal of its own, in-process (settings overrides by indirect parametrization, as usual)."""
    yield from open_fresh_portal(request, backend, tmp_path, in_process=True)


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app()


@pytest.fixture
def any_app(any_portal: LivePortal) -> AppCredentials:
    return any_portal.add_app()


def test_crm_send_reaches_the_handler_exactly(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    message_from = register(portal, app, handler_url(handler))
    bindings = [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}, {"OWNER_TYPE_ID": 2, "OWNER_ID": 7}]
    sent = send(portal, app.access_token, message_from, BINDINGS=bindings)
    assert sent["STATUS"] == "pending" and len(sent["MESSAGE_ID"]) == 32 and int(sent["MESSAGE_ID"], 16) >= 0
    call = handler.wait_for(1)[0]
    assert call.path == "/handler"
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.headers["User-Agent"] == "Bitrix24 Webhook Engine"
    pairs = parse_qsl(call.body.decode(), keep_blank_values=True)
    keys = [k for k, _ in pairs]
    assert keys == [
        "module_id",
        "bindings[0][OWNER_TYPE_ID]",
        "bindings[0][OWNER_ID]",
        "bindings[1][OWNER_TYPE_ID]",
        "bindings[1][OWNER_ID]",
        "properties[phone_number]",
        "properties[message_text]",
        "type",
        "code",
        "message_id",
        "message_to",
        "message_body",
        "ts",
        "auth[access_token]",
        "auth[expires]",
        "auth[expires_in]",
        "auth[scope]",
        "auth[domain]",
        "auth[server_endpoint]",
        "auth[status]",
        "auth[client_endpoint]",
        "auth[member_id]",
        "auth[user_id]",
        "auth[application_token]",
    ]
    form = dict(pairs)
    assert (
        form["module_id"] == "crm"
        and form["bindings[0][OWNER_ID]"] == "123"
        and form["bindings[1][OWNER_TYPE_ID]"] == "2"
    )
    # Normalised as Bitrix does: digits only, a leading 8 read as 7, a '+' in front.
    assert form["message_to"] == form["properties[phone_number]"] == "+79990000000"
    assert form["message_body"] == form["properties[message_text]"] == "Hello <b> & ü"
    assert form["type"] == "SMS" and form["code"] == message_from.split("|")[1]
    assert form["message_id"] == sent["MESSAGE_ID"]
    assert abs(int(form["ts"]) - time.time()) < 60
    assert form["auth[application_token]"] == app.application_token
    assert form["auth[client_endpoint]"] == portal.rest_url and form["auth[user_id]"] == "1"
    assert form["auth[scope]"] == "messageservice" and form["auth[expires_in]"] == "3600"
    assert "auth[refresh_token]" not in form
    # PHP's http_build_query: brackets escaped, spaces as '+'.
    raw = call.body.decode()
    assert "bindings%5B0%5D%5BOWNER_TYPE_ID%5D=3" in raw and "message_body=Hello+%3Cb%3E+%26+%C3%BC" in raw
    # The token that came with the call reports the status, as a provider does.
    report = {"CODE": form["code"], "MESSAGE_ID": form["message_id"], "STATUS": "delivered"}
    answer = portal.call("messageservice.message.status.update", report, token=form["auth[access_token]"])
    assert answer.status_code == 200 and answer.json()["result"] is True
    message = settled(portal, app.access_token, sent["ID"])
    assert message["STATUS"] == "delivered" and message["STATUS_SEMANTIC"] == "success"
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [200]
    assert message["BINDINGS"] == bindings


def test_bizproc_send_body(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    message_from = register(portal, app, handler_url(handler))
    send(
        portal,
        app.access_token,
        message_from,
        MODULE_ID="bizproc",
        WORKFLOW_ID="59ce38567ff2a5.26351167",
        DOCUMENT_ID=["crm", "CCrmDocumentLead", "LEAD_98"],
        DOCUMENT_TYPE=["crm", "CCrmDocumentLead", "LEAD"],
    )
    pairs = parse_qsl(handler.wait_for(1)[0].body.decode(), keep_blank_values=True)
    assert pairs[:8] == [
        ("module_id", "bizproc"),
        ("workflow_id", "59ce38567ff2a5.26351167"),
        ("document_id[0]", "crm"),
        ("document_id[1]", "CCrmDocumentLead"),
        ("document_id[2]", "LEAD_98"),
        ("document_type[0]", "crm"),
        ("document_type[1]", "CCrmDocumentLead"),
        ("document_type[2]", "LEAD"),
    ]
    assert pairs[8][0] == "properties[phone_number]"


@pytest.mark.parametrize(
    ("params", "code", "description"),
    [
        ({}, "ERROR_MESSAGE_VALIDATION_FAILURE", "Empty MESSAGE_FROM!"),
        ({"MESSAGE_FROM": "nopipe"}, "ERROR_MESSAGE_VALIDATION_FAILURE", "Wrong MESSAGE_FROM!"),
        ({"MESSAGE_FROM": "a|b"}, "ERROR_MESSAGE_VALIDATION_FAILURE", "Empty MESSAGE_TO!"),
        ({"MESSAGE_FROM": "a|b", "MESSAGE_TO": "+1"}, "ERROR_MESSAGE_VALIDATION_FAILURE", "Empty MESSAGE_BODY!"),
        (
            {"MESSAGE_FROM": "a|b", "MESSAGE_TO": "+1", "MESSAGE_BODY": "x", "MODULE_ID": "tasks"},
            "ERROR_MESSAGE_VALIDATION_FAILURE",
            "Unknown MODULE_ID!",
        ),
        (
            {"MESSAGE_FROM": "a|b", "MESSAGE_TO": "+1", "MESSAGE_BODY": "x", "BINDINGS": [{"OWNER_ID": "x"}]},
            "ERROR_MESSAGE_VALIDATION_FAILURE",
            "Wrong BINDINGS!",
        ),
        (
            {"MESSAGE_FROM": "a|b", "MESSAGE_TO": "+1", "MESSAGE_BODY": "x", "MODULE_ID": "bizproc"},
            "ERROR_MESSAGE_VALIDATION_FAILURE",
            "Wrong WORKFLOW_ID!",
        ),
        (
            {
                "MESSAGE_FROM": "a|b",
                "MESSAGE_TO": "+1",
                "MESSAGE_BODY": "x",
                "MODULE_ID": "bizproc",
                "WORKFLOW_ID": "w",
                "DOCUMENT_ID": ["crm"],
            },
            "ERROR_MESSAGE_VALIDATION_FAILURE",
            "Wrong DOCUMENT_ID!",
        ),
        (
            {"MESSAGE_FROM": "a|b", "MESSAGE_TO": "+15550001111", "MESSAGE_BODY": "x"},
            "ERROR_SENDER_NOT_FOUND",
            "Sender not found!",
        ),
    ],
)
def test_send_validation(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, Any], code: str, description: str
) -> None:
    response = any_portal.call("messageservice.message.send", params, token=any_app.access_token)
    assert response.status_code == 400
    assert response.json() == {"error": code, "error_description": description}


def test_webhook_may_send_as_the_crm_user(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    message_from = register(portal, app, handler_url(handler))
    user_id = portal.add_user("CRM user")
    hook = portal.add_webhook(user_id, "messageservice")
    response = portal.session.post(
        hook + "messageservice.message.send",
        json={"MESSAGE_FROM": message_from, "MESSAGE_TO": "+15550001111", "MESSAGE_BODY": "from a webhook"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    form = handler.wait_for(1)[0].form
    # The author is the webhook's user: the provider's token acts for them.
    assert form["auth[user_id]"] == str(user_id) and form["message_to"] == "+15550001111"


def test_idempotent_send(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    message_from = register(portal, app, handler_url(handler))
    first = send(portal, app.access_token, message_from, IDEMPOTENCY_KEY="order-42")
    second = send(portal, app.access_token, message_from, IDEMPOTENCY_KEY="order-42")
    assert first["ID"] == second["ID"] and first["MESSAGE_ID"] == second["MESSAGE_ID"]
    other = send(portal, app.access_token, message_from, IDEMPOTENCY_KEY="order-43")
    assert other["ID"] != first["ID"]
    # Settled, both deliveries are final: no third message exists to be delivered, and none was stored.
    for sent in (first, other):
        assert settled(portal, app.access_token, sent["ID"])["STATUS"] == "sent"
    assert portal.call("messageservice.message.list", token=app.access_token).json()["total"] == 2
    assert len(handler.requests) == 2


# --- retries (fast schedule, a portal of their own) -------------------------------------------


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_retry_on_500_then_success(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(500), Reply(502)]
    sent = send(fresh_portal, app.access_token, register(fresh_portal, app, handler_url(handler)))
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [500, 502, 200]
    assert message["STATUS"] == "sent" and message["DELIVERY"]["STATE"] == "done"
    calls = handler.wait_for(3)
    # The same message_id every time, so a provider can drop duplicates.
    assert len({c.form["message_id"] for c in calls}) == 1


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_refused_connection_is_retried_until_dead(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    # Bound but not listening: connections are refused, and no other server of the run can take the port.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        sent = send(fresh_portal, app.access_token, register(fresh_portal, app, f"http://127.0.0.1:{port}/h"))
        message = settled(fresh_portal, app.access_token, sent["ID"])
    assert len(message["ATTEMPTS"]) == 4 and all(a["HTTP_STATUS"] is None for a in message["ATTEMPTS"])
    assert message["DELIVERY"]["STATE"] == "dead" and message["STATUS"] == "error"
    assert "gave up after 4 attempts" in message["EXEC_ERROR"]
    status_get = fresh_portal.call(
        "messageservice.message.status.get", {"MESSAGE_ID": sent["ID"]}, token=app.access_token
    )
    assert status_get.json()["result"] == "error"


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_a_senders_own_retry_schedule_replaces_the_servers(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(500)] * 10
    code = "own" + uuid.uuid4().hex[:6]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": handler_url(handler), "NAME": "N", "RETRY_SCHEDULE": "0.1"}
    assert fresh_portal.call("messageservice.sender.add", params, token=app.access_token).json()["result"] is True
    message = settled(
        fresh_portal,
        app.access_token,
        send(fresh_portal, app.access_token, f"{app.client_id}|{code}")["ID"],
    )
    # One delay: two attempts, where the server's schedule (three delays) would make four.
    assert len(message["ATTEMPTS"]) == 2 and message["DELIVERY"]["STATE"] == "dead"

    update = {"CODE": code, "RETRY_SCHEDULE": "0.1, 0.1,0.1,0.1"}
    assert fresh_portal.call("messageservice.sender.update", update, token=app.access_token).json()["result"] is True
    message = settled(
        fresh_portal,
        app.access_token,
        send(fresh_portal, app.access_token, f"{app.client_id}|{code}")["ID"],
    )
    assert len(message["ATTEMPTS"]) == 5
    # "" restores the server's schedule.
    reset = {"CODE": code, "RETRY_SCHEDULE": ""}
    assert fresh_portal.call("messageservice.sender.update", reset, token=app.access_token).json()["result"] is True
    message = settled(
        fresh_portal,
        app.access_token,
        send(fresh_portal, app.access_token, f"{app.client_id}|{code}")["ID"],
    )
    assert len(message["ATTEMPTS"]) == 4


@pytest.mark.parametrize("bad", ["x", "1,,2", "-1", "nan", "1e9", ",".join(["1"] * 21), " ", ["1", "2"]])
def test_a_wrong_retry_schedule_is_refused(any_portal: LivePortal, any_app: AppCredentials, bad: object) -> None:
    portal, app = any_portal, any_app
    code = "bad" + uuid.uuid4().hex[:6]
    params = {"CODE": code, "TYPE": "SMS", "HANDLER": "http://127.0.0.1:9/h", "NAME": "N", "RETRY_SCHEDULE": bad}
    answer = portal.call("messageservice.sender.add", params, token=app.access_token)
    expected = {"error": "ERROR_SENDER_VALIDATION_FAILURE", "error_description": "Wrong RETRY_SCHEDULE!"}
    if bad == " ":  # blank is the default schedule, as ""
        assert answer.json()["result"] is True
        return
    assert answer.status_code == 400 and answer.json() == expected, bad
    assert code not in portal.call("messageservice.sender.list", token=app.access_token).json()["result"]


@pytest.mark.parametrize("fresh_portal", [{**FAST, "handler_timeout_seconds": 0.3}], indirect=True)
def test_timeout_is_retried(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(200, delay=1.0)]
    sent = send(fresh_portal, app.access_token, register(fresh_portal, app, handler_url(handler)))
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert message["ATTEMPTS"][0]["HTTP_STATUS"] is None and "Timeout" in message["ATTEMPTS"][0]["ERROR"]
    assert message["ATTEMPTS"][-1]["HTTP_STATUS"] == 200 and message["STATUS"] == "sent"


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_retry_after_is_honoured(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(503, headers=(("Retry-After", "1"),))]
    sent = send(fresh_portal, app.access_token, register(fresh_portal, app, handler_url(handler)))
    message = settled(fresh_portal, app.access_token, sent["ID"])
    first, second = message["ATTEMPTS"]
    assert first["HTTP_STATUS"] == 503 and second["HTTP_STATUS"] == 200
    # The schedule says 0.2 s; the handler asked for 1 s.
    assert second["STARTED_AT"] - first["STARTED_AT"] >= 0.95


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_400_is_not_retried(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(400)]
    sent = send(fresh_portal, app.access_token, register(fresh_portal, app, handler_url(handler)))
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [400]
    assert message["STATUS"] == "error" and message["EXEC_ERROR"] == "HTTP 400"
    # Settled means no attempt is scheduled any more: the one call is all there will be.
    assert message["DELIVERY"]["STATE"] == "dead" and len(handler.requests) == 1


MOVE_HANDLER = "UPDATE senders SET handler = 'http://10.255.255.1/handler'"


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_private_handler_address_is_refused(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    # sender.add refuses a private literal now (tests/test_security_wire.py); one registered before the
    # networks were narrowed is refused by the address check before any connection.
    message_from = register(fresh_portal, app, "http://127.0.0.1:9/handler")
    fresh_portal.run(lambda core: core.store.write(lambda c: c.execute(text(MOVE_HANDLER))))
    sent = send(fresh_portal, app.access_token, message_from)
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert len(message["ATTEMPTS"]) == 1 and message["DELIVERY"]["STATE"] == "dead"
    assert (
        "is not allowed" in message["EXEC_ERROR"] and "MESSAGESERVICE_ALLOWED_HANDLER_NETWORKS" in message["EXEC_ERROR"]
    )


@pytest.mark.parametrize("fresh_portal", [{**FAST, "delivery_profile": "strict"}], indirect=True)
def test_strict_profile_posts_once_and_ignores_the_answer(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.status = 500
    sent = send(fresh_portal, app.access_token, register(fresh_portal, app, handler_url(handler)))
    message = settled(fresh_portal, app.access_token, sent["ID"])
    assert [a["HTTP_STATUS"] for a in message["ATTEMPTS"]] == [500]
    assert message["STATUS"] == "sent" and message["DELIVERY"]["STATE"] == "done"


@pytest.mark.parametrize("fresh_portal", [{"retry_schedule": "3600", "dispatch_sweep_seconds": 0.2}], indirect=True)
def test_deleting_the_sender_fails_its_queued_messages(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.status = 500
    message_from = register(fresh_portal, app, handler_url(handler))
    sent = send(fresh_portal, app.access_token, message_from)
    handler.wait_for(1)
    wait_for(lambda: get(fresh_portal, app.access_token, sent["ID"])["ATTEMPTS"])
    code = message_from.split("|")[1]
    assert fresh_portal.call("messageservice.sender.delete", {"CODE": code}, token=app.access_token).ok
    message = get(fresh_portal, app.access_token, sent["ID"])
    assert message["STATUS"] == "error" and message["DELIVERY"]["STATE"] == "dead"
    assert message["EXEC_ERROR"] == "Message sending application is not registered or was uninstalled"


# --- status reports (spec 1.7, 1.8) -----------------------------------------------------------


@pytest.fixture
def delivered_message(portal: LivePortal, app: AppCredentials, handler: Receiver) -> tuple[dict[str, Any], str]:
    message_from = register(portal, app, handler_url(handler))
    sent = send(portal, app.access_token, message_from)
    settled(portal, app.access_token, sent["ID"])
    return sent, message_from.split("|")[1]


def report(portal: LivePortal, token: str, code: str, message_id: str, status: Any) -> Any:
    return portal.call(
        "messageservice.message.status.update", {"CODE": code, "MESSAGE_ID": message_id, "STATUS": status}, token=token
    )


def test_status_moves_forward_only_and_keeps_history(
    portal: LivePortal, app: AppCredentials, delivered_message: tuple[dict[str, Any], str]
) -> None:
    sent, code = delivered_message
    for status in ("delivered", "queued", "delivered", "failed"):
        answer = report(portal, app.access_token, code, sent["MESSAGE_ID"], status)
        assert answer.status_code == 200 and answer.json()["result"] is True
    message = get(portal, app.access_token, sent["ID"])
    assert message["STATUS"] == "delivered" and message["STATUS_ID"] == 14
    history = [(h["STATUS"], h["APPLIED"]) for h in message["HISTORY"]]
    assert history == [
        ("pending", True),
        ("sent", True),
        ("delivered", True),
        ("queued", False),
        ("delivered", False),
        ("failed", False),
    ]
    assert (
        portal.call("messageservice.message.status.get", {"MESSAGE_ID": sent["ID"]}, token=app.access_token).json()[
            "result"
        ]
        == "delivered"
    )


@pytest.mark.parametrize(
    ("params", "code", "description"),
    [
        ({"MESSAGE_ID": "x", "STATUS": "sent"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
        ({"CODE": "a b", "MESSAGE_ID": "x", "STATUS": "sent"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
        ({"CODE": "c", "STATUS": "sent"}, "ERROR_MESSAGE_NOT_FOUND", "Message not found!"),
        ({"CODE": "c", "MESSAGE_ID": "x"}, "ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!"),
        (
            {"CODE": "c", "MESSAGE_ID": "x", "STATUS": "DELIVERED"},
            "ERROR_MESSAGE_STATUS_INCORRECT",
            "Message status incorrect!",
        ),
        (
            {"CODE": "c", "MESSAGE_ID": "x", "STATUS": "read"},
            "ERROR_MESSAGE_STATUS_INCORRECT",
            "Message status incorrect!",
        ),
        ({"CODE": "c", "MESSAGE_ID": "0" * 32, "STATUS": "sent"}, "ERROR_MESSAGE_NOT_FOUND", "Message not found!"),
    ],
)
def test_status_update_errors(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, Any], code: str, description: str
) -> None:
    response = any_portal.call("messageservice.message.status.update", params, token=any_app.access_token)
    assert response.status_code == 400
    assert response.json() == {"error": code, "error_description": description}


def test_status_update_access_rules(
    portal: LivePortal, app: AppCredentials, delivered_message: tuple[dict[str, Any], str]
) -> None:
    sent, code = delivered_message
    hook = portal.add_webhook(1, "messageservice")
    by_hook = portal.session.post(
        hook + "messageservice.message.status.update",
        json={"CODE": code, "MESSAGE_ID": sent["MESSAGE_ID"], "STATUS": "delivered"},
        timeout=30,
    )
    assert by_hook.status_code == 403
    assert by_hook.json()["error_description"] == "Access denied! Application context required"
    # Another app cannot touch this app's messages.
    other = portal.add_app()
    assert report(portal, other.access_token, code, sent["MESSAGE_ID"], "delivered").json()["error"] == (
        "ERROR_MESSAGE_NOT_FOUND"
    )
    # The same app acting for a user who is neither the author nor an admin.
    plain = portal.add_user("Plain")
    plain_token = portal.token(app.client_id, plain)["access_token"]
    denied = report(portal, plain_token, code, sent["MESSAGE_ID"], "delivered")
    assert denied.status_code == 403 and denied.json() == {
        "error": "ACCESS_DENIED",
        "error_description": "Access denied!",
    }
    # Another admin may report.
    admin = portal.add_user("Admin two", admin=True)
    assert report(portal, portal.token(app.client_id, admin)["access_token"], code, sent["MESSAGE_ID"], "delivered").ok


def test_status_get_rules(
    portal: LivePortal, app: AppCredentials, delivered_message: tuple[dict[str, Any], str]
) -> None:
    sent, _ = delivered_message
    # Ids past 32 bits name no message (PostgreSQL once answered them with a 500).
    for bad in ("", "abc", sent["MESSAGE_ID"], "99999999", "2147483648", "1000000000000", "9" * 18):
        answer = portal.call("messageservice.message.status.get", {"MESSAGE_ID": bad}, token=app.access_token)
        assert answer.status_code == 400 and answer.json()["error"] == "ERROR_MESSAGE_NOT_FOUND", bad
        answer = portal.call("messageservice.message.get", {"ID": bad}, token=app.access_token)
        assert answer.status_code == 400 and answer.json()["error"] == "ERROR_MESSAGE_NOT_FOUND", bad
    # No application context needed: a webhook of the author may ask.
    hook = portal.add_webhook(1, "messageservice")
    answer = portal.session.post(
        hook + "messageservice.message.status.get", json={"MESSAGE_ID": sent["ID"]}, timeout=30
    )
    assert answer.status_code == 200 and answer.json()["result"] == "sent"


def test_message_list_pages_and_filters(portal: LivePortal, handler: Receiver) -> None:
    app = portal.add_app()
    message_from = register(portal, app, handler_url(handler))
    ids = [send(portal, app.access_token, message_from, MESSAGE_TO=f"+1555000{i:04d}")["ID"] for i in range(53)]
    page = portal.call("messageservice.message.list", token=app.access_token).json()
    assert page["total"] == 53 and page["next"] == 50 and len(page["result"]) == 50
    assert [m["ID"] for m in page["result"]] == sorted(ids, reverse=True)[:50]
    rest = portal.call("messageservice.message.list", {"start": 50}, token=app.access_token).json()
    assert "next" not in rest and [m["ID"] for m in rest["result"]] == sorted(ids, reverse=True)[50:]
    one = portal.call(
        "messageservice.message.list", {"FILTER": {"MESSAGE_TO": "+15550000007"}}, token=app.access_token
    ).json()
    assert one["total"] == 1 and one["result"][0]["ID"] == ids[7]
    other = portal.add_app()
    assert portal.call("messageservice.message.list", token=other.access_token).json()["total"] == 0


@pytest.mark.parametrize("fresh_portal", [FAST], indirect=True)
def test_dead_letters_are_listed_and_replayed(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.status = 500
    message_from = register(fresh_portal, app, handler_url(handler))
    first, second = (send(fresh_portal, app.access_token, message_from)["ID"] for _ in range(2))
    for message_id in (first, second):
        assert settled(fresh_portal, app.access_token, message_id)["DELIVERY"]["STATE"] == "dead"
    dead = fresh_portal.call(
        "messageservice.message.list", {"FILTER": {"DELIVERY": "dead"}}, token=app.access_token
    ).json()
    assert sorted(m["ID"] for m in dead["result"]) == [first, second]
    handler.status = 200
    replayed = fresh_portal.call("messageservice.message.replay", {"IDS": [first, second]}, token=app.access_token)
    assert replayed.json()["result"] == {"REPLAYED": 2}
    for message_id in (first, second):
        message = settled(fresh_portal, app.access_token, message_id)
        assert message["STATUS"] == "sent" and message["ATTEMPTS"][-1]["HTTP_STATUS"] == 200
        assert [h["STATUS"] for h in message["HISTORY"]][-3:] == ["error", "replayed", "sent"]
    # Only dead letters are replayed, and only by an admin.
    again = fresh_portal.call("messageservice.message.replay", {"ID": first}, token=app.access_token)
    assert again.json()["result"] == {"REPLAYED": 0}
    plain = fresh_portal.add_user("Plain")
    plain_token = fresh_portal.token(app.client_id, plain)["access_token"]
    denied = fresh_portal.call("messageservice.message.replay", {"ID": first}, token=plain_token)
    assert denied.status_code == 403


def test_a_batch_of_sends_is_delivered_together(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    message_from = register(portal, app, handler_url(handler))
    cmd = {
        f"m{i}": f"messageservice.message.send?MESSAGE_FROM={message_from}"
        f"&MESSAGE_TO=%2B1555111{i:04d}&MESSAGE_BODY=n{i}"
        for i in range(40)
    }
    result = portal.call("batch", {"cmd": cmd}, token=app.access_token).json()["result"]
    assert result["result_error"] == [] and len(result["result"]) == 40
    ids = [r["ID"] for r in result["result"].values()]
    handler.wait_for(40)
    # Outcomes are written back in batches; every one of them lands.
    for message_id in ids:
        assert settled(portal, app.access_token, message_id)["STATUS"] == "sent"
    assert sorted(c.form["message_body"] for c in handler.requests[-40:]) == sorted(f"n{i}" for i in range(40))


# One call at a time, so that the breaker opens after exactly three failed calls.
BREAKER = {
    **FAST,
    "breaker_failures": 3,
    "breaker_cooldown_seconds": 1.5,
    "retry_schedule": "0.1,0.1,0.1,0.1,0.1",
    "handler_concurrency": 1,
}


@pytest.mark.parametrize("fresh_portal", [BREAKER], indirect=True)
def test_breaker_stops_calls_to_a_dead_handler_then_probes(fresh_portal: LivePortal, handler: Receiver) -> None:
    app = fresh_portal.add_app()
    handler.script = [Reply(500)] * 3  # then 200
    message_from = register(fresh_portal, app, handler_url(handler))
    ids = [send(fresh_portal, app.access_token, message_from)["ID"] for _ in range(10)]
    # After the cool-down one probe succeeds, the breaker closes and the backlog flows.
    for message_id in ids:
        assert settled(fresh_portal, app.access_token, message_id)["STATUS"] == "sent"
    calls = handler.requests
    # Open after 3 failures: no call during the cool-down, and nothing counted against the messages
    # (three failed attempts and one successful attempt per message, nothing else).
    assert calls[3].at - calls[2].at >= BREAKER["breaker_cooldown_seconds"] - 0.1
    attempts = [a["HTTP_STATUS"] for i in ids for a in get(fresh_portal, app.access_token, i)["ATTEMPTS"]]
    assert sorted(attempts) == [200] * 10 + [500] * 3 and len(calls) == 13


@pytest.mark.parametrize(
    "fresh_portal", [{**FAST, "handler_concurrency": 2, "handler_timeout_seconds": 60.0}], indirect=True
)
def test_a_slow_handler_does_not_delay_the_others(fresh_portal: LivePortal) -> None:
    app = fresh_portal.add_app()
    release = threading.Event()
    slow, fast = Receiver(script=[Reply(200, hold=release)] * 40).start(), Receiver().start()
    try:
        slow_from = register(fresh_portal, app, handler_url(slow))
        fast_from = register(fresh_portal, app, handler_url(fast))
        for _ in range(30):
            send(fresh_portal, app.access_token, slow_from)
        slow.wait_for(2)
        fast_ids = [send(fresh_portal, app.access_token, fast_from)["ID"] for _ in range(10)]
        # Ten messages to the healthy provider go through while the hanging one holds its two slots.
        for message_id in fast_ids:
            assert settled(fresh_portal, app.access_token, message_id)["STATUS"] == "sent"
        assert len(slow.requests) == 2
    finally:
        release.set()
        slow.stop()
        fast.stop()


def test_signed_handler_calls(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    import standardwebhooks

    from messageservice.core.apps import signing_secret

    secret = portal.run(lambda core: signing_secret(core, app.client_id))
    assert secret is not None and secret.startswith("whsec_")
    sent = send(portal, app.access_token, register(portal, app, handler_url(handler)))
    call = handler.wait_for(1)[0]
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["webhook-id"] == sent["MESSAGE_ID"]
    # The provider's check, with the Standard Webhooks library itself; the body is Bitrix's, unchanged.
    standardwebhooks.Webhook(secret).verify(call.body.decode(), headers, json_parse=False)
    assert call.form["message_id"] == sent["MESSAGE_ID"]
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(call.body.decode() + "&x=1", headers, json_parse=False)
    portal.run(lambda core: signing_secret(core, app.client_id, disable=True))
    send(portal, app.access_token, register(portal, app, handler_url(handler)))
    assert "webhook-signature" not in {k.lower() for k in handler.wait_for(2)[1].headers}


def test_retention_purges_finished_messages(portal: LivePortal, app: AppCredentials, handler: Receiver) -> None:
    from sqlalchemy import update

    from messageservice.core.context import Core
    from messageservice.housekeeping import purge_once
    from messageservice.store.tables import messages

    message_from = register(portal, app, handler_url(handler))
    old, young = (send(portal, app.access_token, message_from) for _ in range(2))
    for sent in (old, young):
        settled(portal, app.access_token, sent["ID"])

    async def age_and_purge(core: Core) -> None:
        async with core.engine.begin() as conn:
            await conn.execute(
                update(messages).where(messages.c.id == old["ID"]).values(created_at=core.clock() - 15 * 86400)
            )
        await purge_once(core)

    portal.run(age_and_purge)
    code = message_from.split("|")[1]
    gone = report(portal, app.access_token, code, old["MESSAGE_ID"], "delivered")
    assert gone.status_code == 400 and gone.json()["error"] == "ERROR_MESSAGE_NOT_FOUND"
    assert report(portal, app.access_token, code, young["MESSAGE_ID"], "delivered").json()["result"] is True
