"""Security scans wired into monitord: triggers, the fake ZAP driven by the real zaproxy client,
findings and the 8.3 b gate, reconciliation, the quarterly duty and accepted risks."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from monitord.catalogue.validate import ID_LENGTH
from monitord.config import Settings, ZapSettings, parse_config
from monitord.demo.fakezap import (
    FakeAlert,
    FakeZapServer,
    RawAnswer,
    Scenario,
    alert_storm,
    clean_site,
)
from monitord.errors import ConfigError, UsageError, ZapOccupied
from monitord.incidents import intake
from monitord.runtime.app import App
from monitord.runtime.jobs import incident_clock, security_scans
from monitord.scans import (
    SCAN_START_LOCK_KEY,
    ScanReport,
    accept_finding,
    check_quarter,
    driver_settings,
    enqueue_due,
    enqueue_manual,
    expire_acceptances,
    run_scan,
    scan_pass,
    zap,
)
from monitord.scans.state import ScanState, Step, ZapDriverSettings
from monitord.store import Store, hold_alone, open_store
from monitord.store.models import (
    Finding,
    FindingEpisode,
    Incident,
    Scan,
    Service,
    ServiceEvent,
)
from monitord.timeutil import Clock, quarter_start
from tests.conftest import FakeClock, sigint_as_in_a_terminal

pytestmark = pytest.mark.timeout(60)
BASE = "https://127.0.0.1:9/app/"
"""The scanned service: nothing listens there; the fake ZAP does not connect to it."""


@pytest.fixture
def servers() -> Iterator[list[FakeZapServer]]:
    started: list[FakeZapServer] = []
    yield started
    for server in started:
        server.close()


async def run_pass(store: Store, settings: Settings, clock: Clock) -> ScanReport:
    """One pass of the scan job, with the ZAP driver the runtime builds for these settings."""
    scanner = zap.ZapScanner(driver_settings(settings), clock=clock)
    return await scan_pass(store, settings, clock, scanner=scanner)


def fake_zap(servers: list[FakeZapServer], scenario: Scenario) -> FakeZapServer:
    server = FakeZapServer(scenario).start()
    servers.append(server)
    return server


def settings_for(server: FakeZapServer | str, **zap_values: Any) -> Settings:
    url = server if isinstance(server, str) else server.url
    values: dict[str, Any] = {
        "url": url,
        "poll_interval_seconds": 0.01,
        "call_timeout_seconds": 5.0,
        "page_size": 100,
    }
    values.update(zap_values)
    key = "" if isinstance(server, str) else server.zap.scenario.api_key
    return parse_config({"zap": values}, "test", env={"MONITORD_ZAP_API_KEY": key})


def add_service(store: Store, clock: FakeClock, sid: str = "svc-0001", **changes: Any) -> None:
    values: dict[str, Any] = {
        "id": sid,
        "name": "企业开办",
        "status": "online",
        "url": BASE,
        "first_seen": clock(),
        "last_seen": clock(),
    }
    values.update(changes)
    with store.session() as session:
        session.add(Service(**values))


def scans(store: Store) -> list[Scan]:
    with store.session() as session:
        return list(session.scalars(select(Scan).order_by(Scan.id)))


def test_quarterly_scans_are_spread_and_events_trigger_a_scan_once(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings_for("http://127.0.0.1:9")
    for n in range(1, 21):
        add_service(sqlite_store, clock, f"svc-{n:04d}")
    clock.now = dt.datetime(2026, 9, 30, 16, 30, tzinfo=dt.UTC)  # 2026-10-01 00:30 CST
    with sqlite_store.session() as session:
        first_day = enqueue_due(session, cfg, clock())
    clock.now += dt.timedelta(days=21)
    with sqlite_store.session() as session:
        later = enqueue_due(session, cfg, clock())
        session.add(ServiceEvent(service_id="svc-0003", kind="updated", at=clock()))
        session.flush()
        after_update = enqueue_due(session, cfg, clock())
        again = enqueue_due(session, cfg, clock())
    assert len(first_day) < 5  # spread over the quarter's first three weeks, not all at once
    assert len(first_day) + len(later) == 20
    assert all(key.endswith("-2026q4") for key in first_day + later)
    assert len(after_update) == 1 and after_update[0].startswith("svc-0003-event-")
    assert again == []


async def test_a_scan_with_high_and_medium_alerts_stores_findings_and_opens_an_incident(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, alert_storm(BASE, total=300))
    cfg = settings_for(server)
    add_service(sqlite_store, clock)
    report = await run_pass(sqlite_store, cfg, clock)
    assert report.zap_error is None and len(report.ran) == 1
    [scan] = scans(sqlite_store)
    assert scan.state == "finished" and scan.trigger == "quarterly"
    assert scan.high > 0 and scan.medium > 0
    with sqlite_store.session() as session:
        findings = session.scalars(select(Finding).where(Finding.rule.like("zap:%"))).all()
        assert {f.clause for f in findings} == {"8.3 b"}
        assert all(f.subject.startswith("svc-0001 ") for f in findings)
        assert {f.severity for f in findings} >= {"high", "medium"}
        report_intake = intake(session, cfg, clock())
        [incident] = [session.get(Incident, i) for i in report_intake.opened]
        assert incident is not None
        assert (incident.kind, incident.klass) == ("vulnerability", "security")
        assert incident.notify_by == clock() + dt.timedelta(hours=2)


async def test_a_service_with_the_longest_id_is_scanned_and_its_incident_opened_on_postgresql(
    pg_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # Its scan keys and its incident's group key outgrew their columns: PostgreSQL refused
    # them, and the quarterly pass failed for every service, every minute.
    longest = "z" * ID_LENGTH
    server = fake_zap(servers, alert_storm(BASE, total=30))
    cfg = settings_for(server)
    add_service(pg_store, clock, longest)
    add_service(pg_store, clock, "svc-0002")
    _label, start = quarter_start(clock())
    clock.now = start + dt.timedelta(days=cfg.zap.quarterly_spread_days)
    report = await run_pass(pg_store, cfg, clock)
    assert report.zap_error is None and len(report.queued) == 2 and report.ran == ["1"]
    with pg_store.session() as session:
        session.add(ServiceEvent(service_id=longest, kind="updated", at=clock()))
        session.flush()
        [event_key] = enqueue_due(session, cfg, clock())
        session.execute(update(Scan).values(state="finished"))
        manual, queued = enqueue_manual(session, longest, "admin", clock(), cfg)
    assert event_key.startswith(f"{longest}-event-") and queued
    assert manual.scan_key.startswith(f"{longest}-manual-")
    with pg_store.session() as session:
        opened = intake(session, cfg, clock()).opened
        incidents = [session.get(Incident, i) for i in opened]
    assert any(i is not None and i.services == [longest] for i in incidents)


async def test_a_rescan_marks_what_was_fixed(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    first = fake_zap(servers, alert_storm(BASE, total=60))
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(first), clock)
    second = fake_zap(servers, clean_site(BASE))
    with sqlite_store.session() as session:
        session.add(ServiceEvent(service_id="svc-0001", kind="updated", at=clock()))
    await run_pass(sqlite_store, settings_for(second), clock)
    rescan = scans(sqlite_store)[-1]
    assert rescan.state == "finished" and rescan.trigger == "updated"
    assert rescan.findings_fixed > 0 and rescan.findings_new == 0
    with sqlite_store.session() as session:
        states = set(session.scalars(select(Finding.state).where(Finding.rule.like("zap:%"))))
    assert states == {"resolved"}


async def test_a_clean_rescan_closes_the_episodes_the_compliance_verdicts_count(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    first = fake_zap(servers, alert_storm(BASE, total=60))
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(first), clock)
    clock.advance(hours=1)
    with sqlite_store.session() as session:
        session.add(ServiceEvent(service_id="svc-0001", kind="updated", at=clock()))
    await run_pass(sqlite_store, settings_for(fake_zap(servers, clean_site(BASE))), clock)
    with sqlite_store.session() as session:
        episodes = session.scalars(
            select(FindingEpisode).join(Finding).where(Finding.rule.like("zap:%"))
        ).all()
    assert episodes
    assert {(e.closed_at, e.close_reason) for e in episodes} == {(clock(), "resolved")}


async def test_zap_down_leaves_scans_queued_with_a_clear_error(
    sqlite_store: Store, clock: FakeClock
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    add_service(sqlite_store, clock)
    report = await run_pass(sqlite_store, settings_for(f"http://127.0.0.1:{port}"), clock)
    assert (
        report.zap_error == f"ZAP is not reachable at http://127.0.0.1:{port} (connection refused)"
    )
    assert [s.state for s in scans(sqlite_store)] == ["queued"]


async def test_a_scan_left_running_by_a_dead_daemon_is_reconciled_and_run_again(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, clean_site(BASE))
    add_service(sqlite_store, clock)
    forgotten = ScanState(
        scan_key="svc-0001-1",
        target_url=BASE,
        status="running",
        step=Step.ACTIVE,
        session_name="monitord-svc-0001-1",
        active_scan_id=3,
    )
    with sqlite_store.session() as session:
        session.add(
            Scan(
                service_id="svc-0001",
                scan_key="svc-0001-manual-x",
                trigger="manual",
                state="running",
                queued_at=clock(),
                next_attempt_at=clock(),
                progress=forgotten.to_dict(),
            )
        )
    await run_pass(sqlite_store, settings_for(server), clock)
    manual = next(s for s in scans(sqlite_store) if s.trigger == "manual")
    assert manual.state == "finished"
    assert manual.attempts == 1


def _running_scan_row(clock: FakeClock, pid: int) -> Scan:
    """A scan of svc-0002 that this machine's process `pid` runs (a `monitord scan ID --wait`)."""
    return Scan(
        service_id="svc-0002",
        scan_key="svc-0002-manual-x",
        trigger="manual",
        state="running",
        queued_at=clock(),
        next_attempt_at=clock(),
        started_at=clock(),
        attempts=1,
        progress=ScanState(
            scan_key="svc-0002-1",
            target_url=BASE,
            status="running",
            step=Step.ACTIVE,
            session_name="monitord-svc-0002-1",
            active_scan_id=0,
        ).to_dict(),
        runner_host=socket.gethostname(),
        runner_pid=pid,
    )


def _running_scan(store: Store, clock: FakeClock, pid: int) -> int:
    """A scan this machine's process `pid` is running, in the store: its id."""
    with store.session() as session:
        scan = _running_scan_row(clock, pid)
        session.add(scan)
        session.flush()
        return scan.id


def _queued_scan(store: Store, clock: FakeClock) -> int:
    """A scan of svc-0001 asked for by hand, waiting: its id."""
    with store.session() as session:
        scan = Scan(
            service_id="svc-0001",
            scan_key="svc-0001-manual-y",
            trigger="manual",
            state="queued",
            queued_at=clock(),
            next_attempt_at=clock(),
        )
        session.add(scan)
        session.flush()
        return scan.id


async def test_a_scan_a_live_process_runs_owns_zap_and_no_other_starts(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, clean_site(BASE))
    cfg = settings_for(server)
    add_service(sqlite_store, clock)
    running = _running_scan(sqlite_store, clock, os.getppid())  # alive, and not this process
    report = await run_pass(sqlite_store, cfg, clock)
    assert report.ran == [] and server.calls("core/action/newSession") == []
    by_id = {s.id: s for s in scans(sqlite_store)}
    assert (by_id[running].state, by_id[running].attempts) == ("running", 1)
    [queued] = [s for s in by_id.values() if s.id != running]
    assert queued.state == "queued" and queued.attempts == 0
    # What `monitord scan ID --wait` does meanwhile: refused, its scan left queued.
    scanner = zap.ZapScanner(driver_settings(cfg), clock=clock)
    with pytest.raises(ZapOccupied, match=f"ZAP is running scan {running} of svc-0002 \\(pid"):
        await run_scan(sqlite_store, cfg, scanner, queued.id, clock)
    assert [s.state for s in scans(sqlite_store)] == ["running", "queued"]


async def test_two_scans_starting_at_once_on_postgresql_take_zap_one_after_the_other(
    pg_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # Another process is starting a scan (it holds the start and has marked its scan running,
    # not committed yet): this one's start waits, then sees that scan and leaves ZAP alone
    # rather than making a new session under it.
    server = fake_zap(servers, clean_site(BASE))
    cfg = settings_for(server)
    add_service(pg_store, clock)
    add_service(pg_store, clock, "svc-0002")
    queued = _queued_scan(pg_store, clock)
    other = pg_store.session()
    session = other.__enter__()
    hold_alone(session, SCAN_START_LOCK_KEY)
    session.add(_running_scan_row(clock, os.getppid()))
    session.flush()
    scanner = zap.ZapScanner(driver_settings(cfg), clock=clock)
    starting = asyncio.create_task(run_scan(pg_store, cfg, scanner, queued, clock))
    async with asyncio.timeout(30):
        while not _waiting_on_an_advisory_lock(pg_store):
            await asyncio.sleep(0.05)
    other.__exit__(None, None, None)  # the other start commits
    with pytest.raises(ZapOccupied, match="ZAP is running scan"):
        await starting
    assert server.calls("core/action/newSession") == []


def _waiting_on_an_advisory_lock(store: Store) -> bool:
    with store.engine.connect() as connection:
        waiting = connection.exec_driver_sql(
            "select count(*) from pg_locks where locktype = 'advisory' and not granted"
        ).scalar()
    return bool(waiting)


async def test_a_scan_whose_process_is_gone_is_reconciled_then_the_queue_runs(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, clean_site(BASE))
    add_service(sqlite_store, clock, "svc-0002")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    running = _running_scan(sqlite_store, clock, int(gone.stdout))
    report = await run_pass(sqlite_store, settings_for(server), clock)
    assert report.ran == [str(running)]
    scan = next(s for s in scans(sqlite_store) if s.id == running)
    assert (scan.state, scan.attempts, scan.runner_pid) == ("finished", 2, os.getpid())


def test_more_than_one_scan_at_a_time_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"max_concurrent_scans.*one ZAP runs one scan at a time"):
        parse_config({"zap": {"max_concurrent_scans": 2}}, "monitord.toml", env={})


def test_a_service_not_scanned_by_the_quarter_deadline_is_a_7_3_2_finding(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings_for("http://127.0.0.1:9")
    add_service(sqlite_store, clock)
    clock.now = dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        assert check_quarter(session, cfg, clock()) == 1
        finding = session.scalars(select(Finding)).one()
    assert (finding.rule, finding.clause) == ("quarterly_scan_missing", "7.3.2")


def test_an_accepted_risk_opens_no_incident_until_it_expires(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from monitord.store.findings import upsert_finding
    from monitord.types import FindingDraft

    cfg = settings_for("http://127.0.0.1:9")
    add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        finding = upsert_finding(
            session,
            FindingDraft(
                rule="zap:10020",
                clause="8.3 b",
                severity="medium",
                subject_kind="web_path",
                subject="svc-0001 10020-1 /app/ []",
                summary="缺少防点击劫持头",
                service_id="svc-0001",
            ),
            clock(),
        )
        session.flush()
        accept_finding(
            session, finding.id, "由网关统一添加", clock() + dt.timedelta(days=30), "alice", clock()
        )
        assert intake(session, cfg, clock()).opened == []
    clock.advance(days=31)
    with sqlite_store.session() as session:
        assert expire_acceptances(session, clock()) == 1
        assert len(intake(session, cfg, clock()).opened) == 1


async def test_an_expired_acceptance_reopens_with_its_incident_while_zap_is_disabled(
    sqlite_store: Store, clock: FakeClock
) -> None:
    from monitord.store.findings import upsert_finding
    from monitord.types import FindingDraft

    cfg = settings_for("http://127.0.0.1:9", enabled=False)
    app = App(settings=cfg, store=sqlite_store, clock=clock)
    add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        finding = upsert_finding(
            session,
            FindingDraft(
                rule="zap:40018",
                clause="8.3 b",
                severity="high",
                subject_kind="web_path",
                subject="svc-0001 40018-1 /app/ [id]",
                summary="SQL 注入",
                service_id="svc-0001",
            ),
            clock(),
        )
        session.flush()
        finding_id = finding.id
        accept_finding(
            session, finding_id, "输入已在网关过滤", clock() + dt.timedelta(days=7), "a", clock()
        )
    clock.advance(days=8)
    await security_scans(app)  # ZAP disabled: the scan job does nothing
    await incident_clock(app)
    with sqlite_store.session() as session:
        reopened = session.get(Finding, finding_id)
        assert reopened is not None
        assert reopened.state == "open"
        assert reopened.incident_id is not None
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


async def test_an_accepted_risk_a_clean_rescan_fixed_does_not_come_back_at_expiry(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    add_service(sqlite_store, clock)
    cfg = settings_for(fake_zap(servers, alert_storm(BASE, total=60)))
    await run_pass(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        intake(session, cfg, clock())
        accepted = session.scalars(select(Finding.id).where(Finding.rule.like("zap:%"))).first()
        assert accepted is not None
        accept_finding(session, accepted, "WAF 拦截", clock() + dt.timedelta(days=30), "a", clock())
    clock.advance(hours=1)
    with sqlite_store.session() as session:
        session.add(ServiceEvent(service_id="svc-0001", kind="updated", at=clock()))
    await run_pass(sqlite_store, settings_for(fake_zap(servers, clean_site(BASE))), clock)
    first, rescan = scans(sqlite_store)
    assert rescan.findings_fixed == first.findings_new  # the accepted one too
    clock.advance(days=31)
    with sqlite_store.session() as session:
        assert session.get(Finding, accepted).state == "resolved"  # type: ignore[union-attr]
        assert expire_acceptances(session, clock()) == 0
        assert intake(session, cfg, clock()).opened == []
        with pytest.raises(UsageError, match=f"finding {accepted} is resolved"):
            accept_finding(
                session, accepted, "仍想接受", clock() + dt.timedelta(days=9), "a", clock()
            )


def test_driver_settings_carry_the_key_from_the_environment() -> None:
    cfg = parse_config(
        {"zap": {"scan_deadline_minutes": 30}}, "t", env={"MONITORD_ZAP_API_KEY": "k3y"}
    )
    driver = driver_settings(cfg)
    assert (driver.api_key, driver.zap.scan_deadline_minutes) == ("k3y", 30)
    assert "k3y" not in repr(driver)


def test_scan_import_and_findings_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitord.cli import main
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42)]}))
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    report = Path(__file__).parent / "data" / "zap-traditional-report.json"
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    assert (
        main(
            [
                *("--config", str(config), "scan", "import", str(report)),
                *("--service", "svc-0042", "--any-site"),
            ]
        )
        == 0
    )
    assert "imported" in capsys.readouterr().out
    assert main(["--config", str(config), "findings", "--risk", "high,medium", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found and {f["severity"] for f in found} <= {"high", "medium"}
    # An unknown severity had matched nothing: an empty list, as if all were well.
    with pytest.raises(SystemExit) as refused:
        main(["--config", str(config), "findings", "--risk", "urgent"])
    assert refused.value.code == 2
    assert "'urgent': expected severities from info, low" in capsys.readouterr().err
    assert main(["--config", str(config), "findings", "--risk", "High, MEDIUM", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == found
    assert all(f["rule"].startswith("zap:") and f["clause"] == "8.3 b" for f in found)
    status = main(
        [
            "--config",
            str(config),
            "findings",
            "--accept",
            str(found[0]["id"]),
            "--reason",
            "误报：测试页面",
            "--until",
            "2099-01-01",
            "--by",
            "alice",
        ]
    )
    assert status == 0
    assert main(["--config", str(config), "scan", "status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out.split("\n", 1)[1])
    assert row["trigger"] == "import" and row["state"] == "finished"


def _raw_json(value: Any) -> RawAnswer:
    return RawAnswer(body=json.dumps(value).encode())


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (_raw_json({}), "ZAP answered core/view/version with {} where an object"),
        (_raw_json([]), "ZAP answered core/view/version with [] where an object"),
        (_raw_json("2.15.0"), 'ZAP answered core/view/version with "2.15.0" where an object'),
        (
            RawAnswer(body=b"<html>It works!</html>", content_type="text/html"),
            "is not JSON (text/html, 22 bytes): is it ZAP that listens there?",
        ),
        (RawAnswer(body=b'{"version": "2.1'), "is not JSON"),
    ],
)
async def test_an_answer_of_the_wrong_shape_keeps_scans_queued_and_says_what_was_wrong(
    sqlite_store: Store,
    clock: FakeClock,
    servers: list[FakeZapServer],
    answer: RawAnswer,
    said: str,
) -> None:
    scenario = clean_site(BASE)
    scenario.raw_answers = {"core/view/version": [answer]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    report = await run_pass(sqlite_store, settings_for(server), clock)
    assert report.zap_error is not None and said in report.zap_error
    assert [s.state for s in scans(sqlite_store)] == ["queued"]


async def test_an_empty_answer_mid_scan_fails_the_attempt_at_once_and_it_is_retried(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # zaproxy takes the first value of every answer: an empty object used to leave the call
    # hanging until the per-call timeout, then be reported as ZAP not answering.
    scenario = clean_site(BASE)
    scenario.raw_answers = {"ascan/view/status": [_raw_json({})]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server, call_timeout_seconds=30.0), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "queued"
    assert scan.error == (
        "ZAP answered ascan/view/status with {} where an object with a value was expected"
    )


@pytest.mark.parametrize("status", ["\u00b2", "9" * 5000, "-1", "12.5"])
async def test_a_progress_that_is_not_a_plain_number_fails_the_attempt_naming_it(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer], status: str
) -> None:
    scenario = clean_site(BASE)
    scenario.raw_answers = {"spider/view/status": [_raw_json({"status": status})]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "queued"
    assert scan.error is not None
    assert scan.error.startswith("ZAP answered spider/view/status with ")
    assert scan.error.endswith("where a number was expected") and len(scan.error) < 120


async def test_a_progress_over_100_is_shown_as_100(servers: list[FakeZapServer]) -> None:
    scenario = clean_site(BASE)
    scenario.raw_answers = {"ascan/view/status": [_raw_json({"status": "250"})]}
    server = fake_zap(servers, scenario)
    seen: list[ScanState] = []

    async def record(state: ScanState) -> None:
        seen.append(state)

    settings = ZapDriverSettings(
        zap=ZapSettings(url=server.url, poll_interval_seconds=0.01), api_key=scenario.api_key
    )
    outcome = await zap.ZapScanner(settings).scan(BASE, scan_key="p", on_progress=record)
    assert outcome.state.status == "finished"
    assert max(s.percent for s in seen) == 100


async def test_zap_hanging_up_mid_scan_is_retried_not_blamed_on_the_api_key(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # ZAP answers a wrong key by closing the connection; once it has taken the key, a closed
    # connection is ZAP crashing or restarting, which a later attempt gets past.
    scenario = clean_site(BASE)
    scenario.raw_answers = {"ascan/view/status": [RawAnswer(hang_up=True)]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "queued" and scan.next_attempt_at > clock()
    assert scan.error is not None and "probably wrong" not in scan.error
    assert "closed the connection without answering ascan/view/status" in scan.error
    assert "crashed or was restarted" in scan.error
    clock.advance(minutes=6)
    await run_pass(sqlite_store, settings_for(server), clock)
    assert [s.state for s in scans(sqlite_store)] == ["finished"]


async def test_a_wrong_api_key_is_still_told_as_such(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, clean_site(BASE))
    add_service(sqlite_store, clock)
    cfg = parse_config(
        {"zap": {"url": server.url}}, "test", env={"MONITORD_ZAP_API_KEY": "not-the-key"}
    )
    report = await run_pass(sqlite_store, cfg, clock)
    assert report.zap_error is not None and "the API key is probably wrong" in report.zap_error


async def test_a_failure_while_reading_alerts_is_tried_again_and_no_finding_is_lost(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # The alerts are the result of hours of scanning; one bad page used to throw it all away.
    scenario = alert_storm(BASE, total=300)
    gateway_error = RawAnswer(
        status=502, body=b"<html>Bad Gateway</html>", content_type="text/html"
    )
    scenario.raw_answers = {"core/view/alerts": [gateway_error]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "finished" and scan.error is None
    assert scan.alerts_read == 300 - 6  # every alert but the False Positives
    assert scan.high > 0 and scan.medium > 0


async def test_zap_restarted_before_the_alerts_are_read_resolves_no_finding(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    first = fake_zap(servers, alert_storm(BASE, total=60))
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(first), clock)
    with sqlite_store.session() as session:
        open_before = session.scalar(
            select(func.count()).select_from(Finding).where(Finding.state == "open")
        )
    assert open_before

    # The rescan: ZAP is restarted (a new, empty session) as the alerts are about to be read.
    scenario = alert_storm(BASE, total=60)
    scenario.restart_on = "core/view/numberOfAlerts"
    server = fake_zap(servers, scenario)
    with sqlite_store.session() as session:
        session.add(ServiceEvent(service_id="svc-0001", kind="updated", at=clock()))
    await run_pass(sqlite_store, settings_for(server), clock)
    rescan = scans(sqlite_store)[-1]
    assert rescan.state == "queued"
    assert rescan.error is not None and "ZAP no longer has this scan" in rescan.error
    with sqlite_store.session() as session:
        open_after = session.scalar(
            select(func.count()).select_from(Finding).where(Finding.state == "open")
        )
    assert open_after == open_before


async def test_alert_texts_with_lone_surrogates_and_nuls_are_stored(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # ZAP's strings are Java's: evidence cut from a binary response may hold half a UTF-16
    # pair or a NUL, which SQLite (as UTF-8) and PostgreSQL refuse. The scan was lost.
    alert = FakeAlert(
        "40018", "40018", "SQL Injection \ud83d", "High", "High", BASE + "q?id=1", "id\udc00",
        evidence="\x00\x01\ud800binary",
    )  # fmt: skip
    server = fake_zap(servers, Scenario(site_urls=[BASE], alerts=[alert]))
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "finished" and scan.high == 1
    with sqlite_store.session() as session:
        finding = session.scalars(select(Finding).where(Finding.rule == "zap:40018")).one()
        assert finding.evidence["evidence"] == "\ufffd\x01\ufffdbinary"
        assert finding.subject == "svc-0001 40018 /app/q [id\ufffd]"


def _import_cli(tmp_path: Path, report: Path, *options: str) -> int:
    from monitord.cli import main
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42)]}))
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    return main(
        ["--config", str(config), "scan", "import", str(report), "--service", "svc-0042", *options]
    )


def _site_report(alerts: Any) -> bytes:
    return json.dumps({"site": [{"@name": "https://a", "alerts": alerts}]}).encode()


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"", "is empty: not a ZAP JSON report"),
        (b"  \n", "is empty: not a ZAP JSON report"),
        (b"[" * 100_000, "nests more than 32 levels deep: not a ZAP JSON report"),
        (b'{"site": ' + b"[" * 500 + b"]" * 500 + b"}", "nests more than 32 levels deep"),
        (_site_report(5), "site[0].alerts is not a list"),
        (_site_report("xy"), "site[0].alerts is not a list"),
        (
            _site_report([{"pluginid": "1", "riskcode": "3", "instances": {"uri": "https://a/"}}]),
            "site[0].alerts[0].instances is not a list",
        ),
    ],
)
def test_a_broken_report_is_refused_with_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, said: str
) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(content)
    assert _import_cli(tmp_path, report) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_an_imported_report_with_odd_characters_is_stored_and_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    instance = {"uri": "https://a/x", "param": "p\x00", "evidence": "\udfff"}
    alert = {"pluginid": "1", "riskcode": "3", "name": "SQLi \ud800", "instances": [instance]}
    data = {
        "@programName": "ZAP \udc80",
        "@generated": "Wed, 12 Jun 2024 08:31:05",
        "site": [{"@name": "https://a", "alerts": [alert]}],
    }
    report = tmp_path / "report.json"
    report.write_text(json.dumps(data))
    assert _import_cli(tmp_path, report, "--any-site") == 0
    assert "imported 1 findings for svc-0042 from ZAP \ufffd" in capsys.readouterr().out


def test_a_report_of_another_site_is_refused_and_imports_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = Path(__file__).parent / "data" / "zap-traditional-report.json"
    assert _import_cli(tmp_path, report) == 2
    err = capsys.readouterr().err
    assert (
        "the report is of https://zwfw.example.gov.cn, https://cdn.example.com, not of the "
        "service's site "
        "https://svc42.example.test/; not imported (--any-site imports" in err
    )
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.session() as session:
            assert session.scalar(select(func.count()).select_from(Scan)) == 0
            assert session.scalar(select(func.count()).select_from(Finding)) == 0
    finally:
        store.dispose()


def test_an_old_report_is_a_scan_of_its_own_time_not_of_this_quarter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = Path(__file__).parent / "data" / "zap-traditional-report.json"
    assert _import_cli(tmp_path, report, "--any-site") == 0
    assert "of 2024-06-12 08:31 CST" in capsys.readouterr().out
    cfg = settings_for("http://127.0.0.1:9")
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.session() as session:
            [scan] = session.scalars(select(Scan)).all()
            generated = dt.datetime(2024, 6, 12, 0, 31, 5, tzinfo=dt.UTC)
            assert (scan.queued_at, scan.started_at, scan.finished_at) == (generated,) * 3
            now = dt.datetime.now(dt.UTC)
            # Not this quarter's scan, nor one after the service's latest update.
            _label, start = quarter_start(now)
            assert check_quarter(session, cfg, start + dt.timedelta(days=80)) == 1
            session.add(ServiceEvent(service_id="svc-0042", kind="updated", at=now))
            session.flush()
            queued = enqueue_due(session, cfg, now)
            assert any(key.startswith("svc-0042-event-") for key in queued)
    finally:
        store.dispose()


def test_reports_imported_within_one_second_are_all_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import monitord.runtime.app

    build = monitord.runtime.app.build_app
    moment = FakeClock()
    monkeypatch.setattr(
        monitord.runtime.app, "build_app", lambda settings: build(settings, clock=moment)
    )
    report = Path(__file__).parent / "data" / "zap-traditional-report.json"
    assert _import_cli(tmp_path, report, "--any-site") == 0
    config = ["--config", str(tmp_path / "monitord.toml")]
    from monitord.cli import main

    for _ in range(2):
        assert (
            main([*config, "scan", "import", str(report), "--service", "svc-0042", "--any-site"])
            == 0
        )
    capsys.readouterr()
    assert main([*config, "scan", "status", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trigger"] for r in rows] == ["import"] * 3


async def test_a_target_zap_must_not_scan_is_never_queued_and_says_why(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    server = fake_zap(servers, clean_site(BASE))
    cfg = settings_for(server)
    add_service(sqlite_store, clock)
    add_service(sqlite_store, clock, "svc-0002", url="javascript:alert(1)")
    add_service(sqlite_store, clock, "svc-0003", url="http://169.254.169.254/latest/meta-data/")
    add_service(sqlite_store, clock, "svc-0004", url="")
    report = await run_pass(sqlite_store, cfg, clock)
    assert report.queued == ["svc-0001-2026q4"]
    rows = {s.service_id: s for s in scans(sqlite_store)}
    assert rows["svc-0001"].state == "finished"
    assert {sid: (r.state, r.error) for sid, r in rows.items() if sid != "svc-0001"} == {
        "svc-0002": (
            "failed",
            "not scanned: javascript:alert(1) is not an http(s) URL; ZAP scans web services only",
        ),
        "svc-0003": (
            "failed",
            "not scanned: http://169.254.169.254/latest/meta-data/: 169.254.169.254 is inside "
            "denied network 169.254.0.0/16 (probes.denied_networks)",
        ),
        "svc-0004": ("failed", "not scanned: the service has no URL to scan"),
    }
    # Not retried: a later pass neither queues nor runs them, and ZAP never heard of them.
    clock.advance(days=1)
    await run_pass(sqlite_store, cfg, clock)
    assert [(s.service_id, s.state, s.attempts) for s in scans(sqlite_store)] == [
        ("svc-0001", "finished", 1),
        ("svc-0002", "failed", 0),
        ("svc-0003", "failed", 0),
        ("svc-0004", "failed", 0),
    ]
    assert [p["url"] for p in server.calls("core/action/accessUrl")] == [BASE]


async def test_a_service_redirecting_into_a_denied_network_fails_its_scan_at_start(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    from aiohttp import web

    async def metadata(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    app = web.Application()
    app.router.add_get("/app/", metadata)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/app/"
        server = fake_zap(servers, clean_site(url))
        add_service(sqlite_store, clock, url=url)
        await run_pass(sqlite_store, settings_for(server), clock)
        clock.advance(hours=2)
        await run_pass(sqlite_store, settings_for(server), clock)
    finally:
        await runner.cleanup()
    [scan] = scans(sqlite_store)
    started = clock() - dt.timedelta(hours=2)
    assert (scan.state, scan.attempts, scan.finished_at) == ("failed", 1, started)
    assert scan.error == (
        f"not scanned: {url} redirects to http://169.254.169.254/latest/meta-data/: "
        "169.254.169.254 is inside denied network 169.254.0.0/16 (probes.denied_networks)"
    )
    assert [e for e, _ in server.zap.calls if e != "core/view/version"] == []


@pytest.mark.parametrize(
    ("url", "denied", "said"),
    [
        (
            "http://169.254.169.254/",
            None,
            "monitord: not scanned: http://169.254.169.254/: 169.254.169.254 is inside denied "
            "network 169.254.0.0/16 (probes.denied_networks)\n",
        ),
        (
            "http://localhost:9/app/",
            ["127.0.0.0/8"],
            "monitord: not scanned: http://localhost:9/app/: localhost resolves to 127.0.0.1, "
            "inside denied network 127.0.0.0/8 (probes.denied_networks)\n",
        ),
    ],
)
def test_asking_to_scan_a_refused_target_says_why_in_one_line_and_queues_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    url: str,
    denied: list[str] | None,
    said: str,
) -> None:
    from monitord.cli import main
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42, url=url)]}))
    config = tmp_path / "monitord.toml"
    text = f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
    if denied is not None:
        text += f"[probes]\ndenied_networks = {json.dumps(denied)}\n"
    config.write_text(text)
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "scan", "svc-0042"]) == 1
    assert capsys.readouterr().err == said
    assert main(["--config", str(config), "scan", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


async def test_an_answer_nested_too_deeply_leaves_no_scan_running(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # json recursed once per level: RecursionError escaped the driver, the pass died and the
    # scan's row said "running" for ever.
    scenario = clean_site(BASE)
    deep = RawAnswer(body=b'{"status": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    scenario.raw_answers = {"spider/view/status": [deep]}
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server), clock)
    [scan] = scans(sqlite_store)
    assert scan.state == "queued" and scan.next_attempt_at > clock()
    assert scan.error == "ZAP's answer to spider/view/status nests more than 32 levels deep"


async def test_a_long_list_of_large_alerts_is_read_whole_in_smaller_pages(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # A page of 100 alerts of 100 KiB evidence each is over a 1 MiB cap: the scan failed for
    # good, and so did every rescan, though each alert alone fits.
    scenario = alert_storm(BASE, total=60)
    for alert in scenario.alerts:
        alert.evidence = "E" * (100 << 10)
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server, max_answer_mb=1, page_size=100), clock)
    [scan] = scans(sqlite_store)
    assert (scan.state, scan.error) == ("finished", None)
    assert scan.alerts_read == 60 - 2  # every alert but the False Positives
    assert scan.high > 0 and scan.medium > 0
    pages = [
        (int(params["start"]), int(params["count"]))
        for endpoint, params in server.zap.calls
        if endpoint == "core/view/alerts"
    ]
    # The same start again at half the size until a page fits, then on at that size.
    assert pages == [(1, 100), (1, 50), (1, 25), (1, 12), (1, 6)] + [
        (start, 6) for start in range(7, 60, 6)
    ]


async def test_a_single_alert_over_the_answer_cap_fails_the_scan_saying_what_to_change(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    scenario = alert_storm(BASE, total=60)
    scenario.alerts[10].evidence = "E" * (2 << 20)
    server = fake_zap(servers, scenario)
    add_service(sqlite_store, clock)
    await run_pass(sqlite_store, settings_for(server, max_answer_mb=1), clock)
    [scan] = scans(sqlite_store)
    # Not retried: the next attempt would read the same alert.
    assert (scan.state, scan.finished_at) == ("failed", clock())
    assert scan.error == (
        f"ZAP's alert number 10 under {BASE} alone is larger than zap.max_answer_mb (1 MiB); "
        "raise zap.max_answer_mb to read it"
    )


async def test_alert_fields_over_the_field_cap_are_left_out_saying_why(
    store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    long_path = BASE + "a" * 1000 + "/x"
    alerts = [
        FakeAlert(
            "40018", "40018", "SQL Injection", "High", "High", BASE + "q?id=1", "id",
            evidence="E" * (200 << 10),
        ),
        FakeAlert("10020", "10020-1", "Anti-clickjacking", "Medium", "Medium", long_path),
    ]  # fmt: skip
    server = fake_zap(servers, Scenario(site_urls=[BASE], alerts=alerts))
    add_service(store, clock)
    await run_pass(store, settings_for(server, max_field_kb=64), clock)
    [scan] = scans(store)
    assert (scan.state, scan.high, scan.medium) == ("finished", 1, 1)
    with store.session() as session:
        sqli = session.scalars(select(Finding).where(Finding.rule == "zap:40018")).one()
        assert sqli.evidence["evidence"] == "(left out: 200 KiB, over zap.max_field_kb = 64)"
        assert sqli.evidence["solution"] == "Fix SQL Injection."
        # A path longer than the store's subject column: kept apart by a digest, not lost.
        frame = session.scalars(select(Finding).where(Finding.rule == "zap:10020")).one()
        assert len(frame.subject) <= 400 and frame.subject.startswith("svc-0001 10020-1 /app/aaa")
        assert frame.evidence["path"] == "/app/" + "a" * 1000 + "/x"


def test_a_report_over_the_size_cap_is_refused_unread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(_site_report([]) + b" " * (70 << 20))
    assert _import_cli(tmp_path, report) == 2
    err = capsys.readouterr().err
    assert err.endswith(
        f"\nmonitord: {report} is larger than zap.max_answer_mb (32 MiB): "
        "not read as a ZAP JSON report\n"
    )


async def test_an_unexpected_error_leaves_no_scan_running_and_the_pass_goes_on(
    sqlite_store: Store, clock: FakeClock, servers: list[FakeZapServer]
) -> None:
    # A fault of monitord's own, simulated in the driver: the row said "running" for ever
    # and the pass died with it.
    class Faulty(zap.ZapScanner):
        async def read_alerts(self, base_url: str) -> tuple[list[dict[str, Any]], int]:
            raise KeyError("alertRef")

    server = fake_zap(servers, alert_storm(BASE, total=60))
    cfg = settings_for(server)
    add_service(sqlite_store, clock)
    faulty = Faulty(driver_settings(cfg), clock=clock)
    report = await scan_pass(sqlite_store, cfg, clock, scanner=faulty)
    assert report.ran == ["1"]
    [scan] = scans(sqlite_store)
    assert (scan.state, scan.next_attempt_at) == ("queued", clock() + dt.timedelta(minutes=5))
    assert scan.error == "monitord failed during the scan (KeyError: 'alertRef')"


def test_the_scan_and_findings_tables_show_times_in_asia_shanghai(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main
    from monitord.timeutil import local_text
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42)]}))
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    report = Path(__file__).parent / "data" / "zap-traditional-report.json"
    main(["--config", str(config), "sync", "--file", str(catalogue)])
    main(
        [
            *("--config", str(config), "scan", "import", str(report)),
            *("--service", "svc-0042", "--any-site"),
        ]
    )
    capsys.readouterr()
    main(["--config", str(config), "findings"])
    table = capsys.readouterr().out
    main(["--config", str(config), "scan", "status"])
    scans = capsys.readouterr().out
    now = local_text(dt.datetime.now(dt.UTC))[:13]  # to the hour, in case a minute turns
    assert "LAST SEEN (CST)" in table and now in table
    assert "SINCE (CST)" in scans and "2024-06-12 08:31" in scans  # the report's @generated


def test_asking_to_scan_with_scans_switched_off_is_refused_not_queued_for_ever(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "scan 1 of svc-0042 queued; the running daemon starts it", and it stayed queued: the
    # daemon's scan job does nothing while [zap] enabled = false.
    from monitord.cli import main
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42, url="http://127.0.0.1:9/")]}))
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
        "[probes]\ndenied_networks = []\n[zap]\nenabled = false\n"
    )
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "scan", "svc-0042"]) == 1
    assert capsys.readouterr().err == (
        "monitord: not scanned: [zap] enabled = false, so no scan runs; set it to true (with "
        "zap.url and its API key) to scan\n"
    )
    assert main(["--config", str(config), "scan", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def _scan_config(tmp_path: Path, zap_url: str) -> list[str]:
    """A store with svc-0042 synced, scans going to the ZAP at `zap_url`; the CLI's --config."""
    from monitord.cli import main
    from tests.fakeportal import make_service

    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps({"services": [make_service(42, url="http://127.0.0.1:9/")]}))
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
        f'[probes]\ndenied_networks = []\n[zap]\nurl = "{zap_url}"\ncall_timeout_seconds = 60.0\n'
    )
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    return ["--config", str(config)]


def test_ctrl_c_during_scan_wait_on_a_silent_zap_stops_at_once_and_leaves_one_queued_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Ctrl-C while ZAP took the connection and never answered: nothing for 26 s, until the
    # call timed out; and each attempt, like each plain `scan svc-0042`, queued one more scan.
    from monitord.cli import main

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    config = _scan_config(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}")
    command = [sys.executable, "-m", "monitord.cli", *config, "scan", "svc-0042", "--wait"]
    env = {**os.environ, "MONITORD_ZAP_API_KEY": "k"}
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=sigint_as_in_a_terminal
    )
    try:
        # Its first call to ZAP (a new session) is under way once ZAP has its connection.
        waiting, _ = silent.accept()
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
        waited = time.monotonic() - started
        waiting.close()
    finally:
        process.kill()
        process.communicate()
        silent.close()
    assert process.returncode == 130
    assert waited < 5
    assert "Traceback" not in err
    assert err.splitlines()[-1] == (
        "monitord: scan 1 of svc-0042 interrupted; the running daemon runs it"
    )
    capsys.readouterr()
    assert main([*config, "scan", "svc-0042"]) == 0
    assert capsys.readouterr().out == (
        "scan 1 of svc-0042 was already queued (no other is queued); the running daemon starts "
        "it (`monitord scan status` shows it)\n"
    )
    assert main([*config, "scan", "status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["id"], row["state"]) == (1, "queued")


@pytest.mark.parametrize(
    ("words", "said"),
    [
        (["scan", "svc-0042", "--json"], "--json: not with a scan"),
        (["scan", "svc-0042", "--service", "svc-0042"], "--service: not with a scan"),
        (["scan", "status", "--service", "svc-0042"], "--service: not with status"),
        (["scan", "--wait", "status"], "--wait: not with status"),
        (["scan", "status", "extra"], "usage: monitord scan status [--json]"),
        (
            ["scan", "import", "r.json", "--service", "svc-0042", "--wait"],
            "--wait: not with import",
        ),
    ],
)
def test_a_scan_option_that_does_not_apply_is_refused_and_nothing_is_queued(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], words: list[str], said: str
) -> None:
    # `scan svc-0042 --json` printed text and queued a scan; `scan status --service ID` listed
    # every service's scans.
    from monitord.cli import main

    config = _scan_config(tmp_path, "http://127.0.0.1:9")
    capsys.readouterr()
    assert main([*config, *words]) == 2
    assert capsys.readouterr().err.startswith(f"monitord: {said}")
    assert main([*config, "scan", "status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_findings_of_a_service_not_in_the_store_is_refused_not_an_empty_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `findings --service nosuch` printed an empty table and exited 0: "nothing found".
    from monitord.cli import main

    config = _scan_config(tmp_path, "http://127.0.0.1:9")
    capsys.readouterr()
    assert main([*config, "findings", "--service", "svc-0042"]) == 0
    assert main([*config, "findings", "--service", "svc-0404"]) == 2
    assert capsys.readouterr().err == (
        "monitord: --service 'svc-0404': no such service in the store\n"
    )
