"""Retry schedules as people write them: the server's setting and a sender's own RETRY_SCHEDULE."""

from __future__ import annotations

MAX_SCHEDULE_STEPS = 20
MAX_SCHEDULE_DELAY = 86_400.0


def parse_schedule(text: str) -> list[float] | None:
    """Delays in seconds, comma-separated ("1,5,30"); None unless each is a number in 0..86400 (20 at most)."""
    parts = [part.strip() for part in text.split(",")]
    if not text.strip() or len(parts) > MAX_SCHEDULE_STEPS:
        return None
    delays = []
    for part in parts:
        try:
            delay = float(part)
        except ValueError:
            return None
        if not 0 <= delay <= MAX_SCHEDULE_DELAY:  # also refuses nan
            return None
        delays.append(delay)
    return delays
