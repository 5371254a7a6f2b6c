"""The REST endpoint: URL forms, parameter encodings, auth, envelopes and error statuses (spec 3).

The protocol layer does not depend on the engine: these run once, in-process (`any_portal`); the few
whose answer comes from stored values run on both engines (`local_portal`)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
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


def add_params(code: str) -> dict[str, Any]:
    return {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "N"}


@pytest.mark.parametrize(
    "path",
    [
        "/rest/user.admin",
        "/rest/user.admin.json",
        "/rest/user.admin/",
        "/rest/user.admin.json/",
        "/rest//user.admin",
        "/rest/USER.ADMIN",
        "/rest/User.Admin.JSON",
    ],
)
def test_url_forms(portal: LivePortal, app: AppCredentials, path: str) -> None:
    response = portal.session.get(portal.base_url + path, params={"auth": app.access_token}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["result"] is True


@pytest.mark.parametrize("suffix", ["user.admin", "user.admin.json", "user.admin/", "user.admin.json/"])
def test_webhook_url_forms(portal: LivePortal, suffix: str) -> None:
    hook = portal.add_webhook(1, "messageservice")
    response = portal.session.get(hook + suffix, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["result"] is True


def test_xml_transport(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.session.get(portal.rest_url + "scope.xml", params={"auth": app.access_token}, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert response.text.startswith('<?xml version="1.0" encoding="utf-8"?><response><result><item>messageservice')


def test_unknown_method_is_404_before_auth(portal: LivePortal) -> None:
    for path in ("/rest/messageservice.provider.list", "/rest/no.such.method.json", "/rest/", "/rest"):
        response = portal.session.post(portal.base_url + path, timeout=30)
        assert response.status_code == 404, path
        assert response.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


@pytest.mark.parametrize("method", ["messageservice.provider.list", "messageservice.provider.limits.get"])
def test_nonexistent_third_party_methods(portal: LivePortal, app: AppCredentials, method: str) -> None:
    response = portal.call(method, token=app.access_token)
    assert response.status_code == 404 and response.json()["error"] == "ERROR_METHOD_NOT_FOUND"


def test_no_auth(portal: LivePortal) -> None:
    response = portal.session.post(portal.rest_url + "messageservice.sender.list", timeout=30)
    assert response.status_code == 401
    assert response.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}


def test_invalid_token(portal: LivePortal) -> None:
    response = portal.call("messageservice.sender.list", token="not-a-token")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"


def test_expired_token(local_portal: LivePortal) -> None:
    portal = local_portal
    app = portal.add_app()
    portal.expire_access_token(app.access_token)
    response = portal.call("messageservice.sender.list", token=app.access_token)
    assert response.status_code == 401
    assert response.json() == {"error": "expired_token", "error_description": "The access token provided has expired"}


def test_bad_webhook_secret(portal: LivePortal) -> None:
    hook = portal.add_webhook(1, "messageservice")
    wrong_secret = hook.rstrip("/").rsplit("/", 1)[0] + "/wrongsecret00000/"
    for url in (
        wrong_secret + "user.admin",
        portal.rest_url + "2/" + hook.rstrip("/").rsplit("/", 1)[1] + "/user.admin",
    ):
        response = portal.session.get(url, timeout=30)
        assert response.status_code == 401
        assert response.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


@pytest.mark.parametrize("where", ["json", "form", "query", "bearer", "access_token", "bearer-lower"])
def test_auth_locations(portal: LivePortal, app: AppCredentials, where: str) -> None:
    url = portal.rest_url + "user.admin"
    token = app.access_token
    if where == "json":
        response = portal.session.post(url, json={"auth": token}, timeout=30)
    elif where == "form":
        response = portal.session.post(url, data={"auth": token}, timeout=30)
    elif where == "query":
        response = portal.session.get(url, params={"auth": token}, timeout=30)
    elif where == "access_token":
        response = portal.session.post(url, data={"access_token": token}, timeout=30)
    elif where == "bearer":
        response = portal.session.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    else:
        response = portal.session.post(url, headers={"Authorization": f"bearer {token}"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["result"] is True


def test_body_overrides_query(portal: LivePortal, app: AppCredentials) -> None:
    code = "q" + uuid.uuid4().hex[:8]
    response = portal.session.post(
        portal.rest_url + "messageservice.sender.add",
        params={"CODE": "from query with spaces", "auth": app.access_token},
        json=add_params(code),
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert code in portal.call("messageservice.sender.list", token=app.access_token).json()["result"]


def test_get_query_with_brackets(portal: LivePortal, app: AppCredentials) -> None:
    code = "g" + uuid.uuid4().hex[:8]
    query = f"CODE={code}&TYPE=SMS&HANDLER={HANDLER}&NAME%5Ben%5D=Q&NAME[ru]=%D0%AF&auth={app.access_token}"
    response = portal.session.get(portal.rest_url + "messageservice.sender.add?" + query, timeout=30)
    assert response.status_code == 200, response.text


def test_multipart_body(portal: LivePortal, app: AppCredentials) -> None:
    code = "m" + uuid.uuid4().hex[:8]
    fields = {**add_params(code), "NAME[en]": "Multi", "auth": app.access_token}
    fields.pop("NAME")
    files = {k: (None, v) for k, v in fields.items()}
    response = portal.session.post(portal.rest_url + "messageservice.sender.add", files=files, timeout=30)
    assert response.status_code == 200, response.text


def test_lowercase_content_type_and_charset(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.session.post(
        portal.rest_url + "user.admin",
        data=json.dumps({"auth": app.access_token}),
        headers={"content-type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert response.status_code == 200


def test_invalid_json_is_empty_params(portal: LivePortal, app: AppCredentials) -> None:
    # Bitrix decodes invalid JSON to an empty array: the call then has no auth at all.
    response = portal.session.post(
        portal.rest_url + "user.admin", data="{not json", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 401 and response.json()["error"] == "NO_AUTH_FOUND"
    response = portal.session.post(
        portal.rest_url + "messageservice.sender.add",
        params={"auth": app.access_token},
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.json() == {"error": "ERROR_SENDER_VALIDATION_FAILURE", "error_description": "Empty data!"}


def test_sdk_extra_params_are_ignored(portal: LivePortal, app: AppCredentials) -> None:
    code = "x" + uuid.uuid4().hex[:8]
    params = {**add_params(code), "bx24_request_id": "abc", "bx24_sdk_ver": "1", "start": 0, "state": "s"}
    assert portal.call("messageservice.sender.add", params, token=app.access_token).status_code == 200


def test_reserved_keys_do_not_count_as_data(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.call("messageservice.sender.add", {"start": "0", "state": "x"}, token=app.access_token)
    assert response.json()["error_description"] == "Empty data!"


def test_wrong_encoding(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.session.post(
        portal.rest_url + "messageservice.sender.add",
        params={"auth": app.access_token},
        data=b"CODE=%FF%FE&TYPE=SMS",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert response.status_code == 400
    assert response.json() == {"error": "WRONG_ENCODING", "error_description": "Wrong request encoding"}


def test_body_limit(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.session.post(
        portal.rest_url + "messageservice.sender.add",
        params={"auth": app.access_token},
        data=b"NAME=" + b"a" * (portal.settings.max_body_bytes + 1),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["error"] == "ERROR_REQUEST_TOO_LARGE"


def test_success_envelope_shape(portal: LivePortal, app: AppCredentials) -> None:
    response = portal.call("server.time", token=app.access_token)
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["x-content-type-options"] == "nosniff"
    body = response.json()
    assert list(body) == ["result", "time"]
    timing = body["time"]
    assert list(timing) == [
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    ]
    assert timing["finish"] >= timing["start"]
    assert abs(timing["duration"] - (timing["finish"] - timing["start"])) < 1e-6
    assert isinstance(timing["operating_reset_at"], int) and timing["operating"] >= 0
    start = datetime.fromisoformat(timing["date_start"])
    assert start.tzinfo is not None and abs(start.timestamp() - timing["start"]) < 1.5
    assert datetime.fromisoformat(body["result"]).tzinfo is not None


def test_error_envelope_has_no_time(portal: LivePortal) -> None:
    body = portal.call("messageservice.sender.list", token="nope").json()
    assert set(body) == {"error", "error_description"}


def test_php_json_escaping_on_the_wire(local_portal: LivePortal) -> None:
    portal = local_portal
    admin = portal.add_user("<b>Ñame</b> & 'q' \"d\" /s", admin=True)
    app = portal.add_app(user_id=admin)
    raw = portal.call("profile", token=app.access_token).content.decode()
    assert '"NAME":"\\u003Cb\\u003E\\u00d1ame\\u003C\\/b\\u003E \\u0026 \\u0027q\\u0027 \\u0022d\\u0022 \\/s"' in raw
    assert json.loads(raw)["result"]["NAME"] == "<b>Ñame</b> & 'q' \"d\" /s"


def test_cors_preflight(portal: LivePortal) -> None:
    response = portal.session.options(portal.rest_url + "user.admin", timeout=30)
    assert response.status_code == 200
    assert response.headers["access-control-allow-headers"] == "origin, content-type, accept"


# --- system methods ----------------------------------------------------------------------------


def test_app_info_for_app_and_webhook(portal: LivePortal, app: AppCredentials) -> None:
    info = portal.call("app.info", token=app.access_token).json()["result"]
    assert info["CODE"] == app.client_id and info["INSTALLED"] is True and info["STATUS"] == "L"
    assert {"ID", "VERSION", "PAYMENT_EXPIRED", "DAYS", "LANGUAGE_ID", "LICENSE"} <= set(info)
    hook = portal.add_webhook(1, "messageservice")
    assert portal.session.get(hook + "app.info", timeout=30).json()["result"] == {
        "SCOPE": ["messageservice"],
        "LICENSE": info["LICENSE"],
    }


def test_scope_methods_and_method_get(portal: LivePortal) -> None:
    app = portal.add_app(scopes="crm")
    assert portal.call("scope", token=app.access_token).json()["result"] == ["crm"]
    assert "messageservice" in portal.call("scope", {"full": "true"}, token=app.access_token).json()["result"]
    available = portal.call("methods", token=app.access_token).json()["result"]
    assert "batch" in available and "messageservice.sender.add" not in available
    everything = portal.call("methods", {"full": "true"}, token=app.access_token).json()["result"]
    assert "messageservice.sender.add" in everything
    in_scope = portal.call("methods", {"scope": "messageservice"}, token=app.access_token).json()["result"]
    assert sorted(in_scope) == sorted(m for m in everything if m.startswith("messageservice."))
    got = portal.call("method.get", {"name": "messageservice.sender.add"}, token=app.access_token).json()["result"]
    assert got == {"isExisting": True, "isAvailable": False}
    got = portal.call("method.get", {"name": "no.such"}, token=app.access_token).json()["result"]
    assert got == {"isExisting": False, "isAvailable": False}


def test_profile_and_user_admin(portal: LivePortal) -> None:
    user_id = portal.add_user("Plain")
    app = portal.add_app(user_id=user_id)
    profile = portal.call("profile", token=app.access_token).json()["result"]
    assert profile["ID"] == user_id and profile["ADMIN"] is False and profile["NAME"] == "Plain"
    assert portal.call("user.admin", token=app.access_token).json()["result"] is False


@pytest.mark.parametrize("any_fresh_portal", [{"webhook_require_https": True}], indirect=True)
def test_webhook_https_required_when_configured(any_fresh_portal: LivePortal) -> None:
    hook = any_fresh_portal.add_webhook(1, "messageservice")
    response = any_fresh_portal.session.get(hook + "user.admin", timeout=30)
    assert response.status_code == 401
    assert response.json() == {"error": "INVALID_REQUEST", "error_description": "Https required."}
