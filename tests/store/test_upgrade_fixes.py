"""Migrations that mend what older versions of monitord wrote, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import select

from monitord.store import MIGRATIONS, Store
from monitord.store.models import Service, ServiceEvent, SyncRun
from monitord.timeutil import UTC

FIRST_SYNC = dt.datetime(2026, 10, 8, 1, 0, tzinfo=UTC)
LATER_SYNC = dt.datetime(2026, 11, 3, 1, 0, tzinfo=UTC)


def migrated_to(store: Store, revision: str) -> None:
    """The store as an older monitord left it: migrated up to revision only."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def record_sync(store: Store, at: dt.datetime, events: list[tuple[str, str]]) -> None:
    """One catalogue sync as monitord before 0012 recorded it: (service, event kind) pairs."""
    with store.session() as session:
        run = SyncRun(started_at=at, finished_at=at, source="portal", outcome="ok")
        session.add(run)
        session.flush()
        for service_id, kind in events:
            if kind == "added":
                session.add(Service(id=service_id, status="online", first_seen=at, last_seen=at))
            session.add(
                ServiceEvent(
                    service_id=service_id, kind=kind, at=at, to_status="online", sync_run_id=run.id
                )
            )


def test_the_first_syncs_went_online_events_are_removed_and_later_go_lives_kept(
    store_url: str,
) -> None:
    # The first sync of a store made before 0012 recorded every online service as going online
    # then: clause 7.2.1 judged each a go-live without approval or scan (every service red).
    store = Store(store_url)
    try:
        migrated_to(store, "0009")
        record_sync(
            store,
            FIRST_SYNC,
            [("s1", "added"), ("s1", "went_online"), ("s2", "added"), ("s2", "went_online")],
        )
        # A service new on a later sync did go online then; s1 came back from offline.
        record_sync(
            store,
            LATER_SYNC,
            [("s3", "added"), ("s3", "went_online"), ("s1", "went_online")],
        )

        store.migrate()

        with store.session() as session:
            left = session.execute(
                select(ServiceEvent.service_id, ServiceEvent.kind, ServiceEvent.at).order_by(
                    ServiceEvent.id
                )
            ).all()
        assert [(s, k, at.date()) for s, k, at in left] == [
            ("s1", "added", FIRST_SYNC.date()),
            ("s2", "added", FIRST_SYNC.date()),
            ("s3", "added", LATER_SYNC.date()),
            ("s3", "went_online", LATER_SYNC.date()),
            ("s1", "went_online", LATER_SYNC.date()),
        ]
    finally:
        store.dispose()
