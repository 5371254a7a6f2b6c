"""senders.retry_schedule: a provider's own retry delays (our extension of sender.add/update)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("senders") as batch:
        batch.add_column(sa.Column("retry_schedule", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("senders") as batch:
        batch.drop_column("retry_schedule")
