"""`batch` (spec 3.6): cmd as object, array or form, halt, the 50-command limit, $result references.

The protocol layer, the same on both engines: run once, in-process (the sub-calls' own behaviour is
tested per engine in their modules)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.portal import AppCredentials, LivePortal

HANDLER = "http://127.0.0.1:9000/handler"


@pytest.fixture(scope="module")
def portal(any_portal: LivePortal) -> LivePortal:
    return any_portal


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app()


def add_cmd(code: str) -> str:
    return f"messageservice.sender.add?CODE={code}&TYPE=SMS&HANDLER={HANDLER}&NAME[en]=Batch"


def test_cmd_object_keeps_keys_and_order(portal: LivePortal, app: AppCredentials) -> None:
    code = "b" + uuid.uuid4().hex[:8]
    body = portal.call(
        "batch",
        {"halt": 0, "cmd": {"zz": add_cmd(code), "aa": "messageservice.sender.list", "mm": "user.admin"}},
        token=app.access_token,
    ).json()
    result = body["result"]
    assert list(result["result"]) == ["zz", "aa", "mm"]
    assert result["result"] == {"zz": True, "aa": [code], "mm": True}
    assert result["result_error"] == [] and result["result_total"] == [] and result["result_next"] == []
    assert set(result["result_time"]) == {"zz", "aa", "mm"}
    assert "operating" not in result["result_time"]["aa"]
    assert {"start", "finish", "duration", "processing", "date_start", "date_finish"} == set(
        result["result_time"]["aa"]
    )
    assert "time" in body


def test_cmd_array_gives_array_results(portal: LivePortal, app: AppCredentials) -> None:
    body = portal.call("batch", {"cmd": ["user.admin", "scope?"]}, token=app.access_token).json()
    assert body["result"]["result"] == [True, ["messageservice"]]


def test_cmd_form_encoded(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.call(
        "batch", {"cmd[first]": "user.admin", "cmd[second]": "server.time"}, token=app.access_token, json_body=False
    )
    result = response.json()["result"]["result"]
    assert result["first"] is True and isinstance(result["second"], str)


def test_errors_per_command_and_no_halt(portal: LivePortal, app: AppCredentials) -> None:
    body = portal.call(
        "batch",
        {
            "halt": "0",
            "cmd": {
                "bad": "messageservice.sender.add?CODE=bad%20code",
                "missing": "no.such.method?",
                "nested": "batch?cmd[0]=user.admin",
                "ok": "user.admin",
            },
        },
        token=app.access_token,
    ).json()
    result = body["result"]
    assert result["result"] == {"ok": True}
    assert result["result_error"] == {
        "bad": {"error": "ERROR_SENDER_VALIDATION_FAILURE", "error_description": "Wrong sender code!"},
        "missing": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
        "nested": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        },
    }


@pytest.mark.parametrize(
    ("halt", "stops"), [(1, True), ("1", True), ("false", True), ("0", False), ("", False), (False, False)]
)
def test_halt_is_php_bool(portal: LivePortal, app: AppCredentials, halt: Any, stops: bool) -> None:
    body = portal.call(
        "batch", {"halt": halt, "cmd": {"a": "no.such", "b": "user.admin"}}, token=app.access_token
    ).json()
    assert ("b" in body["result"]["result"]) is (not stops)


def test_fifty_command_limit(portal: LivePortal, app: AppCredentials) -> None:
    cmd = {f"c{i}": "user.admin" for i in range(53)}
    result = portal.call("batch", {"cmd": cmd}, token=app.access_token).json()["result"]
    assert len(result["result"]) == 50
    assert set(result["result_error"]) == {"c50", "c51", "c52"}
    assert result["result_error"]["c52"] == {
        "error": "ERROR_BATCH_LENGTH_EXCEEDED",
        "error_description": "Max batch length exceeded",
    }


def test_result_references(portal: LivePortal, app: AppCredentials) -> None:
    code = "r" + uuid.uuid4().hex[:8]
    body = portal.call(
        "batch",
        {
            "cmd": {
                "add": add_cmd(code),
                "list": "messageservice.sender.list",
                # The code just listed is deleted by reference.
                "delete": "messageservice.sender.delete?CODE=$result[list][0]",
                "after": "messageservice.sender.list",
            }
        },
        token=app.access_token,
    ).json()
    result = body["result"]
    assert result["result_error"] == []
    assert result["result"]["list"] == [code] and result["result"]["delete"] is True and result["result"]["after"] == []


def test_sub_call_scope_error_has_empty_description(portal: LivePortal) -> None:
    app = portal.add_app(scopes="crm")
    result = portal.call("batch", {"cmd": {"a": "messageservice.sender.list"}}, token=app.access_token).json()
    assert result["result"]["result_error"] == {"a": {"error": "insufficient_scope", "error_description": ""}}


def test_fast_bitrix24_style_sub_queries(portal: LivePortal, app: AppCredentials) -> None:
    # A trailing '&', an `__order` key, unescaped ':' and '/', and a capitalised method name.
    code = "f" + uuid.uuid4().hex[:8]
    command = f"Messageservice.Sender.Add?__order=order0000000000&CODE={code}&TYPE=SMS&HANDLER=https://h.example.com/x&NAME[en]=N&"
    response = portal.call("batch", {"halt": 0, "cmd": {"order0000000000": command}}, token=app.access_token)
    assert response.status_code == 200
    assert response.json()["result"]["result"] == {"order0000000000": True}


def test_batch_through_webhook_reports_context_error(portal: LivePortal) -> None:
    hook = portal.add_webhook(1, "messageservice")
    response = portal.session.post(hook + "batch", json={"cmd": {"a": "messageservice.sender.list"}}, timeout=30)
    assert response.status_code == 200
    assert response.json()["result"]["result_error"]["a"] == {
        "error": "ACCESS_DENIED",
        "error_description": "Access denied! Application context required",
    }


def test_empty_or_missing_cmd(portal: LivePortal, app: AppCredentials) -> None:
    result = portal.call("batch", {}, token=app.access_token).json()["result"]
    assert result == {"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []}
