"""The store on SQLite and PostgreSQL: migrations at start, aware times, data kept on upgrade."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import StatementError

from monitord.errors import StoreError
from monitord.store import MIGRATIONS, DaemonClaim, Store, audit, open_store, sqlite_file
from monitord.store.history import catalogue_as_of
from monitord.store.models import (
    AuditEntry,
    Finding,
    FindingEpisode,
    OutboxAlert,
    Service,
    ServiceEvent,
)
from monitord.timeutil import SHANGHAI, UTC
from tests.conftest import PostgresServer


def test_migrations_create_every_table(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {
        "services",
        "service_events",
        "sync_runs",
        "probe_results",
        "findings",
        "incidents",
        "incident_events",
        "alert_outbox",
        "audit_trail",
    } <= tables


def test_times_come_back_timezone_aware_and_equal(store: Store) -> None:
    moment = dt.datetime(2026, 7, 3, 9, 15, 2, tzinfo=SHANGHAI)
    with store.session() as session:
        audit(session, moment, "alice", "incident.ack", "incident 1", {"note": "收到"})
    with store.session() as session:
        row = session.scalars(select(AuditEntry)).one()
    assert row.at == moment
    assert row.at.tzinfo is not None
    assert row.at.utcoffset() == dt.timedelta(0)
    assert row.detail == {"note": "收到"}


def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(StatementError, match="naive datetime"), store.session() as session:
        audit(session, dt.datetime(2026, 7, 3, 9, 0), "alice", "x")


def test_reopening_an_existing_store_keeps_its_data(store_url: str) -> None:
    first = open_store(store_url)
    now = dt.datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    with first.session() as session:
        session.add(
            Service(id="svc-1", name="企业开办", status="online", first_seen=now, last_seen=now)
        )
        session.flush()
        session.add(ServiceEvent(service_id="svc-1", kind="went_online", at=now))
    first.dispose()
    again = open_store(store_url)  # an upgraded daemon starting: migrate() runs again
    with again.session() as session:
        service = session.get(Service, "svc-1")
        assert service is not None and service.name == "企业开办"
        assert session.scalars(select(ServiceEvent.kind)).all() == ["went_online"]
        version = session.execute(text("select version_num from alembic_version")).scalar()
    again.dispose()
    assert version == head_revision()


def head_revision() -> str:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_upgrading_from_the_first_schema_keeps_every_row(store_url: str) -> None:
    old = Store(store_url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.execute(
            text(
                "insert into alert_outbox (idempotency_key, channel, title, body, created_at,"
                " next_attempt_at, attempts, state) values ('k1', 'json://x', 't', '正文',"
                " '2026-11-02 01:00:00', '2026-11-02 01:00:00', 0, 'pending')"
            )
        )
    old.dispose()
    upgraded = open_store(store_url)
    with upgraded.session() as session:
        alert = session.scalars(select(OutboxAlert)).one()
    upgraded.dispose()
    assert (alert.idempotency_key, alert.body, alert.kind, alert.payload) == (
        "k1",
        "正文",
        "message",
        {},
    )


def test_upgrading_closes_the_episodes_of_findings_already_resolved(store_url: str) -> None:
    store = open_store(store_url)
    resolved_at = dt.datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
    with store.session() as session:
        # As a rescan left a fixed ZAP finding before 0010: resolved, its episode still open.
        finding = Finding(
            rule="zap:40018",
            clause="8.3 b",
            severity="high",
            subject_kind="web_path",
            subject="svc-0001 40018 /app/ [id]",
            service_id="svc-0001",
            summary="SQL Injection",
            evidence={},
            first_seen=resolved_at - dt.timedelta(days=1),
            last_seen=resolved_at - dt.timedelta(days=1),
            count=1,
            state="resolved",
            resolved_at=resolved_at,
        )
        session.add(finding)
        session.flush()
        session.add(
            FindingEpisode(
                finding_id=finding.id,
                number=1,
                severity="high",
                summary="SQL Injection",
                opened_at=finding.first_seen,
                occurred_at=finding.first_seen,
            )
        )
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.stamp(config, "0009")
        command.upgrade(config, "0010")
    with store.session() as session:
        episode = session.scalars(select(FindingEpisode)).one()
    store.dispose()
    assert (episode.closed_at, episode.close_reason, episode.count) == (
        resolved_at,
        "resolved",
        1,
    )


def test_upgrading_keeps_the_catalogue_as_it_was_from_when_each_service_was_first_seen(
    store_url: str,
) -> None:
    old = Store(store_url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0007")
        for sid, gone in (("svc-1", False), ("svc-2", True)):
            connection.execute(
                text(
                    "insert into services (id, name, coverage, status, suspension, contacts, raw,"
                    " filing_problems, unknown_values, fingerprint, gone, gone_at, first_seen,"
                    " last_seen, max_concurrency) values (:id, '企业开办', '[\"all\"]',"
                    " 'suspended', '{\"planned_resume\": \"2026-07-09\"}', '[]', '{}', '[]',"
                    " '[]', 'f1', :gone, :gone_at, '2026-06-01 00:00:00', '2026-08-01 00:00:00',"
                    " 100)"
                ),
                {"id": sid, "gone": gone, "gone_at": "2026-08-01 00:00:00" if gone else None},
            )
    old.dispose()
    upgraded = open_store(store_url)
    with upgraded.session() as session:
        in_july = catalogue_as_of(session, dt.datetime(2026, 7, 1, tzinfo=UTC))
        in_may = catalogue_as_of(session, dt.datetime(2026, 5, 1, tzinfo=UTC))
        today = catalogue_as_of(session, dt.datetime(2026, 11, 1, tzinfo=UTC))
    upgraded.dispose()
    assert set(in_july) == {"svc-1", "svc-2"} and in_may == {} and set(today) == {"svc-1"}
    record = in_july["svc-1"]
    assert (record["name"], record["status"], record["max_concurrency"]) == (
        "企业开办",
        "suspended",
        100,
    )
    assert record["suspension"] == {"planned_resume": "2026-07-09"}
    assert record["coverage"] == ["all"]
    assert record["first_seen"] == "2026-06-01T00:00:00+00:00"


def test_sqlite_store_runs_in_wal_mode(sqlite_store: Store) -> None:
    with sqlite_store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_an_unreachable_database_is_one_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot open or migrate the store at postgresql"):
        open_store("postgresql://monitord:pw@127.0.0.1:1/nothing")


def test_a_postgresql_store_that_takes_no_new_connection_does_not_answer(
    postgres: PostgresServer | None,
) -> None:
    # max_connections reached: a connection kept in the pool answered the check, so the daemon
    # said the store was back while every job that needed a new connection failed.
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    name = url.rsplit("/", 1)[1]
    role = f"mon_{name}"  # a role of its own: a superuser is never refused a connection
    admin = Store(url)
    with admin.engine.connect() as connection:
        connection.exec_driver_sql(f"create role {role} login")
        connection.exec_driver_sql(f"alter database {name} owner to {role}")
        connection.commit()
    store = open_store(url.replace("monitord@", f"{role}@"))
    try:
        with store.session() as session:  # a connection now kept in the pool
            session.execute(text("select 1"))
        with admin.engine.connect() as connection:
            connection.exec_driver_sql(f"alter role {role} connection limit 1")
            connection.commit()
        reason = store.unreachable_reason()
        assert reason is not None and f'too many connections for role "{role}"' in reason
        with admin.engine.connect() as connection:
            connection.exec_driver_sql(f"alter role {role} connection limit -1")
            connection.commit()
        assert store.unreachable_reason() is None
    finally:
        store.dispose()
        admin.dispose()


def test_the_password_of_a_store_url_is_never_shown() -> None:
    with pytest.raises(StoreError) as caught:
        open_store("postgresql://monitord:hunter2@127.0.0.1:1/nothing")
    assert "hunter2" not in str(caught.value)


def pieces(secret: str, size: int = 4) -> set[str]:
    """Every run of size characters of secret."""
    return {secret[start : start + size] for start in range(len(secret) - size + 1)}


@pytest.mark.parametrize("password", ["p@ssW0rd", "ab/cd@Secret9", "x:y@Zk?q#Wd@Tail"])
def test_no_piece_of_a_password_written_with_a_bare_at_is_shown(password: str) -> None:
    # make_url ends a password at its first @ and took the rest for the host; psycopg then said
    # "failed to resolve host 'ssW0rd@127.0.0.1'", the password's tail in the clear.
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql://mon:{password}@127.0.0.1:1/mon")
    shown = str(caught.value)
    assert shown.startswith("cannot open or migrate the store at postgresql+psycopg://mon:***@")
    assert not {piece for piece in pieces(password) if piece in shown}


def test_the_migrations_build_exactly_the_tables_the_models_describe(store: Store) -> None:
    """A column added to a model without its migration would be missing from every real store."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monitord.store.models import Base

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_asking_whether_a_daemon_holds_the_store_keeps_its_write_ahead_log(
    sqlite_store: Store,
) -> None:
    """A daemon's API listing the cluster asks whether a daemon holds the store. The check must
    not give up this process's SQLite locks: another process closing its connection would then
    take itself for the last one and delete the write-ahead log under this one's connections."""
    file = sqlite_file(sqlite_store.url)
    assert file is not None
    with sqlite_store.session() as session:
        session.add(AuditEntry(at=dt.datetime.now(UTC), actor="t", action="x"))
    reader = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute('select count(*) from audit_trail').fetchall(); c.close()"
    )
    with sqlite_store.engine.connect() as connection:
        connection.execute(text("select count(*) from audit_trail")).all()
        for _ in range(2):
            assert DaemonClaim(sqlite_store).held_elsewhere() is False
        subprocess.run([sys.executable, "-c", reader, str(file)], check=True)
        assert Path(f"{file}-wal").exists()
