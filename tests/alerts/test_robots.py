"""DingTalk's and WeCom's robots through real apprise, their APIs played on loopback behind a
CONNECT proxy: they answer HTTP 200 and say a refusal in the body."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.config import Settings, parse_config
from monitord.incidents import confirm_deliveries, notify_management
from monitord.store import Store
from monitord.store.models import Incident, OutboxAlert
from tests.alerts.test_delivery import open_incident
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
    robots.answers = [
        {"errcode": 0, "errmsg": "ok"},  # the on-call alert (DingTalk) goes first
        {"errcode": 45009, "errmsg": "api freq out of limit"},
    ]
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
