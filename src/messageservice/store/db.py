"""Engine creation and schema migration for both supported engines."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from messageservice.config import normalize_database_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def sqlite_file(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def configure_sqlite(engine: Engine) -> None:
    """Pragmas and transaction handling for every SQLite connection we open for writing."""

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the writer; foreign keys are off in SQLite unless asked.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # The driver would BEGIN only at the first write, leaving the reads before it outside the
        # transaction; we begin ourselves (SQLAlchemy's documented pysqlite recipe).
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn) -> None:  # type: ignore[no-untyped-def]
        # IMMEDIATE takes the write lock up front: check-then-write blocks are atomic, and a
        # waiting writer queues on busy_timeout instead of failing with SQLITE_BUSY_SNAPSHOT.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(database_url: str, pool_size: int = 32) -> AsyncEngine:
    url = normalize_database_url(database_url)
    path = sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url, connect_args={"timeout": 30}, pool_size=pool_size, max_overflow=pool_size // 2
        )

        configure_sqlite(engine.sync_engine)
        return engine
    # A pool smaller than the requests in flight closes and reopens connections all the time.
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size // 2)


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Bring the schema to the newest revision. Safe to run again."""
    path = sqlite_file(normalize_database_url(database_url))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "head")
