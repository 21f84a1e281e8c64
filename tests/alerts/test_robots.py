"""DingTalk's and WeCom's robots through real apprise, their APIs played on loopback behind a
CONNECT proxy: they answer HTTP 200 and say a refusal in the body."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.config import Settings, parse_config
from monitord.incidents import confirm_deliveries, notify_management, open_manual
from monitord.store import Store
from monitord.store.models import Incident, OutboxAlert, Service
from tests.alerts.test_delivery import add_service, open_incident
from tests.conftest import FakeClock
from tests.receivers import Robots, serve_robots

pytestmark = pytest.mark.timeout(60)

DING = "dingtalk://" + "a1" * 32
WECOM = "wecombot://" + "b2" * 16


@pytest.fixture
async def robots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Robots]:
    async with serve_robots(str(tmp_path)) as served:
        for name, value in served.env.items():
            monkeypatch.setenv(name, value)
        yield served


def config(**alerts: Any) -> Settings:
    values: dict[str, Any] = {
        "oncall": [DING],
        "management": [WECOM],
        "service_contacts": False,
        "retry_seconds": 30.0,
        "retry_max_seconds": 120.0,
    }
    values.update(alerts)
    return parse_config({"alerts": values}, "test", env={})


async def test_a_dingtalk_refusal_in_the_answer_body_is_a_failure_that_is_retried(
    sqlite_store: Store, clock: FakeClock, robots: Robots
) -> None:
    # DingTalk answered HTTP 200 {"errcode":310000,...}: the alert was recorded as delivered
    # and never arrived.
    cfg = config()
    open_incident(sqlite_store, cfg, clock)
    robots.answers = [{"errcode": 310000, "errmsg": "keywords not in content"}]
    send = make_apprise_sender(None)
    report = await deliver_due(sqlite_store, cfg, clock, send)
    assert (report.delivered, report.failed) == (0, 1)
    with sqlite_store.session() as session:
        row = session.scalars(select(OutboxAlert).where(OutboxAlert.parent_id.is_not(None))).one()
        assert row.state == "pending"
        assert row.last_error == (
            "dingtalk refused the message: errcode 310000 (keywords not in content)"
        )
    clock.advance(seconds=30)
    again = await deliver_due(sqlite_store, cfg, clock, send)
    assert again.delivered == 1
    assert [host for host, _ in robots.received] == ["oapi.dingtalk.com"] * 2


async def test_a_notification_the_wecom_robot_refused_is_not_received(
    sqlite_store: Store, clock: FakeClock, robots: Robots
) -> None:
    cfg = config()
    incident_id = open_incident(sqlite_store, cfg, clock)
    parts = {"scope": "全市", "harm": "泄露", "measures": "下线", "rectification": "修复"}
    with sqlite_store.session() as session:
        notify_management(session, cfg, incident_id, dict(parts), "张三", clock())
    robots.host_answers = {
        "qyapi.weixin.qq.com": [{"errcode": 45009, "errmsg": "api freq out of limit"}]
    }
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    with sqlite_store.session() as session:
        assert confirm_deliveries(session) == []
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.notified_at is None
        notification = session.scalars(
            select(OutboxAlert).where(
                OutboxAlert.parent_id.is_not(None), OutboxAlert.kind == "notification"
            )
        ).one()
        assert notification.state == "pending"
        assert "errcode 45009 (api freq out of limit)" in str(notification.last_error)


async def test_a_digest_takes_the_alerts_that_fit_the_wecom_robot_and_the_rest_follow(
    sqlite_store: Store, clock: FakeClock, robots: Robots
) -> None:
    # A 【告警汇总】 of 6 outages was 2,224 bytes: WeCom refused it (40058), every time.
    # Eight outages here, as many as a digest carries at most.
    cfg = config(oncall=[WECOM], rate_per_minute={"wecombot": 1})
    with sqlite_store.session() as session:
        for n in range(8):
            session.add(
                Service(
                    id=f"svc-{n:04d}",
                    name=f"企业开办一件事{n}",
                    emergency_plan_url=f"https://plan.test/svc-{n:04d}.pdf",
                    contacts=[{"name": "王五", "role": "oncall"}],
                    first_seen=clock(),
                    last_seen=clock(),
                )
            )
        ids = [
            open_manual(session, cfg, "outage", [f"svc-{n:04d}"], "服务无法访问", "x", clock()).id
            for n in range(8)
        ]
    send = make_apprise_sender(None)
    start = clock()
    for second in range(0, 6 * 60, 15):
        clock.now = start + dt.timedelta(seconds=second)
        await deliver_due(sqlite_store, cfg, clock, send)
    contents = robots.contents()
    assert all(len(text.encode()) <= 2048 for text in contents)
    assert contents[0].startswith("【告警汇总】")
    for incident_id in ids:
        assert sum(f"编号 incident:{incident_id}:opened" in text for text in contents) == 1
    with sqlite_store.session() as session:
        states = session.scalars(
            select(OutboxAlert.state).where(OutboxAlert.parent_id.is_not(None))
        ).all()
        assert set(states) == {"delivered"}


async def test_a_long_notification_reaches_the_wecom_robot_whole_in_numbered_parts(
    sqlite_store: Store, clock: FakeClock, robots: Robots
) -> None:
    # A notification with realistic four parts (~680 Chinese characters) was over WeCom's 2,048
    # bytes and never arrived.
    cfg = config()
    incident_id = open_incident(sqlite_store, cfg, clock)
    parts = {
        "scope": "企业开办服务覆盖全市，涉及营业执照、税务登记与社保开户的联办数据。" * 5,
        "harm": "约三百家企业的法定代表人姓名、身份证号与手机号可能被越权导出。" * 5,
        "measures": "已下线导出接口，封禁异常账号，保全访问日志并通知服务商排查。" * 5,
        "rectification": "修复越权漏洞，增加导出审批与水印，完成复测后再上线。" * 5,
    }
    with sqlite_store.session() as session:
        notify_management(session, cfg, incident_id, dict(parts), "张三", clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    sent = [robots.content(said) for host, said in robots.received if "weixin" in host]
    assert len(sent) >= 2
    assert all(len(text.encode()) <= 2048 for text in sent)
    titles = [text.split("\r\n", 1)[0] for text in sent]
    assert titles == [
        f"【安全事件通报】#{incident_id} 数据泄露（{n}/{len(sent)}）"
        for n in range(1, len(sent) + 1)
    ]
    whole = "\n".join(text.split("\r\n", 1)[1] for text in sent)
    for text in parts.values():
        assert text in whole.replace("\n", "")
    with sqlite_store.session() as session:
        assert confirm_deliveries(session) == [incident_id]


async def test_a_service_name_as_long_as_the_catalogue_allows_is_shortened_in_alerts(
    sqlite_store: Store, clock: FakeClock, robots: Robots
) -> None:
    cfg = config(oncall=[WECOM])
    add_service(sqlite_store, clock, name="企业开办" * 16_000)  # 64 KiB
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", ["svc-0042"], "服务无法访问", "x", clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    [text] = robots.contents()
    assert f"涉及服务：svc-0042 {'企业开办' * 14}企业开…" in text
    assert len(text.encode()) <= 2048
