"""`/ready`: whether this process can do its work now (database, schema, background loops)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, literal_column, select, table

from messageservice.background import BackgroundLoop
from messageservice.supervisor import describe

if TYPE_CHECKING:
    from messageservice.core.context import Core

# A probe must answer fast; a database slower than this is as good as unreachable for a request.
DATABASE_TIMEOUT_SECONDS = 2.0

ALIVE = select(literal_column("1"))
SCHEMA_VERSION = select(column("version_num")).select_from(table("alembic_version"))


@lru_cache
def schema_heads(database_url: str) -> frozenset[str]:
    """The newest migration(s) this code ships; read from the migration scripts once."""
    # Imported here: alembic (with mako and pygments) is a fifth of a server's start-up imports, and only
    # a /ready probe or `doctor` needs it.
    from alembic.script import ScriptDirectory

    from messageservice.store.db import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())


async def _database_versions(core: Core) -> frozenset[str]:
    # The read path: on SQLite a read-only connection, so a probe never waits for the write lock.
    await core.reads.fetch(ALIVE, {})
    try:
        rows = await core.reads.fetch(SCHEMA_VERSION, {})
    except Exception:  # no table: never migrated
        return frozenset()
    return frozenset(str(row[0]) for row in rows)


async def check_database(core: Core, timeout: float) -> dict[str, Any]:
    heads = schema_heads(core.settings.database_url)
    try:
        versions = await asyncio.wait_for(_database_versions(core), timeout)
    except TimeoutError:
        return {"database": {"ok": False, "error": f"no answer within {timeout:g} s"}}
    except Exception as exc:
        return {"database": {"ok": False, "error": describe(exc)}}
    schema = {"ok": versions == heads, "database": sorted(versions), "code": sorted(heads)}
    return {"database": {"ok": True}, "schema": schema}


async def readiness(
    core: Core, loops: Sequence[BackgroundLoop], timeout: float = DATABASE_TIMEOUT_SECONDS
) -> tuple[bool, dict[str, Any]]:
    """(ready, the JSON body): ready when the database answers, its schema is the code's, and every loop works."""
    body = await check_database(core, timeout)
    body.setdefault("schema", {"ok": False, "error": "database unreachable"})
    body["loops"] = {loop.name: loop.health.report() for loop in loops}
    ready = body["database"]["ok"] and body["schema"]["ok"] and all(r["ready"] for r in body["loops"].values())
    return ready, {"ready": ready, **body}
