"""The console's wording without a browser: sender names, replay rounds, the delivery summary, `Retry now`,
the held-by-breaker line (console and `messages show`), dashboard card links and the send form's checks."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from rich.console import Console as RichConsole

from messageservice.cli import views
from messageservice.console.breakers import Held, held_by, utc_clock
from messageservice.console.dashboard import tile_links
from messageservice.console.forms import FieldErrors, Form
from messageservice.console.presenting import (
    SenderLabel,
    attempt_rounds,
    delivery_summary,
    name_lines,
    retry_possible,
    sender_label,
    sender_name,
)
from messageservice.console.send import read_send

SENDER = "local.abc.1|sms"


def attempt(number: int, at: float) -> dict[str, Any]:
    return {"NUMBER": number, "STARTED_AT": at, "DURATION_MS": 5.0, "HTTP_STATUS": 500, "ERROR": None, "RESPONSE": ""}


def replayed(at: float) -> dict[str, Any]:
    return {"STATUS": "replayed", "DATE": at, "APPLIED": True, "USER_ID": 1, "APP_ID": None, "STATUS_ID": 0}


def reported(status: str, at: float) -> dict[str, Any]:
    return {"STATUS": status, "DATE": at, "APPLIED": True, "USER_ID": None, "APP_ID": 1, "STATUS_ID": 0}


# --- sender names ------------------------------------------------------------------------------


def test_a_sender_is_named_in_english_then_any_language_never_with_the_marker() -> None:
    assert sender_name({"de": "Test-SMS", "en": "Test SMS"}, "sms") == "Test SMS"
    assert sender_name({"**": "Demo SMS", "de": "Demo-SMS"}, "demo_sms") == "Demo SMS"
    assert sender_name({"fr": "SMS test"}, "sms") == "SMS test"
    assert sender_name({}, "sms") == "sms"
    # The any-language name comes first and without a `**` label; the others keep theirs.
    assert name_lines({"de": "Demo-SMS", "**": "Demo SMS", "en": "Demo SMS (en)"}) == [
        ("", "Demo SMS"),
        ("de", "Demo-SMS"),
        ("en", "Demo SMS (en)"),
    ]
    assert name_lines({"en": "Test SMS", "de": "Test-SMS", "**": "Test SMS"}) == [
        ("de", "Test-SMS"),
        ("en", "Test SMS"),
    ]


def test_a_sender_label_puts_code_and_app_second() -> None:
    labels = {SENDER: SenderLabel(SENDER, "Test SMS", "sms", "Provider A")}
    label = sender_label(SENDER, labels)
    assert (label.name, label.detail, label.hover) == ("Test SMS", "sms · Provider A", "Provider A: " + SENDER)
    gone = sender_label("local.gone.9|old_code", labels)
    assert (gone.name, gone.detail) == ("old_code", "old_code")


# --- replay rounds and the summary ------------------------------------------------------------


def test_attempts_after_replays_are_grouped_in_rounds() -> None:
    attempts = [attempt(1, 10), attempt(2, 11), attempt(3, 12), attempt(1, 20), attempt(2, 21), attempt(1, 30)]
    history = [reported("pending", 9), replayed(19.5), reported("error", 22), replayed(29)]
    rounds = attempt_rounds(attempts, history)
    assert [r.title for r in rounds] == ["First delivery", "Replay 1", "Replay 2"]
    assert [[a["NUMBER"] for a in r.attempts] for r in rounds] == [[1, 2, 3], [1, 2], [1]]
    assert [r.started_at for r in rounds] == [None, 19.5, 29]


def test_a_replay_lost_from_the_kept_timeline_still_starts_a_round() -> None:
    rounds = attempt_rounds([attempt(1, 10), attempt(2, 11), attempt(1, 20)], [])
    assert [[a["NUMBER"] for a in r.attempts] for r in rounds] == [[1, 2], [1]]
    assert rounds[1].title == "Replay 1" and rounds[1].started_at is None


def test_a_replay_not_yet_tried_is_a_round_of_its_own() -> None:
    rounds = attempt_rounds([attempt(1, 10)], [replayed(15)])
    assert [(r.title, len(r.attempts)) for r in rounds] == [("First delivery", 1), ("Replay 1", 0)]
    assert attempt_rounds([], []) == []


def test_the_summary_counts_the_attempts_of_the_round_and_in_all() -> None:
    history = [replayed(19.5)]
    rounds = attempt_rounds([attempt(1, 10), attempt(2, 11), attempt(3, 12), attempt(1, 20)], history)
    # The delivery row counts the current round only; it may even say 0 while an attempt is recorded.
    assert delivery_summary({"STATE": "done", "ATTEMPTS": 0}, rounds) == "done after 1 attempt in replay 1 (4 in all)"
    first = attempt_rounds([attempt(1, 10), attempt(2, 11)], [])
    assert delivery_summary({"STATE": "done", "ATTEMPTS": 2}, first) == "done after 2 attempts"
    assert delivery_summary({"STATE": "dead", "ATTEMPTS": 2}, first) == "dead after 2 attempts"
    assert delivery_summary({"STATE": "pending", "ATTEMPTS": 0}, []) == "pending, no attempt yet"
    queued_again = attempt_rounds([attempt(1, 10)], [replayed(15)])
    assert delivery_summary({"STATE": "pending", "ATTEMPTS": 0}, queued_again) == (
        "pending, no attempt yet in replay 1 (1 in all)"
    )
    assert delivery_summary(None, []) == "—"


def test_retry_now_only_after_a_failed_attempt_that_waits() -> None:
    now = 100.0
    one = attempt_rounds([attempt(1, 10)], [])
    waiting = {"STATE": "pending", "ATTEMPTS": 1, "NEXT_ATTEMPT_AT": now + 60}
    assert retry_possible(waiting, one, now)
    # Before any attempt: nothing to retry.
    assert not retry_possible({"STATE": "pending", "ATTEMPTS": 0, "NEXT_ATTEMPT_AT": now}, [], now)
    # An attempt in flight: its count is ahead of its records.
    assert not retry_possible({**waiting, "ATTEMPTS": 2}, one, now)
    # Due already, or over.
    assert not retry_possible({**waiting, "NEXT_ATTEMPT_AT": now}, one, now)
    assert not retry_possible({**waiting, "STATE": "done", "NEXT_ATTEMPT_AT": None}, one, now)
    # After a replay only the replay's attempts count (numbers start again at 1): its failed first attempt
    # waits, and can be retried now.
    replayed_round = attempt_rounds([attempt(1, 10), attempt(2, 11), attempt(1, 20)], [replayed(15)])
    assert retry_possible({**waiting, "ATTEMPTS": 1}, replayed_round, now)
    # ... but not while its second attempt is in flight (the count is ahead), even though the first delivery
    # recorded an attempt number 2.
    assert not retry_possible({**waiting, "ATTEMPTS": 2}, replayed_round, now)
    # A replay not tried yet: nothing to retry (its attempts start at once anyway).
    queued_again = attempt_rounds([attempt(1, 10), attempt(2, 11)], [replayed(15)])
    assert not retry_possible({**waiting, "ATTEMPTS": 0}, queued_again, now)


# --- held by an open breaker -------------------------------------------------------------------


def breaker_row(failures: int, open_until: float, client_id: str = "local.abc.1") -> dict[str, Any]:
    return {
        "client_id": client_id,
        "origin": "http://provider.example:8080",
        "failures": failures,
        "open_until": open_until,
    }


def pending_view(state: str = "pending") -> dict[str, Any]:
    return {"MESSAGE_FROM": SENDER, "DELIVERY": {"STATE": state, "ATTEMPTS": 1, "NEXT_ATTEMPT_AT": 0}}


def test_a_pending_message_behind_an_open_breaker_is_held() -> None:
    handler = "http://Provider.example:8080/hook?x=1"
    held = held_by(pending_view(), handler, [breaker_row(5, 200.0)], 5, 100.0)
    assert held == Held("http://provider.example:8080", 200.0)
    until = datetime.datetime(2026, 12, 2, 13, 4, 5, tzinfo=datetime.UTC).timestamp()
    assert Held("http://provider.example:8080", until).text(utc_clock) == (
        "held: breaker open for http://provider.example:8080 until 13:04:05 UTC"
    )
    # Not held: the breaker closed, half-open, another app's, or the message is not waiting.
    assert held_by(pending_view(), handler, [breaker_row(4, 200.0)], 5, 100.0) is None
    assert held_by(pending_view(), handler, [breaker_row(5, 90.0)], 5, 100.0) is None
    assert held_by(pending_view(), handler, [breaker_row(5, 200.0, "local.other.2")], 5, 100.0) is None
    assert held_by(pending_view("done"), handler, [breaker_row(5, 200.0)], 5, 100.0) is None
    assert held_by(pending_view(), None, [breaker_row(5, 200.0)], 5, 100.0) is None


def test_messages_show_says_held_by_the_breaker() -> None:
    until = datetime.datetime(2026, 12, 2, 13, 4, 5).astimezone().timestamp()  # CLI times are local
    view = {
        "ID": 7,
        "MESSAGE_ID": "a" * 32,
        "MESSAGE_FROM": SENDER,
        "AUTHOR_ID": 1,
        "MESSAGE_TO": "+15550100000",
        "MODULE_ID": "crm",
        "STATUS": "pending",
        "STATUS_SEMANTIC": "process",
        "STATUS_DESCRIPTION": "pending",
        "DELIVERY": {"STATE": "pending", "ATTEMPTS": 5, "NEXT_ATTEMPT_AT": until, "LAST_ERROR": "HTTP 500"},
        "HELD_BY_BREAKER": {"ORIGIN": "http://provider.example:8080", "UNTIL": until},
        "DATE_CREATE": until - 60,
        "DATE_UPDATE": until - 30,
        "MESSAGE_BODY": "hi",
        "ATTEMPTS": [],
        "HISTORY": [],
    }
    terminal = RichConsole(width=200, record=True, color_system=None)
    terminal.print(views.message_detail(view))
    assert "held: breaker open for http://provider.example:8080 until 13:04:05" in terminal.export_text()


# --- dashboard cards ---------------------------------------------------------------------------


def test_dashboard_cards_lead_to_the_filtered_lists() -> None:
    start = datetime.datetime(2026, 12, 2, 10, 15, 42, tzinfo=datetime.UTC).timestamp()
    links = tile_links(start)
    assert links["dead"] == "/messages?delivery=dead"
    assert links["failing_handlers"] == "/providers?show=failing"
    assert links["open_breakers"] == "/providers?show=open"
    assert links["created"] == "/messages?since=2026-12-02T10:15"
    assert links["queue_depth"] == "/messages?delivery=pending"
    assert len(links) % 4 == 0  # cards fill their rows of four (and of two)


# --- the send form -----------------------------------------------------------------------------


def form(**fields: str) -> Form:
    return Form({name: [value] for name, value in fields.items()})


def test_the_send_form_needs_no_binding() -> None:
    params = read_send(form(mode="crm", sender=SENDER, recipient="+15550100000", text="hi"), [SENDER])
    assert params["MODULE_ID"] == "crm" and "BINDINGS" not in params
    bound = read_send(
        form(mode="crm", sender=SENDER, recipient="+15550100000", text="hi", owner_type="2", owner_id="42"), [SENDER]
    )
    assert bound["BINDINGS"] == [{"OWNER_TYPE_ID": "2", "OWNER_ID": "42"}]


def test_the_send_form_reports_every_wrong_field_at_once() -> None:
    with pytest.raises(FieldErrors) as caught:
        read_send(form(mode="crm", sender="local.nope|x", recipient="abc", text=" ", owner_id="7"), [SENDER])
    assert set(caught.value.fields) == {"sender", "recipient", "text", "owner_type"}
    assert caught.value.fields["recipient"].startswith("Recipient: not a phone number")
    assert caught.value.message == "Please correct the marked fields: Sender, Recipient, Text, Bound to."
    with pytest.raises(FieldErrors) as half:
        read_send(form(mode="crm", sender=SENDER, recipient="+15550100000", text="hi", owner_type="2"), [SENDER])
    assert half.value.fields == {"owner_id": "Entity id is required. Or bind to nothing."}
    with pytest.raises(FieldErrors) as automation:
        read_send(form(mode="bizproc", sender=SENDER, recipient="+15550100000", text="hi"), [SENDER])
    assert len(automation.value.fields) == 7  # the workflow id and the six document parts
