"""What every core service needs: the database, the settings, the secret box and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from messageservice.config import Settings, normalize_database_url
from messageservice.core.secrets import SecretBox
from messageservice.store.db import create_engine, sqlite_file
from messageservice.store.group_commit import GroupCommit
from messageservice.store.reads import PostgresReads, SqliteReads
from messageservice.store.writes import AsyncWrites, SqliteWrites


@dataclass
class Core:
    engine: AsyncEngine
    settings: Settings
    box: SecretBox
    reads: PostgresReads | SqliteReads
    writes: AsyncWrites | SqliteWrites
    group_commit: GroupCommit
    clock: Callable[[], float] = field(default=time.time)
    # Called after a commit that queued deliveries, so an idle dispatcher starts at once.
    queued_listeners: list[Callable[[], None]] = field(default_factory=list)

    @property
    def direct(self) -> PostgresReads | None:
        """PostgreSQL's bare asyncpg pool, for single statements that are atomic on their own."""
        return self.reads if isinstance(self.reads, PostgresReads) else None

    def notify_queued(self) -> None:
        for listener in self.queued_listeners:
            listener()

    @classmethod
    def open(cls, settings: Settings) -> Core:
        engine = create_engine(settings.database_url, settings.db_pool_size)
        url = normalize_database_url(settings.database_url)
        path = sqlite_file(url)
        writes = SqliteWrites(path) if path is not None else AsyncWrites(engine)
        return cls(
            engine=engine,
            settings=settings,
            box=SecretBox.from_settings(settings.secret_key, settings.data_dir),
            reads=SqliteReads(path) if path is not None else PostgresReads(url, settings.db_pool_size // 2),
            writes=writes,
            group_commit=GroupCommit(),
        )

    async def close(self) -> None:
        await self.writes.close()
        await self.reads.close()
        await self.engine.dispose()
