"""Fair shares of one dispatcher's call slots among apps, so that a misbehaving app slows only itself.

An app alone may hold three quarters of the slots: a quarter stays free for an app that turns up.
With several apps in flight each may hold an equal share. An app at its share is left out of the
next claim (its jobs wait in the queue, not in a slot), and a claim never takes more jobs than the
app with the least room left could take, so no app overshoots its share by a claim's worth.
"""

from __future__ import annotations

from collections.abc import Mapping


def app_share(slots: int, active_apps: int) -> int:
    """How many of `slots` one app may hold while `active_apps` apps (itself included) have calls in flight."""
    if active_apps <= 1:
        return max(1, slots - slots // 4)
    return max(1, slots // active_apps)


def apps_at_share(in_flight: Mapping[int, int], slots: int) -> list[int]:
    """Apps the next claim must skip: they hold their share already."""
    active = [app for app, count in in_flight.items() if count > 0]
    share = app_share(slots, len(active))
    return sorted(app for app in active if in_flight[app] >= share)


def claim_room(in_flight: Mapping[int, int], slots: int) -> int:
    """The most jobs one claim may take: the least room any app it could return has left.

    An app not yet in flight would join the active ones, so its room is the share among one more."""
    active = [app for app, count in in_flight.items() if count > 0]
    newcomer = app_share(slots, len(active) + 1)
    share = app_share(slots, len(active))
    rooms = [share - in_flight[app] for app in active if in_flight[app] < share]
    return max(1, min([newcomer, *rooms]))
