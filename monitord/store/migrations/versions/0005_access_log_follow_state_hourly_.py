"""access-log follow state, hourly statistics and quarterly audits

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 03:02:59.151303
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "log_audits",
        sa.Column("quarter", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("period_start", sa.DateTime(), nullable=False),
        sa.Column("period_end", sa.DateTime(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("lines_per_day", sa.JSON(), nullable=False),
        sa.Column("empty_days", sa.JSON(), nullable=False),
        sa.Column("findings_by_rule", sa.JSON(), nullable=False),
        sa.Column("vendor_operations", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("quarter"),
    )
    op.create_table(
        "log_hour_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("service", sa.String(length=200), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("source", "service", "hour", name="uq_log_hour"),
    )
    with op.batch_alter_table("log_hour_stats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_log_hour_stats_hour"), ["hour"], unique=False)
        batch_op.create_index(batch_op.f("ix_log_hour_stats_service"), ["service"], unique=False)

    op.create_table(
        "log_sources",
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("inode", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )


def downgrade() -> None:
    op.drop_table("log_sources")
    with op.batch_alter_table("log_hour_stats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_log_hour_stats_service"))
        batch_op.drop_index(batch_op.f("ix_log_hour_stats_hour"))

    op.drop_table("log_hour_stats")
    op.drop_table("log_audits")
