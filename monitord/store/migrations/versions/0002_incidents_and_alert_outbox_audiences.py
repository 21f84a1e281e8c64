"""incidents and alert outbox audiences

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 02:10:28.312055
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("kind", sa.String(length=40), nullable=False, server_default="message")
        )
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=False, server_default="{}"))
        batch_op.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_alert_outbox_parent_id"), ["parent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_alert_outbox_state"), ["state"], unique=False)

    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("incident_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_findings_incident_id"), ["incident_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_findings_incident_id"))
        batch_op.drop_column("incident_id")

    with op.batch_alter_table("alert_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alert_outbox_state"))
        batch_op.drop_index(batch_op.f("ix_alert_outbox_parent_id"))
        batch_op.drop_column("parent_id")
        batch_op.drop_column("payload")
        batch_op.drop_column("kind")
