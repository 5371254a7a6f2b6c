"""The check battery: install a provider app on a portal, play the scenarios, judge what the wire showed.

Only what the protocol shows is judged: the provider's answers to events and HANDLER calls, and the REST
calls it makes back (recorded by the portal's RestRecorder). Scenarios run in a fixed order; each check is
judged from its scenario, so one flaw fails the check about it and leaves the others to pass.
"""

from __future__ import annotations

import itertools
import re
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from messageservice.checks.portal import CheckPortal, throwaway_settings
from messageservice.checks.recorder import SENDER_ADD, STATUS_UPDATE, RestCall
from messageservice.checks.results import CheckResult, Outcome, Report
from messageservice.checks.rules import BY_NAME, NAMES
from messageservice.core.context import Core

HEX32 = re.compile(r"^[0-9a-f]{32}$")
STATUSES = {"queued": 1, "sent": 2, "delivered": 3, "undelivered": 3, "failed": 3}
FINAL = {"delivered", "undelivered", "failed"}
AUTH_ERRORS = {"NO_AUTH_FOUND", "invalid_token", "expired_token", "INVALID_CREDENTIALS"}

TEXTS = {
    "Cyrillic": "Здравствуйте! Ваш код подтверждения: 4821. Не сообщайте его никому.",
    "emoji": "Order shipped ✅ 🚚📦 see you soon 👋🏽",
    "quotes and ampersands": "He said \"hi\" & 'bye' <b>&amp;</b> a=1&b=2+3 %20 #tag",
    "1,000 characters": ("Long message: " + "abcdefghij0123456789 Съешь же ещё этих булок. " * 30)[:1000],
}
PHONES = ("+7 (999) 123-45-67", "8 999 123 45 68", "+1-555-000-1234", "00 44 20 7946 0958", "15550001235")


@dataclass(frozen=True)
class Options:
    handler_timeout: float = 5.0  # seconds a HANDLER may take to answer
    report_timeout: float = 15.0  # seconds from a send to its first status report
    retry_after: int = 1  # the Retry-After of the 503 a status report gets
    only: frozenset[str] = frozenset()
    skip: frozenset[str] = frozenset()

    def wanted(self, name: str) -> bool:
        return (not self.only or name in self.only) and name not in self.skip

    @property
    def hard_timeout(self) -> float:
        """How long the portal waits for a HANDLER: longer than the limit, so a slow answer is still seen."""
        return max(self.handler_timeout * 4, self.handler_timeout + 5)


def unknown_names(names: Iterable[str]) -> list[str]:
    return [name for name in names if name not in BY_NAME]


@dataclass
class Sent:
    label: str
    id: int
    message_id: str
    author: int
    at: float
    attempt: dict[str, Any] | None = None


@dataclass
class Battery:
    portal: CheckPortal
    provider_url: str
    options: Options
    results: dict[str, CheckResult] = field(default_factory=dict)
    client_id: str = ""
    code: str = ""
    handler: str = ""
    sent: list[Sent] = field(default_factory=list)
    origin: int = 0  # the recorder's mark when this run began
    _security_started: float = 0.0
    known_ids: set[str] = field(default_factory=set)
    forged: dict[str, tuple[str, Any]] = field(default_factory=dict)  # check -> (message_id, answer)

    # -- results --------------------------------------------------------------------------------------

    def _set(self, name: str, outcome: Outcome, started: float, **texts: str) -> None:
        check = BY_NAME[name]
        self.results[name] = CheckResult(
            name, check.title, outcome, check.rule, check.source, seconds=time.monotonic() - started, **texts
        )

    def passed(self, name: str, started: float, note: str = "") -> None:
        self._set(name, Outcome.PASS, started, happened=note)

    def failed(self, name: str, started: float, expected: str, happened: str, fix: str) -> None:
        self._set(name, Outcome.FAIL, started, expected=expected, happened=happened, fix=fix)

    def not_applicable(self, names: Iterable[str], why: str) -> None:
        now = time.monotonic()
        for name in names:
            if name not in self.results:
                self._set(name, Outcome.NOT_APPLICABLE, now, happened=why)

    def verdict(self, name: str, started: float, problem: str | None, expected: str, fix: str, note: str = "") -> None:
        if problem is None:
            self.passed(name, started, note)
        else:
            self.failed(name, started, expected, problem, fix)

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> None:
        if not self._install():
            self.not_applicable(NAMES, "the app registered no sender, so there is nothing to send through")
            return
        if any(self.options.wanted(n) for n in NAMES if n.startswith(("handler.", "status.", "security."))):
            self._sends()
            self._repeat_and_security()
        if self.options.wanted("robust.retry_after"):
            self._retry_after()
        if self.options.wanted("robust.expired_token"):
            self._expired_token()
        self._update()
        self._uninstall()
        self._judge_security()

    def _install(self) -> bool:
        started = time.monotonic()
        mark = self.origin = self.portal.rest.mark()
        app = self.portal.install(self.provider_url)
        self.client_id = app.client_id
        self.verdict(
            "install.answered",
            started,
            None if app.onappinstall_delivered else app.onappinstall_detail,
            "a 2xx answer to ONAPPINSTALL",
            "Answer the install event with 200 once it is handled (and register the senders before answering).",
        )
        codes = self._wait_for_senders(set())
        adds = self.portal.rest.since(mark, SENDER_ADD)
        event_tokens = self.portal.event_tokens(self.client_id)
        problem = None
        if not adds:
            problem = "no messageservice.sender.add call came after ONAPPINSTALL"
        elif not codes:
            refused = [c.refusal for c in adds if not c.ok]
            problem = "every sender.add was refused: " + "; ".join(refused[:3])
        elif any(c.ok and c.token not in event_tokens for c in adds):
            problem = "sender.add was called with a token that is not the install event's auth[access_token]"
        self.verdict(
            "install.senders",
            started,
            problem,
            "messageservice.sender.add with CODE, TYPE=SMS, HANDLER and NAME, using the event's access token",
            "On ONAPPINSTALL call messageservice.sender.add with the event's auth[access_token] and valid fields.",
            note=f"registered {', '.join(codes)}" if codes else "",
        )
        if not codes:
            return False
        senders = {s.code: s for s in self.portal.senders(self.client_id)}
        self.code = sorted(codes)[0]
        self.handler = senders[self.code].handler
        return True

    def _wait_for_senders(self, before: set[str]) -> list[str]:
        deadline = time.monotonic() + self.options.report_timeout
        while True:
            codes = self.portal.sender_codes(self.client_id)
            if codes and set(codes) >= before:
                return codes
            if time.monotonic() > deadline:
                return codes
            time.sleep(0.05)

    # -- sending --------------------------------------------------------------------------------------

    def _send(self, label: str, to: str, body: str, *, user_id: int = 1, **params: Any) -> Sent:
        answer = self.portal.send(f"{self.client_id}|{self.code}", to, body, user_id=user_id, **params)
        sent = Sent(label, int(answer["ID"]), str(answer["MESSAGE_ID"]), user_id, time.monotonic())
        self.known_ids.add(sent.message_id)
        self.sent.append(sent)
        return sent

    def _reports(self, mark: int | None = None) -> list[RestCall]:
        """Status reports since `mark`, or since this run began (a portal may serve several runs)."""
        return self.portal.rest.since(self.origin if mark is None else mark, STATUS_UPDATE)

    def _for(self, sent: Sent, reports: list[RestCall]) -> list[RestCall]:
        return [r for r in reports if r.params.get("MESSAGE_ID") == sent.message_id]

    def _stranger(self, message_id: Any) -> bool:
        """A MESSAGE_ID that is none of the portal's messages nor of the forged calls (e.g. a numeric id)."""
        return message_id not in self.known_ids and all(message_id != forged for forged, _ in self.forged.values())

    def _unattributed(self, reports: list[RestCall]) -> list[RestCall]:
        return [r for r in reports if self._stranger(r.params.get("MESSAGE_ID"))]

    def _settled(self, messages: list[Sent], mark: int) -> bool:
        """Each message has a final report or a refused one (after which most apps stop), or an unknown id stands in."""
        reports = self._reports(mark)
        open_ = [
            s for s in messages if not any(r.params.get("STATUS") in FINAL or not r.ok for r in self._for(s, reports))
        ]
        strangers = {str(r.params.get("MESSAGE_ID")) for r in self._unattributed(reports)}
        return len(open_) <= len(strangers)

    def _wait_settled(self, messages: list[Sent], mark: int) -> None:
        self.portal.rest.wait(lambda: self._settled(messages, mark), self.options.report_timeout)

    def _sends(self) -> None:
        started = time.monotonic()
        mark = self.portal.rest.mark()
        crm = self._send("crm", "+15550001234", "Hello from a CRM card", BINDINGS=[{"OWNER_TYPE_ID": 3, "OWNER_ID": 7}])
        bizproc = self._send(
            "bizproc",
            "+15550001234",
            "Hello from an automation rule",
            MODULE_ID="bizproc",
            WORKFLOW_ID="59ce38567ff2a5.26351167",
            DOCUMENT_ID=["crm", "CCrmDocumentLead", "LEAD_98"],
            DOCUMENT_TYPE=["crm", "CCrmDocumentLead", "LEAD"],
        )
        texts = [self._send(label, "+15550001234", text) for label, text in TEXTS.items()]
        phones = [self._send(phone, phone, f"To {phone}") for phone in PHONES]
        batch = [crm, bizproc, *texts, *phones]
        for sent in batch:
            sent.attempt = self.portal.first_attempt(sent.id, self.options.hard_timeout + 5)
        self._judge_answers("handler.crm", started, [crm])
        self._judge_answers("handler.bizproc", started, [bizproc])
        self._judge_answers("handler.texts", started, texts)
        self._judge_answers("handler.phones", started, phones)
        limit_ms = self.options.handler_timeout * 1000
        slow = [s for s in batch if s.attempt and (s.attempt["DURATION_MS"] or 0) > limit_ms]
        self.verdict(
            "handler.timely",
            started,
            "; ".join(f"{s.label}: {s.attempt['DURATION_MS']:.0f} ms" for s in slow if s.attempt) or None,
            f"every HANDLER answer within {self.options.handler_timeout:g} s",
            "Answer the HANDLER at once (queue the sending) and report the status later.",
        )
        self._wait_settled(batch, mark)
        self._judge_reports(started, batch, self._reports(mark))

    def _judge_answers(self, name: str, started: float, batch: list[Sent]) -> None:
        problems = []
        for sent in batch:
            attempt = sent.attempt
            if attempt is None:
                problems.append(f"{sent.label}: no HANDLER attempt was made")
            elif not (attempt["HTTP_STATUS"] and 200 <= attempt["HTTP_STATUS"] < 300):
                answer = f"HTTP {attempt['HTTP_STATUS']}" if attempt["HTTP_STATUS"] else attempt["ERROR"]
                problems.append(f"{sent.label}: {answer} {attempt['RESPONSE'] or ''}".strip())
        self.verdict(
            name,
            started,
            "; ".join(problems) or None,
            "a 2xx answer",
            "Parse the form body as PHP's parse_str does (UTF-8, brackets) and answer 200 for any well-formed call.",
        )

    def _judge_reports(self, started: float, batch: list[Sent], reports: list[RestCall]) -> None:
        def listing(calls: list[RestCall], what: Callable[[RestCall], str]) -> str:
            """The distinct problems, each with how often it came (the first three)."""
            counts: dict[str, int] = {}
            for call in calls:
                counts[what(call)] = counts.get(what(call), 0) + 1
            shown = [f"{text} ({n} reports)" if n > 1 else text for text, n in list(counts.items())[:3]]
            more = len(counts) - len(shown)
            return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")

        if not reports:
            self.not_applicable(
                ("status.code", "status.message_id", "status.value", "status.token", "status.order", "status.accepted"),
                "the app made no status report",
            )
        no_code = [r for r in reports if r.params.get("CODE") != self.code]
        if reports:
            self.verdict(
                "status.code",
                started,
                listing(no_code, lambda r: f"CODE={r.params.get('CODE')!r}, portal: {r.refusal if not r.ok else 'ok'}")
                or None,
                f"CODE={self.code!r} in every report",
                "Send CODE (the HANDLER call's `code`) with every messageservice.message.status.update.",
            )
        bad_id = [r for r in reports if self._stranger(r.params.get("MESSAGE_ID"))]
        if reports:
            self.verdict(
                "status.message_id",
                started,
                listing(
                    bad_id,
                    lambda r: (
                        f"MESSAGE_ID={str(r.params.get('MESSAGE_ID'))[:40]!r}"
                        + (f", portal: {r.refusal}" if not r.ok else "")
                    ),
                )
                or None,
                "MESSAGE_ID = the HANDLER call's message_id (32 hex)",
                "Report with the message_id the HANDLER call carried, exactly as received.",
            )
        bad_status = [r for r in reports if r.params.get("STATUS") not in STATUSES]
        if reports:
            self.verdict(
                "status.value",
                started,
                listing(bad_status, lambda r: f"STATUS={r.params.get('STATUS')!r}") or None,
                "STATUS one of queued, sent, delivered, undelivered, failed",
                "Map the carrier's states to those five lower-case values.",
            )
        if reports:
            self._judge_tokens(started, reports)
            self._judge_order(started, batch, reports)
        well_formed = [
            r
            for r in reports
            if r not in no_code and r not in bad_id and r not in bad_status and r.injected is None and r.token
        ]
        refused = [r for r in well_formed if not r.ok and r.error not in AUTH_ERRORS]
        if reports:
            self.verdict(
                "status.accepted",
                started,
                listing(refused, lambda r: f"{r.params.get('STATUS')}: {r.refusal}") or None,
                "{result: true} for every report",
                "Read the answer of status.update and act on error / error_description.",
            )
        self._judge_timely(started, batch, reports)

    def _judge_tokens(self, started: float, reports: list[RestCall]) -> None:
        from messageservice.core.tokens import lookup_access_token

        event_tokens = self.portal.event_tokens(self.client_id)
        tokens = {r.token for r in reports if r.token}

        async def owners(core: Core) -> dict[str, tuple[str, int] | None]:
            found = {}
            for token in tokens:
                auth = await lookup_access_token(core, token)
                found[token] = (auth.client_id, auth.user_id) if auth is not None else None
            return found

        known = self.portal.run(owners)
        authors = {s.message_id: s.author for s in self.sent}
        problems = []
        for r in reports:
            if not r.token:
                problems.append("a report without auth (no access token)")
            elif r.token in event_tokens:
                problems.append("a report with the install event's token instead of the HANDLER call's")
            elif known.get(r.token) is None or known[r.token][0] != self.client_id:  # type: ignore[index]
                problems.append(f"a report with a token the portal did not give to this app ({r.refusal})")
            elif r.params.get("MESSAGE_ID") in authors and known[r.token][1] != authors[r.params["MESSAGE_ID"]]:  # type: ignore[index]
                problems.append("a report with the token of another message's author")
        self.verdict(
            "status.token",
            started,
            "; ".join(sorted(set(problems))) or None,
            "auth = the HANDLER call's auth[access_token]",
            "Report with auth[access_token] and auth[client_endpoint] of the HANDLER call the report is about.",
        )

    def _judge_order(self, started: float, batch: list[Sent], reports: list[RestCall]) -> None:
        by_id: dict[str, list[str]] = {}
        for r in reports:
            status = r.params.get("STATUS")
            if isinstance(status, str) and status in STATUSES:
                by_id.setdefault(str(r.params.get("MESSAGE_ID")), []).append(status)
        problems = [f"{' -> '.join(seq)}" for seq in by_id.values() if backward(seq)]
        self.verdict(
            "status.order",
            started,
            "; ".join(problems[:3]) or None,
            "queued -> sent -> delivered|undelivered|failed, never back",
            "Report a status only when it moves the message forward; drop late or repeated carrier callbacks.",
        )

    def _judge_timely(self, started: float, batch: list[Sent], reports: list[RestCall]) -> None:
        limit = self.options.report_timeout
        late = [s for s in batch if not any(r.at - s.at <= limit for r in self._for(s, reports))]
        early = [r for r in self._unattributed(reports) if r.at - batch[0].at <= limit]
        strangers = {str(r.params.get("MESSAGE_ID")) for r in early}
        problem = None
        if len(late) > len(strangers):
            problem = f"{len(late) - len(strangers)} of {len(batch)} messages had no status report within {limit:g} s"
        self.verdict(
            "status.timely",
            started,
            problem,
            f"a status report for every message within {limit:g} s",
            "Report queued (or the final status) as soon as the carrier answers, with the HANDLER call's token.",
        )

    # -- a repeat, and calls that are not the portal's ------------------------------------------------

    def _repeat_and_security(self) -> None:
        started = time.monotonic()
        crm = next(s for s in self.sent if s.label == "crm")
        view = self.portal.message(crm.id)
        before = self._for(crm, self._reports())
        mark = self.portal.rest.mark()
        timeout = self.options.hard_timeout
        repeat = self.portal.post_handler_call(self.client_id, self.handler, view, timeout=timeout)
        forged_ids = {"security.wrong_token": secrets.token_hex(16), "security.other_app": secrets.token_hex(16)}
        tokens = {"security.wrong_token": secrets.token_hex(16), "security.other_app": self.portal.other_app_token()}
        answers = {}
        self.forged = {name: (forged_id, None) for name, forged_id in forged_ids.items()}
        for name, forged_id in forged_ids.items():
            forged = {**view, "MESSAGE_ID": forged_id}
            answers[name] = self.portal.post_handler_call(
                self.client_id, self.handler, forged, application_token=tokens[name], timeout=timeout
            )
        # A genuine message after them: once it is reported on, the calls before it have had their turn.
        probe = self._send("probe", "+15550009999", "After the repeat")
        self._wait_settled([probe], mark)
        after = self._reports(mark)
        ranks = [STATUSES.get(str(r.params.get("STATUS")), 0) for r in before]
        reached = max(ranks, default=0)
        finals = {r.params.get("STATUS") for r in before if r.params.get("STATUS") in FINAL}
        contradicting = [
            r
            for r in self._for(crm, after)
            if STATUSES.get(str(r.params.get("STATUS")), 0) < reached
            or (r.params.get("STATUS") in FINAL and finals and r.params.get("STATUS") not in finals)
        ]
        problem = None
        if not repeat.ok:
            problem = f"the repeat was answered {repeat.describe()}"
        elif contradicting:
            seq = " -> ".join(str(r.params.get("STATUS")) for r in [*before, *self._for(crm, after)])
            problem = f"after the repeat the app reported again: {seq}"
        self.verdict(
            "handler.repeat",
            started,
            problem,
            "a 2xx answer and no status report going back",
            "Keep the message_ids you have taken and answer a repeat 200 without sending it again.",
        )
        self.forged = {name: (forged_ids[name], answers[name]) for name in forged_ids}
        self._security_started = started

    def _judge_security(self) -> None:
        """At the end: a forged call had the whole run to be acted on."""
        reports = self._reports()
        for name, (forged_id, answer) in self.forged.items():
            acted = [r for r in reports if r.params.get("MESSAGE_ID") == forged_id]
            note = f"answered {answer.describe()}" + ("" if not answer.ok else " (a 401/403 is better)")
            self.verdict(
                name,
                self._security_started,
                f"the app reported {acted[0].params.get('STATUS')!r} for it (it was {note})" if acted else None,
                "no status report for the call (and a non-2xx answer)",
                "Compare auth[application_token] with the one saved from ONAPPINSTALL/ONAPPUPDATE; answer 403 if not.",
                note=note,
            )

    # -- robustness -----------------------------------------------------------------------------------

    def _ours(self, sent_id: Callable[[], str | None]) -> Callable[[RestCall], bool]:
        """A status report about the scenario's message (or one whose MESSAGE_ID is no message of ours)."""

        def matches(call: RestCall) -> bool:
            if call.method != STATUS_UPDATE:
                return False
            message_id = call.params.get("MESSAGE_ID")
            return message_id == sent_id() or self._stranger(message_id)

        return matches

    def _retry_after(self) -> None:
        started = time.monotonic()
        target: list[str] = []
        hook = self.portal.rest.query_limit(self._ours(lambda: target[0] if target else None), self.options.retry_after)
        sent = self._send("retry-after", "+15550004321", "The portal is busy")
        target.append(sent.message_id)
        rest = self.portal.rest
        window = self.options.report_timeout + self.options.retry_after
        if not rest.wait(lambda: bool(hook.fired), self.options.report_timeout):
            rest.remove(hook)
            self.not_applicable(["robust.retry_after"], "the app made no status report to answer with 503")
            return
        refused = hook.fired[0]

        def retried() -> list[RestCall]:
            return [
                c
                for c in rest.since(refused.seq + 1, STATUS_UPDATE)
                if c.params.get("MESSAGE_ID") == refused.params.get("MESSAGE_ID")
                and c.params.get("STATUS") == refused.params.get("STATUS")
            ]

        rest.wait(lambda: bool(retried()), window)
        again = retried()
        note = ""
        if again:
            note = f"retried after {again[0].at - refused.at:.1f} s (Retry-After: {self.options.retry_after})"
        self.verdict(
            "robust.retry_after",
            started,
            None if again else f"the {refused.params.get('STATUS')!r} report answered 503 was not sent again",
            "the same report again, after Retry-After seconds",
            "On 503 (and 429) wait Retry-After seconds and send the report again; give up only after a few tries.",
            note=note,
        )

    def _expired_token(self) -> None:
        started = time.monotonic()
        rest = self.portal.rest
        # Authors of their own: the portal hands each author's token to every call for a while.
        first_user, second_user = self.portal.add_admin("Token check"), self.portal.add_admin("Token check 2")
        target: list[str] = []
        hook = rest.expire(self._ours(lambda: target[0] if target else None))
        first = self._send("expired-token", "+15550005678", "This token expires", user_id=first_user)
        target.append(first.message_id)
        try:
            if not rest.wait(lambda: bool(hook.fired), self.options.report_timeout):
                self.not_applicable(["robust.expired_token"], "the app made no status report to expire the token of")
                return
            expired = hook.fired[0].token
            mark = rest.mark()
            second = self._send("fresh-token", "+15550005679", "This token is fresh", user_id=second_user)
            self.known_ids.add(second.message_id)

            def reports() -> list[RestCall]:
                calls = rest.since(mark, STATUS_UPDATE)
                return [
                    c
                    for c in calls
                    if c.params.get("MESSAGE_ID") in (second.message_id,)
                    or c.params.get("MESSAGE_ID") not in self.known_ids
                ]

            rest.wait(
                lambda: any(c.token != expired for c in reports()) or any(c.token == expired for c in reports()),
                self.options.report_timeout,
            )
            seen = reports()
            problem = None
            if not seen:
                problem = f"no status report for the next message within {self.options.report_timeout:g} s"
            elif any(c.token == expired for c in seen):
                problem = "the next message was reported with the expired token, not its own call's"
            self.verdict(
                "robust.expired_token",
                started,
                problem,
                "the next message reported with its own HANDLER call's token",
                "Take auth[access_token] from each HANDLER call; never keep one token for later calls.",
            )
        finally:
            rest.remove(hook)

    # -- lifecycle ------------------------------------------------------------------------------------

    def _update(self) -> None:
        if not self.options.wanted("update.reregisters"):
            return
        started = time.monotonic()
        before = set(self.portal.sender_codes(self.client_id))
        outcome = self.portal.update(self.client_id, self.options.hard_timeout)
        codes = set(self._wait_for_senders(before))
        missing = sorted(before - codes)
        problem = None
        if missing:
            problem = f"after ONAPPUPDATE ({outcome.detail}) the senders {', '.join(missing)} were not registered again"
        self.verdict(
            "update.reregisters",
            started,
            problem,
            f"the senders {', '.join(sorted(before))} registered again",
            "Handle ONAPPUPDATE as ONAPPINSTALL: register the senders again and save the new application_token.",
        )

    def _uninstall(self) -> None:
        if not self.options.wanted("uninstall.answered"):
            return
        started = time.monotonic()
        outcome = self.portal.uninstall(self.client_id, self.options.hard_timeout)
        self.verdict(
            "uninstall.answered",
            started,
            None if outcome.delivered else outcome.detail,
            "a 2xx answer to ONAPPUNINSTALL",
            "Answer ONAPPUNINSTALL with 200 (after checking its application_token) and forget the installation.",
        )


def backward(statuses: list[str]) -> bool:
    """Whether a sequence of reported statuses goes back, or names two different end states."""
    ranks = [STATUSES[s] for s in statuses]
    finals = {s for s in statuses if s in FINAL}
    return any(b < a for a, b in itertools.pairwise(ranks)) or len(finals) > 1


def check_provider(provider_url: str, options: Options | None = None, *, portal: CheckPortal | None = None) -> Report:
    """Run the battery against the app at `provider_url` (its install URL) on `portal`, or on a throwaway one."""
    options = options or Options()
    started = time.monotonic()
    if portal is None:
        with tempfile.TemporaryDirectory(prefix="check-provider-") as folder:
            settings = throwaway_settings(Path(folder), handler_timeout=options.hard_timeout)
            with CheckPortal(settings) as own:
                return _run(own, provider_url, options, started)
    return _run(portal, provider_url, options, started)


def _run(portal: CheckPortal, provider_url: str, options: Options, started: float) -> Report:
    battery = Battery(portal, provider_url, options)
    battery.run()
    results = [battery.results[name] for name in NAMES if name in battery.results and options.wanted(name)]
    return Report(provider_url, portal.base_url, results, time.monotonic() - started)
