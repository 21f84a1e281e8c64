"""alert outbox: claims, channel names instead of URLs, alerts waiting for a channel pending

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from monitord.redact import mask_url

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A copy is claimed before it is sent, so that two delivery passes never send it twice.
    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("claimed_until", sa.DateTime(), nullable=True))
        # A paced chat channel gets several alerts in one digest message: its key.
        batch_op.add_column(sa.Column("sent_in", sa.String(length=200), nullable=True))
    # An alert whose audience had no channel was marked "nobody" and never retried; it now
    # waits, pending, until a channel is configured.
    op.execute(sa.text("update alert_outbox set state = 'pending' where state = 'nobody'"))
    # A copy of an alert kept its apprise URL, credentials and all. It now keeps its channel's
    # name and is sent to the URL configured now; the URL of an older copy is masked (a pending
    # one is still found by the hash in its idempotency key).
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("select id, channel from alert_outbox where channel like '%://%'")
    ).all()
    for row_id, channel in rows:
        masked = mask_url(channel)
        if masked != channel:
            connection.execute(
                sa.text("update alert_outbox set channel = :channel where id = :id"),
                {"channel": masked, "id": row_id},
            )


def downgrade() -> None:
    # A pending alert and a masked channel are valid in the older schema too (the masked URLs
    # are not restored: the secrets they held are gone for good). A copy being sent is pending.
    op.execute(sa.text("update alert_outbox set state = 'pending' where state = 'sending'"))
    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.drop_column("sent_in")
        batch_op.drop_column("claimed_until")
        batch_op.drop_column("claimed_by")
