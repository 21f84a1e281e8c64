"""Alerts through real apprise: to a webhook on loopback (json://) and an SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts import delivery
from alerts.delivery import deliver_due, make_apprise_sender
from monitord.config import LoggingSettings, ReportSettings, Settings, parse_config
from monitord.incidents import (
    intake,
    notification_delivered,
    notify_management,
    open_manual,
    resolve,
    work_clocks,
)
from monitord.runtime.logsetup import setup_logging
from monitord.store import Store
from monitord.store.findings import upsert_finding
from monitord.store.models import Finding, OutboxAlert, Service
from monitord.types import FindingDraft
from tests.conftest import FakeClock
from tests.receivers import Mailbox, Webhook, serve_smtp, serve_webhook

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with serve_webhook() as webhook:
        yield webhook


def config(hook: Webhook, **alerts: Any) -> Settings:
    values: dict[str, Any] = {
        "oncall": [hook.apprise_url("oncall")],
        "management": [hook.apprise_url("management")],
        "service_contacts": False,
        "retry_seconds": 30.0,
        "retry_max_seconds": 120.0,
    }
    values.update(alerts)
    return parse_config({"alerts": values}, "test", env={})


def add_service(store: Store, clock: FakeClock, **changes: Any) -> str:
    values: dict[str, Any] = {
        "id": "svc-0042",
        "name": "企业开办一件事",
        "status": "online",
        "provider": "行政审批局",
        "coverage": ["all"],
        "emergency_plan_url": "https://plan.test/svc-0042.pdf",
        "contacts": [{"name": "王五", "role": "oncall"}],
        "first_seen": clock(),
        "last_seen": clock(),
    }
    values.update(changes)
    with store.session() as session:
        session.add(Service(**values))
    return str(values["id"])


def found(
    session: Session, clock: FakeClock, rule: str, clause: str, service_id: str, summary: str
) -> None:
    """A high finding of `rule` on the service, as a probe or the catalogue raises it."""
    upsert_finding(
        session,
        FindingDraft(
            rule=rule,
            clause=clause,
            severity="high",
            subject_kind="service",
            subject=service_id,
            summary=summary,
            service_id=service_id,
        ),
        clock(),
    )


def open_incident(
    store: Store,
    cfg: Settings,
    clock: FakeClock,
    kind: str = "data_exposure",
    summary: str = "服务商报告疑似数据泄露",
) -> int:
    sid = add_service(store, clock)
    with store.session() as session:
        return open_manual(session, cfg, kind, [sid], summary, "值班员", clock()).id


async def test_an_incident_alert_arrives_once_in_chinese_with_its_deadline_and_key(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    incident_id = open_incident(sqlite_store, cfg, clock)
    send = make_apprise_sender(None)
    report = await deliver_due(sqlite_store, cfg, clock, send)
    again = await deliver_due(sqlite_store, cfg, clock, send)
    assert (report.delivered, again.delivered) == (1, 0)
    [message] = hook.received
    assert message["path"] == "/oncall"
    assert message["title"] == f"【安全事件】#{incident_id} 数据泄露"
    assert "须于 2026-11-02 11:00 前通报管理单位（剩余 120 分钟）" in message["message"]
    assert f"确认：monitord incidents ack {incident_id}" in message["message"]
    assert message["key"].startswith(f"incident:{incident_id}:opened#")  # one key per channel
    assert message["message"].endswith(f"编号 incident:{incident_id}:opened")
    assert len(message["message"].splitlines()) <= 8  # fits a phone screen


async def test_availability_alerts_show_the_emergency_plan_and_contacts(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    open_incident(sqlite_store, cfg, clock, kind="outage", summary="服务无法访问")
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    body = hook.received[0]["message"]
    assert "应急预案：https://plan.test/svc-0042.pdf" in body
    assert "联系人：王五(oncall)" in body
    assert "通报管理单位" not in body  # no two-hour clock on availability incidents


async def test_a_channel_down_for_ten_minutes_delays_but_loses_nothing(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    send = make_apprise_sender(None)
    hook.failing = True
    ids = []
    for n in range(3):
        with sqlite_store.session() as session:
            if n == 0:
                add_service(sqlite_store, clock)
            ids.append(
                open_manual(session, cfg, "outage", ["svc-0042"], f"故障{n}", "x", clock()).id
            )
    start = clock()
    for second in range(0, 10 * 60, 15):
        clock.now = start + dt.timedelta(seconds=second)
        await deliver_due(sqlite_store, cfg, clock, send)
    assert hook.received == []
    # Retried with backoff (30 s doubling to 120 s), not dropped: one try a retry, the other
    # copies waiting with the first rather than each knocking on their own.
    assert 5 <= hook.refused <= 9
    hook.failing = False
    for second in range(10 * 60, 13 * 60, 15):
        clock.now = start + dt.timedelta(seconds=second)
        await deliver_due(sqlite_store, cfg, clock, send)
    assert [m["key"].split("#")[0] for m in hook.received] == [f"incident:{i}:opened" for i in ids]
    with sqlite_store.session() as session:
        rows = session.scalars(select(OutboxAlert).where(OutboxAlert.parent_id.is_not(None))).all()
        assert {r.state for r in rows} == {"delivered"}
        assert min(r.attempts for r in rows) >= 1 and max(r.attempts for r in rows) > 1


async def test_the_notification_to_the_management_unit_has_its_four_parts(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    incident_id = open_incident(sqlite_store, cfg, clock)
    clock.advance(minutes=50)
    with sqlite_store.session() as session:
        notify_management(
            session,
            cfg,
            incident_id,
            {
                "scope": "企业开办服务，覆盖全市",
                "harm": "约 300 家企业信息可能外泄",
                "measures": "已下线导出接口",
                "rectification": "修复越权漏洞并复测",
            },
            "张三",
            clock(),
        )
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    management = [m for m in hook.received if m["path"] == "/management"]
    assert [m["title"] for m in management] == [f"【安全事件通报】#{incident_id} 数据泄露"]
    body = management[0]["message"]
    for line in [
        "事件发生时间：2026-11-02 09:00",
        "发现时间：2026-11-02 09:00",
        "svc-0042 企业开办一件事（行政审批局；覆盖：全市）",
        "一、初步判定的影响范围：企业开办服务，覆盖全市",
        "二、初步判定的危害：约 300 家企业信息可能外泄",
        "三、已采取的应急处置措施：已下线导出接口",
        "四、整改措施：修复越权漏洞并复测",
    ]:
        assert line in body


async def test_the_notification_names_the_configured_units_and_no_coverage_never_reads_as_all(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # It always began "苏州市数据局：" and was signed "法人服务总入口运营单位" whatever
    # [report] said, and a service that filed no coverage was said to cover the whole city.
    units = {"management_unit": "苏州市数据局（测试）", "operation_unit": "苏商通运营单位（测试）"}
    cfg = config(hook).model_copy(update={"report": ReportSettings(**units)})
    service_id = add_service(sqlite_store, clock, coverage=[])
    with sqlite_store.session() as session:
        incident_id = open_manual(
            session, cfg, "data_exposure", [service_id], "泄露", "值班员", clock()
        ).id
        parts = {"scope": "s", "harm": "h", "measures": "m", "rectification": "r"}
        notify_management(session, cfg, incident_id, parts, "张三", clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    (management,) = [m for m in hook.received if m["path"] == "/management"]
    lines = management["message"].splitlines()
    assert lines[0] == "苏州市数据局（测试）："
    assert "  svc-0042 企业开办一件事（行政审批局；覆盖：未备案）" in lines
    assert lines[-2] == "报告单位：苏商通运营单位（测试）"


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    with serve_smtp() as server:
        yield server


async def test_email_alerts_reach_an_smtp_server_with_the_password_from_the_environment(
    sqlite_store: Store, clock: FakeClock, smtp: tuple[Mailbox, int], hook: Webhook
) -> None:
    mailbox, port = smtp
    url = (
        f"mailto://monitord:{{smtp_password}}@localhost:{port}?mode=insecure"
        "&from=monitord@example.com&to=oncall@example.com"
    )
    cfg = config(hook, oncall=[url])
    incident_id = open_incident(sqlite_store, cfg, clock)
    report = await deliver_due(sqlite_store, cfg, clock, make_apprise_sender("pa ss/word"))
    assert report.delivered == 1, report
    assert mailbox.subjects() == [f"【安全事件】#{incident_id} 数据泄露"]
    assert "须于 2026-11-02 11:00 前通报管理单位" in mailbox.bodies()[0]
    assert mailbox.logins == [("monitord", "pa ss/word")]
    with sqlite_store.session() as session:
        stored = session.scalars(select(OutboxAlert.channel)).all()
    assert not any("pa ss/word" in channel for channel in stored)


async def test_findings_flow_into_incidents_and_out_to_on_call(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    sid = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        found(session, clock, "plain_http_access", "6.3.2 b", sid, "服务接口未使用 HTTPS")
        intake(session, cfg, clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert hook.received[0]["title"].endswith("传输未加密或加密薄弱")
    assert "服务接口未使用 HTTPS" in hook.received[0]["message"]


async def test_an_alert_with_no_channel_waits_until_a_reload_adds_one(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # It was marked "nobody" and never retried, even once on-call was configured.
    bare = parse_config({"alerts": {"service_contacts": False}}, "test", env={})
    incident_id = open_incident(sqlite_store, bare, clock)
    send = make_apprise_sender(None)
    report = await deliver_due(sqlite_store, bare, clock, send)
    assert (report.delivered, report.waiting) == (0, 1)
    with sqlite_store.session() as session:
        [parent] = session.scalars(select(OutboxAlert)).all()
        assert parent.state == "pending"
        assert parent.last_error is not None and "alerts.oncall" in parent.last_error
    clock.advance(minutes=5)
    await deliver_due(sqlite_store, config(hook), clock, send)  # after a reload
    assert [m["key"].split("#")[0] for m in hook.received] == [f"incident:{incident_id}:opened"]


def test_the_daemon_is_told_at_start_which_alert_channels_are_missing() -> None:
    from monitord.config import alert_warnings

    warnings = alert_warnings(parse_config({}, "test", env={}))
    assert any(line.startswith("alerts.oncall lists no channel") for line in warnings)
    assert any(line.startswith("alerts.management lists no channel") for line in warnings)
    assert any(line.startswith("alerts.smtp_url is not set") for line in warnings)
    configured = {
        "oncall": ["json://127.0.0.1:9/x"],
        "management": ["json://127.0.0.1:9/y"],
        "smtp_url": "mailtos://monitord:{smtp_password}@smtp.example.cn",
    }
    assert alert_warnings(parse_config({"alerts": configured}, "test", env={})) == []


async def test_a_channel_that_fails_holds_no_other_channel_back_in_a_pass(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The on-call group's webhook hung (apprise gives up after seconds): its copies, due again
    # while the pass went on, were retried ahead of every newer copy, and the management unit's
    # notification, queued meanwhile, waited until the incident was marked late.
    async with serve_webhook() as down:
        down.failing = True
        cfg = config(hook, oncall=[down.apprise_url("oncall")])
        monkeypatch.setattr(delivery, "EXPAND_EVERY_SECONDS", 0.0)
        incident_id = open_incident(sqlite_store, cfg, clock)
        with sqlite_store.session() as session:
            for number in range(3):
                open_manual(
                    session, cfg, "outage", ["svc-0042"], f"中断 {number}", "值班员", clock()
                )
        send = make_apprise_sender(None)
        notified: list[int] = []

        async def hanging(channel: Any, message: Any, key: str) -> str | None:
            if not notified:  # submitted while the pass runs
                with sqlite_store.session() as session:
                    parts = {"scope": "s", "harm": "h", "measures": "m", "rectification": "r"}
                    notify_management(session, cfg, incident_id, parts, "张三", clock())
                notified.append(incident_id)
            said = await send(channel, message, key)
            if said is not None:
                clock.advance(minutes=2)  # a channel that hangs until it times out
            return said

        report = await deliver_due(sqlite_store, cfg, clock, hanging)
    assert [m["path"] for m in hook.received] == ["/management"]
    assert down.refused == 1  # tried once in the pass, again in the next
    assert report.failed == 1


async def test_a_reminder_of_a_resolved_incident_offers_no_acknowledgement(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # It said 确认：monitord incidents ack 18, which refuses a resolved incident (exit 2).
    cfg = config(hook)
    incident_id = open_incident(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        resolve(session, incident_id, "值班员", clock())
    clock.advance(minutes=31)
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    reminders = [m["message"] for m in hook.received if ":reminder:" in m["key"]]
    assert reminders and "incidents ack" not in reminders[-1]
    assert f"通报：monitord incidents notify {incident_id}" in reminders[-1]  # still owed


async def test_an_outage_ended_by_a_filed_suspension_is_not_said_to_have_recovered(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A suspension filed during a loud outage resolved its findings, and on-call read 【已恢复】
    # of a service still answering 503.
    cfg = config(hook)
    service_id = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        summary = "服务不可用：返回状态码 503，不在预期范围内"
        found(session, clock, "service_down", "6.4 a", service_id, summary)
        intake(session, cfg, clock())
    with sqlite_store.session() as session:
        service = session.get(Service, service_id)
        assert service is not None
        service.status, service.suspension = "suspended", {"planned_resume": "2026-11-09"}
        for finding in session.scalars(select(Finding)):
            finding.state = "resolved"
        intake(session, cfg, clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    ended = [m for m in hook.received if m["key"].split("#")[0].endswith(":resolved")]
    assert ended and ended[0]["title"].startswith("【已结束】可用性事件")
    assert "结束原因：服务已报备暂停（7.2.2）" in ended[0]["message"]
    assert "服务并未恢复" in ended[0]["message"]


async def test_an_alert_queued_after_a_failure_does_not_overtake_the_one_waiting_to_retry(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # Incident B's opening arrived 22 s before A's, which waited for its retry; a 续报 could
    # reach the management unit before its 通报 the same way.
    cfg = config(hook)
    send = make_apprise_sender(None)
    add_service(sqlite_store, clock)
    hook.failing = True
    with sqlite_store.session() as session:
        first = open_manual(session, cfg, "outage", ["svc-0042"], "故障A", "x", clock()).id
    await deliver_due(sqlite_store, cfg, clock, send)
    hook.failing = False
    clock.advance(seconds=8)
    with sqlite_store.session() as session:
        second = open_manual(session, cfg, "outage", ["svc-0042"], "故障B", "x", clock()).id
    await deliver_due(sqlite_store, cfg, clock, send)
    assert hook.received == []  # B waits behind A
    clock.advance(seconds=22)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert [m["key"].split("#")[0] for m in hook.received] == [
        f"incident:{first}:opened",
        f"incident:{second}:opened",
    ]


async def test_an_alert_delivered_late_tells_the_time_left_and_the_notification_as_they_are_then(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # An alert delivered after two minutes of retries still said 剩余 120 分钟, and one delivered
    # after the notification was received still asked for a phone call.
    cfg = config(hook, management=[])
    send = make_apprise_sender(None)
    first = open_incident(sqlite_store, cfg, clock)
    hook.failing = True
    await deliver_due(sqlite_store, cfg, clock, send)
    clock.advance(minutes=2)
    hook.failing = False
    await deliver_due(sqlite_store, cfg, clock, send)
    [opened] = hook.received
    assert opened["key"].startswith(f"incident:{first}:opened#")
    assert "须于 2026-11-02 11:00 前通报管理单位（剩余 118 分钟）" in opened["message"]
    assert opened["message"].endswith(f"编号 incident:{first}:opened")
    with sqlite_store.session() as session:
        second = open_manual(session, cfg, "data_exposure", ["svc-0042"], "又一起", "x", clock()).id
    hook.failing = True
    await deliver_due(sqlite_store, cfg, clock, send)
    clock.advance(minutes=1)
    with sqlite_store.session() as session:
        notification_delivered(session, second, clock(), "电话：市数据局")
    hook.failing = False
    clock.advance(minutes=1)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert "已于 2026-11-02 09:03 通报管理单位" in hook.received[-1]["message"]


@pytest.mark.timeout(30)
async def test_a_webhook_that_answers_after_five_seconds_gets_the_alert_once(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # apprise gave up after 4 s: the slow receiver had the alert and got it again at each retry.
    cfg = config(hook, management=[])
    hook.delay = 5.0
    open_incident(sqlite_store, cfg, clock)
    report = await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert (report.delivered, report.failed) == (1, 0)
    assert len(hook.received) == 1


async def test_a_webhook_that_hangs_holds_back_neither_on_call_nor_the_notification(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The on-call group's second webhook took the message and never answered: each send to it
    # waited out the read timeout while the healthy on-call channel and the management unit's
    # 7.3.3 notification waited behind it, and the incident was marked late. The hanging hook
    # here answers only once the healthy one has a message: it times out (a failure) unless
    # the channels are sent to at once.
    monkeypatch.setattr(delivery, "READ_TIMEOUT_SECONDS", 3.0)
    async with serve_webhook(Webhook(hold=hook.arrived)) as hanging:
        cfg = config(hook, oncall=[hanging.apprise_url("oncall-hang"), hook.apprise_url("oncall")])
        incident_id = open_incident(sqlite_store, cfg, clock)
        with sqlite_store.session() as session:
            parts = {"scope": "s", "harm": "h", "measures": "m", "rectification": "r"}
            notify_management(session, cfg, incident_id, parts, "张三", clock())
        report = await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert (report.delivered, report.failed) == (3, 0)
    assert sorted(m["path"] for m in hook.received) == ["/management", "/oncall"]
    assert [m["path"] for m in hanging.received] == ["/oncall-hang"]


async def test_a_notification_submitted_while_a_webhook_hangs_goes_out_at_once(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Submitted through the API while the daemon's pass waited on a hanging on-call webhook, the
    # notification went out only once that send timed out. The hanging hook answers only once
    # the management unit has the notification.
    monkeypatch.setattr(delivery, "READ_TIMEOUT_SECONDS", 3.0)
    monkeypatch.setattr(delivery, "EXPAND_EVERY_SECONDS", 0.1)
    async with serve_webhook(Webhook(hold=hook.arrived)) as hanging:
        cfg = config(hook, oncall=[hanging.apprise_url("oncall-hang")])
        incident_id = open_incident(sqlite_store, cfg, clock)
        delivering = asyncio.create_task(
            deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
        )
        await hanging.arrived.wait()
        with sqlite_store.session() as session:
            parts = {"scope": "s", "harm": "h", "measures": "m", "rectification": "r"}
            notify_management(session, cfg, incident_id, parts, "张三", clock())
        report = await delivering
    assert (report.delivered, report.failed) == (2, 0)
    assert [m["path"] for m in hook.received] == ["/management"]


async def test_a_send_to_a_webhook_that_hangs_fails_in_one_line_saying_it_did_not_answer(
    sqlite_store: Store,
    clock: FakeClock,
    hook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # Each failed try was logged twice, apprise's line and monitord's, and a webhook that took
    # the message and never answered was said to have had "a connection error".
    monkeypatch.setattr(delivery, "READ_TIMEOUT_SECONDS", 1.0)
    setup_logging(LoggingSettings(file=str(tmp_path / "monitord.log.jsonl")))
    try:
        async with serve_webhook(Webhook(hold=asyncio.Event())) as hanging:
            cfg = config(hook, oncall=[hanging.apprise_url("oncall-hang")], management=[])
            open_incident(sqlite_store, cfg, clock)
            report = await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    finally:
        logger.remove()
    assert report.failed == 1
    lines = capsys.readouterr().err.splitlines()
    [line] = [line for line in lines if "WARNING" in line]
    assert line.endswith("/oncall-hang) failed (attempt 1): no answer within 1 s")
    with sqlite_store.session() as session:
        errors = session.scalars(
            select(OutboxAlert.last_error).where(OutboxAlert.parent_id.is_not(None))
        ).all()
    assert errors == ["no answer within 1 s"]
