"""evidence documents: sizes past 2 GiB

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-30 10:00:00

A document's size was a 32-bit INTEGER: on PostgreSQL a file over 2 GiB (a pen test's packet
capture, a drill's recording) could not be filed (integer out of range). It is a BIGINT now,
on both backends.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("evidence_documents", schema=None) as batch_op:
        batch_op.alter_column(
            "size", existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("evidence_documents", schema=None) as batch_op:
        batch_op.alter_column(
            "size", existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False
        )
