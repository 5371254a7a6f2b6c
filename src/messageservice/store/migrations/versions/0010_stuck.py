"""a per-sender time after which an accepted message without a final status is stuck

senders.stuck_after_seconds: the sender's own time (NULL: MESSAGESERVICE_STUCK_AFTER_SECONDS; 0: never).
ix_messages_sent: the messages still "sent", by when they got there, so that counting the stuck ones
reads only those (a healthy provider moves them on) instead of every finished delivery.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SENT = 13  # core/statuses.py SENT.id, as it was when this revision was written


def upgrade() -> None:
    with op.batch_alter_table("senders") as batch:
        batch.add_column(sa.Column("stuck_after_seconds", sa.Float, nullable=True))
    where = sa.text(f"status_id = {SENT}")
    op.create_index("ix_messages_sent", "messages", ["updated_at"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_messages_sent", table_name="messages")
    with op.batch_alter_table("senders") as batch:
        batch.drop_column("stuck_after_seconds")
