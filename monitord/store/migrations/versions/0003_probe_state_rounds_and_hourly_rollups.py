"""probe state, rounds and hourly rollups

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:20:24.383947
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_rollups",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=True),
        sa.Column("p95_ms", sa.Float(), nullable=True),
        sa.Column("p99_ms", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("service_id", "kind", "hour", name="uq_rollup_key"),
    )
    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_probe_rollups_hour"), ["hour"], unique=False)

    op.create_table(
        "probe_rounds",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("services", sa.Integer(), nullable=False),
        sa.Column("probes", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("blind", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("probe_rounds", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_probe_rounds_started_at"), ["started_at"], unique=False
        )

    op.create_table(
        "service_states",
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("since", sa.DateTime(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("successes", sa.Integer(), nullable=False),
        sa.Column("last_probe_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("cert_fingerprint", sa.String(length=128), nullable=True),
        sa.Column("last_deep_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("service_id"),
    )


def downgrade() -> None:
    op.drop_table("service_states")
    with op.batch_alter_table("probe_rounds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_rounds_started_at"))

    op.drop_table("probe_rounds")
    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_rollups_hour"))

    op.drop_table("probe_rollups")
