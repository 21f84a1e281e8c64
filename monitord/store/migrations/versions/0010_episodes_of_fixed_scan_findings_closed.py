"""episodes of scan findings already fixed closed

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-21 10:00:00

A rescan used to mark a ZAP finding it no longer saw as resolved without closing its episode,
so the quarterly report and the compliance verdicts counted the vulnerability as still open.
The current episode of every finding already resolved is closed now, at its resolved_at, as
resolving it does today.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _of_finding(column: str) -> str:
    return f"(select {column} from findings f where f.id = finding_episodes.finding_id)"


CLOSED = {
    "closed_at": _of_finding("f.resolved_at"),
    "observed_at": _of_finding("coalesce(f.observed_at, f.last_seen)"),
    '"count"': _of_finding('f."count"'),
    "incident_id": _of_finding("f.incident_id"),
    "close_reason": "'resolved'",
}
"""An episode's record as resolving its finding completes it (store.findings)."""


def upgrade() -> None:
    values = ", ".join(f"{column} = {value}" for column, value in CLOSED.items())
    op.execute(
        f"update finding_episodes set {values} "
        "where closed_at is null and exists (select 1 from findings f "
        "where f.id = finding_episodes.finding_id and f.episode = finding_episodes.number "
        "and f.state = 'resolved' and f.resolved_at is not null)"
    )


def downgrade() -> None:
    pass  # the episodes closed stay closed: they were over
