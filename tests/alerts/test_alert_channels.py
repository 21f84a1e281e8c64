"""Where alerts go: channels named in the outbox, looked up at send time, secrets kept to the
config's own URLs, catalogue contacts only as the config allows, never into a denied network."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import select

from alerts.delivery import deliver_due, expand, make_apprise_sender
from monitord.config import Settings
from monitord.incidents import intake, open_manual, resolve, work_clocks
from monitord.store import Store
from monitord.store.findings import upsert_finding
from monitord.store.models import Incident, OutboxAlert, Service
from monitord.types import FindingDraft
from tests.alerts.test_delivery import add_service, config, found, open_incident
from tests.conftest import FakeClock
from tests.receivers import Mailbox, Webhook, serve_webhook

PASSWORD = "pa ss/word"


def outbox(store: Store) -> list[OutboxAlert]:
    with store.session() as session:
        return list(session.scalars(select(OutboxAlert).order_by(OutboxAlert.id)).all())


async def deliver_all(store: Store, clock: FakeClock, cfg: Settings, passes: int = 3) -> None:
    for _ in range(passes):
        await deliver_due(store, cfg, clock, make_apprise_sender(PASSWORD))
        clock.advance(seconds=1)


async def test_the_outbox_keeps_each_channels_name_never_its_url(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    mail = (
        f"mailto://monitord:{{smtp_password}}@localhost:{port}?mode=insecure"
        "&from=monitord@example.com&to=oncall@example.com"
    )
    webhook = hook.apprise_url("oncall").replace("json://", "json://bot:s3cr3t-w3bh00k@")
    cfg = config(hook, oncall=[mail, webhook])
    open_incident(sqlite_store, cfg, clock)
    await deliver_all(sqlite_store, clock, cfg)
    assert len(hook.received) == len(mailbox.messages) == 1
    rows = outbox(sqlite_store)
    assert [r.channel for r in rows] == ["oncall", "alerts.oncall[0]", "alerts.oncall[1]"]
    stored = " ".join(f"{r.channel} {r.last_error} {r.title} {r.body}" for r in rows)
    assert "s3cr3t" not in stored and "smtp_password" not in stored


async def test_a_reload_between_expansion_and_delivery_loses_and_repeats_nothing(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    a, b, c = (hook.apprise_url(name) for name in "abc")
    before = config(hook, oncall=[a, b])
    incident_id = open_incident(sqlite_store, before, clock)
    expand(sqlite_store, before, clock())
    # The reload drops a, moves b to the first place and adds c.
    after = config(hook, oncall=[b, c])
    await deliver_all(sqlite_store, clock, after)
    assert sorted(m["path"] for m in hook.received) == ["/b", "/c"]
    assert {m["key"].split("#")[0] for m in hook.received} == {f"incident:{incident_id}:opened"}
    copies = [(r.channel, r.state) for r in outbox(sqlite_store) if r.parent_id is not None]
    assert copies == [
        ("alerts.oncall[0]", "withdrawn"),  # a, which the reload removed
        ("alerts.oncall[0]", "delivered"),  # b, found where the reload moved it
        ("alerts.oncall[1]", "delivered"),  # c, when the alert was expanded again
    ]


async def test_a_catalogue_url_never_receives_the_smtp_password(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A provider filed {smtp_password} in its contact URL, and got it in the next outage alert.
    cfg = config(hook, service_contacts=True, contact_allow=["json://127.0.0.1"])
    contact = {"name": "x", "role": "oncall", "apprise": hook.apprise_url("x/{smtp_password}")}
    sid = add_service(sqlite_store, clock, contacts=[contact])
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", [sid], "服务无法访问", "值班员", clock())
    await deliver_all(sqlite_store, clock, cfg)
    assert hook.received, "the on-call channel still gets the alert"
    assert [m["path"] for m in hook.received if m["path"] != "/oncall"] == ["/x/{smtp_password}"]


async def test_catalogue_contacts_are_alerted_only_as_the_config_allows(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, smtp: tuple[Mailbox, int]
) -> None:
    mailbox, port = smtp
    smtp_url = (
        f"mailto://monitord:{{smtp_password}}@localhost:{port}?mode=insecure"
        "&from=monitord@example.com"
    )
    cfg = config(hook, service_contacts=True, smtp_url=smtp_url)  # contact_allow: e-mail only
    contacts = [
        {"name": "王五", "role": "oncall", "apprise": "mailto://ops@Example.cn"},
        # a webhook of the provider's choosing, and an e-mail through its own SMTP server
        {"name": "x", "role": "owner", "apprise": hook.apprise_url("provider")},
        {"name": "y", "role": "owner", "apprise": f"mailto://u:p@localhost:{port}?to=a@b.cn"},
    ]
    sid = add_service(sqlite_store, clock, contacts=contacts)
    refusals: list[str] = []
    sink = logger.add(refusals.append, level="WARNING", format="{message}", filter="alerts")
    try:
        for summary in ("服务无法访问", "服务再次无法访问"):
            with sqlite_store.session() as session:
                open_manual(session, cfg, "outage", [sid], summary, "值班员", clock())
            await deliver_all(sqlite_store, clock, cfg)
    finally:
        logger.remove(sink)
    assert [m["path"] for m in hook.received] == ["/oncall", "/oncall"]
    assert [m["To"] for m in mailbox.messages] == ["ops@example.cn", "ops@example.cn"]
    assert mailbox.logins == [("monitord", PASSWORD)] * 2  # through the configured server
    refused = [line for line in refusals if "is not alerted" in line]
    assert len(refused) == 2, refused  # each refused contact logged once, not at every alert
    assert f"json://127.0.0.1:{hook.url.rsplit(':', 1)[1]}/provider" in refused[0]
    assert "u:***@localhost" in refused[1]


def providers(store: Store, clock: FakeClock, hook: Webhook) -> Settings:
    """Three services of three providers, each with a webhook contact of its own
    (/provider1 …), and a config that alerts them and links the status page."""
    for n in (1, 2, 3):
        contact = {
            "name": f"联系人{n}",
            "role": "owner",
            "apprise": hook.apprise_url(f"provider{n}"),
        }
        add_service(
            store,
            clock,
            id=f"svc-000{n}",
            name=f"服务{n}",
            provider=f"服务商{n}",
            emergency_plan_url=f"https://plan.test/svc-000{n}.pdf",
            contacts=[contact],
        )
    cfg = config(hook, service_contacts=True, contact_allow=["json://127.0.0.1"])
    api = cfg.api.model_copy(update={"public_url": "https://monitor.test"})
    return cfg.model_copy(update={"api": api})


def received(hook: Webhook, path: str) -> list[dict[str, Any]]:
    return [m for m in hook.received if m["path"] == path]


async def test_a_providers_contact_hears_only_of_its_own_services_in_a_grouped_incident(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # One provider's contact got the on-call text of an incident grouping three providers'
    # services: all three, another provider's finding, the commands, the 7.3.3 clock and the
    # status page; and then every reminder of it.
    cfg = providers(sqlite_store, clock, hook)
    with sqlite_store.session() as session:
        for n in (1, 2, 3):
            summary = f"接口 http://svc{n}.example.cn/ 未使用 HTTPS"
            found(session, clock, "plain_http_access", "6.3.2 b", f"svc-000{n}", summary)
        [incident_id] = intake(session, cfg, clock()).opened
    await deliver_all(sqlite_store, clock, cfg)
    [oncall] = received(hook, "/oncall")
    assert "svc-0002 服务2" in oncall["message"]
    assert f"确认：monitord incidents ack {incident_id}" in oncall["message"]
    assert f"详情：https://monitor.test/incidents/{incident_id}" in oncall["message"]
    [opened] = received(hook, "/provider1")
    assert opened["title"] == f"【安全事件】#{incident_id} 传输未加密或加密薄弱"
    assert opened["key"].startswith(f"incident:{incident_id}:opened#")  # its key as before
    body = opened["message"].splitlines()
    assert body[0] == "涉及服务：svc-0001 服务1"
    assert "发现：接口 http://svc1.example.cn/ 未使用 HTTPS" in body
    assert body[-1] == f"编号 incident:{incident_id}:opened"
    for internal in ("svc-0002", "svc2", "svc-0003", "monitord incidents", "通报", "详情"):
        assert internal not in opened["message"], internal
    stored = [r.body for r in outbox(sqlite_store) if r.channel.startswith("contact:svc-0001")]
    assert stored == [opened["message"]]  # as rendered when queued
    clock.advance(minutes=31)
    with sqlite_store.session() as session:
        work_clocks(session, cfg, clock())
    await deliver_all(sqlite_store, clock, cfg)
    assert [m["title"][:4] for m in received(hook, "/oncall")] == ["【安全事", "【提醒 "]
    assert len(received(hook, "/provider1")) == 1  # on-call's reminder is not the provider's
    with sqlite_store.session() as session:
        resolve(session, incident_id, "值班员", clock(), "已切换 HTTPS")
    await deliver_all(sqlite_store, clock, cfg)
    ended = received(hook, "/provider2")[-1]
    assert ended["title"] == f"【已结束】安全事件 #{incident_id} 传输未加密或加密薄弱"
    assert "svc-0002 服务2" in ended["message"] and "svc-0001" not in ended["message"]
    assert "7.3.3" not in ended["message"] and "已切换" not in ended["message"]


async def test_a_providers_contact_is_not_told_the_log_subjects_of_an_incident(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = providers(sqlite_store, clock, hook)
    with sqlite_store.session() as session:
        for n in (1, 2):
            draft = FindingDraft(
                rule="brute_force_ip",
                clause="7.3.1",
                severity="high",
                subject_kind="ip",
                subject=f"203.0.113.{n}",
                summary=f"地址 203.0.113.{n} 在 10 分钟内登录失败 60 次（暴力破解）",
                service_id=f"svc-000{n}",
            )
            upsert_finding(session, draft, clock())
        [incident_id] = intake(session, cfg, clock()).opened
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.subjects == ["ip:203.0.113.1", "ip:203.0.113.2"]
    await deliver_all(sqlite_store, clock, cfg)
    assert "涉及对象：ip:203.0.113.1、ip:203.0.113.2" in received(hook, "/oncall")[0]["message"]
    [copy] = received(hook, "/provider2")
    assert copy["message"].splitlines()[:2] == [
        "涉及服务：svc-0002 服务2",
        "事件类型：用户异常行为；发现于 2026-11-02 09:00",
    ]
    assert "203.0.113" not in copy["message"] and "涉及对象" not in copy["message"]


def denying(cfg: Settings, *networks: str) -> Settings:
    probes = cfg.probes.model_copy(update={"denied_networks": list(networks)})
    return cfg.model_copy(update={"probes": probes})


@pytest.mark.parametrize("source", ["config", "catalogue", "smtp"])
async def test_no_alert_goes_into_a_denied_network_whatever_its_source(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, smtp: tuple[Mailbox, int], source: str
) -> None:
    mailbox, port = smtp
    contact = {"name": "x", "role": "oncall", "apprise": "mailto://ops@example.cn"}
    alerts: dict[str, Any] = {"service_contacts": True}
    if source == "config":
        alerts["oncall"] = [hook.apprise_url("oncall")]
    elif source == "catalogue":
        alerts["oncall"] = []
        alerts["contact_allow"] = ["json://127.0.0.1"]
        contact["apprise"] = hook.apprise_url("provider")
    else:  # apprise's smtp= names the server it connects to, whatever the URL's host says
        alerts["oncall"] = []
        alerts["smtp_url"] = (
            f"mailto://monitord:{{smtp_password}}@example.cn:{port}?smtp=127.0.0.1"
            "&mode=insecure&from=monitord@example.com"
        )
    cfg = denying(config(hook, **alerts), "127.0.0.0/8")
    sid = add_service(sqlite_store, clock, contacts=[contact])
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", [sid], "服务无法访问", "值班员", clock())
    await deliver_all(sqlite_store, clock, cfg)
    assert (hook.received, hook.refused, mailbox.messages) == ([], 0, [])
    [copy] = [r for r in outbox(sqlite_store) if r.parent_id is not None]
    assert copy.state == "pending"
    assert copy.last_error is not None
    assert "resolves to 127.0.0.1, inside denied network 127.0.0.0/8" in copy.last_error


async def test_a_webhook_cannot_redirect_an_alert_into_a_denied_network(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    async with serve_webhook(host="127.0.0.2") as inside:
        hook.redirect_to = inside.url + "/metadata"
        cfg = denying(config(hook), "127.0.0.2/32")
        open_incident(sqlite_store, cfg, clock)
        await deliver_all(sqlite_store, clock, cfg)
    assert inside.received == []


async def test_a_name_that_resolves_elsewhere_when_apprise_connects_gets_no_alert(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: a channel's name answers the deny-list check with an allowed address and
    apprise's own lookup, a moment later, with a denied one. The alert must not go there."""
    resolver = socket._socket  # type: ignore[attr-defined]  # the name service under socket.getaddrinfo
    system_lookup = resolver.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any) -> Any:
        if host != "rebind.test":
            return system_lookup(host, port, *args)
        lookups.append(host)
        address = "127.0.0.2" if len(lookups) == 1 else "127.0.0.1"
        return system_lookup(address, port, *args)

    monkeypatch.setattr(resolver, "getaddrinfo", rebinding)
    port = hook.url.rsplit(":", 1)[1]
    cfg = denying(config(hook, oncall=[f"json://rebind.test:{port}/oncall"]), "127.0.0.1/32")
    open_incident(sqlite_store, cfg, clock)
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert len(lookups) >= 2  # the check's, then apprise's own
    assert hook.received == []
    [copy] = [r for r in outbox(sqlite_store) if r.parent_id is not None]
    assert copy.state == "pending" and copy.last_error is not None
    assert "rebind.test resolves to 127.0.0.1, inside denied network 127.0.0.1/32" in (
        copy.last_error
    )


async def test_a_contact_whose_host_label_is_too_long_fails_with_a_clear_error(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A label over 63 characters ended delivery in UnicodeError ('idna' codec failed) with a
    # traceback, at every pass, holding the other alerts back.
    cfg = config(hook, service_contacts=True, contact_allow=["json://*"])
    label = "0123456789abcdef" * 4
    contacts = [{"name": "x", "role": "owner", "apprise": f"json://{label}.example.cn/hook"}]
    open_incident(sqlite_store, cfg, clock, kind="outage")
    with sqlite_store.session() as session:
        service = session.get(Service, "svc-0042")
        assert service is not None
        service.contacts = contacts
    report = await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert (report.delivered, report.failed) == (1, 1)
    assert [m["path"] for m in hook.received] == ["/oncall"]
    [failed] = [
        r for r in outbox(sqlite_store) if r.parent_id is not None and r.state != "delivered"
    ]
    assert failed.last_error is not None
    assert failed.last_error.startswith("the host of contact:svc-0042:")
    assert "is not a valid name" in failed.last_error
