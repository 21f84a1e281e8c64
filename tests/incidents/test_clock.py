"""Incidents and the two-hour clock, on an injected clock: every reminder, escalation and the
late mark at the right minute; grouping, storms, quiet suspensions, and the notification's parts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from monitord.catalogue.validate import ID_LENGTH
from monitord.config import Settings, parse_config
from monitord.errors import UsageError
from monitord.incidents import (
    acknowledge,
    follow_clock_step,
    intake,
    last_incident_id,
    notification_delivered,
    notify_management,
    open_manual,
    work_clocks,
)
from monitord.store import Store
from monitord.store.findings import upsert_finding
from monitord.store.models import Finding, Incident, OutboxAlert, Service
from monitord.types import FindingDraft
from tests.conftest import FakeClock

CHAIN = {
    "oncall": ["json://127.0.0.1:9/oncall"],
    "management": ["json://127.0.0.1:9/management"],
    "escalation": [
        {"name": "值班组长", "urls": ["json://127.0.0.1:9/lead"]},
        {"name": "运营主任", "urls": ["json://127.0.0.1:9/director"]},
    ],
}


def settings(**alerts: Any) -> Settings:
    return parse_config({"alerts": {**CHAIN, **alerts}}, "test", env={})


def add_service(store: Store, clock: FakeClock, number: int, **changes: Any) -> str:
    sid = changes.pop("id", f"svc-{number:04d}")
    with store.session() as session:
        session.add(
            Service(
                id=sid,
                name=f"服务{number}",
                status="online",
                first_seen=clock(),
                last_seen=clock(),
                emergency_plan_url="https://plan.test/p.pdf",
                contacts=[{"name": "李四", "role": "oncall"}],
                **changes,
            )
        )
    return sid


def find(
    store: Store,
    clock: FakeClock,
    rule: str,
    service: str,
    severity: str = "high",
    subject: str | None = None,
) -> None:
    with store.session() as session:
        upsert_finding(
            session,
            FindingDraft(
                rule=rule,
                clause="8.3 b",
                severity=severity,  # type: ignore[arg-type]
                subject_kind="service",
                subject=subject or service,
                summary=f"{rule} on {service}",
                service_id=service,
            ),
            clock(),
        )


def run_intake(store: Store, cfg: Settings, clock: FakeClock) -> Any:
    with store.session() as session:
        return intake(session, cfg, clock())


def keys(store: Store) -> list[str]:
    with store.session() as session:
        return list(
            session.scalars(
                select(OutboxAlert.idempotency_key)
                .where(OutboxAlert.parent_id.is_(None))
                .order_by(OutboxAlert.id)
            )
        )


def test_security_finding_opens_an_incident_with_a_two_hour_clock(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    find(sqlite_store, clock, "zap:40012", sid)
    report = run_intake(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        incident = session.get(Incident, report.opened[0])
        assert incident is not None
        assert (incident.kind, incident.klass, incident.state) == (
            "vulnerability",
            "security",
            "open",
        )
        assert incident.notify_by == clock() + dt.timedelta(hours=2)
    assert keys(sqlite_store) == [f"incident:{incident.id}:opened"]


def test_the_clock_sends_each_reminder_escalation_and_the_late_mark_at_its_minute(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    find(sqlite_store, clock, "zap:40012", sid)
    incident_id = run_intake(sqlite_store, cfg, clock).opened[0]
    start = clock()
    seen: list[tuple[int, str]] = []
    for minute in range(0, 131):
        clock.now = start + dt.timedelta(minutes=minute)
        before = set(keys(sqlite_store))
        with sqlite_store.session() as session:
            work_clocks(session, cfg, clock())
        seen += [(minute, k.split(":", 2)[2]) for k in keys(sqlite_store) if k not in before]
    assert seen == [
        (30, "reminder:30"),
        (30, "escalation:1"),
        (60, "reminder:60"),
        (60, "escalation:2"),
        (90, "reminder:90"),
        (110, "reminder:110"),
        (120, "late"),
    ]
    with sqlite_store.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.late is True
        late = session.scalars(
            select(OutboxAlert).where(OutboxAlert.idempotency_key == f"incident:{incident_id}:late")
        ).one()
        assert late.channel == "top"


def test_acknowledging_stops_escalation_and_a_delivered_notification_stops_the_clock(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    find(sqlite_store, clock, "brute_force_login", sid)
    incident_id = run_intake(sqlite_store, cfg, clock).opened[0]
    clock.advance(minutes=10)
    with sqlite_store.session() as session:
        acknowledge(session, incident_id, "alice", clock())
    clock.advance(minutes=25)  # 35 minutes in: a reminder, but no escalation
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    assert [k.split(":", 2)[2] for k in keys(sqlite_store)] == ["opened", "reminder:30"]
    with sqlite_store.session() as session:
        notify_management(
            session,
            cfg,
            incident_id,
            {
                "scope": "企业开办服务，全市",
                "harm": "可能泄露登录凭据",
                "measures": "已封禁来源 IP",
                "rectification": "启用登录验证码",
            },
            "alice",
            clock(),
        )
    clock.advance(minutes=1)
    with sqlite_store.session() as session:  # the management channel confirms delivery
        assert notification_delivered(session, incident_id, clock(), "json://…#abc")
    clock.advance(hours=3)
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
        incident = session.get(Incident, incident_id)
        assert incident is not None
        assert (incident.state, incident.late) == ("notified", False)
    assert [k.split(":", 2)[2] for k in keys(sqlite_store)] == [
        "opened",
        "reminder:30",
        "notification:1",
    ]


def test_a_daemon_back_after_an_hour_sends_one_catch_up_reminder_not_a_burst(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    find(sqlite_store, clock, "zap:1", sid)
    run_intake(sqlite_store, cfg, clock)
    clock.advance(minutes=95)
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    assert [k.split(":", 2)[2] for k in keys(sqlite_store)] == [
        "opened",
        "reminder:90",
        "escalation:2",
    ]


def test_three_hundred_findings_of_one_scan_make_one_incident(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    for n in range(300):
        find(sqlite_store, clock, f"zap:{n}", sid, severity="medium" if n % 2 else "high")
    report = run_intake(sqlite_store, cfg, clock)
    assert len(report.opened) == 1 and report.joined == 299
    for n in range(3):  # the next scan finds more of the same: still the same incident
        find(sqlite_store, clock, f"zap:new{n}", sid)
    report = run_intake(sqlite_store, cfg, clock)
    assert report.opened == [] and report.joined == 3
    with sqlite_store.session() as session:
        assert len(session.scalars(select(Incident)).all()) == 1


def test_low_findings_and_compliance_findings_open_nothing(
    sqlite_store: Store, clock: FakeClock
) -> None:
    sid = add_service(sqlite_store, clock, 1)
    find(sqlite_store, clock, "zap:10021", sid, severity="low")
    find(sqlite_store, clock, "no_hsts", sid, severity="medium")
    find(sqlite_store, clock, "appendix_a_incomplete", sid, severity="medium")
    assert run_intake(sqlite_store, settings(), clock).opened == []


def test_many_services_failing_at_once_page_once(sqlite_store: Store, clock: FakeClock) -> None:
    cfg = settings(storm_threshold=10)
    for n in range(1, 13):
        find(sqlite_store, clock, "service_down", add_service(sqlite_store, clock, n))
    report = run_intake(sqlite_store, cfg, clock)
    assert len(report.opened) == 12 and report.storm
    assert keys(sqlite_store) == [f"storm:{min(report.opened)}-{max(report.opened)}"]


def test_a_suspended_service_outage_alerts_nobody(sqlite_store: Store, clock: FakeClock) -> None:
    sid = add_service(sqlite_store, clock, 1, suspension={"planned_resume": "2026-11-09"})
    with sqlite_store.session() as session:
        service = session.get(Service, sid)
        assert service is not None
        service.status = "suspended"
    find(sqlite_store, clock, "service_down", sid)
    report = run_intake(sqlite_store, settings(), clock)
    assert len(report.opened) == 1
    assert keys(sqlite_store) == []


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            {"scope": "全市", "harm": "", "measures": "封禁", "rectification": "补丁"},
            "the notification is missing: 初步判定的危害 (--harm)",
        ),
        (
            {"scope": None, "harm": "x", "measures": None, "rectification": "补丁"},
            "the notification is missing: 初步判定的影响范围 (--scope); "
            "已采取的应急处置措施 (--measures)",
        ),
        # The status page's form and the command took what the API refuses.
        (
            {"scope": "全市\x1b[2J", "harm": "x", "measures": "封禁", "rectification": "补丁"},
            "初步判定的影响范围 (--scope): holds a control character; write plain text",
        ),
        (
            {"scope": "全市", "harm": "危" * 4001, "measures": "封禁", "rectification": "补丁"},
            "初步判定的危害 (--harm): 4,001 characters, at most 4,000",
        ),
    ],
)
def test_a_notification_missing_a_part_is_refused_naming_it(
    sqlite_store: Store, clock: FakeClock, parts: dict[str, Any], message: str
) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    with sqlite_store.session() as session:
        incident = open_manual(
            session, cfg, "data_exposure", [sid], "电话报告数据泄露", "bob", clock()
        )
    with pytest.raises(UsageError) as caught, sqlite_store.session() as session:
        notify_management(session, cfg, incident.id, parts, "bob", clock())
    assert str(caught.value) == message


def test_a_manual_incident_starts_the_same_clock(sqlite_store: Store, clock: FakeClock) -> None:
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    occurred = clock() - dt.timedelta(minutes=40)
    with sqlite_store.session() as session:
        incident = open_manual(
            session, cfg, "data_exposure", [sid], "服务商电话报告", "bob", clock(), occurred
        )
        assert incident.notify_by == clock() + dt.timedelta(hours=2)
        assert incident.occurred_at == occurred
    with pytest.raises(UsageError, match="--kind 'fire'"), sqlite_store.session() as session:
        open_manual(session, cfg, "fire", [sid], "x", "bob", clock())
    with pytest.raises(UsageError, match="--service 'svc-9999'"), sqlite_store.session() as s:
        open_manual(s, cfg, "outage", ["svc-9999"], "x", "bob", clock())


def test_incidents_about_the_longest_ids_and_subjects_open_on_postgresql(
    pg_store: Store, clock: FakeClock
) -> None:
    # Their group keys outgrew 400 characters: PostgreSQL refused the incident (the whole intake
    # for an automatic one, a 500 for one opened by hand across a gateway's services).
    cfg = settings()
    longest = [
        add_service(pg_store, clock, n, id=f"{n:04d}".ljust(ID_LENGTH, "z")) for n in range(300)
    ]
    subject = f"{longest[0]} {'/path' * 39}"  # a ZAP finding's: the id with a long path
    find(pg_store, clock, "zap:40012", longest[0], subject=subject)
    report = run_intake(pg_store, cfg, clock)
    with pg_store.session() as session:
        manual = open_manual(session, cfg, "outage", longest, "网关故障", "bob", clock())
        automatic = session.get(Incident, report.opened[0])
        assert automatic is not None and automatic.services == [longest[0]]
        assert len(manual.services) == 300


def test_a_followed_step_moves_what_the_daemon_clock_wrote_and_not_what_a_person_did_after_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    # The daemon counts on its own clock until it follows a step of the system clock;
    # `monitord incidents open` reads the system clock, right already once the step is made.
    cfg = settings()
    sid = add_service(sqlite_store, clock, 1)
    step = dt.timedelta(hours=1)
    system = FakeClock(clock() + step)  # the system clock, put right; the daemon's is `clock`
    with sqlite_store.session() as session:
        before = open_manual(session, cfg, "data_exposure", [sid], "电话报告", "bob", clock())
        opened_before = last_incident_id(session)
        by_hand = open_manual(session, cfg, "data_exposure", [sid], "电话报告", "bob", system())
    find(sqlite_store, clock, "zap:40012", sid)
    by_daemon = run_intake(sqlite_store, cfg, clock).opened[0]
    with sqlite_store.session() as session:
        assert follow_clock_step(session, step, system(), opened_before) == 2
    with sqlite_store.session() as session:
        deadlines = {
            incident_id: session.get(Incident, incident_id).notify_by  # type: ignore[union-attr]
            for incident_id in (before.id, by_hand.id, by_daemon)
        }
    assert deadlines == {
        before.id: system() + dt.timedelta(hours=2),
        by_hand.id: system() + dt.timedelta(hours=2),
        by_daemon: system() + dt.timedelta(hours=2),
    }


def test_outages_in_a_maintenance_window_stay_quiet_to_the_end_and_are_news_after_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    # Quiet when opened, they still made a storm alert, were escalated to the team lead and
    # the director, and each sent 已恢复 at the end.
    window = {
        "start": clock() - dt.timedelta(minutes=1),
        "end": clock() + dt.timedelta(hours=1),
        "services": [f"svc-{n:04d}" for n in range(1, 8)],
        "reason": "机房割接",
    }
    cfg = settings(storm_threshold=5, maintenance=[window])
    for n in range(1, 8):
        find(sqlite_store, clock, "service_down", add_service(sqlite_store, clock, n))
    report = run_intake(sqlite_store, cfg, clock)
    assert len(report.opened) == 7 and not report.storm
    for minutes in (20, 20):  # past the first escalation (30 min), inside the window
        clock.advance(minutes=minutes)
        with sqlite_store.session() as session:
            work_clocks(session, cfg, clock())
    assert keys(sqlite_store) == []
    # Six come back inside the window: nobody heard they went, nobody hears they are back.
    with sqlite_store.session() as session:
        for finding in session.scalars(select(Finding).where(Finding.subject != "svc-0007")):
            finding.state = "resolved"
    run_intake(sqlite_store, cfg, clock)
    assert keys(sqlite_store) == []
    # svc-0007 is still down when the window ends: that is news.
    clock.advance(minutes=30)
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    with sqlite_store.session() as session:
        (seven,) = session.scalars(select(Incident).where(Incident.state == "open")).all()
    assert keys(sqlite_store) == [f"incident:{seven.id}:opened"]  # to on-call, not the director
    clock.advance(minutes=31)  # escalate_after_minutes (30) from when on-call was told
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    assert keys(sqlite_store)[1:] == [f"incident:{seven.id}:escalation:1"]
