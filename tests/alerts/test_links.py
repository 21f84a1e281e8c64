"""Every alert about an incident carries its address on the status page when `[api]
public_url` is set (as Alertmanager's generatorURL), as it arrives in the chat through apprise."""

from __future__ import annotations

from typing import Any

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.config import Settings, parse_config
from monitord.incidents import acknowledge, open_manual, work_clocks
from monitord.store import Store
from monitord.store.models import Service
from monitord.store.outbox import enqueue
from tests.conftest import FakeClock
from tests.receivers import Webhook


def config(hook: Webhook, **api: Any) -> Settings:
    alerts = {
        "oncall": [hook.apprise_url("oncall")],
        "management": [hook.apprise_url("management")],
        "escalation": [{"name": "值班组长", "urls": [hook.apprise_url("lead")]}],
        "service_contacts": False,
    }
    return parse_config({"alerts": alerts, "api": api}, "test", env={})


def open_incident(store: Store, cfg: Settings, clock: FakeClock, kind: str) -> int:
    with store.session() as session:
        if session.get(Service, "svc-0042") is None:
            session.add(
                Service(
                    id="svc-0042",
                    name="企业开办一件事",
                    status="online",
                    first_seen=clock(),
                    last_seen=clock(),
                )
            )
            session.flush()
        return open_manual(session, cfg, kind, ["svc-0042"], "服务商报告", "值班员", clock()).id


async def test_every_alert_about_an_incident_links_to_its_page(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook, public_url="https://monitor.example.gov.cn/ops/")
    security = open_incident(sqlite_store, cfg, clock, "data_exposure")
    outage = open_incident(sqlite_store, cfg, clock, "outage")
    send = make_apprise_sender(None)
    await deliver_due(sqlite_store, cfg, clock, send)
    clock.advance(minutes=30)  # the first reminder, and nobody acknowledged: escalation
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    await deliver_due(sqlite_store, cfg, clock, send)
    with sqlite_store.session() as session:
        acknowledge(session, outage, "值班员", clock())
    by_incident: dict[int, list[str]] = {security: [], outage: []}
    for message in hook.received:
        number = security if f"#{security} " in message["title"] else outage
        by_incident[number].append(message["message"])
    assert len(by_incident[security]) >= 2  # opened, and a reminder or an escalation
    for number, bodies in by_incident.items():
        for body in bodies:
            lines = body.splitlines()
            assert lines[-2] == f"详情：https://monitor.example.gov.cn/ops/incidents/{number}"


async def test_a_storm_links_to_the_page_and_no_link_is_made_up_without_public_url(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook, public_url="https://monitor.example.gov.cn")
    with sqlite_store.session() as session:
        enqueue(
            session, "storm:1-12", "oncall", "storm", clock(), None, {"incidents": [], "count": 12}
        )
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    [storm] = hook.received
    assert "查看：https://monitor.example.gov.cn/" in storm["message"]
    hook.received.clear()
    plain = config(hook)
    incident = open_incident(sqlite_store, plain, clock, "data_exposure")
    await deliver_due(sqlite_store, plain, clock, make_apprise_sender(None))
    [opened] = hook.received
    assert f"#{incident}" in opened["title"]
    assert "详情" not in opened["message"] and "http" not in opened["message"]
