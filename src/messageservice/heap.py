"""Garbage-collector settings for a long-running server process."""

from __future__ import annotations

import gc


def settle_after_startup() -> None:
    """Freeze what start-up built and collect young objects less often.

    Imports, SQLAlchemy's statement caches and the method registry are long-lived; a full collection
    walked all of them again and again, and each was a pause that every request in flight waited out.
    Frozen objects are never scanned; request garbage is still collected (it has no cycles to speak of).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
