"""alert outbox: alerts that waited for a channel are pending again

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-04 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # An alert whose audience had no channel was marked "nobody" and never retried; it now
    # waits, pending, until a channel is configured.
    op.execute(sa.text("update alert_outbox set state = 'pending' where state = 'nobody'"))


def downgrade() -> None:
    # Nothing to undo: a pending alert is valid in the older schema too.
    pass
