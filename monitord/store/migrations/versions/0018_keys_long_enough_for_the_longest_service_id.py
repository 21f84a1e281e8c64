"""scan keys and incident group keys: long enough for the longest service id

Revision ID: 0018
Revises: 0017
Create Date: 2027-01-08 10:00:00

A scan's key is its service's id with a suffix (svc-0042-2026q4, svc-0042-event-118,
svc-0042-manual-20261205T192743), and an automatic incident's group key is its kind with the
finding's subject (a ZAP finding's is the service id with the path): both were cut at 200 and
400 characters, while a catalogue id may be 200 long. PostgreSQL refused the longer ones, so one
such service stopped every quarterly scan; SQLite kept them. The scan key is now 400 characters
and the group key text of any length, on both backends.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.alter_column(
            "scan_key", existing_type=sa.String(200), type_=sa.String(400), existing_nullable=False
        )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.alter_column(
            "group_key", existing_type=sa.String(400), type_=sa.Text(), existing_nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.alter_column(
            "group_key", existing_type=sa.Text(), type_=sa.String(400), existing_nullable=False
        )
    with op.batch_alter_table("scans", schema=None) as batch_op:
        batch_op.alter_column(
            "scan_key", existing_type=sa.String(400), type_=sa.String(200), existing_nullable=False
        )
