"""What a short claim tells the dispatcher: every due job belongs to what that claim skipped.

A claim skips apps that hold their share of the slots (delivery/fairness.py) and senders whose handler
cannot take a call (delivery/breaker.py). When such a claim comes back short, the due jobs left are
all theirs; claiming again while they are still skipped scans the same jobs and finds nothing. Under
a large backlog of one app that scan was the dispatcher's main cost (about 33 ms per claim on
PostgreSQL with 100,000 due jobs, claimed many times a second), and with a dead handler's backlog an
idle server spun on it. So the claim is left out until something can change its answer: a skipped
app or sender may take work again, new work arrives for anyone else, or a due time passes.

A due time passing (a retry, the sweep) proves nothing about whose job fell due, so the claim must look
again, and that look still reads every skipped job: PostgreSQL walks the due index past them all (about
100 ms with 700,000 due, on each of two workers every sweep: 46 us of PostgreSQL time per message sent
in the million-message bench). So after a due time the look waits until the time since the last one is
`1 / LOOK_SHARE` times what that one took: however large the backlog, claims that find nothing take at
most that share of the time. New work for others still ends the wait at once (it names its app and
sender); what waits is only a retry or a lease of another sender that fell due, a few seconds at most
with millions due.
"""

from __future__ import annotations

import time
from collections.abc import Collection

Work = Collection[tuple[int, int]]  # (app_id, sender_id) pairs

LOOK_SHARE = 0.05


class SkippedBacklog:
    def __init__(self) -> None:
        self._apps: frozenset[int] = frozenset()
        self._members: frozenset[int] = frozenset()
        self._known = False
        # The claim under way (what it skips), and whether work it may not have seen arrived meanwhile.
        self._claiming: tuple[frozenset[int], frozenset[int]] | None = None
        self._missed = False
        self._started = 0.0
        # When the last short claim that skipped something ended, and how long it took.
        self._looked_at = 0.0
        self._look_cost = 0.0

    def claim_started(
        self, skipping_apps: Collection[int], skipping_members: Collection[int], now: float | None = None
    ) -> None:
        self._claiming = (frozenset(skipping_apps), frozenset(skipping_members))
        self._missed = False
        self._started = time.monotonic() if now is None else now

    def claim_ended(self, short: bool, now: float | None = None) -> None:
        """A claim that took fewer jobs than it asked for: nothing else was due besides what it skipped,
        unless work for others was queued while it ran (it may have missed that)."""
        claiming, self._claiming = self._claiming, None
        if short and claiming is not None:
            self._apps, self._members = claiming
            self._known = bool(self._apps or self._members) and not self._missed
            if self._known:
                self._looked_at = time.monotonic() if now is None else now
                self._look_cost = self._looked_at - self._started

    def forget(self, now: float | None = None) -> bool:
        """A due time passed (a retry, the sweep): something the last claim did not see may be due. Done,
        and True, unless the last look was too recent for its cost (see the module's notes)."""
        now = time.monotonic() if now is None else now
        if self._known and now - self._looked_at < self._look_cost / LOOK_SHARE:
            return False
        self._known = False
        self._missed = True
        return True

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
