"""messageservice.sender.*: every code and text of spec 1.2-1.6, in Bitrix's order.

In-process. What is stored, listed and refused by the database runs on both engines; validation and
access checks, decided before any write, run once (`any_portal`)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.portal import AppCredentials, LivePortal

HANDLER = "http://127.0.0.1:9000/handler"


def unique_code() -> str:
    return "c_" + uuid.uuid4().hex[:10]


def sender(code: str, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"CODE": code, "TYPE": "SMS", "HANDLER": HANDLER, "NAME": "Provider"}
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def expect_error(response: Any, status: int, code: str, description: str) -> None:
    assert response.status_code == status, response.text
    assert response.json() == {"error": code, "error_description": description}


@pytest.fixture(scope="module")
def portal(local_portal: LivePortal) -> LivePortal:
    return local_portal


@pytest.fixture
def app(portal: LivePortal) -> AppCredentials:
    return portal.add_app()


@pytest.fixture
def any_app(any_portal: LivePortal) -> AppCredentials:
    return any_portal.add_app()


# --- sender.add -------------------------------------------------------------------------------

ADD_ERRORS = [
    ({}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty data!"),
    ({"TYPE": "SMS"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
    ({"CODE": "0", "TYPE": "SMS"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
    ({"CODE": "bad code"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
    # PHP's preg_match without /u is ASCII-only: no Kelvin sign or long s passing as 'k' or 's'.
    ({"CODE": "\u212a"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
    ({"CODE": "\u017ftatus"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
    ({"CODE": "ok", "HANDLER": ""}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
    ({"CODE": "ok"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
    ({"CODE": "ok", "HANDLER": "http://localhost:9000/h"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
    ({"CODE": "ok", "HANDLER": "http:///"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
    ({"CODE": "ok", "HANDLER": "http://.example.com/"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
    ({"CODE": "ok", "HANDLER": "ftp://example.com/h"}, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol"),
    ({"CODE": "ok", "HANDLER": "HTTP://example.com/h"}, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol"),
    ({"CODE": "ok", "HANDLER": "//example.com/h"}, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol"),
    ({"CODE": "ok", "HANDLER": HANDLER, "TYPE": "SMS"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender NAME!"),
    ({"CODE": "ok", "HANDLER": HANDLER, "NAME": "n"}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender message TYPE!"),
    (
        {"CODE": "ok", "HANDLER": HANDLER, "NAME": "n", "TYPE": "sms"},
        "ERROR_SENDER_VALIDATION_FAILURE",
        "Unknown sender message TYPE!",
    ),
    (
        {"CODE": "ok", "HANDLER": HANDLER, "NAME": "n", "TYPE": "EMAIL"},
        "ERROR_SENDER_VALIDATION_FAILURE",
        "Unknown sender message TYPE!",
    ),
]


@pytest.mark.parametrize(("params", "code", "description"), ADD_ERRORS)
def test_add_validation_order_codes_and_texts(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, Any], code: str, description: str
) -> None:
    portal, app = any_portal, any_app
    response = portal.call("messageservice.sender.add", params, token=app.access_token)
    expect_error(response, 400, code, description)


def test_add_stores_and_lists(portal: LivePortal, app: AppCredentials) -> None:
    code = unique_code()
    response = portal.call(
        "messageservice.sender.add",
        sender(code, NAME={"en": "Provider", "RU": "Провайдер"}, DESCRIPTION={"en": "About"}),
        token=app.access_token,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["result"] is True
    assert set(body["time"]) >= {"start", "finish", "duration", "processing", "date_start", "date_finish"}
    listed = portal.call("messageservice.sender.list", token=app.access_token).json()
    assert listed["result"] == [code]
    assert "total" not in listed and "next" not in listed

    from messageservice.core.senders import list_senders

    stored = next(s for s in portal.run(list_senders) if s.code == code)
    # One row per lower-cased language plus the '**' default copied from the first.
    assert stored.names == {"en": "Provider", "ru": "Провайдер", "**": "Provider"}
    assert stored.descriptions == {"en": "About", "ru": None, "**": "About"}
    assert stored.handler == HANDLER and stored.type == "SMS" and stored.author_id == 1


def test_add_string_name_is_default_language(portal: LivePortal, app: AppCredentials) -> None:
    code = unique_code()
    assert portal.call("messageservice.sender.add", sender(code, DESCRIPTION="Desc"), token=app.access_token).ok
    from messageservice.core.senders import list_senders

    stored = next(s for s in portal.run(list_senders) if s.code == code)
    assert stored.names == {"**": "Provider"} and stored.descriptions == {"**": "Desc"}


def test_add_keys_are_case_insensitive_and_form_brackets_work(any_portal: LivePortal, any_app: AppCredentials) -> None:
    portal, app = any_portal, any_app
    code = unique_code()
    response = portal.call(
        "messageservice.sender.add",
        {"code": code, "Type": "SMS", "handler": HANDLER, "name[en]": "Form name", "name[de]": "Formname"},
        token=app.access_token,
        json_body=False,
    )
    assert response.status_code == 200, response.text
    from messageservice.core.senders import list_senders

    stored = next(s for s in portal.run(list_senders) if s.code == code)
    assert stored.names["en"] == "Form name" and stored.names["de"] == "Formname"


def test_add_code_allows_php_trailing_newline(portal: LivePortal, app: AppCredentials) -> None:
    # PHP's '$' matches before a final newline, so Bitrix accepts "abc\n" (spec 1.2.6).
    code = unique_code() + "\n"
    assert portal.call("messageservice.sender.add", sender(code), token=app.access_token).status_code == 200
    assert code in portal.call("messageservice.sender.list", token=app.access_token).json()["result"]


def test_duplicate_is_per_app(portal: LivePortal, app: AppCredentials) -> None:
    code = unique_code()
    assert portal.call("messageservice.sender.add", sender(code), token=app.access_token).ok
    again = portal.call("messageservice.sender.add", sender(code), token=app.access_token)
    expect_error(again, 400, "ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
    other = portal.add_app()
    assert portal.call("messageservice.sender.add", sender(code), token=other.access_token).status_code == 200
    # Each app sees only its own senders.
    assert portal.call("messageservice.sender.list", token=other.access_token).json()["result"] == [code]


@pytest.mark.parametrize(
    "overrides",
    [
        {"CODE": "x" * 129},
        {"HANDLER": "https://example.com/" + "h" * 990},
        {"NAME": {"en": {"nested": "array"}}},
        {"NAME": {"english-too-long": "n"}},
    ],
)
def test_add_storage_failures(portal: LivePortal, app: AppCredentials, overrides: dict[str, Any]) -> None:
    params = sender(unique_code(), **overrides)
    response = portal.call("messageservice.sender.add", params, token=app.access_token)
    expect_error(response, 400, "ERROR_SENDER_ADD_FAILURE", "Sender save error!")
    assert portal.call("messageservice.sender.list", token=app.access_token).json()["result"] == []


def test_add_code_128_chars_is_fine(portal: LivePortal, app: AppCredentials) -> None:
    assert portal.call("messageservice.sender.add", sender("y" * 128), token=app.access_token).status_code == 200


# --- access rules (spec 1.2) ------------------------------------------------------------------

SENDER_METHODS = [
    "messageservice.sender.add",
    "messageservice.sender.update",
    "messageservice.sender.delete",
    "messageservice.sender.list",
]


@pytest.mark.parametrize("method", SENDER_METHODS)
def test_webhook_has_no_application_context(any_portal: LivePortal, method: str) -> None:
    portal = any_portal
    hook = portal.add_webhook(1, "messageservice")
    response = portal.session.post(hook + method + ".json", json=sender(unique_code()), timeout=30)
    expect_error(response, 403, "ACCESS_DENIED", "Access denied! Application context required")


@pytest.mark.parametrize("method", SENDER_METHODS)
def test_non_admin_is_denied(any_portal: LivePortal, method: str) -> None:
    portal = any_portal
    user_id = portal.add_user("Plain user")
    app = portal.add_app(user_id=user_id)
    response = portal.call(method, sender(unique_code()), token=app.access_token)
    expect_error(response, 403, "ACCESS_DENIED", "Access denied!")


def test_admin_check_comes_before_validation(any_portal: LivePortal) -> None:
    portal = any_portal
    user_id = portal.add_user("Plain user")
    app = portal.add_app(user_id=user_id)
    response = portal.call("messageservice.sender.add", {}, token=app.access_token)
    expect_error(response, 403, "ACCESS_DENIED", "Access denied!")


def test_second_admin_may_manage(any_portal: LivePortal) -> None:
    portal = any_portal
    admin_id = portal.add_user("Second admin", admin=True)
    app = portal.add_app(user_id=admin_id)
    assert portal.call("messageservice.sender.add", sender(unique_code()), token=app.access_token).ok


@pytest.mark.parametrize("method", SENDER_METHODS)
def test_missing_scope(any_portal: LivePortal, method: str) -> None:
    portal = any_portal
    app = portal.add_app(scopes="crm")
    response = portal.call(method, sender(unique_code()), token=app.access_token)
    expect_error(
        response,
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the access token",
    )


def test_missing_scope_webhook_wording(any_portal: LivePortal) -> None:
    portal = any_portal
    hook = portal.add_webhook(1, "crm")
    response = portal.session.post(hook + "messageservice.sender.list", json={}, timeout=30)
    expect_error(
        response,
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    )


# --- sender.update (docs only, spec 1.4) ------------------------------------------------------


@pytest.fixture
def registered(portal: LivePortal, app: AppCredentials) -> str:
    code = unique_code()
    response = portal.call(
        "messageservice.sender.add",
        sender(code, NAME={"en": "Old"}, DESCRIPTION={"en": "Old d"}),
        token=app.access_token,
    )
    assert response.status_code == 200
    return code


@pytest.mark.parametrize(
    ("params", "code", "description"),
    [
        ({}, "ERROR_SENDER_CODE_REQUIRED", "CODE is required!"),
        ({"NAME": "x"}, "ERROR_SENDER_CODE_REQUIRED", "CODE is required!"),
        ({"CODE": "whatever"}, "ERROR_SENDER_OTHER_PARAMS_REQUIRED", "At least one other parameter is required!"),
        ({"CODE": "absent", "NAME": "x"}, "ERROR_SENDER_NOT_FOUND", "Sender not found!"),
        ({"CODE": "absent", "HANDLER": "http://localhost/x"}, "ERROR_WRONG_HANDLER_URL", "Wrong handler URL"),
        ({"CODE": "absent", "HANDLER": "gopher://a.b/"}, "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol"),
    ],
)
def test_update_errors(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, Any], code: str, description: str
) -> None:
    portal, app = any_portal, any_app
    expect_error(portal.call("messageservice.sender.update", params, token=app.access_token), 400, code, description)


def test_update_handler_and_languages(portal: LivePortal, app: AppCredentials, registered: str) -> None:
    new_handler = "https://provider.example.com/new"
    response = portal.call(
        "messageservice.sender.update",
        {
            "CODE": registered,
            "HANDLER": new_handler,
            "NAME": {"en": "New", "de": "Neu"},
            "DESCRIPTION": {"de": "Neu d"},
        },
        token=app.access_token,
    )
    assert response.status_code == 200 and response.json()["result"] is True
    from messageservice.core.senders import list_senders

    stored = next(s for s in portal.run(list_senders) if s.code == registered)
    assert stored.handler == new_handler
    assert stored.names == {"en": "New", "**": "Old", "de": "Neu"}
    assert stored.descriptions["en"] == "Old d" and stored.descriptions["de"] == "Neu d"


def test_update_description_for_new_language_needs_name(
    portal: LivePortal, app: AppCredentials, registered: str
) -> None:
    response = portal.call(
        "messageservice.sender.update", {"CODE": registered, "DESCRIPTION": {"fr": "x"}}, token=app.access_token
    )
    expect_error(response, 400, "ERROR_SENDER_UPDATE_FAILURE", "Sender update error!")


def test_update_other_apps_sender_is_not_found(portal: LivePortal, registered: str) -> None:
    other = portal.add_app()
    response = portal.call("messageservice.sender.update", {"CODE": registered, "NAME": "x"}, token=other.access_token)
    expect_error(response, 400, "ERROR_SENDER_NOT_FOUND", "Sender not found!")


# --- sender.delete (spec 1.5) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code", "description"),
    [
        ({}, "ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!"),
        ({"CODE": "has space"}, "ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
        ({"CODE": "absent"}, "ERROR_SENDER_NOT_FOUND", "Sender not found!"),
    ],
)
def test_delete_errors(
    any_portal: LivePortal, any_app: AppCredentials, params: dict[str, Any], code: str, description: str
) -> None:
    portal, app = any_portal, any_app
    expect_error(portal.call("messageservice.sender.delete", params, token=app.access_token), 400, code, description)


def test_delete_only_own(portal: LivePortal, app: AppCredentials, registered: str) -> None:
    other = portal.add_app()
    expect_error(
        portal.call("messageservice.sender.delete", {"CODE": registered}, token=other.access_token),
        400,
        "ERROR_SENDER_NOT_FOUND",
        "Sender not found!",
    )
    response = portal.call("messageservice.sender.delete", {"code": registered}, token=app.access_token)
    assert response.status_code == 200 and response.json()["result"] is True
    assert registered not in portal.call("messageservice.sender.list", token=app.access_token).json()["result"]


def test_list_empty_is_array(any_portal: LivePortal, any_app: AppCredentials) -> None:
    portal, app = any_portal, any_app
    body = portal.call("messageservice.sender.list", token=app.access_token).json()
    assert body["result"] == []


def test_concurrent_duplicate_adds_make_one_sender(portal: LivePortal, app: AppCredentials) -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = unique_code()

    def add(_: int) -> tuple[int, dict[str, Any]]:
        response = portal.new_session().post(
            portal.rest_url + "messageservice.sender.add", json={**sender(code), "auth": app.access_token}, timeout=30
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(add, range(8)))
    assert sorted(status for status, _ in outcomes) == [200] + [400] * 7
    assert all(
        body == {"error": "ERROR_SENDER_ALREADY_INSTALLED", "error_description": "Sender already installed!"}
        for status, body in outcomes
        if status == 400
    )
    assert portal.call("messageservice.sender.list", token=app.access_token).json()["result"] == [code]
