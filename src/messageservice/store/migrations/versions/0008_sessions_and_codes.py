"""server-side console sessions and OAuth codes bound to their redirect_uri; refresh token families

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_seen_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_console_sessions_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("token_hash", name="pk_console_sessions"),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    with op.batch_alter_table("auth_codes") as batch:
        batch.add_column(sa.Column("redirect_uri", sa.String(length=1000), nullable=True))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("family", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("used_at", sa.Float(), nullable=True))
    with op.batch_alter_table("access_tokens") as batch:
        batch.add_column(sa.Column("family", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("access_tokens") as batch:
        batch.drop_column("family")
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("used_at")
        batch.drop_column("family")
    with op.batch_alter_table("auth_codes") as batch:
        batch.drop_column("redirect_uri")
    op.drop_index("ix_console_sessions_user_id", table_name="console_sessions")
    op.drop_table("console_sessions")
