"""who runs a scan: its machine and process

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-21 11:00:00

A scan owns ZAP's one session while it runs: the process running it (the daemon, or
`monitord scan ID --wait`) is recorded, so that no other starts a scan meanwhile, and a scan
whose process is gone is reconciled instead of run twice.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("runner_host", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("runner_pid", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.drop_column("runner_pid")
        batch_op.drop_column("runner_host")
