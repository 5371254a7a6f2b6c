"""Send a message as a CRM card does (with a binding) or as an automation rule does (workflow, document)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.forms import Checker, FieldErrors, Form, FormError
from messageservice.console.labels import sender_labels
from messageservice.console.messages import operator_actor
from messageservice.console.presenting import sender_label
from messageservice.console.web import Console, describe, flash, guarded, posted, redirect
from messageservice.core import console_queries as queries
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator
from messageservice.core.messages import MAX_BODY, send_message
from messageservice.core.phones import RULE, phone_number

# CRM entity types (OWNER_TYPE_ID) a card can be bound to.
OWNER_TYPES = {"1": "Lead", "2": "Deal", "3": "Contact", "4": "Company"}
MODES = ("crm", "bizproc")


def _recipient(form: Form) -> str:
    recipient = form.text("recipient", "Recipient", max_length=255)
    if phone_number(recipient) is None:
        raise FormError(f"Recipient: not a phone number ({RULE}).")
    return recipient


def _sender(form: Form, choices: list[str]) -> str:
    sender = form.text("sender", "Sender", max_length=300)
    if sender not in choices:
        raise FormError("Sender: choose one of the offered senders.")
    return sender


def _body(form: Form) -> str:
    text = form.text("text", "Text", max_length=MAX_BODY, strip=False, free_text=True)
    if not text.strip():
        raise FormError("Text is required.")
    return text


def _required(check: Checker, form: Form, name: str, label: str) -> str | None:
    return check.field(name, label, lambda: form.text(name, label))


def read_send(form: Form, choices: list[str]) -> dict[str, Any]:
    """The send form as message.send's parameters; every wrong field at once raises FieldErrors."""
    check = Checker()
    mode = form.choice("mode", "Send as", MODES)  # a hidden field: wrong only when the form was tampered with
    params: dict[str, Any] = {
        "MESSAGE_FROM": check.field("sender", "Sender", lambda: _sender(form, choices)),
        "MESSAGE_TO": check.field("recipient", "Recipient", lambda: _recipient(form)),
        "MESSAGE_BODY": check.field("text", "Text", lambda: _body(form)),
    }
    if mode == "crm":
        # A binding is optional, as it is for message.send; half a binding is a mistake.
        params["MODULE_ID"] = "crm"
        owner_type = check.field("owner_type", "Bound to", lambda: form.text("owner_type", "Bound to", required=False))
        owner_id = check.field(
            "owner_id", "Entity id", lambda: form.integer("owner_id", "Entity id", required=False, low=1, high=10**12)
        )
        if owner_type and owner_type not in OWNER_TYPES:
            check.fail("owner_type", "Bound to: choose one of the offered values.")
        elif owner_type and owner_id is None and "owner_id" not in check.errors:
            check.fail("owner_id", "Entity id is required. Or bind to nothing.")
        elif owner_id is not None and not owner_type:
            check.fail("owner_type", "Bound to: choose what the entity is (or clear its id).")
        elif owner_type and owner_id is not None:
            params["BINDINGS"] = [{"OWNER_TYPE_ID": owner_type, "OWNER_ID": str(owner_id)}]
    elif mode == "bizproc":
        params["MODULE_ID"] = "bizproc"
        params["WORKFLOW_ID"] = _required(check, form, "workflow_id", "Workflow id")
        params["DOCUMENT_ID"] = [
            _required(check, form, f"document_id_{i}", f"Document id part {i + 1}") for i in range(3)
        ]
        params["DOCUMENT_TYPE"] = [
            _required(check, form, f"document_type_{i}", f"Document type part {i + 1}") for i in range(3)
        ]
    check.done()
    return params


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def page(
        request: Request,
        values: dict[str, str],
        error: str | None,
        status: int = 200,
        errors: dict[str, str] | None = None,
    ) -> Response:
        senders = await queries.sender_choices(core)
        context = {
            "senders": senders,
            "labels": await sender_labels(core),
            "sender_label": sender_label,
            "owner_types": OWNER_TYPES,
            "v": values,
            "error": error,
            "errors": errors or {},
        }
        return console.render(request, "send.html", context, status=status)

    async def show(request: Request, operator: Operator) -> Response:
        mode = "bizproc" if request.query_params.get("mode") == "bizproc" else "crm"
        defaults = {"mode": mode, "document_id_0": "crm", "document_type_0": "crm"}
        return await page(request, defaults, None)

    async def send(request: Request, operator: Operator) -> Response:
        form = posted(request)
        try:
            choices = [s.message_from for s in await queries.sender_choices(core)]
            result = await send_message(core, operator_actor(operator), read_send(form, choices))
        except FieldErrors as exc:
            return await page(request, form.values(), describe(exc), status=400, errors=exc.fields)
        except (FormError, CoreError) as exc:
            return await page(request, form.values(), describe(exc), status=400)
        flash(request, f"Message {result['ID']} queued; this page follows it.")
        return redirect(f"/messages/{result['ID']}")

    return [
        Route("/send", guarded(console, show), methods=["GET"]),
        Route("/send", guarded(console, send), methods=["POST"]),
    ]
