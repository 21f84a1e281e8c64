"""Migrations that mend what older versions of monitord wrote, and upgrades that keep every row
or, failing, change nothing; on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from monitord.errors import StoreError
from monitord.store import Store
from monitord.store.models import (
    LogAudit,
    Service,
    ServiceEvent,
    ServiceRevision,
    Silence,
    SyncRun,
)
from monitord.timeutil import UTC
from tests.conftest import migrated_to

FIRST_SYNC = dt.datetime(2026, 10, 8, 1, 0, tzinfo=UTC)
LATER_SYNC = dt.datetime(2026, 11, 3, 1, 0, tzinfo=UTC)


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


def early_0008_store(store: Store) -> None:
    """A store as monitord between 49fe0d6 and 949c538 left it: services stored before 0008,
    then the first 0008 applied, which made no silences table and backfilled no revision."""
    migrated_to(store, "0007")
    with store.session() as session:
        session.add(Service(id="s1", status="online", first_seen=FIRST_SYNC, last_seen=LATER_SYNC))
        session.add(
            Service(
                id="s2",
                status="online",
                first_seen=FIRST_SYNC,
                last_seen=LATER_SYNC,
                gone=True,
                gone_at=LATER_SYNC,
            )
        )
        session.add(Service(id="s3", status="online", first_seen=FIRST_SYNC, last_seen=LATER_SYNC))
    migrated_to(store, "0008")
    with store.engine.begin() as connection:
        connection.execute(text("drop table silences"))
        # s3 has the revision a sync since recorded; s1 and s2 none.
        connection.execute(text("delete from service_revisions where service_id <> 's3'"))


def test_a_store_migrated_by_the_first_0008_gets_its_silences_and_revisions(
    store_url: str,
) -> None:
    # Every command of the upgraded version failed with "no such table: silences", and the
    # services stored before had no revision: the catalogue of a past quarter was empty.
    store = Store(store_url)
    try:
        early_0008_store(store)

        store.migrate()
        store.migrate()  # nothing pending: nothing added twice

        assert "silences" in inspect(store.engine).get_table_names()
        with store.session() as session:
            assert session.scalars(select(Silence)).all() == []
            rows = session.execute(
                select(
                    ServiceRevision.service_id,
                    ServiceRevision.valid_from,
                    ServiceRevision.valid_to,
                    ServiceRevision.gone,
                ).order_by(ServiceRevision.service_id, ServiceRevision.valid_from)
            ).all()
        assert rows == [
            ("s1", FIRST_SYNC, None, False),
            ("s2", FIRST_SYNC, LATER_SYNC, False),
            ("s2", LATER_SYNC, None, True),
            ("s3", FIRST_SYNC, None, False),
        ]
    finally:
        store.dispose()


def test_a_store_migrated_by_the_0008_of_today_gets_nothing_twice(store_url: str) -> None:
    store = Store(store_url)
    try:
        migrated_to(store, "0007")
        with store.session() as session:
            session.add(
                Service(id="s1", status="online", first_seen=FIRST_SYNC, last_seen=LATER_SYNC)
            )
        migrated_to(store, "0012")
        with store.session() as session:
            before = session.scalar(select(func.count()).select_from(ServiceRevision))
        store.migrate()
        with store.session() as session:
            after = session.scalar(select(func.count()).select_from(ServiceRevision))
        assert before == after == 1
    finally:
        store.dispose()


def test_only_an_audit_written_a_day_after_its_quarter_is_known_to_cover_all_of_it(
    store_url: str,
) -> None:
    # Before 0014 an audit did not say whether the logs had been read past the quarter's end
    # when it was written: one written in the first day after the end may lack the last hours.
    store = Store(store_url)
    try:
        migrated_to(store, "0013")
        end = dt.datetime(2026, 9, 30, 16, 0)  # naive UTC, as the store keeps it
        written = {
            "2026q2": end + dt.timedelta(days=2),
            "2026q3": end + dt.timedelta(minutes=31),
            "2026q4": end - dt.timedelta(days=20),
        }
        with store.engine.begin() as connection:
            for quarter, created_at in written.items():
                connection.execute(
                    text(
                        "insert into log_audits (quarter, created_at, period_start, period_end, "
                        "lines, lines_per_day, empty_days, findings_by_rule, vendor_operations) "
                        "values (:q, :c, :s, :e, 0, '{}', '[]', '{}', '[]')"
                    ),
                    {"q": quarter, "c": created_at, "s": end - dt.timedelta(days=92), "e": end},
                )

        store.migrate()

        with store.session() as session:
            complete = dict(session.execute(select(LogAudit.quarter, LogAudit.complete)).all())
        assert complete == {"2026q2": True, "2026q3": False, "2026q4": False}
    finally:
        store.dispose()


def store_at_0015_with_incidents(store: Store) -> None:
    """A store as monitord at 0015 left it: a service, two incidents with their events, and
    alerts about one of them and about none."""
    migrated_to(store, "0015")
    at = "'2026-11-02 01:00:00'"
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "insert into services (id, name, coverage, status, contacts, raw,"
                " filing_problems, unknown_values, fingerprint, gone, first_seen, last_seen)"
                f" values ('s1', '企业开办', '[]', 'online', '[]', '{{}}', '[]', '[]', 'f', false,"
                f" {at}, {at})"
            )
        )
        for incident_id in (1, 2):
            connection.execute(
                text(
                    "insert into incidents (id, kind, klass, severity, state, group_key, summary,"
                    " services, detected_at, late) values (:id, 'probe_down', 'availability',"
                    f" 'major', 'open', :key, '服务中断', '[\"s1\"]', {at}, false)"
                ),
                {"id": incident_id, "key": f"probe_down:s1:{incident_id}"},
            )
            connection.execute(
                text(
                    "insert into incident_events (incident_id, at, kind, actor, detail) values"
                    f" (:id, {at}, 'opened', 'monitord', '{{}}')"
                ),
                {"id": incident_id},
            )
        for key, incident_id in (("a1", 1), ("a2", None)):
            connection.execute(
                text(
                    "insert into alert_outbox (idempotency_key, channel, title, body,"
                    " incident_id, created_at, next_attempt_at, attempts, state) values"
                    f" (:key, 'json://x', '告警', '正文', :id, {at}, {at}, 0, 'pending')"
                ),
                {"key": key, "id": incident_id},
            )


def test_a_store_with_incidents_upgrades_keeping_every_row_and_key(store_url: str) -> None:
    # On SQLite, 0018 rebuilds the incidents table (copy, drop, rename): with foreign keys on,
    # dropping it failed on every store holding an incident, and no upgrade went through.
    store = Store(store_url)
    try:
        store_at_0015_with_incidents(store)

        store.migrate()

        with store.engine.connect() as connection:
            incidents = connection.execute(
                text("select id, group_key from incidents order by id")
            ).all()
            events = connection.execute(
                text("select incident_id, kind from incident_events order by id")
            ).all()
            alerts = connection.execute(
                text("select idempotency_key, incident_id from alert_outbox order by id")
            ).all()
            if store.url.get_backend_name() == "sqlite":
                assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
                # The store's own connections still check foreign keys.
                assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert incidents == [(1, "probe_down:s1:1"), (2, "probe_down:s1:2")]
        assert events == [(1, "opened"), (2, "opened")]
        assert alerts == [("a1", 1), ("a2", None)]
        assert store.pending_migrations() == []
    finally:
        store.dispose()


def sqlite_schema(store: Store) -> list[tuple[str, str]]:
    """Every table, index and trigger of a SQLite store, with the SQL that made it."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            text("select name, sql from sqlite_master where sql is not null order by name")
        ).all()
    return [(name, sql) for name, sql in rows]


def test_a_migration_failing_mid_way_leaves_a_sqlite_store_as_it_was(tmp_path: Path) -> None:
    # Python's sqlite3 committed each ALTER TABLE and CREATE INDEX as it ran: when a later step
    # failed, the store kept 0016's new column at version 0015, and every later migration
    # failed with "duplicate column name: through_id".
    store = Store(f"sqlite:///{tmp_path / 'monitord.db'}")
    try:
        migrated_to(store, "0015")
        with store.engine.begin() as connection:
            connection.execute(
                text(
                    "insert into probe_results (service_id, kind, target, at, success,"
                    " duration_ms, facts) values ('s1', 'http', 'https://x', '2026-11-02 01:00:00',"
                    " true, 12.0, '{}')"
                )
            )
            connection.execute(
                text(
                    "insert into probe_rollups (service_id, kind, hour, count, failures) values"
                    " ('s1', 'http', '2026-11-02 01:00:00', 1, 0)"
                )
            )
            # The step after 0016's ALTER TABLE and CREATE INDEX fails: 0016 then fills the new
            # column in, which this trigger refuses.
            connection.execute(
                text(
                    "create trigger refuse_rollup_updates before update on probe_rollups"
                    " begin select raise(abort, 'roll-ups are not to be updated'); end"
                )
            )
        before = sqlite_schema(store)

        with pytest.raises(StoreError, match="roll-ups are not to be updated"):
            store.migrate()

        assert store.revision() == "0015"
        assert sqlite_schema(store) == before
        with store.engine.begin() as connection:
            connection.execute(text("drop trigger refuse_rollup_updates"))
        store.migrate()
        assert store.pending_migrations() == []
    finally:
        store.dispose()


def test_a_key_that_names_no_row_before_migrating_is_named_and_nothing_changed(
    tmp_path: Path,
) -> None:
    # SQLite migrations run with foreign keys off (see the test above): what they leave is
    # checked before it is committed. A row broken before them (deleted by hand) was blamed on
    # the migrations ("after the migrations, …"), with nothing said of what to do.
    store = Store(f"sqlite:///{tmp_path / 'monitord.db'}")
    try:
        store_at_0015_with_incidents(store)
        with store.engine.connect() as connection:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.execute(text("delete from incidents where id = 2"))
            connection.commit()
        before = sqlite_schema(store)

        with pytest.raises(StoreError) as refused:
            store.migrate()
        assert str(refused.value) == (
            f"cannot migrate the store at {store.display_url}: before any migration, 1 row(s) "
            "refer to rows that do not exist: incident_events row 2 (→ incidents) (written with "
            "foreign keys off, by hand or by another program). Back the store up (`monitord "
            "backup FILE`), then delete or correct those rows (the sqlite3 shell's `PRAGMA "
            "foreign_key_check` lists them) and start again; nothing was changed"
        )

        assert store.revision() == "0015"
        assert sqlite_schema(store) == before
    finally:
        store.dispose()
