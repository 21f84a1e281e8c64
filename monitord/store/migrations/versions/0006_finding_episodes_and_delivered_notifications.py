"""finding episodes, delivered notifications, incident subjects, failing-since

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 12:06:58.304741

Every existing finding becomes episode 1 of itself (opened when it was first seen, closed when
it was resolved). An incident notified before this version counted the moment its notification
entered the outbox as notified: that moment is kept as when it was submitted, and stays its
notified time (delivery was not recorded then).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "finding_episodes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("finding_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("severity", sa.String(length=20), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("observed_at", sa.DateTime(), nullable=True),
        sa.Column("count", sa.Integer(), nullable=True),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("close_reason", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["finding_id"], ["findings.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("finding_id", "number", name="uq_finding_episode"),
    )
    with op.batch_alter_table("finding_episodes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_finding_episodes_finding_id"), ["finding_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_finding_episodes_incident_id"), ["incident_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_finding_episodes_opened_at"), ["opened_at"], unique=False
        )

    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("episode", sa.Integer(), nullable=False, server_default=sa.text("1"))
        )
        batch_op.add_column(sa.Column("occurred_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("observed_at", sa.DateTime(), nullable=True))

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("notification_sent_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("notified_via", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("subjects", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )

    with op.batch_alter_table("service_states", schema=None) as batch_op:
        batch_op.add_column(sa.Column("failing_since", sa.DateTime(), nullable=True))

    op.execute("UPDATE findings SET occurred_at = first_seen, observed_at = last_seen")
    op.execute(
        "INSERT INTO finding_episodes (finding_id, number, severity, summary, opened_at,"
        " occurred_at, closed_at, observed_at, count, incident_id, close_reason)"
        " SELECT id, 1, severity, summary, first_seen, first_seen, resolved_at,"
        " CASE WHEN resolved_at IS NULL THEN NULL ELSE last_seen END,"
        " CASE WHEN resolved_at IS NULL THEN NULL ELSE count END,"
        " CASE WHEN resolved_at IS NULL THEN NULL ELSE incident_id END,"
        " CASE WHEN resolved_at IS NULL THEN NULL ELSE 'resolved' END"
        " FROM findings"
    )
    op.execute("UPDATE incidents SET notification_sent_at = notified_at")


def downgrade() -> None:
    with op.batch_alter_table("service_states", schema=None) as batch_op:
        batch_op.drop_column("failing_since")

    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("subjects")
        batch_op.drop_column("notified_via")
        batch_op.drop_column("notification_sent_at")

    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_column("observed_at")
        batch_op.drop_column("occurred_at")
        batch_op.drop_column("episode")

    with op.batch_alter_table("finding_episodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_finding_episodes_opened_at"))
        batch_op.drop_index(batch_op.f("ix_finding_episodes_incident_id"))
        batch_op.drop_index(batch_op.f("ix_finding_episodes_finding_id"))

    op.drop_table("finding_episodes")
