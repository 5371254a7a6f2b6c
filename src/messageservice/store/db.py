"""Schema migration for both supported engines (the store itself is store/store.py)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from messageservice.config import normalize_database_url
from messageservice.store.failures import store_errors
from messageservice.store.sqlite import prepare_file, sqlite_file

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

__all__ = ["alembic_config", "migrate", "sqlite_file"]


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' would be read as interpolation by configparser.
    config.set_main_option("sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Bring the schema to the newest revision. Safe to run again. Fails with StoreError."""
    path = sqlite_file(normalize_database_url(database_url))
    with store_errors():
        if path is not None:
            prepare_file(path)  # owner-only before SQLite creates it
        command.upgrade(alembic_config(database_url), "head")
