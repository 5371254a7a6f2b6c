"""shared limits: the REST leaky buckets, operating time and the console's sign-in brake, for every process

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("granted", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_rate_buckets"),
    )
    op.create_table(
        "signin_brakes",
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_signin_brakes"),
    )
    op.create_table(
        "operating_seconds",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("method", sa.String(100), nullable=False),
        sa.Column("minute", sa.Integer(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", "method", "minute", name="pk_operating_seconds"),
    )


def downgrade() -> None:
    op.drop_table("operating_seconds")
    op.drop_table("signin_brakes")
    op.drop_table("rate_buckets")
