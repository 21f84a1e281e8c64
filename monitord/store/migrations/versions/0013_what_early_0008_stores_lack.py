"""what an early 0008 left out: the silences table, the stored services' first revisions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-22 10:00:00

Migration 0008 grew after it was first released: the silences table and the backfill of one
revision per stored service were added to it. A store that had already run the first 0008
never got either (every command then failed on the missing table). This makes such a store
whole, and changes nothing in one that ran 0008 as it is now.
"""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "silences" not in sa.inspect(op.get_bind()).get_table_names():
        _create_silences()
    _backfill_missing_revisions()


def downgrade() -> None:
    pass  # what this adds is 0008's: it goes when 0008 is downgraded


def _create_silences() -> None:
    """The silences table exactly as migration 0008 creates it."""
    op.create_table(
        "silences",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("services", sa.JSON(), nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=False),
        sa.Column("expired_at", sa.DateTime(), nullable=True),
        sa.Column("expired_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("silences", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_silences_starts_at"), ["starts_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_silences_ends_at"), ["ends_at"], unique=False)


# The service columns a revision's record keeps, as migration 0008's backfill lists them, so
# that a revision backfilled here reads as one backfilled there (a migration must not change
# with the code after it).
_RECORD_FIELDS = (
    "name",
    "type",
    "permission",
    "source",
    "provider",
    "developer",
    "coverage",
    "access_method",
    "max_concurrency",
    "url",
    "probe",
    "return_codes",
    "manual_url",
    "flowchart_url",
    "security_plan_url",
    "faq_url",
    "emergency_plan_url",
    "description",
    "planned_release",
    "review",
    "status",
    "suspension",
    "offline_notice",
    "updated_at",
    "contacts",
    "filing_problems",
    "unknown_values",
    "first_seen",
)
_JSON_FIELDS = {"coverage", "probe", "return_codes", "review", "suspension", "offline_notice"}
_JSON_FIELDS |= {"contacts", "filing_problems", "unknown_values"}
_TIME_FIELDS = {"updated_at", "first_seen"}


def _column_type(name: str) -> sa.types.TypeEngine[Any]:
    if name in _JSON_FIELDS:
        return sa.JSON()
    if name in _TIME_FIELDS:
        return sa.DateTime()
    return sa.Integer() if name == "max_concurrency" else sa.Text()


def _backfill_missing_revisions() -> None:
    """One revision per stored service that has none, from when it was first seen (and a gone
    one from when it went), as 0008 gives every service it finds; a service with a revision
    (0008 backfilled it, or a sync since recorded it) is left as it is."""
    services = sa.table(
        "services",
        sa.column("id", sa.String()),
        sa.column("fingerprint", sa.String()),
        sa.column("gone", sa.Boolean()),
        sa.column("gone_at", sa.DateTime()),
        *(sa.column(name, _column_type(name)) for name in _RECORD_FIELDS),
    )
    revisions = sa.table(
        "service_revisions",
        sa.column("service_id", sa.String()),
        sa.column("valid_from", sa.DateTime()),
        sa.column("valid_to", sa.DateTime()),
        sa.column("fingerprint", sa.String()),
        sa.column("record", sa.JSON()),
        sa.column("gone", sa.Boolean()),
    )
    has_revision = sa.exists().where(revisions.c.service_id == services.c.id)
    connection = op.get_bind()
    rows = []
    for service in connection.execute(sa.select(services).where(~has_revision)).mappings():
        record = {"id": service["id"]}
        for name in _RECORD_FIELDS:
            value = service[name]
            if isinstance(value, dt.datetime):  # stored naive, in UTC
                value = value.replace(tzinfo=dt.UTC).isoformat()
            record[name] = value
        gone_at = service["gone_at"] if service["gone"] else None
        live = {
            "service_id": service["id"],
            "valid_from": service["first_seen"],
            "valid_to": gone_at,
            "fingerprint": service["fingerprint"] or "",
            "record": record,
            "gone": False,
        }
        rows.append(live)
        if gone_at is not None:
            rows.append({**live, "valid_from": gone_at, "valid_to": None, "gone": True})
    if rows:
        connection.execute(sa.insert(revisions), rows)
