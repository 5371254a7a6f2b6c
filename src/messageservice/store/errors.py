"""The one error type the store raises: whatever the engine or driver said, callers see these."""

from __future__ import annotations


class StoreError(Exception):
    """A database operation failed. Edges map it once: REST envelope, console page, CLI line and exit code."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or cannot take writes now (full, read-only): try again later (503)."""


class StoreConflict(StoreError):
    """A unique key or another constraint refused the write (a race another caller won, say)."""
