"""What every core service needs: the database, the settings, the secret box and a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from messageservice.config import Settings
from messageservice.core.secrets import SecretBox
from messageservice.store.db import create_engine


@dataclass
class Core:
    engine: AsyncEngine
    settings: Settings
    box: SecretBox
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def open(cls, settings: Settings) -> Core:
        return cls(
            engine=create_engine(settings.database_url),
            settings=settings,
            box=SecretBox.from_settings(settings.secret_key, settings.data_dir),
        )

    async def close(self) -> None:
        await self.engine.dispose()
