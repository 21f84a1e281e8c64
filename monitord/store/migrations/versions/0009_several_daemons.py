"""several daemons on one store: cluster members, job leases, the daemon that wrote each row,
per-daemon log cursors, the probing zone and late results

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 18:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WRITTEN = (
    "service_events",
    "sync_runs",
    "probe_results",
    "findings",
    "finding_episodes",
    "incidents",
    "incident_events",
    "alert_outbox",
    "audit_trail",
    "service_states",
    "probe_rounds",
    "scans",
    "log_hour_stats",
    "log_audits",
    "service_revisions",
    "quiet_windows",
    "service_state_changes",
    "compliance_results",
    "quarterly_reports",
)
"""The tables whose rows name the daemon that wrote them."""


def upgrade() -> None:
    op.create_table(
        "cluster_members",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("zone", sa.String(length=100), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("run", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("stopped_at", sa.DateTime(), nullable=True),
        sa.Column("probe_share", sa.Integer(), nullable=False),
        sa.Column("last_round_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "job_leases",
        sa.Column("job", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("acquired_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("fence", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job"),
    )
    for table in WRITTEN:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("daemon", sa.String(length=100), nullable=True))
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("zone", sa.String(length=100), nullable=True))
        batch_op.add_column(
            sa.Column("late", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("log_hour_stats", schema=None) as batch_op:
        batch_op.drop_constraint("uq_log_hour", type_="unique")
        batch_op.create_unique_constraint("uq_log_hour", ["daemon", "source", "service", "hour"])
    # A log's cursor now belongs to a daemon: the cursors kept so far are the one daemon's,
    # which takes them back under its name at its first start (monitord.cluster).
    op.rename_table("log_sources", "log_sources_old")
    op.create_table(
        "log_sources",
        sa.Column("daemon", sa.String(length=100), nullable=False),
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("device", sa.Integer(), nullable=False),
        sa.Column("inode", sa.Integer(), nullable=False),
        sa.Column("offset", sa.Integer(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("daemon", "path"),
    )
    op.execute(
        'insert into log_sources (daemon, path, device, inode, "offset", head, state, lines, '
        "updated_at) select '', path, device, inode, \"offset\", head, state, lines, updated_at "
        "from log_sources_old"
    )
    op.drop_table("log_sources_old")


def downgrade() -> None:
    op.drop_table("job_leases")
    op.drop_table("cluster_members")
