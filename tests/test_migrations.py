"""The migrations build exactly the schema that store/tables.py describes, on both engines."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from messageservice.core.context import Core
from messageservice.store.tables import metadata
from tests.portal import LivePortal


def test_migrated_schema_matches_the_tables(portal: LivePortal) -> None:
    async def differences(core: Core) -> list[Any]:
        async with core.engine.connect() as conn:
            return await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), metadata))

    assert portal.run(differences) == []
