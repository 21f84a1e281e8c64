"""evidence that lasts: catalogue revisions, quiet windows, state changes, latency histograms,
the evidence register, admin reviews, complaints, compliance results and quarterly reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 15:04:56.089245
"""

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "admin_reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("quarter", sa.String(length=10), nullable=False),
        sa.Column("reviewed_at", sa.DateTime(), nullable=False),
        sa.Column("reviewed_by", sa.String(length=200), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("accounts", sa.JSON(), nullable=False),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("admin_reviews", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_reviews_quarter"), ["quarter"], unique=False)

    op.create_table(
        "complaints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("imported_at", sa.DateTime(), nullable=False),
        sa.Column("source_file", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("external_id", name="uq_complaint_external_id"),
    )
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_complaints_received_at"), ["received_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_complaints_service_id"), ["service_id"], unique=False)

    op.create_table(
        "compliance_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("quarter", sa.String(length=10), nullable=False),
        sa.Column("rule", sa.String(length=120), nullable=False),
        sa.Column("clause", sa.String(length=40), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("evaluated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("quarter", "rule", "subject", name="uq_compliance_result"),
    )
    with op.batch_alter_table("compliance_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_compliance_results_quarter"), ["quarter"], unique=False
        )

    op.create_table(
        "evidence_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("clause", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=True),
        sa.Column("document_date", sa.Date(), nullable=False),
        sa.Column("filed_by", sa.String(length=200), nullable=False),
        sa.Column("filed_at", sa.DateTime(), nullable=False),
        sa.Column("file_name", sa.Text(), nullable=False),
        sa.Column("stored_as", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("evidence_documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evidence_documents_clause"), ["clause"], unique=False)
        batch_op.create_index(batch_op.f("ix_evidence_documents_kind"), ["kind"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_evidence_documents_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_evidence_documents_sha256"), ["sha256"], unique=False)

    op.create_table(
        "quarterly_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("quarter", sa.String(length=10), nullable=False),
        sa.Column("generated_at", sa.DateTime(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("sent_to", sa.JSON(), nullable=False),
        sa.Column("outbox_key", sa.String(length=200), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("quarterly_reports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarterly_reports_quarter"), ["quarter"], unique=False)

    op.create_table(
        "quiet_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "service_id", "starts_at", name="uq_quiet_window"),
    )
    with op.batch_alter_table("quiet_windows", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_quiet_windows_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_quiet_windows_starts_at"), ["starts_at"], unique=False)

    op.create_table(
        "service_revisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("valid_from", sa.DateTime(), nullable=False),
        sa.Column("valid_to", sa.DateTime(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
        sa.Column("gone", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("service_revisions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_service_revisions_service_from", ["service_id", "valid_from"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_revisions_service_id"), ["service_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_revisions_valid_from"), ["valid_from"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_service_revisions_valid_to"), ["valid_to"], unique=False
        )

    op.create_table(
        "service_state_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("service_state_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_service_state_changes_at"), ["at"], unique=False)
        batch_op.create_index("ix_state_changes_service_at", ["service_id", "at"], unique=False)

    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("blind", sa.Boolean(), nullable=False, server_default=sa.false())
        )

    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("blind", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.add_column(
            sa.Column("latency_buckets", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
    _backfill_revisions()


# The service columns a revision's record keeps, as monitord.store.history.RECORD_FIELDS listed
# them when this migration was written (a migration must not change with the code after it).
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


def _backfill_revisions() -> None:
    """One revision per service already stored, from when it was first seen (and a gone one
    from when it went), so that the catalogue as of any moment since is known as well as it can
    be: the changes before this upgrade were not recorded."""
    columns = [sa.column(name, _column_type(name)) for name in _RECORD_FIELDS]
    services = sa.table(
        "services",
        sa.column("id", sa.String()),
        sa.column("fingerprint", sa.String()),
        sa.column("gone", sa.Boolean()),
        sa.column("gone_at", sa.DateTime()),
        *columns,
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
    connection = op.get_bind()
    rows = []
    for service in connection.execute(sa.select(services)).mappings():
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


def downgrade() -> None:
    op.drop_table("silences")
    with op.batch_alter_table("probe_rollups", schema=None) as batch_op:
        batch_op.drop_column("latency_buckets")
        batch_op.drop_column("blind")

    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_column("blind")

    with op.batch_alter_table("service_state_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_state_changes_service_at")
        batch_op.drop_index(batch_op.f("ix_service_state_changes_at"))

    op.drop_table("service_state_changes")
    with op.batch_alter_table("service_revisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_revisions_valid_to"))
        batch_op.drop_index(batch_op.f("ix_service_revisions_valid_from"))
        batch_op.drop_index(batch_op.f("ix_service_revisions_service_id"))
        batch_op.drop_index("ix_service_revisions_service_from")

    op.drop_table("service_revisions")
    with op.batch_alter_table("quiet_windows", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quiet_windows_starts_at"))
        batch_op.drop_index(batch_op.f("ix_quiet_windows_service_id"))

    op.drop_table("quiet_windows")
    with op.batch_alter_table("quarterly_reports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarterly_reports_quarter"))

    op.drop_table("quarterly_reports")
    with op.batch_alter_table("evidence_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evidence_documents_sha256"))
        batch_op.drop_index(batch_op.f("ix_evidence_documents_service_id"))
        batch_op.drop_index(batch_op.f("ix_evidence_documents_kind"))
        batch_op.drop_index(batch_op.f("ix_evidence_documents_clause"))

    op.drop_table("evidence_documents")
    with op.batch_alter_table("compliance_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_compliance_results_quarter"))

    op.drop_table("compliance_results")
    with op.batch_alter_table("complaints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_complaints_service_id"))
        batch_op.drop_index(batch_op.f("ix_complaints_received_at"))

    op.drop_table("complaints")
    with op.batch_alter_table("admin_reviews", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_admin_reviews_quarter"))

    op.drop_table("admin_reviews")
