"""What every core service needs: the store, the settings, the secret box and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from messageservice.cache.memory import RestCache
from messageservice.config import Settings
from messageservice.core.secrets import SecretBox
from messageservice.store.group_commit import GroupCommit
from messageservice.store.sends import NewWork
from messageservice.store.store import DirectStatements, EngineFacade, Store, Writes


@dataclass
class Core:
    store: Store
    settings: Settings
    box: SecretBox
    group_commit: GroupCommit
    clock: Callable[[], float] = field(default=time.time)
    # Called after a commit that queued deliveries, so an idle dispatcher starts at once.
    # Called with the new work's (app_id, sender_id) pairs, or None: work for anyone.
    queued_listeners: list[Callable[[NewWork | None], None]] = field(default_factory=list)
    # Tokens, webhooks and sender codes every REST call reads (cache/): dropped by any process's change.
    cache: RestCache = field(default_factory=RestCache)

    # The older doors, kept as thin accessors over the store so that code written against them works:
    # `engine.begin()` is store.transaction(), `engine.connect()` store.connection(), `writes.run(fn)`
    # store.write(fn), `reads.fetch` store.fetch. New code asks the store by name.

    @property
    def engine(self) -> EngineFacade:
        return self.store.engine

    @property
    def reads(self) -> Store:
        return self.store

    @property
    def writes(self) -> Writes:
        return Writes(self.store)

    @property
    def direct(self) -> DirectStatements | None:
        """PostgreSQL's bare driver, for single statements that are atomic on their own."""
        return self.store.direct

    def notify_queued(self, work: NewWork | None = None) -> None:
        for listener in self.queued_listeners:
            listener(work)

    @classmethod
    def open(cls, settings: Settings) -> Core:
        return cls(
            store=Store(settings.database_url, settings.db_max_connections),
            settings=settings,
            box=SecretBox.from_settings(settings.secret_key, settings.data_dir),
            group_commit=GroupCommit(),
        )

    async def close(self) -> None:
        await self.store.close()
