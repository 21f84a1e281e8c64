"""The two-hour clock of clause 7.3.3, tried the ways it used to be fooled: a late notification
counted on time, an undelivered one counted as notified, a repeat attack with no new incident, an
event time that was the storage time, a headline that was not the worst finding, one finding
each opening its own incident. Real log files, a real webhook for the management unit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.accesslog.work import follow_logs
from monitord.config import Settings, parse_config
from monitord.incidents import (
    acknowledge,
    close,
    confirm_deliveries,
    intake,
    notify_management,
    resolve,
    work_clocks,
)
from monitord.store import Store
from monitord.store.findings import upsert_finding
from monitord.store.models import (
    AuditEntry,
    Finding,
    FindingEpisode,
    Incident,
    IncidentEvent,
    OutboxAlert,
    Service,
)
from monitord.timeutil import SHANGHAI
from monitord.types import FindingDraft
from tests.conftest import FakeClock
from tests.receivers import Webhook, serve_webhook

PARTS = {
    "scope": "企业开办服务，全市",
    "harm": "可能泄露登录凭据",
    "measures": "已封禁来源 IP",
    "rectification": "启用登录验证码",
}


def settings(
    hook: Webhook | None = None, management: Webhook | None = None, **extra: Any
) -> Settings:
    def base(receiver: Webhook | None) -> str:
        return receiver.url.replace("http://", "json://") if receiver else "json://127.0.0.1:9"

    alerts = {
        "oncall": [f"{base(hook)}/oncall"],
        "management": [f"{base(management or hook)}/management"],
        "escalation": [{"name": "运营主任", "urls": [f"{base(hook)}/director"]}],
        "retry_seconds": 1.0,
        "retry_max_seconds": 1.0,
    }
    return parse_config({"alerts": alerts, **extra}, "test", env={})


def add_service(store: Store, clock: FakeClock, sid: str = "svc-0042") -> str:
    with store.session() as session:
        session.add(
            Service(id=sid, name="企业开办", status="online", first_seen=clock(), last_seen=clock())
        )
    return sid


def finding(
    store: Store,
    clock: FakeClock,
    rule: str,
    subject: str,
    severity: str = "high",
    summary: str | None = None,
    kind: str = "ip",
    service: str | None = None,
) -> None:
    with store.session() as session:
        upsert_finding(
            session,
            FindingDraft(
                rule=rule,
                clause="7.3.1",
                severity=severity,  # type: ignore[arg-type]
                subject_kind=kind,
                subject=subject,
                summary=summary or f"{rule} {subject}",
                service_id=service,
            ),
            clock(),
        )


def open_incident(store: Store, cfg: Settings, clock: FakeClock) -> int:
    with store.session() as session:
        report = intake(session, cfg, clock())
    assert len(report.opened) == 1
    return report.opened[0]


def incident(store: Store, incident_id: int) -> Incident:
    with store.session() as session:
        found = session.get(Incident, incident_id)
        assert found is not None
        return found


async def deliver(store: Store, cfg: Settings, clock: FakeClock) -> None:
    """A pass of the daemon's alert delivery: send what is due, then record what the
    management unit received."""
    await deliver_due(store, cfg, clock, make_apprise_sender(None))
    with store.session() as session:
        confirm_deliveries(session)


def clocks(store: Store, cfg: Settings, clock: FakeClock) -> None:
    with store.session() as session:
        work_clocks(session, cfg, clock())


def test_a_notification_made_after_the_deadline_is_late_at_once(
    sqlite_store: Store, clock: FakeClock
) -> None:
    cfg = settings()
    finding(sqlite_store, clock, "brute_force_login", "u-1", kind="user")
    incident_id = open_incident(sqlite_store, cfg, clock)
    clock.advance(hours=2, minutes=5)  # no clock pass ran: the daemon was down
    with sqlite_store.session() as session:
        notify_management(session, cfg, incident_id, PARTS, "alice", clock())
        # decided in the same transaction as the notification, not by a later pass
        stored = session.get(Incident, incident_id)
        assert stored is not None and stored.late is True
    with sqlite_store.session() as session:
        late = session.scalars(
            select(OutboxAlert).where(OutboxAlert.idempotency_key == f"incident:{incident_id}:late")
        ).one()
        assert late.channel == "top"


async def test_not_notified_until_the_management_channel_takes_it(
    sqlite_store: Store, clock: FakeClock
) -> None:
    async with serve_webhook() as hook, serve_webhook() as bureau:
        cfg = settings(hook, management=bureau)
        finding(sqlite_store, clock, "brute_force_login", "u-1", kind="user")
        incident_id = open_incident(sqlite_store, cfg, clock)
        clock.advance(minutes=20)
        bureau.failing = True  # the management unit's channel is down
        with sqlite_store.session() as session:
            notify_management(session, cfg, incident_id, PARTS, "alice", clock())
        await deliver(sqlite_store, cfg, clock)
        submitted = incident(sqlite_store, incident_id)
        assert submitted.notification_sent_at == clock()
        assert submitted.notified_at is None  # submitted is not received
        assert bureau.refused == 1

        clock.advance(minutes=9)
        clocks(sqlite_store, cfg, clock)
        await deliver(sqlite_store, cfg, clock)
        assert not [m for m in hook.received if "通报未送达" in m["title"]]  # 9 minutes: not yet

        clock.advance(minutes=1)  # alerts.undelivered_minutes = 10 by default
        clocks(sqlite_store, cfg, clock)
        await deliver(sqlite_store, cfg, clock)
        undelivered = [m for m in hook.received if "通报未送达" in m["title"]]
        assert sorted(m["path"] for m in undelivered) == ["/director", "/oncall"]
        assert "请电话通报" in undelivered[0]["title"]
        assert "管理单位尚未收到" in undelivered[0]["message"]
        assert incident(sqlite_store, incident_id).notified_at is None

        clock.advance(minutes=5)
        bureau.failing = False  # the channel is back: received now, on time
        await deliver(sqlite_store, cfg, clock)
        received = incident(sqlite_store, incident_id)
        assert received.notified_at == clock()
        assert received.late is False
        (notification,) = bureau.received
        assert "初步判定的影响范围" in notification["message"]


async def test_a_notification_delivered_after_the_deadline_is_late(
    sqlite_store: Store, clock: FakeClock
) -> None:
    async with serve_webhook() as hook:
        cfg = settings(hook)
        finding(sqlite_store, clock, "brute_force_login", "u-1", kind="user")
        incident_id = open_incident(sqlite_store, cfg, clock)
        clock.advance(minutes=90)
        hook.failing = True
        with sqlite_store.session() as session:
            notify_management(session, cfg, incident_id, PARTS, "alice", clock())
        await deliver(sqlite_store, cfg, clock)
        assert incident(sqlite_store, incident_id).late is False  # submitted in time...
        clock.advance(minutes=40)
        hook.failing = False
        await deliver(sqlite_store, cfg, clock)
        received = incident(sqlite_store, incident_id)
        # ...but received 130 minutes after detection: late, decided by delivery and not by a
        # clock pass (none ran)
        assert received.notified_at == clock() and received.late is True


async def test_a_phone_call_before_the_deadline_counts_though_a_stuck_notification_came_first(
    sqlite_store: Store, clock: FakeClock
) -> None:
    # The call was made while the channel was down; the channel came back and delivered the
    # queued notification after the deadline, before the call was recorded: it stayed LATE.
    async with serve_webhook() as hook:
        cfg = settings(hook)
        finding(sqlite_store, clock, "brute_force_login", "u-1", kind="user")
        incident_id = open_incident(sqlite_store, cfg, clock)
        clock.advance(minutes=100)
        hook.failing = True
        with sqlite_store.session() as session:
            notify_management(session, cfg, incident_id, PARTS, "alice", clock())
        await deliver(sqlite_store, cfg, clock)
        phoned = clock() + dt.timedelta(minutes=19)  # a minute before the deadline
        clock.advance(minutes=21)  # delivered a minute after it
        hook.failing = False
        await deliver(sqlite_store, cfg, clock)
        assert incident(sqlite_store, incident_id).late is True
        clock.advance(minutes=5)
        with sqlite_store.session() as session:
            notify_management(
                session,
                cfg,
                incident_id,
                PARTS,
                "alice",
                clock(),
                out_of_band="电话：市数据局 王科长",
                at=phoned,
            )
        clocks(sqlite_store, cfg, clock)
        stored = incident(sqlite_store, incident_id)
        assert (stored.notified_at, stored.late) == (phoned, False)
        assert stored.notified_via == "out of band: 电话：市数据局 王科长"
        with sqlite_store.session() as session:
            events = session.scalars(
                select(IncidentEvent)
                .where(IncidentEvent.incident_id == incident_id)
                .order_by(IncidentEvent.id)
            ).all()
        delivered = [e for e in events if e.kind == "delivered"]
        assert delivered[-1].detail["replaces"] == (phoned + dt.timedelta(minutes=2)).isoformat()
        assert [e.actor for e in events if e.kind == "late_withdrawn"] == ["alice"]


@pytest.mark.parametrize("marked_late_first", [False, True])
def test_a_notification_made_by_phone_counts_at_its_time_and_is_audited(
    sqlite_store: Store, clock: FakeClock, marked_late_first: bool
) -> None:
    # Recorded after the daemon's pass at the deadline, the same call stayed LATE; recorded
    # before it, it was on time: the outcome depended on when the pass ran.
    cfg = settings()
    finding(sqlite_store, clock, "brute_force_login", "u-1", kind="user")
    incident_id = open_incident(sqlite_store, cfg, clock)
    phoned = clock() + dt.timedelta(minutes=100)
    clock.advance(minutes=150)  # recorded later, after the deadline
    if marked_late_first:
        clocks(sqlite_store, cfg, clock)
        assert incident(sqlite_store, incident_id).late is True  # nothing recorded by then
    with sqlite_store.session() as session:
        row = notify_management(
            session,
            cfg,
            incident_id,
            PARTS,
            "alice",
            clock(),
            out_of_band="电话：市数据局 王科长",
            at=phoned,
        )
        assert row is None  # nothing to deliver: the management unit has it
    clocks(sqlite_store, cfg, clock)
    stored = incident(sqlite_store, incident_id)
    assert stored.notified_at == phoned and stored.late is False
    assert stored.notified_via == "out of band: 电话：市数据局 王科长"
    with sqlite_store.session() as session:
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "incident.notify")
        ).one()
        assert entry.actor == "alice" and entry.detail["out_of_band"] == "电话：市数据局 王科长"
        assert entry.detail["at"] == phoned.isoformat()
        withdrawn = session.scalars(
            select(IncidentEvent).where(
                IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "late_withdrawn"
            )
        ).all()
        # The timeline says who withdrew the mark and when (as recorded), with the call's time.
        assert [(e.actor, e.at, e.detail["received_at"]) for e in withdrawn] == (
            [("alice", clock(), phoned.isoformat())] if marked_late_first else []
        )


def brute_force(path: Path, start: dt.datetime, tries: int = 12) -> None:
    with path.open("a", encoding="utf-8") as handle:
        for n in range(tries):
            record = {
                "ts": (start + dt.timedelta(seconds=20 * n)).astimezone(SHANGHAI).isoformat(),
                "ip": "45.83.1.20",
                "user_id": "u-77",
                "level": "L3",
                "role": None,
                "company": None,
                "vendor": None,
                "service_id": "svc-0042",
                "action": "login_failed",
                "method": "POST",
                "path": "/auth/login",
                "status": 401,
                "bytes": 2048,
                "duration_ms": 40.0,
                "ua": "Mozilla/5.0",
            }
            handle.write(json.dumps(record) + "\n")


async def test_a_repeat_brute_force_after_the_incident_was_closed_opens_a_new_clock(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    async with serve_webhook() as hook:
        audit = tmp_path / "audit.jsonl"
        cfg = settings(hook, logs={"follow": [{"path": str(audit), "format": "json"}]})
        add_service(sqlite_store, clock)
        attack = clock() - dt.timedelta(minutes=7)  # what the log says, before it was read
        brute_force(audit, attack)
        follow_logs(sqlite_store, cfg, clock)
        first = open_incident(sqlite_store, cfg, clock)
        opened = incident(sqlite_store, first)
        assert opened.subjects == ["user:u-77"]
        assert opened.occurred_at == attack  # the first log line, not the moment it was stored
        assert opened.detected_at == clock()
        assert opened.notify_by == clock() + dt.timedelta(hours=2)
        await deliver(sqlite_store, cfg, clock)
        notification = [m for m in hook.received if m["path"] == "/oncall"]
        assert len(notification) == 1

        clock.advance(minutes=30)
        with sqlite_store.session() as session:
            acknowledge(session, first, "alice", clock())
            notify_management(session, cfg, first, PARTS, "alice", clock())
        await deliver(sqlite_store, cfg, clock)
        management = [m for m in hook.received if m["path"] == "/management"]
        assert (
            "事件发生时间：" + attack.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
            in (management[0]["message"])
        )
        with sqlite_store.session() as session:
            resolve(session, first, "alice", clock())
            close(session, first, "alice", clock())

        clock.advance(days=1)  # the same account, a day later
        again = clock() - dt.timedelta(minutes=5)
        brute_force(audit, again)
        follow_logs(sqlite_store, cfg, clock)
        second = open_incident(sqlite_store, cfg, clock)
        assert second != first
        repeat = incident(sqlite_store, second)
        assert repeat.occurred_at == again
        assert repeat.notify_by == clock() + dt.timedelta(hours=2)  # a second two-hour clock
        assert repeat.late is False and repeat.notified_at is None
        with sqlite_store.session() as session:
            row = session.scalars(select(Finding).where(Finding.rule == "brute_force_login")).one()
            episodes = session.scalars(
                select(FindingEpisode)
                .where(FindingEpisode.finding_id == row.id)
                .order_by(FindingEpisode.number)
            ).all()
        assert [(e.number, e.incident_id, e.close_reason) for e in episodes] == [
            (1, first, "quiet"),  # a day without an attempt: over 360 minutes
            (2, None, None),  # the current one: its incident is on the finding
        ]
        assert episodes[0].occurred_at == attack and episodes[1].occurred_at == again
        assert row.episode == 2 and row.incident_id == second


def test_an_attack_right_after_its_incident_was_closed_opens_a_new_incident(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = settings(logs={"follow": [{"path": str(audit), "format": "json"}]})
    brute_force(audit, clock() - dt.timedelta(minutes=7))
    follow_logs(sqlite_store, cfg, clock)
    first = open_incident(sqlite_store, cfg, clock)
    clock.advance(minutes=20)
    with sqlite_store.session() as session:
        notify_management(session, cfg, first, PARTS, "alice", clock(), out_of_band="电话：王科长")
        resolve(session, first, "alice", clock())
        close(session, first, "alice", clock())
    clock.advance(minutes=30)  # well within the quiet period: handled, so a new episode
    brute_force(audit, clock() - dt.timedelta(minutes=7))
    follow_logs(sqlite_store, cfg, clock)
    second = open_incident(sqlite_store, cfg, clock)
    assert second != first
    with sqlite_store.session() as session:
        episode = session.scalars(select(FindingEpisode).where(FindingEpisode.number == 1)).one()
        assert (episode.incident_id, episode.close_reason) == (first, "incident_ended")


def test_an_attack_after_the_quiet_period_is_a_new_episode_even_while_the_incident_is_open(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = settings(logs={"follow": [{"path": str(audit), "format": "json"}]})
    brute_force(audit, clock() - dt.timedelta(minutes=7))
    follow_logs(sqlite_store, cfg, clock)
    first = open_incident(sqlite_store, cfg, clock)
    clock.advance(hours=1)
    brute_force(audit, clock() - dt.timedelta(minutes=7))  # within 6 hours: the same episode
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        assert intake(session, cfg, clock()).opened == []
    clock.advance(hours=7)  # quiet for longer than the rule's 360 minutes, then again
    brute_force(audit, clock() - dt.timedelta(minutes=7))
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        report = intake(session, cfg, clock())
    # the first incident is still open (nobody handled it): the repeat joins it, and the
    # finding's episodes say it happened twice
    assert report.opened == [] and report.joined == 1
    with sqlite_store.session() as session:
        row = session.scalars(select(Finding).where(Finding.rule == "brute_force_login")).one()
        assert row.episode == 2 and row.incident_id == first


async def test_the_worst_finding_heads_the_alert(sqlite_store: Store, clock: FakeClock) -> None:
    async with serve_webhook() as hook:
        cfg = settings(hook)
        sid = add_service(sqlite_store, clock)
        kw: dict[str, Any] = {"kind": "service", "service": sid}
        finding(sqlite_store, clock, "zap:10038", sid, "medium", "缺少内容安全策略头", **kw)
        finding(sqlite_store, clock, "zap:40012", sid, "high", "反射型跨站脚本", **kw)
        incident_id = open_incident(sqlite_store, cfg, clock)
        stored = incident(sqlite_store, incident_id)
        assert (stored.severity, stored.summary) == ("high", "反射型跨站脚本")
        await deliver(sqlite_store, cfg, clock)
        (alert,) = [m for m in hook.received if m["path"] == "/oncall"]
        assert "级别：高" in alert["message"] and "反射型跨站脚本" in alert["message"]
        assert "缺少内容安全策略头" not in alert["message"]


async def test_fifty_findings_of_one_kind_in_one_pass_make_one_incident(
    sqlite_store: Store, clock: FakeClock
) -> None:
    async with serve_webhook() as hook:
        cfg = settings(hook)
        for n in range(50):
            finding(sqlite_store, clock, "credential_stuffing", f"203.0.113.{n}")
        with sqlite_store.session() as session:
            report = intake(session, cfg, clock())
        assert len(report.opened) == 1 and report.joined == 49
        grouped = incident(sqlite_store, report.opened[0])
        assert grouped.subjects == [f"ip:203.0.113.{n}" for n in range(50)]
        with sqlite_store.session() as session:
            clocks_running = session.scalars(
                select(Incident).where(Incident.notify_by.is_not(None))
            ).all()
        assert len(clocks_running) == 1  # one notification duty for the batch
        await deliver(sqlite_store, cfg, clock)
        (alert,) = [m for m in hook.received if m["path"] == "/oncall"]
        assert "涉及对象：ip:203.0.113.0、ip:203.0.113.1" in alert["message"]
        assert "等 50 个" in alert["message"]

        clock.advance(minutes=5)  # the same address again joins; a new one in a later pass is new
        finding(sqlite_store, clock, "credential_stuffing", "203.0.113.7")
        finding(sqlite_store, clock, "credential_stuffing", "198.51.100.1")
        with sqlite_store.session() as session:
            later = intake(session, cfg, clock())
        assert later.joined == 0 and len(later.opened) == 1


def requests(path: Path, start: dt.datetime, count: int, status: int) -> None:
    """`count` requests to svc-0042, one every five seconds from `start`, all with `status`."""
    with path.open("a", encoding="utf-8") as handle:
        for n in range(count):
            record = {
                "ts": (start + dt.timedelta(seconds=5 * n)).astimezone(SHANGHAI).isoformat(),
                "ip": f"10.0.0.{n % 200}",
                "user_id": f"u-{n}",
                "service_id": "svc-0042",
                "action": "query",
                "method": "GET",
                "path": "/api/query",
                "status": status,
                "bytes": 512,
                "duration_ms": 30.0,
                "ua": "Mozilla/5.0",
            }
            handle.write(json.dumps(record) + "\n")


def test_an_outage_with_a_burst_of_errors_in_the_logs_is_one_incident_that_ends_with_it(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    # The burst opened a second, degraded incident that never resolved and kept escalating.
    audit = tmp_path / "audit.jsonl"
    cfg = settings(logs={"follow": [{"path": str(audit), "format": "json"}]})
    sid = add_service(sqlite_store, clock)
    finding(sqlite_store, clock, "service_down", sid, kind="service", service=sid)
    outage = open_incident(sqlite_store, cfg, clock)
    requests(audit, clock() - dt.timedelta(minutes=40), 60, 503)
    requests(audit, clock() - dt.timedelta(minutes=5), 30, 200)  # closes the burst's windows
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        burst = session.scalars(select(Finding).where(Finding.rule == "error_burst")).one()
        assert burst.state == "open"
        report = intake(session, cfg, clock())
        assert (report.opened, report.joined) == ([], 1)
    with sqlite_store.session() as session:  # the probes find it up again
        service_down = session.scalars(select(Finding).where(Finding.rule == "service_down"))
        service_down.one().state = "resolved"
    with sqlite_store.session() as session:
        assert intake(session, cfg, clock()).resolved == []  # the errors of the logs go on
    clock.advance(minutes=21)  # two windows without a burst
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        assert intake(session, cfg, clock()).resolved == [outage]
    assert incident(sqlite_store, outage).state == "resolved"


def test_a_security_finding_of_the_logs_does_not_end_by_itself(
    sqlite_store: Store, clock: FakeClock, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.jsonl"
    cfg = settings(logs={"follow": [{"path": str(audit), "format": "json"}]})
    brute_force(audit, clock() - dt.timedelta(minutes=7))
    follow_logs(sqlite_store, cfg, clock)
    attack = open_incident(sqlite_store, cfg, clock)
    clock.advance(hours=3)
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        assert intake(session, cfg, clock()).resolved == []
    assert incident(sqlite_store, attack).state == "open"
