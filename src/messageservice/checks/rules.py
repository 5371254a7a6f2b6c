"""The checks: a stable name, a title, the rule and where it comes from (Bitrix24's docs, or this project's docs)."""

from __future__ import annotations

from dataclasses import dataclass

DOCS = "https://apidocs.bitrix24.com/api-reference"
SENDER_ADD = f"{DOCS}/messageservice/messageservice-sender-add.html"
STATUS_UPDATE = f"{DOCS}/messageservice/messageservice-message-status-update.html"
ON_APP_INSTALL = f"{DOCS}/common/events/on-app-install.html"
ON_APP_UPDATE = f"{DOCS}/common/events/on-app-update.html"
ON_APP_UNINSTALL = f"{DOCS}/common/events/on-app-uninstall.html"
EVENTS = f"{DOCS}/events/index.html"
SAFE_HANDLERS = f"{DOCS}/events/safe-event-handlers.html"
LIMITS = "https://apidocs.bitrix24.com/limits.html"
OURS = "docs/check-provider.md"


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    rule: str
    source: str


CHECKS: tuple[Check, ...] = (
    Check(
        "install.answered",
        "ONAPPINSTALL is answered 2xx",
        "The app's URL answers the ONAPPINSTALL event with a 2xx status.",
        ON_APP_INSTALL,
    ),
    Check(
        "install.senders",
        "Senders registered on install, with the event's token",
        "On ONAPPINSTALL the app calls messageservice.sender.add with CODE, TYPE=SMS, an http(s) HANDLER and NAME "
        "(a string or a {language: name} map), authenticated with auth[access_token] of the event, and the portal "
        "accepts it.",
        SENDER_ADD,
    ),
    Check(
        "update.reregisters",
        "Senders registered again after ONAPPUPDATE",
        "Installing a new version deletes all the app's senders (OnRestAppUpdate calls OnRestAppDelete in the "
        "messageservice module), so the app registers them again on ONAPPUPDATE.",
        ON_APP_UPDATE,
    ),
    Check(
        "uninstall.answered",
        "ONAPPUNINSTALL is answered 2xx",
        "The app's URL answers the ONAPPUNINSTALL event with a 2xx status.",
        ON_APP_UNINSTALL,
    ),
    Check(
        "handler.crm",
        "A CRM send is answered 2xx",
        "The sender's HANDLER answers a message sent from a CRM card (module_id=crm, bindings[...]) with a 2xx "
        "status; the body of the answer is ignored.",
        SENDER_ADD + "#handler",
    ),
    Check(
        "handler.bizproc",
        "An automation rule's send is answered 2xx",
        "The HANDLER answers a message sent by a business process (module_id=bizproc, workflow_id, document_id[], "
        "document_type[]) with a 2xx status.",
        SENDER_ADD + "#handler",
    ),
    Check(
        "handler.texts",
        "Texts of every kind are answered 2xx",
        "The HANDLER takes any UTF-8 text the portal sends, form-encoded as PHP's http_build_query does: "
        "Cyrillic, emoji, quotes and ampersands, and 1,000 characters.",
        EVENTS,
    ),
    Check(
        "handler.phones",
        "Phone numbers of several formats are answered 2xx",
        "The HANDLER takes message_to as the portal sends it: normalised to + and digits when it could be, "
        "else the number as typed.",
        SENDER_ADD + "#handler",
    ),
    Check(
        "handler.timely",
        "The HANDLER answers within the timeout",
        "The HANDLER answers at once and does the sending afterwards: the portal's queue servers measure handler "
        "speed and slow handlers down, and a call that times out is a failed one.",
        EVENTS,
    ),
    Check(
        "handler.repeat",
        "A repeated message_id is not sent again",
        "The same message_id delivered twice (a retry after a lost answer) is answered 2xx and is not sent again: "
        "no status report contradicts the one already made.",
        OURS + "#what-is-checked",
    ),
    Check(
        "status.code",
        "Status reports carry the sender's CODE",
        "messageservice.message.status.update takes CODE, the sender's code from the HANDLER call's `code`; "
        "without it the portal answers ERROR_SENDER_VALIDATION_FAILURE (Empty sender code!).",
        STATUS_UPDATE,
    ),
    Check(
        "status.message_id",
        "Status reports carry the 32-hex message_id",
        "MESSAGE_ID is the HANDLER call's message_id (32 hex characters), not an internal or numeric id; "
        "anything else is ERROR_MESSAGE_NOT_FOUND.",
        STATUS_UPDATE,
    ),
    Check(
        "status.value",
        "Status reports carry a valid STATUS",
        "STATUS is exactly one of queued, sent, delivered, undelivered, failed (compared case-sensitively).",
        STATUS_UPDATE,
    ),
    Check(
        "status.token",
        "Status reports use the HANDLER call's token",
        "A report is authenticated with the auth[access_token] of the HANDLER call it is about (it acts for the "
        "message's author), not with a stored or incoming-webhook token.",
        STATUS_UPDATE,
    ),
    Check(
        "status.order",
        "Statuses are reported in forward order",
        "A message's statuses move forward only: queued, then sent, then one of delivered, undelivered, failed; "
        "the portal keeps no transition rules, so a backward report puts the CRM timeline wrong.",
        STATUS_UPDATE,
    ),
    Check(
        "status.timely",
        "A status report comes within the set time",
        "After answering the HANDLER, the app reports the message's status within the time the operator sets "
        "(--report-timeout); until then the portal shows the message as sent, whatever happened to it.",
        STATUS_UPDATE,
    ),
    Check(
        "status.accepted",
        "The portal accepts the status reports",
        "Every well-formed report is answered {result: true}; a refused report is an error the app must notice.",
        STATUS_UPDATE,
    ),
    Check(
        "security.wrong_token",
        "A call with a wrong application_token is not acted on",
        "The app compares auth[application_token] with the one ONAPPINSTALL or ONAPPUPDATE gave it and does not "
        "act on a call that does not match (no message sent, no status reported; best answered 401/403).",
        SAFE_HANDLERS,
    ),
    Check(
        "security.other_app",
        "A call with another app's application_token is not acted on",
        "A HANDLER call carrying the application_token of another app of the same portal is not this app's: "
        "the app does not act on it.",
        SAFE_HANDLERS,
    ),
    Check(
        "robust.retry_after",
        "A 503 with Retry-After to a status report is retried",
        "A portal that answers 503 (QUERY_LIMIT_EXCEEDED) asks for the call again later; the app retries the "
        "report, after Retry-After seconds, instead of losing it.",
        LIMITS,
    ),
    Check(
        "robust.expired_token",
        "After an expired token, the next call's fresh token is used",
        "HANDLER calls carry a fresh access token each (auth[...], no refresh token); after one expired "
        "(expired_token), the app reports the next message with that message's own token.",
        f"{DOCS}/events/index.html#auth",
    ),
)

BY_NAME = {check.name: check for check in CHECKS}
NAMES = tuple(check.name for check in CHECKS)
