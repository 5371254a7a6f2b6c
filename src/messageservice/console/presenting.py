"""How the console words things: sender names, replay rounds of attempts, the delivery summary.

Pure functions of what the pages already read, so they are tested without a server or a browser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Bitrix's "any language" key in a sender's NAME: a storage detail, never shown to the operator.
ANY_LANGUAGE = "**"
PREFERRED_LANGUAGES = ("en", ANY_LANGUAGE)


def sender_name(names: dict[str, str], code: str) -> str:
    """The one name to show for a sender: English, else the any-language name, else any, else its code."""
    for language in PREFERRED_LANGUAGES:
        if names.get(language):
            return names[language]
    for name in names.values():
        if name:
            return name
    return code


def name_lines(names: dict[str, str]) -> list[tuple[str, str]]:
    """(language, name) for every name; the any-language name has no language label ("") and is left
    out when it repeats a language's name (a NAME given per language stores its first one under `**` too)."""
    named = {name for lang, name in names.items() if lang != ANY_LANGUAGE}
    lines = [
        ("" if lang == ANY_LANGUAGE else lang, name)
        for lang, name in names.items()
        if name and not (lang == ANY_LANGUAGE and name in named)
    ]
    return sorted(lines, key=lambda line: (line[0] != "", line[0]))


@dataclass(frozen=True)
class SenderLabel:
    """A sender as the pages show it: its name first, its code and app on a second line or on hover."""

    message_from: str  # client_id|CODE
    name: str
    code: str
    app_name: str

    @property
    def detail(self) -> str:
        return f"{self.code} · {self.app_name}" if self.app_name else self.code

    @property
    def hover(self) -> str:
        return f"{self.app_name}: {self.message_from}" if self.app_name else self.message_from


def sender_label(message_from: str, labels: dict[str, SenderLabel]) -> SenderLabel:
    """The label of a MESSAGE_FROM; a sender that is gone keeps its code as its name."""
    known = labels.get(message_from)
    if known is not None:
        return known
    code = message_from.split("|", 1)[1] if "|" in message_from else message_from
    return SenderLabel(message_from, code, code, "")


@dataclass
class Round:
    """One run of delivery: the first (number 0), or the n-th replay of a dead letter."""

    number: int
    started_at: float | None = None  # the replay's time; None for the first delivery
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def title(self) -> str:
        return "First delivery" if self.number == 0 else f"Replay {self.number}"


def attempt_rounds(attempts: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[Round]:
    """Attempts grouped by replay round.

    A replay resets the attempt numbers to 1, so attempts read 1,2,3,1,2,3; each `replayed` entry of the
    timeline starts a new round, and so does a number that does not go up (a replay the kept timeline lost).
    """
    replays = sorted(h["DATE"] for h in history if h.get("STATUS") == "replayed")
    rounds = [Round(0)]
    for attempt in attempts:
        replayed_before = False
        while replays and replays[0] <= attempt["STARTED_AT"]:
            rounds.append(Round(len(rounds), replays.pop(0)))
            replayed_before = True
        last = rounds[-1].attempts[-1] if rounds[-1].attempts else None
        if not replayed_before and last is not None and attempt["NUMBER"] <= last["NUMBER"]:
            rounds.append(Round(len(rounds)))
        rounds[-1].attempts.append(attempt)
    # A replay not tried yet still shows as a round of its own.
    rounds += [Round(len(rounds) + i, at) for i, at in enumerate(replays)]
    return [r for i, r in enumerate(rounds) if r.attempts or (i == len(rounds) - 1 and r.number > 0)]


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def delivery_summary(delivery: dict[str, Any] | None, rounds: list[Round]) -> str:
    """`done after 2 attempts`, `pending, 1 attempt so far in replay 1 (4 in all)`, ...; `—` without a delivery."""
    if not delivery:
        return "—"
    state = delivery.get("STATE") or "?"
    current = rounds[-1] if rounds else Round(0)
    count = len(current.attempts)
    total = sum(len(r.attempts) for r in rounds)
    if state == "pending":
        text = "pending, " + ("no attempt yet" if count == 0 else plural(count, "attempt") + " so far")
    elif state == "done":
        text = f"done after {plural(count, 'attempt')}"
    elif state == "dead":
        text = f"dead after {plural(count, 'attempt')}"
    else:
        text = f"{state}, {plural(count, 'attempt')}"
    if current.number:
        text += f" in replay {current.number} ({total} in all)"
    return text


def retry_possible(delivery: dict[str, Any] | None, rounds: list[Round], now: float) -> bool:
    """`Retry now` makes sense for a message waiting for its next try after a failed one in its current round
    (the first delivery or the latest replay): not before that round's first attempt, not while an attempt is
    in flight (the delivery's count is then ahead of the latest recorded attempt's number). The same test as
    the retry itself (core.console_queries.retry_now)."""
    if not delivery or delivery.get("STATE") != "pending":
        return False
    current = rounds[-1].attempts if rounds else []
    due = delivery.get("NEXT_ATTEMPT_AT")
    return bool(current) and current[-1]["NUMBER"] == delivery.get("ATTEMPTS") and due is not None and due > now


def handler_failing(health: Any) -> bool:
    """A handler that failed in the window and did not always succeed (a core.stats HandlerHealth)."""
    return bool(health is not None and health.failed and (health.success_rate or 0) < 1)
