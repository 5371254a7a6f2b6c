"""change counters that let every process drop cached tokens and senders

On SQLite every change to what the REST cache holds moves this one counter in its own transaction, and each
process compares it before using its cache (cache/freshness.py). PostgreSQL uses NOTIFY instead; the table
exists there too, so that both engines have one schema.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "cache_generations",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cache_generations"),
    )
    op.bulk_insert(table, [{"id": 1, "generation": 0}])


def downgrade() -> None:
    op.drop_table("cache_generations")
