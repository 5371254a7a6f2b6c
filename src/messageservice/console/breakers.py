"""The circuit breakers of this serving process's dispatcher (they live in its memory, not the database)."""

from __future__ import annotations

import time

from messageservice.background import BackgroundLoop
from messageservice.delivery.breaker import Gates
from messageservice.delivery.dispatcher import Dispatcher

NO_CALLS = "closed"


def breaker_states(loops: list[BackgroundLoop]) -> dict[str, str]:
    """Handler origin -> closed | open | half-open, as this process's dispatcher sees them now."""
    for loop in loops:
        if isinstance(loop, Dispatcher):
            return loop.gates.states(time.time())
    return {}


def breaker_of(handler: str, states: dict[str, str]) -> str:
    return states.get(Gates.origin(handler), NO_CALLS)
