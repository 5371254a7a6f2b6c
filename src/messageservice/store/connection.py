"""A connection handed out by the store: an AsyncConnection's calls, with store errors only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from messageservice.store.failures import store_errors
from messageservice.store.features import Features

T = TypeVar("T")


class StoreConnection:
    """Wraps SQLAlchemy's AsyncConnection (or the SQLite writer's): every failure arrives as StoreError."""

    def __init__(self, inner: Any, features: Features) -> None:
        self._inner = inner
        self.features = features

    @property
    def dialect(self) -> Any:
        return self._inner.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        with store_errors():
            return await self._inner.execute(statement, parameters)

    async def scalar(self, statement: Any, parameters: Any = None) -> Any:
        with store_errors():
            return await self._inner.scalar(statement, parameters)

    async def run_sync(self, work: Callable[..., T], *args: Any) -> T:
        with store_errors():
            return await self._inner.run_sync(work, *args)

    async def commit(self) -> None:
        with store_errors():
            await self._inner.commit()

    async def execution_options(self, **options: Any) -> StoreConnection:
        with store_errors():
            return StoreConnection(await self._inner.execution_options(**options), self.features)

    @contextlib.asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """A savepoint: a failure inside the block undoes only the block."""
        with store_errors():
            async with self._inner.begin_nested():
                yield
