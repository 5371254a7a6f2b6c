"""The one way a command reaches the portal: read the settings, migrate, open the core, run the work, close.

Nothing here maps errors: whatever the work raises goes up to the command group (see root.py), which
turns it into one line and an exit code through errors.describe, the same for every command.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from messageservice.cli import errors

if TYPE_CHECKING:
    from messageservice.config import Settings
    from messageservice.core.context import Core

T = TypeVar("T")


def load_settings() -> Settings:
    """This invocation's settings, read now (not a cached copy); a value that does not parse is a SettingsError."""
    from pydantic import ValidationError

    from messageservice.config import SettingsError, get_settings

    get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = str(problem["loc"][0]) if problem["loc"] else "settings"
        raise SettingsError(
            f"MESSAGESERVICE_{field.upper()}", f"{problem['msg']} (got {problem.get('input')!r})"
        ) from None
    errors.note_database(settings.database_url)
    return settings


def migrate(settings: Settings) -> None:
    """Bring the schema up to date (every command does, so that a fresh database just works)."""
    from messageservice.store.db import migrate as upgrade

    upgrade(settings.database_url)


def run(
    work: Callable[[Core], Awaitable[T]],
    settings: Settings | None = None,
    *,
    upgrade: bool = True,
    uvloop: bool = False,
) -> T:
    """Run one piece of core work against the portal's database and close everything after it.

    `uvloop`: for long-running work that makes many HTTP calls (the worker), as `serve` gets it from uvicorn.
    """
    import asyncio

    from messageservice.core.context import Core

    settings = settings or load_settings()
    if upgrade:
        migrate(settings)

    async def main() -> T:
        core = Core.open(settings)
        try:
            return await work(core)
        finally:
            await core.close()

    if uvloop:
        import uvloop as fast_loops

        return fast_loops.run(main())
    return asyncio.run(main())
