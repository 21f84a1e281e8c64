"""probe roll-ups: results written after their hour was rolled up are counted

Revision ID: 0016
Revises: 0015
Create Date: 2027-01-06 10:00:00

A probe result written after its hour was rolled up (the probe that timed out across the hour,
the results a daemon cut off from the store writes once it is back) was in no roll-up: reports
and compliance read rolled hours from the roll-ups only, so it was never counted, and later
purged. A roll-up now notes the newest result id its run counted (`through_id`); a result of
a rolled hour with a higher id is added to its hour's roll-up at the next housekeeping. The
roll-ups already written are taken to have counted every result stored now.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("through_id", sa.Integer(), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_probe_rollups_through_id"), ["through_id"], unique=False
        )
    results = sa.table("probe_results", sa.column("id", sa.Integer()))
    rollups = sa.table("probe_rollups", sa.column("through_id", sa.Integer()))
    connection = op.get_bind()
    newest = connection.scalar(sa.select(sa.func.max(results.c.id)))
    if newest is not None:
        connection.execute(sa.update(rollups).values(through_id=newest))


def downgrade() -> None:
    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_rollups_through_id"))
        batch_op.drop_column("through_id")
