"""probe results: purged along an index of (success, at)

Revision ID: 0017
Revises: 0016
Create Date: 2027-01-06 11:00:00

The hourly purge looked for the oldest successful results past probes.raw_retention_days, and
the failed ones past store.retention_days, in one query no index served: SQLite read the whole
probe_results table every hour (seconds on a month of results, minutes on a large portal's),
holding a read transaction that stalls the WAL checkpoints. Each is now read along an index of
(success, at).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.create_index("ix_probe_results_success_at", ["success", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_index("ix_probe_results_success_at")
