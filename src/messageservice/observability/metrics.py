"""What this process did, as Prometheus counters and histograms (docs/metrics.md lists them).

One set per store (so per process in production, per portal in the in-process tests), kept in a
registry of its own. The hot paths (a REST call, a send) cost a dict lookup and an increment: label
children are cached by their key, never rebuilt per call. With MESSAGESERVICE_METRICS=off nothing
is counted at all.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram

from messageservice.config import MetricsAccess
from messageservice.delivery.decision import Dead, Decision, Defer, Done, Retry
from messageservice.delivery.origin import origin
from messageservice.delivery.retry import Verdict

if TYPE_CHECKING:
    from messageservice.core.context import Core
    from messageservice.delivery.jobs import Result
    from messageservice.store.store import Store

# A `_created` series beside every counter doubles the page for nothing an alert uses.
prometheus_client.disable_created_metrics()

REST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Where a scope notes the REST method's label (rest/endpoint.py), for the metrics and the access line.
REST_METHOD = "messageservice.rest_method"
OTHER = "other"

# Outcomes of an attempt as the metrics and the attempt log lines name them.
DELIVERED = "delivered_to_handler"
RETRY = "retry"
DEAD = "dead"
REFUSED = "refused"  # the SSRF guard refused the address: never sent, a dead letter at once
IGNORED = "failed_ignored"  # the strict profile: one attempt, its failed answer ignored
EVENT_DELIVERED = "delivered"


def attempt_outcome(result: Result, decision: Decision) -> str | None:
    """The outcome label of one recorded attempt; None when it was no attempt (deferred, nowhere to go).

    Exactly the attempts that get a row in the `attempts` table are counted."""
    if result.job.url is None or isinstance(decision, Defer):
        return None
    if isinstance(decision, Done):
        return DELIVERED if decision.error is None else IGNORED
    if isinstance(decision, Retry):
        return RETRY
    if isinstance(decision, Dead):
        refused = result.outcome.verdict is Verdict.FAIL and result.outcome.http_status is None
        return REFUSED if refused else DEAD
    return None


class ProcessMetrics:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted_total = Counter(
            "messageservice_messages_accepted_total",
            "Messages this process accepted and stored (message.send, CLI, console), by sender.",
            ["sender"],
            registry=r,
        )
        self.status_changes_total = Counter(
            "messageservice_message_status_changes_total",
            "Message status changes this process made and recorded, by sender and the status reached.",
            ["sender", "status"],
            registry=r,
        )
        self.attempts_total = Counter(
            "messageservice_delivery_attempts_total",
            "HANDLER calls this process made and recorded, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "messageservice_delivery_attempt_duration_seconds",
            "How long HANDLER calls took, by handler origin.",
            ["origin"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.rest_total = Counter(
            "messageservice_rest_requests_total",
            "REST calls this process answered, by method and HTTP status.",
            ["method", "status"],
            registry=r,
        )
        self.rest_seconds = Histogram(
            "messageservice_rest_request_duration_seconds",
            "How long REST calls took to answer, by method.",
            ["method"],
            buckets=REST_BUCKETS,
            registry=r,
        )
        self.app_events_total = Counter(
            "messageservice_app_events_total",
            "App event calls (ONAPPINSTALL, ...) this process made and recorded, by event and outcome.",
            ["event", "outcome"],
            registry=r,
        )
        self._accepted: dict[str, Any] = {}
        self._statuses: dict[tuple[str, str], Any] = {}
        self._rest: dict[str, dict[int, tuple[Any, Any]]] = {}
        self._attempts: dict[str, Any] = {}
        self._origins: dict[str, Any] = {}  # handler URL -> its origin's histogram child
        self._events: dict[tuple[str, str], Any] = {}

    def accepted(self, sender: str) -> None:
        if not self.enabled:
            return
        child = self._accepted.get(sender)
        if child is None:
            child = self._accepted[sender] = self.accepted_total.labels(sender)
        child.inc()

    def status_changed(self, sender: str, status: str, count: int = 1) -> None:
        """`count` messages of `sender` moved to `status`, and the move is committed."""
        if not self.enabled or count <= 0:
            return
        child = self._statuses.get((sender, status))
        if child is None:
            child = self._statuses[(sender, status)] = self.status_changes_total.labels(sender, status)
        child.inc(count)

    def rest_call(self, method: str, status: int, seconds: float) -> None:
        if not self.enabled:
            return
        # Nested by method, then status: no key tuple is built per call.
        by_status = self._rest.get(method)
        if by_status is None:
            by_status = self._rest[method] = {}
        children = by_status.get(status)
        if children is None:
            children = by_status[status] = (
                self.rest_total.labels(method, str(status)),
                self.rest_seconds.labels(method),
            )
        children[0].inc()
        children[1].observe(seconds)

    def recorded(self, kind: str, results: Iterable[Result], decisions: dict[int, Decision]) -> None:
        """A batch of attempts whose outcomes were written (the outbox engine calls this after its write)."""
        if not self.enabled:
            return
        for result in results:
            outcome = attempt_outcome(result, decisions[result.job.key])
            if outcome is None:
                continue
            if kind == "handler":
                self._attempt(outcome).inc()
                self._duration(result.job.url or "").observe(result.duration_ms / 1000)
            else:
                self._event(result.job.label, EVENT_DELIVERED if outcome == DELIVERED else outcome).inc()

    def _attempt(self, outcome: str) -> Any:
        child = self._attempts.get(outcome)
        if child is None:
            child = self._attempts[outcome] = self.attempts_total.labels(outcome)
        return child

    def _duration(self, url: str) -> Any:
        child = self._origins.get(url)
        if child is None:
            if len(self._origins) > 10_000:  # many URLs, few origins: the cache only spares urlsplit
                self._origins.clear()
            child = self._origins[url] = self.attempt_seconds.labels(origin(url))
        return child

    def _event(self, event: str, outcome: str) -> Any:
        child = self._events.get((event, outcome))
        if child is None:
            child = self._events[(event, outcome)] = self.app_events_total.labels(event, outcome)
        return child


_BY_STORE: weakref.WeakKeyDictionary[Store, ProcessMetrics] = weakref.WeakKeyDictionary()


def metrics_for(core: Core) -> ProcessMetrics:
    """This process's metrics (one set per store, made on first use)."""
    found = _BY_STORE.get(core.store)
    if found is None:
        found = _BY_STORE[core.store] = ProcessMetrics(core.settings.metrics != MetricsAccess.OFF)
    return found
