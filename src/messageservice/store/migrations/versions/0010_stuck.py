"""a per-sender time after which an accepted message without a final status is stuck (placeholder, filled by the operations work)

Revision ID: 0010
Revises: 0009
"""

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
