"""alert outbox: a channel's last minute read along an index of (state, delivered_at)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 22:00:00

Before each message to a paced chat channel, and before each digest, the alert worker counts
what the channel was sent in the last minute. The outbox is never purged and the only index
those queries could use was the one on state, which leads to every alert ever delivered: after
months of running each such pass read tens of thousands of rows. They are now read along an
index of (state, delivered_at), which leads to the last minute's deliveries alone.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_alert_outbox_state_delivered_at", ["state", "delivered_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_alert_outbox_state_delivered_at")
