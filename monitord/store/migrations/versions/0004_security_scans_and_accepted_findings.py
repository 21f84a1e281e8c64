"""security scans and accepted findings

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 02:34:45.047172
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scans",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("scan_key", sa.String(length=200), nullable=False),
        sa.Column("trigger", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("queued_at", sa.DateTime(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("alerts_read", sa.Integer(), nullable=False),
        sa.Column("findings_new", sa.Integer(), nullable=False),
        sa.Column("findings_open", sa.Integer(), nullable=False),
        sa.Column("findings_fixed", sa.Integer(), nullable=False),
        sa.Column("high", sa.Integer(), nullable=False),
        sa.Column("medium", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scan_key"),
    )
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_scans_service_id"), ["service_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_scans_state"), ["state"], unique=False)

    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accepted_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("accepted_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("accepted_until", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_column("accepted_until")
        batch_op.drop_column("accepted_by")
        batch_op.drop_column("accepted_reason")

    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scans_state"))
        batch_op.drop_index(batch_op.f("ix_scans_service_id"))

    op.drop_table("scans")
