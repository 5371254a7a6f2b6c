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

Work = Collection[tuple[int, int]]  # (app_id, sender_id) pairs


class SkippedBacklog:
    def __init__(self) -> None:
        self._apps: frozenset[int] = frozenset()
        self._members: frozenset[int] = frozenset()
        self._known = False
        # The claim under way (what it skips), and whether work it may not have seen arrived meanwhile.
        self._claiming: tuple[frozenset[int], frozenset[int]] | None = None
        self._missed = False

    def claim_started(self, skipping_apps: Collection[int], skipping_members: Collection[int]) -> None:
        self._claiming = (frozenset(skipping_apps), frozenset(skipping_members))
        self._missed = False

    def claim_ended(self, short: bool) -> None:
        """A claim that took fewer jobs than it asked for: nothing else was due besides what it skipped,
        unless work for others was queued while it ran (it may have missed that)."""
        claiming, self._claiming = self._claiming, None
        if short and claiming is not None:
            self._apps, self._members = claiming
            self._known = bool(self._apps or self._members) and not self._missed

    def forget(self) -> None:
        """Something may be due that the last claim did not see (a due time passed, a sweep)."""
        self._known = False
        self._missed = True

    def queued(self, work: Work | None) -> None:
        """New work: it changes nothing only when it is all for what the claims skip."""
        if not _covered(work, self._apps, self._members):
            self._known = False
        if self._claiming is not None and not _covered(work, *self._claiming):
            self._missed = True

    @property
    def known(self) -> bool:
        return self._known

    def covers(self, skipping_apps: Collection[int], skipping_members: Collection[int]) -> bool:
        """Whether a claim skipping these would find nothing: it skips at least what the short one did."""
        return self._known and self._apps.issubset(skipping_apps) and self._members.issubset(skipping_members)


def _covered(work: Work | None, apps: frozenset[int], members: frozenset[int]) -> bool:
    return work is not None and all(app in apps or sender in members for app, sender in work)
