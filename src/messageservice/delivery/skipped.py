"""What a short claim tells the dispatcher: every due job belongs to what that claim skipped.

A claim skips apps that hold their share of the slots (delivery/fairness.py) and senders whose handler
cannot take a call (delivery/breaker.py). When such a claim comes back short, the due jobs left are
all theirs; claiming again while they are still skipped scans the same jobs and finds nothing. Under
a large backlog of one app that scan was the dispatcher's main cost (about 33 ms per claim on
PostgreSQL with 100,000 due jobs, claimed many times a second), and with a dead handler's backlog an
idle server spun on it. So the claim is left out until something can change its answer: a skipped
app or sender may take work again, new work arrives for anyone else, or a due time passes.
"""

from __future__ import annotations

from collections.abc import Collection


class SkippedBacklog:
    def __init__(self) -> None:
        self._apps: frozenset[int] = frozenset()
        self._members: frozenset[int] = frozenset()
        self._known = False

    def claimed_short(self, skipped_apps: Collection[int], skipped_members: Collection[int]) -> None:
        """A claim took fewer jobs than it asked for: nothing else is due besides what it skipped."""
        self._apps, self._members = frozenset(skipped_apps), frozenset(skipped_members)
        self._known = bool(self._apps or self._members)

    def forget(self) -> None:
        """Something may be due that the last claim did not see (a due time passed, a sweep)."""
        self._known = False

    def queued(self, work: Collection[tuple[int, int]] | None) -> None:
        """New work, (app_id, sender_id) pairs: it changes nothing only when the last claim skipped it all."""
        if work is None or any(app not in self._apps and sender not in self._members for app, sender in work):
            self._known = False

    @property
    def known(self) -> bool:
        return self._known

    def covers(self, skipping_apps: Collection[int], skipping_members: Collection[int]) -> bool:
        """Whether a claim skipping these would find nothing: it skips at least what the short one did."""
        return self._known and self._apps.issubset(skipping_apps) and self._members.issubset(skipping_members)
