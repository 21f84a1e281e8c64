"""What on-call reads when an incident is resolved by hand: 已恢复 only of services that are
up, 已结束 with who resolved it and why otherwise, and a notification still due."""

from __future__ import annotations

import pytest

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.incidents import open_manual, resolve
from monitord.store import Store
from monitord.store.models import ServiceState
from tests.alerts.test_delivery import add_service, config
from tests.conftest import FakeClock
from tests.receivers import Webhook


@pytest.mark.parametrize(
    ("kind", "probed", "title", "lines", "absent"),
    [
        # The service is still down: the next round opens a new incident of it.
        (
            "outage",
            "down",
            "【已结束】可用性事件",
            ["结束原因：值班员 alice 处理：已转服务商排查（服务并未恢复）"],
            ["尚未通报管理单位"],
        ),
        ("outage", "up", "【已恢复】可用性事件", [], ["结束原因", "尚未通报管理单位"]),
        (
            "data_exposure",
            "up",
            "【已结束】安全事件",
            [
                "结束原因：值班员 alice 处理：已转服务商排查",
                "尚未通报管理单位：事件已结束，通报义务仍在（7.3.3），请尽快通报",
                "通报：monitord incidents notify 1 --scope … --harm … --measures … "
                "--rectification …",
            ],
            ["服务并未恢复"],
        ),
    ],
)
async def test_an_incident_resolved_by_hand_says_recovered_only_of_services_up(
    sqlite_store: Store,
    clock: FakeClock,
    hook: Webhook,
    kind: str,
    probed: str,
    title: str,
    lines: list[str],
    absent: list[str],
) -> None:
    cfg = config(hook)
    sid = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        session.add(ServiceState(service_id=sid, state=probed, since=clock()))
        incident = open_manual(session, cfg, kind, [sid], "电话报告", "bob", clock())
        resolve(session, incident.id, "alice", clock(), "已转服务商排查")
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    [resolved] = [m for m in hook.received if m["title"].startswith(("【已结束】", "【已恢复】"))]
    assert resolved["title"].startswith(title), resolved
    body = resolved["message"].splitlines()
    for line in lines:
        assert line in body, resolved["message"]
    for text in absent:
        assert text not in resolved["message"]
