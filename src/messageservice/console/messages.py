"""Messages: search and filter, one message in full (body, attempts, timeline), retry and replay."""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from messageservice.console.breakers import held_message, utc_clock
from messageservice.console.forms import Form, FormError
from messageservice.console.labels import sender_labels
from messageservice.console.presenting import attempt_rounds, delivery_summary, retry_possible, sender_label
from messageservice.console.web import Console, flash, guarded, redirect
from messageservice.core import console_queries as queries
from messageservice.core import statuses
from messageservice.core.apps import list_apps
from messageservice.core.errors import CoreError
from messageservice.core.logins import Operator
from messageservice.core.messages import Actor, get_message, replay
from messageservice.core.portal import list_users

STATUS_NAMES = sorted({s.name for s in statuses.BY_ID.values()})
DELIVERY_STATES = ("pending", "done", "dead")


def operator_actor(operator: Operator) -> Actor:
    return Actor(user_id=operator.id, is_admin=True, channel="console")


def parse_moment(value: str, label: str) -> float | None:
    """A datetime-local value (YYYY-MM-DDTHH:MM[:SS]), read as UTC."""
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise FormError(f"{label} must be a date and time like 2026-01-31T14:30.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def read_filter(query: dict[str, str]) -> queries.MessageFilter:
    form = Form({k: [v] for k, v in query.items()})
    status = form.text("status", "Status", required=False, max_length=32)
    if status and status not in STATUS_NAMES:
        raise FormError("Status: choose one of the offered values.")
    delivery = form.text("delivery", "Delivery", required=False, max_length=16)
    if delivery and delivery not in DELIVERY_STATES:
        raise FormError("Delivery: choose one of the offered values.")
    return queries.MessageFilter(
        sender=form.text("sender", "Sender", required=False, max_length=300),
        status=status,
        delivery=delivery,
        recipient=form.text("recipient", "Recipient", required=False, max_length=255),
        text=form.text("text", "Text", required=False, max_length=1000),
        since=parse_moment(form.text("since", "From", required=False, max_length=32), "From"),
        until=parse_moment(form.text("until", "Until", required=False, max_length=32), "Until"),
        stuck=query.get("stuck", "") not in ("", "0"),
    )


def message_id_of(request: Request) -> int | None:
    raw = str(request.path_params.get("id", ""))
    if not (raw.isascii() and raw.isdigit() and len(raw) < 12):
        return None
    # The column is a 32-bit integer on PostgreSQL: a larger number is no message (and no query error).
    return int(raw) if int(raw) <= queries.MAX_ID else None


def build_routes(console: Console) -> list[Route]:
    core = console.core

    async def listing(request: Request, operator: Operator) -> Response:
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        error = None
        page_raw = request.query_params.get("page", "1")
        page_number = int(page_raw) if page_raw.isascii() and page_raw.isdigit() and len(page_raw) < 7 else 1
        try:
            chosen = read_filter(query)
            page = await queries.search_messages(core, chosen, page_number)
        except FormError as exc:
            error, page = exc.message, queries.MessagePage([], 0, 1, 1)
        context: dict[str, Any] = {
            "page": page,
            "query": query,
            "error": error,
            "statuses": STATUS_NAMES,
            "deliveries": DELIVERY_STATES,
            "senders": await queries.sender_choices(core),
            "labels": await sender_labels(core),
            "sender_label": sender_label,
        }
        return console.render(request, "messages.html", context, status=400 if error else 200)

    async def detail(request: Request, operator: Operator) -> Response:
        message_id = message_id_of(request)
        try:
            if message_id is None:
                raise CoreError("ERROR_MESSAGE_NOT_FOUND", "Message not found!")
            view = await get_message(core, operator_actor(operator), {"ID": str(message_id)})
        except CoreError:
            return console.error_page(request, 404, "There is no such message.")
        call = await queries.handler_call(core, view["ID"])
        delivery = view["DELIVERY"] or {}
        rounds = attempt_rounds(view["ATTEMPTS"], view["HISTORY"])
        held = await held_message(core, view, call[0] if call else None)
        context = {
            "m": view,
            "app_names": {a.id: a.name for a in await list_apps(core)},
            "user_names": {u.id: u.name for u in await list_users(core)},
            "sender": sender_label(view["MESSAGE_FROM"], await sender_labels(core)),
            # What the HANDLER got is shown once it got something.
            "call": call if view["ATTEMPTS"] else None,
            "rounds": rounds,
            "summary": delivery_summary(view["DELIVERY"], rounds),
            "held": held.text(utc_clock) if held else None,
            "can_replay": delivery.get("STATE") == "dead",
            "can_retry": retry_possible(view["DELIVERY"], rounds, core.clock()) and held is None,
            "final": is_final(view),
            "fingerprint": fingerprint(view),
        }
        return console.render(request, "message.html", context)

    async def state(request: Request, operator: Operator) -> Response:
        """For the message page's live view: enough to tell whether anything changed."""
        message_id = message_id_of(request)
        try:
            view = await get_message(core, operator_actor(operator), {"ID": str(message_id or 0)})
        except CoreError:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"status": view["STATUS"], "fingerprint": fingerprint(view)})

    async def do_replay(request: Request, operator: Operator) -> Response:
        message_id = message_id_of(request) or 0
        try:
            count = await replay(core, operator_actor(operator), {"ID": str(message_id)})
        except CoreError:
            count = 0
        if count:
            flash(request, "Replayed: the message is queued again with all its attempts.")
        else:
            flash(request, "Nothing to replay: only dead letters whose sender still exists can be replayed.", "error")
        return redirect(f"/messages/{message_id}" if message_id else "/messages")

    async def do_retry(request: Request, operator: Operator) -> Response:
        message_id = message_id_of(request) or 0
        if await queries.retry_now(core, message_id):
            flash(request, "The next attempt starts now.")
        else:
            flash(request, "Nothing to retry now: the message is not waiting for a retry.", "error")
        return redirect(f"/messages/{message_id}" if message_id else "/messages")

    return [
        Route("/messages", guarded(console, listing), methods=["GET"]),
        Route("/messages/{id}", guarded(console, detail), methods=["GET"]),
        Route("/messages/{id}/state.json", guarded(console, state, json=True), methods=["GET"]),
        Route("/messages/{id}/replay", guarded(console, do_replay), methods=["POST"]),
        Route("/messages/{id}/retry", guarded(console, do_retry), methods=["POST"]),
    ]


def is_final(view: dict[str, Any]) -> bool:
    """Nothing more will happen by itself: an end status (a provider may still report after `sent`)."""
    status = statuses.by_id(view["STATUS_ID"]) or statuses.UNKNOWN
    delivery = view["DELIVERY"] or {}
    return status.rank == statuses.DELIVERED.rank and delivery.get("STATE") != "pending"


def fingerprint(view: dict[str, Any]) -> str:
    delivery = view["DELIVERY"] or {}
    return f"{view['STATUS']}/{delivery.get('STATE')}/{len(view['ATTEMPTS'])}/{len(view['HISTORY'])}"
