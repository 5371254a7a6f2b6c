"""Send a message as a CRM card does (with a binding) or as an automation rule does (workflow, document)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from messageservice.console.forms import Form, FormError
from messageservice.console.messages import operator_actor
from messageservice.console.web import Console, describe, flash, guarded, posted, redirect
from messageservice.core import console_queries as queries
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator
from messageservice.core.messages import MAX_BODY, send_message
from messageservice.core.phones import RULE, phone_number

# CRM entity types (OWNER_TYPE_ID) a card can be bound to.
OWNER_TYPES = {"1": "Lead", "2": "Deal", "3": "Contact", "4": "Company"}
MODES = ("crm", "bizproc")


def _common(form: Form, choices: list[str]) -> dict[str, Any]:
    sender = form.text("sender", "Sender", max_length=300)
    recipient = form.text("recipient", "Recipient", max_length=255)
    if sender not in choices:
        raise FormError("Sender: choose one of the offered senders.")
    if phone_number(recipient) is None:
        raise FormError(f"Recipient: not a phone number ({RULE}).")
    return {
        "MESSAGE_FROM": sender,
        "MESSAGE_TO": recipient,
        "MESSAGE_BODY": form.text("text", "Text", max_length=MAX_BODY, strip=False, free_text=True),
    }


def _triple(form: Form, prefix: str, label: str) -> list[str]:
    return [form.text(f"{prefix}_{i}", f"{label} part {i + 1}") for i in range(3)]


def read_send(form: Form, choices: list[str]) -> dict[str, Any]:
    """The send form as message.send's parameters; anything wrong raises FormError."""
    mode = form.choice("mode", "Send as", MODES)
    params = _common(form, choices)
    if not params["MESSAGE_BODY"].strip():
        raise FormError("Text is required.")
    if mode == "crm":
        owner_type = form.choice("owner_type", "Bound to", OWNER_TYPES)
        owner_id = form.integer("owner_id", "Entity id", low=1, high=10**12)
        params.update({"MODULE_ID": "crm", "BINDINGS": [{"OWNER_TYPE_ID": owner_type, "OWNER_ID": str(owner_id)}]})
    else:
        params.update(
            {
                "MODULE_ID": "bizproc",
                "WORKFLOW_ID": form.text("workflow_id", "Workflow id"),
                "DOCUMENT_ID": _triple(form, "document_id", "Document id"),
                "DOCUMENT_TYPE": _triple(form, "document_type", "Document type"),
            }
        )
    return params


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def page(request: Request, values: dict[str, str], error: str | None, status: int = 200) -> Response:
        senders = await queries.sender_choices(core)
        context = {"senders": senders, "owner_types": OWNER_TYPES, "v": values, "error": error}
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
        except (FormError, CoreError) as exc:
            return await page(request, form.values(), describe(exc), status=400)
        flash(request, f"Message {result['ID']} queued; this page follows it.")
        return redirect(f"/messages/{result['ID']}")

    return [
        Route("/send", guarded(console, show), methods=["GET"]),
        Route("/send", guarded(console, send), methods=["POST"]),
    ]
