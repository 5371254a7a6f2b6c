"""delivery shared state: breakers per (app, origin) and dispatcher heartbeats

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery_breakers",
        sa.Column("app_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(1000), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("open_until", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("app_id", "origin", name=op.f("pk_delivery_breakers")),
    )
    op.create_table(
        "dispatchers",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatchers")),
    )


def downgrade() -> None:
    op.drop_table("dispatchers")
    op.drop_table("delivery_breakers")
