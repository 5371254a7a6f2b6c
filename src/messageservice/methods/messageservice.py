"""The messageservice scope: sender registration (spec 1.2-1.6), delivery status (1.7, 1.8), and our
extensions for sending and reading messages (Bitrix24 has no public REST method for these)."""

from __future__ import annotations

from typing import Any

from messageservice.core import messages, senders, statuses
from messageservice.core.errors import AccessDenied
from messageservice.core.phones import NOT_A_PHONE
from messageservice.methods.declare import Failure, Param, declare
from messageservice.rest.params import upper_keys
from messageservice.rest.registry import CallContext, MethodResult, Registry

SCOPE = "messageservice"


def _app_admin(ctx: CallContext) -> int:
    """Bitrix's common gate: application context first, then the admin check. Returns the app id."""
    if ctx.caller.client_id is None or ctx.caller.app_id is None:
        raise AccessDenied("Application context required")
    if not ctx.caller.is_admin:
        raise AccessDenied()
    return ctx.caller.app_id


def _actor(ctx: CallContext) -> messages.Actor:
    caller = ctx.caller
    return messages.Actor(caller.user_id, caller.is_admin, caller.app_id, caller.webhook_id)


# -- declarations for the API reference (methods/apidoc.py); texts as core/ raises them --------------------

NO_APP = Failure.of(AccessDenied("Application context required"), "The caller is a webhook, not an app.")
NOT_ADMIN = Failure.of(AccessDenied(), "The user the token speaks for is not a portal admin.")
APP_ADMIN = "An app (OAuth token) acting for a portal admin; webhooks are refused."
VALIDATION = senders.VALIDATION
EMPTY_CODE = Failure(VALIDATION, "Empty sender code!", 400, "`CODE` is missing or empty (`0` counts as empty).")
WRONG_CODE = Failure(VALIDATION, "Wrong sender code!", 400, "`CODE` has characters other than `a-z A-Z 0-9 . - _`.")
WRONG_HANDLER = Failure(
    "ERROR_WRONG_HANDLER_URL",
    "Wrong handler URL",
    400,
    "`HANDLER` is missing or its host has no dot (`localhost` is refused; use `127.0.0.1`).",
)
WRONG_PROTOCOL = Failure(
    "ERROR_UNSUPPORTED_PROTOCOL", "Unsupported handler protocol", 400, "`HANDLER` is not `http://` or `https://`."
)
WRONG_SCHEDULE = Failure(
    VALIDATION,
    "Wrong RETRY_SCHEDULE!",
    400,
    "`RETRY_SCHEDULE` is not up to 20 comma-separated delays, each 0 to 86400 seconds, 200 characters at most.",
)
SENDER_NOT_FOUND = Failure(
    "ERROR_SENDER_NOT_FOUND", "Sender not found!", 400, "The calling app has no sender with this `CODE`."
)
MESSAGE_NOT_FOUND = Failure(*messages.NOT_FOUND, 400)
MESSAGE_INVALID = messages.VALIDATION
SENDER_CODE = Param(
    "CODE", "string", True, f"1-{senders.MAX_CODE} characters: letters, digits, `.`, `-`, `_`", "The sender's code."
)
NAME_TYPE = "string, or a map {language: string}"
RETRY_SCHEDULE = Param(
    "RETRY_SCHEDULE",
    "string",
    False,
    "up to 20 comma-separated delays in seconds (0-86400), 200 characters at most; empty for the server's default",
    "Extension: this sender's own delays between delivery attempts (Bitrix24 ignores it).",
)
REPORTABLE = ", ".join(f"`{name}`" for name in statuses.REPORTABLE)
MESSAGE_FIELDS = (
    "`ID` (internal number), `MESSAGE_ID` (32 hex, the HANDLER's `message_id`), `MESSAGE_FROM`, `SENDER_CODE`, "
    "`MESSAGE_TO`, `MESSAGE_BODY`, `MODULE_ID`, `BINDINGS` (crm) or `WORKFLOW_ID`, `DOCUMENT_ID`, `DOCUMENT_TYPE` "
    "(bizproc), `AUTHOR_ID`, `STATUS_ID`, `STATUS` (name), `STATUS_DESCRIPTION`, `STATUS_SEMANTIC` "
    "(`process`, `success`, `failure`), `EXEC_ERROR`, `DATE_CREATE`, `DATE_UPDATE` (Unix seconds)"
)


def register(registry: Registry) -> None:
    @registry.method("messageservice.sender.add", scope=SCOPE, summary="Register an SMS provider.")
    @declare(
        caller=APP_ADMIN,
        params=(
            SENDER_CODE,
            Param("TYPE", "string", True, "`SMS` exactly (upper case)", "What the sender sends."),
            Param(
                "HANDLER",
                "string (URL)",
                True,
                f"`http` or `https`; a host with a dot; at most {senders.MAX_HANDLER} characters",
                "Where the server POSTs each message for this sender.",
            ),
            Param(
                "NAME",
                NAME_TYPE,
                True,
                f"each name at most {senders.MAX_NAME} characters; language ids 1-{senders.MAX_LANGUAGE_ID} characters",
                "Shown to people choosing a sender. A map keeps one name per language, and the first as the default.",
            ),
            Param(
                "DESCRIPTION", NAME_TYPE, False, "taken per language only when `NAME` is a map too", "A longer text."
            ),
            RETRY_SCHEDULE,
        ),
        answer="`true`.",
        errors=(
            NO_APP,
            NOT_ADMIN,
            Failure(VALIDATION, "Empty data!", 400, "No parameters at all."),
            EMPTY_CODE,
            WRONG_CODE,
            WRONG_HANDLER,
            WRONG_PROTOCOL,
            Failure(VALIDATION, "Empty sender NAME!", 400, "`NAME` is missing or empty."),
            Failure(VALIDATION, "Empty sender message TYPE!", 400, "`TYPE` is missing or empty."),
            Failure(VALIDATION, "Unknown sender message TYPE!", 400, "`TYPE` is not `SMS` (the only valid value)."),
            WRONG_SCHEDULE,
            Failure(
                "ERROR_SENDER_ALREADY_INSTALLED",
                "Sender already installed!",
                400,
                "The calling app already has a sender with this `CODE` (codes are unique per app). "
                "Call `messageservice.sender.update` instead.",
            ),
            Failure(
                "ERROR_SENDER_ADD_FAILURE",
                "Sender save error!",
                400,
                f"A value cannot be stored: `CODE` over {senders.MAX_CODE} or `HANDLER` over {senders.MAX_HANDLER} "
                f"characters, a name over {senders.MAX_NAME}, a language id over {senders.MAX_LANGUAGE_ID}, "
                "or a name that is not text.",
            ),
        ),
        notes="Checks run in this order; the first failing one answers. An app's senders are deleted when the "
        "app is uninstalled or updated to a new version: register them again on `ONAPPUPDATE`.",
    )
    async def sender_add(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.add_sender(ctx.core, app_id, ctx.caller.user_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.update", scope=SCOPE, summary="Change a provider's handler or names.")
    @declare(
        caller=APP_ADMIN,
        params=(
            Param("CODE", "string", True, "", "The code of one of the calling app's senders."),
            Param("HANDLER", "string (URL)", False, "as in `messageservice.sender.add`", "A new HANDLER."),
            Param(
                "NAME",
                NAME_TYPE,
                False,
                f"each name 1-{senders.MAX_NAME} characters",
                "Names per language: a language given is added or replaced, the others are kept.",
            ),
            Param(
                "DESCRIPTION",
                NAME_TYPE,
                False,
                "a language that is new needs a `NAME` in the same call",
                "Descriptions per language.",
            ),
            RETRY_SCHEDULE,
        ),
        answer="`true`.",
        errors=(
            NO_APP,
            NOT_ADMIN,
            Failure("ERROR_SENDER_CODE_REQUIRED", "CODE is required!", 400, "`CODE` is missing or empty."),
            Failure(
                "ERROR_SENDER_OTHER_PARAMS_REQUIRED",
                "At least one other parameter is required!",
                400,
                "None of `HANDLER`, `NAME`, `DESCRIPTION`, `RETRY_SCHEDULE` was given.",
            ),
            WRONG_HANDLER,
            WRONG_PROTOCOL,
            WRONG_SCHEDULE,
            SENDER_NOT_FOUND,
            Failure(
                "ERROR_SENDER_UPDATE_FAILURE",
                "Sender update error!",
                400,
                "A value cannot be stored: an empty or too long name, a `DESCRIPTION` for a new language without "
                f"its `NAME`, or `HANDLER` over {senders.MAX_HANDLER} characters.",
            ),
        ),
    )
    async def sender_update(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.update_sender(ctx.core, app_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.delete", scope=SCOPE, summary="Remove a provider.")
    @declare(
        caller=APP_ADMIN,
        params=(Param("CODE", "string", True, "letters, digits, `.`, `-`, `_`", "The sender to remove."),),
        answer="`true`. Messages still waiting for this sender fail (status `error`).",
        errors=(NO_APP, NOT_ADMIN, EMPTY_CODE, WRONG_CODE, SENDER_NOT_FOUND),
    )
    async def sender_delete(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        await senders.delete_sender(ctx.core, app_id, upper_keys(params))
        return MethodResult(True)

    @registry.method("messageservice.sender.list", scope=SCOPE, summary="The calling app's provider codes.")
    @declare(
        caller=APP_ADMIN,
        answer='A list of the calling app\'s sender codes, e.g. `["sms_one", "sms_two"]`; `[]` when none. '
        "No `total` or `next`.",
        errors=(NO_APP, NOT_ADMIN),
    )
    async def sender_list(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        app_id = _app_admin(ctx)
        return MethodResult(await senders.list_codes(ctx.core, app_id))

    @registry.method("messageservice.message.status.update", scope=SCOPE, summary="Report a message's delivery status.")
    @declare(
        caller="An app (OAuth token) acting for the message's author or a portal admin: the `auth[access_token]` "
        "of the HANDLER call does. Webhooks are refused.",
        params=(
            Param("CODE", "string", True, "letters, digits, `.`, `-`, `_`", "The sender's code (format-checked)."),
            Param(
                "MESSAGE_ID",
                "string",
                True,
                "32 hex characters",
                "The HANDLER call's `message_id`, not the numeric `ID`.",
            ),
            Param("STATUS", "string", True, f"one of {REPORTABLE} (lower case)", "What happened to the message."),
        ),
        answer="`true`, also when the report does not change the current status: every report is kept in the "
        "message's history, but the current status only moves forward (`queued` < `sent` < `delivered`, "
        "`undelivered`, `failed`); a repeated or late report is recorded and answered `true`.",
        errors=(
            NO_APP,
            EMPTY_CODE,
            WRONG_CODE,
            Failure(
                *messages.NOT_FOUND,
                400,
                "`MESSAGE_ID` is empty, or no message of the calling app has it (a numeric `ID` is not a "
                "`MESSAGE_ID`; another app's messages are not found; old messages are purged).",
            ),
            Failure(
                "ERROR_MESSAGE_STATUS_INCORRECT",
                "Message status incorrect!",
                400,
                f"`STATUS` is missing or not one of {REPORTABLE} (case-sensitive: `DELIVERED` is refused).",
            ),
            Failure.of(AccessDenied(), "The token's user is neither the message's author nor an admin."),
        ),
        notes="Checks run in this order.",
    )
    async def status_update(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        if ctx.caller.app_id is None:
            raise AccessDenied("Application context required")
        await messages.report_status(ctx.core, _actor(ctx), upper_keys(params))
        return MethodResult(True)

    @registry.method(
        "messageservice.message.status.get", scope=SCOPE, summary="A message's status text, by its internal ID."
    )
    @declare(
        caller="Any app or webhook with the `messageservice` scope. An app sees its senders' messages; "
        "a webhook sees what its user sent, or everything when the user is an admin.",
        params=(
            Param(
                "MESSAGE_ID",
                "integer",
                True,
                "digits only",
                "The message's internal numeric `ID` (not the 32-hex `message_id`).",
            ),
        ),
        answer="A string, the status's English description: "
        + ", ".join(dict.fromkeys(f"`{s.description}`" for s in statuses.BY_ID.values()))
        + " (see the status table below).",
        errors=(
            Failure(
                *messages.NOT_FOUND,
                400,
                "`MESSAGE_ID` is not a number, or names no message the caller may see.",
            ),
        ),
    )
    async def status_get(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(await messages.status_description(ctx.core, _actor(ctx), upper_keys(params)))

    @registry.method(
        "messageservice.message.send",
        scope=SCOPE,
        summary="Send a message as a CRM card (crm) or an automation rule (bizproc) would.",
        extension=True,
        independent=True,
    )
    @declare(
        caller="Any app or webhook with the `messageservice` scope. The message's author is the calling user.",
        params=(
            Param(
                "MESSAGE_FROM",
                "string",
                True,
                "`{client_id}|{CODE}`, at most 300 characters",
                "The sender: an installed app's client_id and the sender's `CODE`.",
            ),
            Param(
                "MESSAGE_TO",
                "string",
                True,
                f"at most {messages.MAX_TO} characters",
                "The recipient's phone number, stored as Bitrix24 normalises it: the digits after a `+` (`8 (999) "
                "000-00-00` becomes `+79990000000`; `00` and `011` prefixes are dropped).",
            ),
            Param("MESSAGE_BODY", "string", True, f"1-{messages.MAX_BODY} characters", "The text."),
            Param(
                "MODULE_ID",
                "string",
                False,
                "`crm` (the default) or `bizproc`",
                "Who sends, as Bitrix24 would: a CRM card or an automation rule.",
            ),
            Param(
                "BINDINGS",
                "list of {OWNER_TYPE_ID, OWNER_ID}",
                False,
                "whole numbers (digits)",
                "crm: the CRM items the message belongs to (OWNER_TYPE_ID 1 lead, 2 deal, 3 contact, 4 company).",
            ),
            Param("WORKFLOW_ID", "string", False, "1-255 characters; required for bizproc", "bizproc: the workflow."),
            Param("DOCUMENT_ID", "list of 3 strings", False, "each 1-255 characters; required for bizproc", ""),
            Param("DOCUMENT_TYPE", "list of 3 strings", False, "each 1-255 characters; required for bizproc", ""),
            Param(
                "IDEMPOTENCY_KEY",
                "string",
                False,
                "at most 255 characters",
                "A send repeated with the same key (by the same app or webhook) answers with the first message "
                "and queues nothing.",
            ),
        ),
        answer='`{"ID": 42, "MESSAGE_ID": "<32 hex>", "STATUS": "pending"}`. The message and its delivery are '
        "stored before the answer; the HANDLER call follows.",
        errors=(
            Failure(MESSAGE_INVALID, "Empty MESSAGE_FROM!", 400, "`MESSAGE_FROM` is missing or empty."),
            Failure(MESSAGE_INVALID, "Wrong MESSAGE_FROM!", 400, "`MESSAGE_FROM` has no `|` or is too long."),
            Failure(MESSAGE_INVALID, "Empty MESSAGE_TO!", 400, "`MESSAGE_TO` is missing or blank."),
            Failure(MESSAGE_INVALID, "Wrong MESSAGE_TO!", 400, f"`MESSAGE_TO` is over {messages.MAX_TO} characters."),
            Failure(
                MESSAGE_INVALID,
                NOT_A_PHONE,
                400,
                "`MESSAGE_TO` is not what Bitrix24 reads as a phone number: 10 digits or more (`#` and `*` "
                "count) once other characters and a `00` or `011` prefix are dropped.",
            ),
            Failure(MESSAGE_INVALID, "Empty MESSAGE_BODY!", 400, "`MESSAGE_BODY` is missing or empty."),
            Failure(
                MESSAGE_INVALID,
                "MESSAGE_BODY is too long!",
                400,
                f"`MESSAGE_BODY` is over {messages.MAX_BODY} characters.",
            ),
            Failure(
                MESSAGE_INVALID, "Wrong BINDINGS!", 400, "A binding lacks a numeric `OWNER_TYPE_ID` or `OWNER_ID`."
            ),
            Failure(MESSAGE_INVALID, "Wrong WORKFLOW_ID!", 400, "bizproc without a `WORKFLOW_ID` (1-255 characters)."),
            Failure(MESSAGE_INVALID, "Wrong DOCUMENT_ID!", 400, "bizproc: `DOCUMENT_ID` is not 3 strings."),
            Failure(MESSAGE_INVALID, "Wrong DOCUMENT_TYPE!", 400, "bizproc: `DOCUMENT_TYPE` is not 3 strings."),
            Failure(MESSAGE_INVALID, "Unknown MODULE_ID!", 400, "`MODULE_ID` is neither `crm` nor `bizproc`."),
            Failure(MESSAGE_INVALID, "Wrong IDEMPOTENCY_KEY!", 400, "`IDEMPOTENCY_KEY` is over 255 characters."),
            Failure(
                "ERROR_SENDER_NOT_FOUND",
                "Sender not found!",
                400,
                "No installed app has a sender matching `MESSAGE_FROM`.",
            ),
        ),
    )
    async def message_send(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        result = await messages.send_message(ctx.core, _actor(ctx), upper_keys(params))
        return MethodResult(result)

    @registry.method(
        "messageservice.message.get",
        scope=SCOPE,
        summary="One message with its delivery attempts and status history.",
        extension=True,
    )
    @declare(
        caller="Any app or webhook with the `messageservice` scope; it sees what `messageservice.message.status.get` "
        "describes.",
        params=(
            Param("ID", "integer", False, "digits only", "The internal numeric id; or"),
            Param("MESSAGE_ID", "string", False, "32 hex characters", "the id the HANDLER call carried."),
        ),
        answer=f"The message: {MESSAGE_FIELDS}; then `DELIVERY` (`STATE`: `pending`, `done` or `dead`, "
        "`ATTEMPTS`, `NEXT_ATTEMPT_AT`, `LAST_ERROR`), `ATTEMPTS` (each `NUMBER`, `STARTED_AT`, `DURATION_MS`, "
        "`HTTP_STATUS`, `ERROR`, `RESPONSE`: the head of the HANDLER's answer) and `HISTORY` (each `STATUS`, "
        "`STATUS_ID`, `APPLIED`: whether it changed the current status, `USER_ID`, `APP_ID`, `DATE`).",
        errors=(Failure(*messages.NOT_FOUND, 400, "Neither id given, or no message the caller may see has it."),),
    )
    async def message_get(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        return MethodResult(await messages.get_message(ctx.core, _actor(ctx), upper_keys(params)))

    @registry.method(
        "messageservice.message.list",
        scope=SCOPE,
        summary="Messages, newest first, filtered by sender, status, recipient and time; 50 a page.",
        extension=True,
    )
    @declare(
        caller="Any app or webhook with the `messageservice` scope; it lists what it may see (as `message.get`).",
        params=(
            Param(
                "FILTER",
                "map",
                False,
                "keys: `SENDER` (`CODE` or `{client_id}|{CODE}`), `STATUS` (a status name, e.g. `delivered`), "
                "`DELIVERY` (`pending`, `done`, `dead`), `MESSAGE_TO`, `>=DATE_CREATE` and `<DATE_CREATE` "
                "(Unix seconds)",
                "",
            ),
            Param(
                "start",
                "integer",
                False,
                f"a multiple of {messages.PAGE_SIZE}",
                "The offset (the `next` of the previous page).",
            ),
        ),
        answer=f"A list of messages ({messages.PAGE_SIZE} a page) with the fields of `message.get` before "
        "`DELIVERY`; the envelope's `total` counts them all and `next` is the next page's `start`.",
        errors=(
            Failure(
                MESSAGE_INVALID,
                "Wrong FILTER[>=DATE_CREATE]!",
                400,
                "Not a number (likewise `Wrong FILTER[<DATE_CREATE]!`).",
            ),
        ),
    )
    async def message_list(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        rows, total, offset = await messages.list_messages(ctx.core, _actor(ctx), upper_keys(params), ctx.start)
        following = offset + len(rows)
        return MethodResult(rows, next=following if following < total else None, total=total)

    @registry.method(
        "messageservice.message.replay",
        scope=SCOPE,
        summary="Send dead letters again from the first attempt (ID or IDS; admins only).",
        extension=True,
    )
    @declare(
        caller="A portal admin, through an app or a webhook.",
        params=(
            Param("ID", "integer", False, "", "One message; or"),
            Param("IDS", "list of integers", False, "", "several."),
        ),
        answer='`{"REPLAYED": n}`: how many of them were dead letters and are pending again (status `pending`, '
        "attempts from 1).",
        errors=(
            Failure.of(AccessDenied(), "The caller is not an admin."),
            Failure(*messages.NOT_FOUND, 400, "No numeric id given."),
        ),
    )
    async def message_replay(ctx: CallContext, params: dict[str, Any]) -> MethodResult:
        replayed = await messages.replay(ctx.core, _actor(ctx), upper_keys(params))
        ctx.core.notify_queued()
        return MethodResult({"REPLAYED": replayed})
