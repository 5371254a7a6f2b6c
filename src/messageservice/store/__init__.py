"""Persistence: SQLAlchemy Core tables and the engine, for SQLite and PostgreSQL alike."""
