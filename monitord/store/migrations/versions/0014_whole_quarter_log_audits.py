"""log audits: whether an audit covers its whole quarter

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-23 10:00:00

An audit written after its quarter ended, but before the followed logs were read past that end
(`monitord log-audit` by hand at 00:31 on the first day), lacks the quarter's last hours: it
was kept as the quarter's, and the report went out with it. An audit now records whether it
covers the whole quarter (`complete`); one that does not is written again by the daemon, and
the quarterly report waits for one that does.
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The daemon's grace after a quarter's end (accesslog.work.AUDIT_GRACE when this was written):
# whether the logs had been read when an audit was written is not recorded, so only an audit
# written a whole grace after its quarter's end is known to be complete. The others are written
# again by the daemon if their quarter is the previous one; the figures are the same when the
# logs had been read.
_GRACE_HOURS = 24


def upgrade() -> None:
    with op.batch_alter_table("log_audits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("complete", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    audits = sa.table(
        "log_audits",
        sa.column("quarter", sa.String()),
        sa.column("created_at", sa.DateTime()),
        sa.column("period_end", sa.DateTime()),
        sa.column("complete", sa.Boolean()),
    )
    connection = op.get_bind()
    whole = [
        quarter
        for quarter, created_at, period_end in connection.execute(
            sa.select(audits.c.quarter, audits.c.created_at, audits.c.period_end)
        )
        if created_at - period_end >= dt.timedelta(hours=_GRACE_HOURS)
    ]
    if whole:
        connection.execute(
            sa.update(audits).where(audits.c.quarter.in_(whole)).values(complete=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("log_audits", schema=None) as batch_op:
        batch_op.drop_column("complete")
