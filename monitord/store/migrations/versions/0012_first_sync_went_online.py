"""the store's first sync: no went_online events

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Before this version, the store's first sync recorded a went_online event beside each
    # online service's `added` one, and clause 7.2.1 judged every service as a go-live of that
    # quarter without approval or scan. Those services went online before monitord watched:
    # the events go, only those of the first sync (the one of the store's first `added`
    # event) and only for a service that sync added. A service new on a later sync did go
    # online then, and keeps its event.
    op.execute(
        "delete from service_events where kind = 'went_online' "
        "and sync_run_id = (select sync_run_id from service_events where kind = 'added' "
        "and sync_run_id is not null order by id limit 1) "
        "and service_id in (select added.service_id from service_events added "
        "where added.kind = 'added' and added.sync_run_id = service_events.sync_run_id)"
    )


def downgrade() -> None:
    pass  # the events removed were never go-lives: nothing to put back
