"""The status page over real HTTP on loopback: sign-in, CSRF, rate limit, roles, what it shows."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from multidict import CIMultiDict
from sqlalchemy import select

from alerts.delivery import expand
from monitord.incidents import acknowledge, close, notify_management, open_manual, resolve
from monitord.runtime.app import App
from monitord.runtime.status import read_status
from monitord.store.models import (
    AuditEntry,
    Finding,
    Incident,
    IncidentEvent,
    OutboxAlert,
    Service,
    Silence,
)
from monitord.timeutil import SHANGHAI, local_text
from tests.conftest import FakeClock
from tests.runtime.web.pagesite import (
    HTML,
    ONCALL,
    VIEWER,
    Site,
    add_results,
    add_service,
    field,
    page_app,
    seed,
    serve_page,
)


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    with page_app(tmp_path, clock) as built:
        yield built


@pytest.fixture
async def site(app: App) -> AsyncIterator[Site]:
    async with serve_page(app) as served:
        yield served


def _incident(app: App, incident_id: int) -> Incident:
    with app.store.session() as session:
        found = session.get(Incident, incident_id)
        assert found is not None
        session.expunge(found)
        return found


async def test_a_browser_signs_in_with_its_token_and_sees_what_is_down(
    app: App, site: Site
) -> None:
    incident_id = seed(app)
    async with site.http.get(f"{site.url}/", headers=HTML, allow_redirects=False) as first:
        assert first.status == 303
        assert first.headers["Location"] == "/login?next=%2F"
    status, headers, _ = await site.sign_in(ONCALL)
    assert (status, headers["Location"]) == (303, "/")
    cookie = next(c for c in headers.getall("Set-Cookie") if c.startswith("monitord_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # served over plain http on loopback
    status, html = await site.page("/")
    assert status == 200
    # Down first, then degraded; the healthy one is not listed.
    assert html.index("svc-0001 企业开办一件事") < html.index("svc-0002 税务登记")
    assert "社保缴纳" not in html
    assert "中断 1" in html and "降级 1" in html and "正常 1" in html
    assert f"安全事件 #{incident_id} 数据泄露" in html
    assert "剩余 120 分钟" in html
    assert "u:pw" not in html  # the probe's error has its URL's password masked
    assert f'action="/incidents/{incident_id}/ack"' in html
    with app.store.session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "page.sign_in")).one()
        assert entry.actor == "zhang.san"


async def test_an_acknowledgement_needs_the_forms_csrf_token_and_is_audited_by_name(
    app: App, site: Site
) -> None:
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page("/")
    ack = f"{site.url}/incidents/{incident_id}/ack"
    for data in ({"back": "/"}, {"back": "/", "csrf": "forged"}):
        async with site.http.post(ack, data=data, allow_redirects=False) as refused:
            assert refused.status == 403
            assert "CSRF" in (await refused.json())["error"]
    assert _incident(app, incident_id).state == "open"
    data = {"csrf": field(html, "csrf"), "back": "/"}
    async with site.http.post(ack, data=data, allow_redirects=False) as done:
        assert (done.status, done.headers["Location"]) == (303, "/?done=ack")
    incident = _incident(app, incident_id)
    assert (incident.state, incident.acknowledged_by) == ("acknowledged", "zhang.san")
    with app.store.session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "incident.ack")).one()
        assert entry.actor == "zhang.san"
    _, html = await site.page("/?done=ack")
    assert "已确认。" in html
    assert f'action="/incidents/{incident_id}/ack"' not in html  # nothing left to acknowledge


async def test_the_timeline_shows_the_note_each_action_left(app: App, site: Site) -> None:
    # The note on-call typed with an action was kept but shown nowhere on the page.
    incident_id = seed(app)
    with app.store.session() as session:
        resolve(session, incident_id, "zhang.san", app.clock(), "已切换备用线路 <b>")
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    timeline = html.split("时间线")[1]
    assert "解决：已切换备用线路 &lt;b&gt;" in timeline


async def test_failed_sign_ins_are_limited_per_address_for_a_minute(site: Site) -> None:
    for _ in range(5):
        status, _, html = await site.sign_in("wrong-token")
        assert status == 401
        assert "令牌无效" in html
    status, headers, html = await site.sign_in(ONCALL)  # even the right token waits now
    assert status == 429
    assert int(headers["Retry-After"]) == 60
    assert "登录失败次数过多" in html
    site.ticker.seconds += 61
    status, _, _ = await site.sign_in(ONCALL)
    assert status == 303


async def _sign_in_from(site: Site, token: str, *forwarded_for: str) -> int:
    """Sign in through a proxy whose X-Forwarded-For lines are `forwarded_for`: the status."""
    async with site.http.get(f"{site.url}/login", headers=HTML) as form:
        csrf = field(await form.text(), "csrf")
    async with site.http.post(
        f"{site.url}/login",
        data={"csrf": csrf, "token": token, "next": "/"},
        headers=CIMultiDict(("X-Forwarded-For", hop) for hop in forwarded_for),
        allow_redirects=False,
    ) as response:
        return response.status


async def test_behind_a_trusted_proxy_failed_sign_ins_are_limited_per_browser(
    app: App, site: Site
) -> None:
    # Every browser came from the proxy's address: five wrong tokens from anyone locked
    # everyone out for a minute.
    api = app.settings.api.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    app.settings = app.settings.model_copy(update={"api": api})
    # A proxy that adds a line of its own after the client's: the client's line chose nothing.
    for number in range(5):
        assert await _sign_in_from(site, "x", f"192.0.2.{number}", "198.51.100.30") == 401
    assert await _sign_in_from(site, ONCALL, "192.0.2.99", "198.51.100.30") == 429
    for _ in range(5):
        assert await _sign_in_from(site, "wrong-token", "203.0.113.7") == 401
    assert await _sign_in_from(site, ONCALL, "203.0.113.7") == 429
    assert await _sign_in_from(site, ONCALL, "198.51.100.20") == 303


async def test_a_forwarded_address_from_an_untrusted_client_does_not_escape_the_limit(
    site: Site,
) -> None:
    for number in range(5):
        assert await _sign_in_from(site, "wrong-token", f"198.51.100.{number}") == 401
    assert await _sign_in_from(site, ONCALL, "198.51.100.99") == 429


async def test_a_viewer_sees_no_buttons_and_may_not_post(app: App, site: Site) -> None:
    incident_id = seed(app)
    await site.sign_in(VIEWER)
    _, html = await site.page("/")
    assert "剩余 120 分钟" in html
    assert "/ack" not in html and "填写并发送通报" not in html
    _, detail = await site.page(f"/incidents/{incident_id}")
    assert 'id="notify"' not in detail
    data = {"csrf": field(html, "csrf"), "back": "/"}
    async with site.http.post(
        f"{site.url}/incidents/{incident_id}/ack", data=data, allow_redirects=False
    ) as refused:
        assert refused.status == 403
        assert (await refused.json())["error"] == "this needs the oncall role; li.si is viewer"
    assert _incident(app, incident_id).state == "open"


async def test_a_bearer_header_is_served_directly_and_no_csrf_is_asked_of_it(
    app: App, site: Site
) -> None:
    incident_id = seed(app)
    bearer = {"Authorization": f"Bearer {ONCALL}", **HTML}
    async with site.http.get(f"{site.url}/", headers=bearer) as response:
        assert response.status == 200
        assert "svc-0001" in await response.text()
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    async with site.http.post(
        f"{site.url}/incidents/{incident_id}/ack", headers=bearer, allow_redirects=False
    ) as done:
        assert done.status == 303
    assert _incident(app, incident_id).acknowledged_by == "zhang.san"
    async with site.http.get(f"{site.url}/", headers={"Authorization": "Bearer nope"}) as bad:
        assert bad.status == 401


async def test_a_session_ends_after_twelve_hours_and_at_sign_out(app: App, site: Site) -> None:
    await site.sign_in(ONCALL)
    site.ticker.seconds += 12 * 3600 - 1
    assert (await site.page("/"))[0] == 200
    site.ticker.seconds += 2
    async with site.http.get(f"{site.url}/", headers=HTML, allow_redirects=False) as expired:
        assert expired.status == 303
    await site.sign_in(ONCALL)
    _, html = await site.page("/")
    async with site.http.post(
        f"{site.url}/logout", data={"csrf": field(html, "csrf")}, allow_redirects=False
    ) as out:
        assert (out.status, out.headers["Location"]) == (303, "/login")
    async with site.http.get(f"{site.url}/", headers=HTML, allow_redirects=False) as after:
        assert after.status == 303


async def test_the_session_cookie_is_secure_when_the_page_is_reached_over_https(
    tmp_path: Path, clock: FakeClock
) -> None:
    with page_app(tmp_path, clock, public_url="https://monitor.example.gov.cn") as app:
        async with serve_page(app) as site:
            # The test talks plain http to a page people reach over https (a TLS proxy in
            # front), so it hands back the Secure form cookie itself.
            async with site.http.get(f"{site.url}/login", headers=HTML) as form:
                csrf = field(await form.text(), "csrf")
                assert "Secure" in form.headers["Set-Cookie"]
            async with site.http.post(
                f"{site.url}/login",
                data={"csrf": csrf, "token": ONCALL},
                headers={"Cookie": f"monitord_login={csrf}"},
                allow_redirects=False,
            ) as signed:
                assert signed.status == 303
                cookie = next(
                    c for c in signed.headers.getall("Set-Cookie") if "monitord_session=" in c
                )
                assert "Secure" in cookie and "HttpOnly" in cookie


async def test_the_notification_form_names_a_missing_part_and_sends_a_complete_one(
    app: App, site: Site
) -> None:
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    assert 'id="notify"' in html and "一、初步判定的影响范围" in html
    parts = {
        "csrf": field(html, "csrf"),
        "scope": "企业开办服务，覆盖全市",
        "harm": "约 300 家企业信息可能外泄\n含法人身份证号",
        "measures": "",
        "rectification": "修复越权漏洞并复测",
    }
    url = f"{site.url}/incidents/{incident_id}/notify"
    async with site.http.post(url, data=parts, allow_redirects=False) as refused:
        assert refused.status == 422
        text = await refused.text()
        assert "已采取的应急处置措施" in text
        assert "约 300 家企业信息可能外泄\n含法人身份证号</textarea>" in text  # kept as typed
    parts["measures"] = "已下线导出接口"
    async with site.http.post(url, data=parts, allow_redirects=False) as sent:
        assert (sent.status, sent.headers["Location"]) == (
            303,
            f"/incidents/{incident_id}?done=notify",
        )
    incident = _incident(app, incident_id)
    assert incident.state == "notified" and incident.notification_sent_at == app.clock()
    with app.store.session() as session:
        queued = session.scalars(
            select(OutboxAlert).where(OutboxAlert.channel == "management")
        ).one()
        assert queued.payload["measures"] == "已下线导出接口"
        entry = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "incident.notify")
        ).one()
        assert entry.actor == "zhang.san"
    _, html = await site.page(f"/incidents/{incident_id}")
    assert "提交通报" in html and "zhang.san" in html  # on the timeline, by name


async def test_a_late_clock_silences_and_stuck_alerts_show_on_the_page(
    app: App, site: Site, clock: FakeClock
) -> None:
    incident_id = seed(app)
    clock.advance(minutes=125)
    with app.store.session() as session:
        session.add(
            Silence(
                services=["svc-0002"],
                reason="供应商计划维护",
                created_by="zhang.san",
                created_at=clock(),
                starts_at=clock() - dt.timedelta(minutes=1),
                ends_at=clock() + dt.timedelta(hours=2),
            )
        )
        session.add(
            Silence(
                services=["svc-0003"],
                reason="已结束的静默",
                created_by="zhang.san",
                created_at=clock(),
                starts_at=clock() - dt.timedelta(hours=3),
                ends_at=clock() - dt.timedelta(hours=1),
            )
        )
    expand(app.store, app.settings, clock())  # the alert worker's pass: no on-call channel
    await site.sign_in(VIEWER)
    _, html = await site.page("/")
    assert '<span class="clock late">已逾期 5 分钟' in html
    assert f'class="card security late" id="incident-{incident_id}"' in html
    assert "供应商计划维护" in html and "已结束的静默" not in html
    # The opened alert has no on-call channel, and has waited over five minutes.
    assert "待发告警积压（1）" in html
    assert "no channel for oncall" in html


async def test_a_service_page_charts_its_uptime_and_latency(app: App, site: Site) -> None:
    seed(app)
    add_results(
        app,
        "svc-0001",
        [(10, True, 120.0), (20, True, 180.0), (30, False, 5000.0), (40, True, 150.0)],
    )
    add_results(app, "svc-0001", [(3 * 24 * 60, False, 5000.0)])  # in the week, not the day
    await site.sign_in(VIEWER)
    status, html = await site.page("/services/svc-0001")
    assert status == 200
    assert "最近 24 小时：可用率 75.00%" in html
    assert "最近 7 天：可用率 60.00%" in html
    assert html.count("<svg") == 4
    assert "<script" not in html.split("</head>")[1]  # nothing inline: the CSP allows none
    assert " style=" not in html
    status, html = await site.page("/services/svc-9999")
    assert status == 404 and "没有服务 svc-9999" in html


async def test_a_service_whose_id_holds_a_slash_or_a_question_mark_is_linked_to_its_page(
    app: App, site: Site
) -> None:
    # The links were /services/grp/slash (a 404) and /services/q?x=1 (no service "q").
    add_service(app, "grp/slash", "分组服务", "down")
    add_service(app, "q?x=1", "查询服务", "down")
    add_service(app, "..", "点点服务", "down")
    await site.sign_in(VIEWER)
    _, front = await site.page("/")
    for service_id, link in (
        ("grp/slash", "/services/grp%2Fslash"),
        ("q?x=1", "/services/q%3Fx%3D1"),
        ("..", "/services/%2E%2E"),  # /services/.. is / to a browser
    ):
        assert f'href="{link}"' in front
        status, html = await site.page(link)
        assert status == 200 and service_id in html


@pytest.mark.parametrize("number", ["2147483648", "99999999999999999999"])
async def test_an_incident_number_beyond_any_id_is_not_found_not_a_server_error(
    app: App, site: Site, number: str
) -> None:
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    status, html = await site.page(f"/incidents/{number}")
    assert status == 404 and f"没有事件 #{number}" in html
    _, page = await site.page(f"/incidents/{incident_id}")
    async with site.http.post(
        f"{site.url}/incidents/{number}/ack",
        data={"csrf": field(page, "csrf"), "back": "/"},
        allow_redirects=False,
    ) as acked:
        assert acked.status == 404


async def test_an_incident_number_in_other_than_ascii_digits_is_not_found(
    app: App, site: Site
) -> None:
    # /incidents/\u0663 showed incident 3: the router's \\d+ takes any script's digits.
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    arabic = str(incident_id).translate(
        str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    )
    status, _html = await site.page(f"/incidents/{arabic}")
    assert status == 404


async def test_a_suspended_service_is_counted_suspended_not_down(app: App, site: Site) -> None:
    # Its outage is filed: the page showed a red 中断 card, counted it down, and `monitord
    # status` exited 1 for it.
    add_service(app, "svc-0007", "暂停中的服务", "down", "connection refused")
    with app.store.session() as session:
        service = session.get(Service, "svc-0007")
        assert service is not None
        service.status = "suspended"
    await site.sign_in(VIEWER)
    _, front = await site.page("/")
    assert "中断 0" in front and "暂停 1" in front
    assert "暂停中的服务" not in front  # no card among the services down
    with app.store.session() as session:
        status = read_status(session, app.clock())
    assert not status.anything_down and status.counts["suspended"] == 1
    _, page = await site.page("/services/svc-0007")
    assert "目录状态 暂停服务" in page  # not the catalogue's English "suspended"
    assert '<span class="badge suspended">暂停</span>' in page  # not a red 中断
    with app.store.session() as session:
        service = session.get(Service, "svc-0007")
        assert service is not None
        service.gone = True
    _, page = await site.page("/services/svc-0007")
    assert "目录状态 已移出目录" in page  # not "gone"


async def test_catalogue_text_is_escaped_on_the_page(app: App, site: Site) -> None:
    add_service(app, "svc-0666", '<script>alert("x")</script>', "down")
    await site.sign_in(VIEWER)
    _, html = await site.page("/")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html


async def test_a_gateway_outage_lists_two_hundred_services_and_counts_the_rest(
    app: App, site: Site
) -> None:
    for n in range(205):
        add_service(app, f"svc-{n:04d}", f"服务{n}", "down")
    await site.sign_in(VIEWER)
    _, html = await site.page("/")
    assert "中断 205" in html
    assert html.count('<div class="card down">') == 200
    assert "另有 5 个服务" in html


def _findings(app: App, incident_id: int, service_ids: list[str]) -> None:
    """Two open findings of the incident on each service, each on its timeline."""
    now = app.clock()
    with app.store.session() as session:
        for service_id in service_ids:
            for rule in ("tls_policy", "https_only"):
                session.add(
                    Finding(
                        rule=rule, clause="6.3.2 a", severity="high", subject_kind="service",
                        subject=service_id, service_id=service_id, summary="TLS 1.0 仍可用",
                        first_seen=now, last_seen=now, incident_id=incident_id,
                    )
                )  # fmt: skip
                session.add(
                    IncidentEvent(
                        incident_id=incident_id, at=now, kind="finding_added",
                        actor="monitord", detail={"rule": rule, "service_id": service_id},
                    )
                )  # fmt: skip


async def test_an_incident_of_hundreds_of_services_shows_its_clock_and_form_before_the_lists(
    app: App, site: Site
) -> None:
    # An incident grouping 3,000 services listed them all on its card, burying the 7.3.3 clock
    # and the notification form; its findings table showed 50 rows without a service column
    # nor a word about the rest; the timeline listed every row.
    incident_id = seed(app)
    services = [f"svc-{n:04d}" for n in range(300)]
    with app.store.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        incident.services = services
    _findings(app, incident_id, services)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    clock_at, form_at = html.index('class="clock'), html.index('id="notify"')
    first_finding = html.index("TLS 1.0 仍可用")
    assert clock_at < form_at < first_finding
    assert html[:form_at].count('href="/services/') == 10  # the card names the first ten
    assert "等 300 个服务" in html[:form_at]
    assert "发现（600）" in html and html.count("TLS 1.0 仍可用") == 200
    assert "另有 400 条发现未显示" in html
    assert f'href="/api/v1/incidents/{incident_id}"' in html
    assert '<td><a href="/services/svc-0000">svc-0000</a></td><td>tls_policy</td>' in html
    assert "时间线（" in html and "中间另有" in html
    assert "涉及服务（300）" in html and "另有 100 个服务未显示" in html


async def test_a_service_page_counts_the_open_findings_it_does_not_show(
    app: App, site: Site
) -> None:
    add_service(app, "svc-0001", "企业开办一件事", "up")
    with app.store.session() as session:
        for n in range(260):
            session.add(
                Finding(
                    rule=f"zap:{n}", clause="8.3 b", severity="medium", subject_kind="service",
                    subject="svc-0001", service_id="svc-0001", summary="中危漏洞",
                    first_seen=app.clock(), last_seen=app.clock(),
                )
            )  # fmt: skip
    await site.sign_in(VIEWER)
    _, html = await site.page("/services/svc-0001")
    assert "未解决的发现（260）" in html
    assert "另有 60 条未解决的发现未显示" in html
    assert 'href="/api/v1/findings?service=svc-0001&amp;state=open"' in html


async def test_a_token_taken_out_of_the_config_ends_its_sessions(app: App, site: Site) -> None:
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page("/")
    # A script in the signed-in browser may send the CSRF token as a header instead.
    async with site.http.post(
        f"{site.url}/incidents/{incident_id}/ack",
        headers={"X-CSRF-Token": field(html, "csrf")},
        allow_redirects=False,
    ) as done:
        assert done.status == 303
    kept = [t for t in app.settings.api.tokens if t.name != "zhang.san"]
    app.settings = app.settings.model_copy(
        update={"api": app.settings.api.model_copy(update={"tokens": kept})}
    )  # what a reload does
    async with site.http.get(f"{site.url}/", headers=HTML, allow_redirects=False) as gone:
        assert (gone.status, gone.headers["Location"]) == (303, "/login?next=%2F")


@pytest.mark.parametrize(
    ("given", "goes_to"),
    [
        ("/incidents/7", "/incidents/7"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        # A browser drops the tab and the line breaks: "//evil.example/x", another site.
        ("/\t/evil.example/x", "/"),
        ("/\r\n/evil.example/x", "/"),
        ("/incidents/7\\..\\..\\evil", "/"),
    ],
)
async def test_signing_in_leads_back_to_a_page_of_this_site_only(
    site: Site, given: str, goes_to: str
) -> None:
    async with site.http.get(f"{site.url}/login", headers=HTML) as form:
        csrf = field(await form.text(), "csrf")
    async with site.http.post(
        f"{site.url}/login",
        data={"csrf": csrf, "token": ONCALL, "next": given},
        allow_redirects=False,
    ) as signed:
        assert (signed.status, signed.headers["Location"]) == (303, goes_to)


def _silences(app: App) -> list[Silence]:
    with app.store.session() as session:
        found = list(session.scalars(select(Silence).order_by(Silence.id)))
        session.expunge_all()
        return found


async def test_on_call_adds_a_silence_with_the_form_and_sees_it_listed(
    app: App, site: Site, clock: FakeClock
) -> None:
    seed(app)
    await site.sign_in(ONCALL)
    _, front = await site.page("/")
    assert 'href="/silences"' in front
    _, html = await site.page("/silences")
    assert 'id="add-silence"' in html and "服务中断（outage）" in html
    form = {
        "csrf": field(html, "csrf"),
        "services": "svc-0001, svc-0002",
        "kinds": "outage",
        "rules": "",
        "reason": "供应商计划维护（已报备）",
        "for": "2h",
        "ends_at": "",
    }
    async with site.http.post(f"{site.url}/silences", data=form, allow_redirects=False) as done:
        assert (done.status, done.headers["Location"]) == (303, "/silences?done=silence")
    [silence] = _silences(app)
    assert (silence.services, silence.kinds, silence.created_by) == (
        ["svc-0001", "svc-0002"],
        ["outage"],
        "zhang.san",
    )
    assert silence.ends_at == clock() + dt.timedelta(hours=2)
    with app.store.session() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "silence.add")).one()
        assert entry.actor == "zhang.san"
    _, html = await site.page("/silences?done=silence")
    assert "静默已添加。" in html
    assert f'id="silence-{silence.id}"' in html
    assert "服务：svc-0001、svc-0002；类型：服务中断" in html
    _, front = await site.page("/")
    assert "生效中的静默（1）" in front and "供应商计划维护（已报备）" in front


async def test_an_end_time_from_the_form_is_read_as_beijing_time(
    app: App, site: Site, clock: FakeClock
) -> None:
    seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page("/silences")
    end = (clock() + dt.timedelta(hours=3)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
    form = {"csrf": field(html, "csrf"), "rules": "zap:*", "reason": "扫描窗口", "ends_at": end}
    async with site.http.post(f"{site.url}/silences", data=form, allow_redirects=False) as done:
        assert done.status == 303
    [silence] = _silences(app)
    assert silence.rules == ["zap:*"]
    assert local_text(silence.ends_at) == end.replace("T", " ")


async def test_a_refused_silence_shows_its_one_line_reason_and_keeps_what_was_typed(
    app: App, site: Site
) -> None:
    seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page("/silences")
    csrf = field(html, "csrf")
    # Said in Chinese, naming the form's fields as the form labels them (they were the CLI's
    # English lines: "ends_at or for: give exactly one").
    refusals = [
        (
            {"services": "svc-9999", "reason": "维护", "for": "2h"},
            "服务编号：svc-9999 不在服务目录中",
        ),
        (
            {"services": "svc-0001", "reason": "维护"},
            "在“持续时间”和“结束时间（北京时间）”中填写且只填写一项",
        ),
        ({"services": "svc-0001", "reason": "维护", "for": "soon"}, "持续时间：无法识别"),
        ({"services": "svc-0001", "reason": "维护", "for": "0m"}, "持续时间：时长须大于零"),
        ({"services": "svc-0001", "reason": "维护", "for": "4000d"}, "持续时间：静默最长 3,650 天"),
        (
            {"services": "svc-0001", "reason": "维护", "ends_at": "2020-01-01T08:00"},
            "结束时间（北京时间）：2020-01-01 08:00 不晚于现在",
        ),
        (
            {"services": "svc-0001", "reason": "维护", "ends_at": "明天"},
            "结束时间（北京时间）：无法识别的时间",
        ),
        (
            {"services": "svc-0001", "rules": "no_rule", "reason": "维护", "for": "2h"},
            "规则：no_rule 不是",
        ),
        ({"reason": "全部静默", "for": "2h"}, "请至少填写服务编号、事件类型或规则中的一项"),
        ({"services": "svc-0001", "reason": "  ", "for": "2h"}, "请填写“原因”"),
        ({"services": "svc-0001", "reason": "长" * 2001, "for": "2h"}, "原因：共 2,001 字"),
    ]
    for form, said in refusals:
        data = {"csrf": csrf, **form}
        async with site.http.post(f"{site.url}/silences", data=data) as refused:
            assert refused.status == 422
            page = await refused.text()
        error = page.split('<p class="error">', 1)[1].split("</p>", 1)[0]
        assert error.startswith("未能完成：") and said in error, error
        assert not re.search(r"[A-Za-z]{4,}", error.replace(form.get("rules", ""), "")), error
        assert "Traceback" not in page
        assert f'value="{form.get("services", "")}"' in page  # what was typed is kept
    assert _silences(app) == []
    async with site.http.post(
        f"{site.url}/silences", data={"services": "svc-0001", "reason": "x", "for": "2h"}
    ) as forged:
        assert forged.status == 403  # no CSRF token
    assert _silences(app) == []


async def test_on_call_ends_a_silence_with_its_button_and_a_viewer_may_not(
    app: App, site: Site, clock: FakeClock
) -> None:
    seed(app)
    with app.store.session() as session:
        silence = Silence(
            services=["svc-0002"],
            reason="供应商计划维护",
            created_by="zhang.san",
            created_at=clock(),
            starts_at=clock(),
            ends_at=clock() + dt.timedelta(hours=2),
        )
        session.add(silence)
        session.flush()
        silence_id = silence.id
    expire = f"{site.url}/silences/{silence_id}/expire"
    await site.sign_in(VIEWER)
    _, html = await site.page("/silences")
    assert "供应商计划维护" in html
    assert 'id="add-silence"' not in html and "/expire" not in html
    data = {"csrf": field(html, "csrf"), "back": "/"}
    async with site.http.post(expire, data=data, allow_redirects=False) as refused:
        assert refused.status == 403
    site.http.cookie_jar.clear()
    await site.sign_in(ONCALL)
    _, html = await site.page("/")
    assert f'action="/silences/{silence_id}/expire"' in html
    clock.advance(minutes=10)
    data = {"csrf": field(html, "csrf"), "back": "/"}
    async with site.http.post(expire, data=data, allow_redirects=False) as done:
        assert (done.status, done.headers["Location"]) == (303, "/?done=expire")
    [ended] = _silences(app)
    assert (ended.expired_at, ended.expired_by) == (clock(), "zhang.san")
    _, html = await site.page("/?done=expire")
    assert "静默已结束。" in html and "生效中的静默（0）" in html
    _, html = await site.page("/silences")
    assert "最近结束的静默" in html and "供应商计划维护" in html
    async with site.http.post(expire, data=data) as again:
        assert again.status == 409
        assert f"静默 {silence_id} 已于 {local_text(clock())} 结束。" in await again.text()
    async with site.http.post(f"{site.url}/silences/99999999999/expire", data=data) as missing:
        assert missing.status == 409
        assert "静默 99999999999 不存在。" in await missing.text()


async def test_an_incidents_timeline_names_the_silence_that_held_its_alert_back(
    app: App, site: Site, clock: FakeClock
) -> None:
    seed(app)
    with app.store.session() as session:
        outage = open_manual(
            session, app.settings, "outage", ["svc-0002"], "连续 3 次探测失败", "monitord", clock()
        )
        outage_id = outage.id
    await site.sign_in(ONCALL)
    _, html = await site.page("/silences")
    form = {"csrf": field(html, "csrf"), "kinds": "outage", "reason": "割接", "for": "1h"}
    async with site.http.post(f"{site.url}/silences", data=form, allow_redirects=False) as done:
        assert done.status == 303
    [silence] = _silences(app)
    clock.advance(minutes=1)
    with app.store.session() as session:
        resolve(session, outage_id, "monitord", clock())  # its "resolved" news is held back
    _, html = await site.page(f"/incidents/{outage_id}")
    assert (
        f'告警被静默（未发群聊） <a href="/silences#silence-{silence.id}">静默 #{silence.id}</a>'
        in html
    )


async def test_only_pages_answering_a_get_reload_themselves(app: App, site: Site) -> None:
    # The reload asked the page's address again with GET: a refused form's page became a 405
    # line, and the sign-in page lost its ?next= (and replaced its form's CSRF cookie).
    incident_id = seed(app)
    script = '<script src="/static/page.js"'
    async with site.http.get(f"{site.url}/login?next=%2Fincidents%2F1", headers=HTML) as form:
        assert script not in await form.text()
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    assert script in html
    data = {"csrf": field(html, "csrf"), "scope": "x", "harm": "", "measures": "x"}
    async with site.http.post(f"{site.url}/incidents/{incident_id}/notify", data=data) as refused:
        assert refused.status == 422
        assert script not in await refused.text()
    async with site.http.post(f"{site.url}/silences", data={"csrf": field(html, "csrf")}) as bad:
        assert bad.status == 422
        assert script not in await bad.text()


PARTS = {
    "scope": "企业开办服务，覆盖全市",
    "harm": "约 300 家企业信息可能外泄",
    "measures": "已下线导出接口",
    "rectification": "修复越权漏洞并复测",
}


def _management_keys(app: App) -> list[str]:
    with app.store.session() as session:
        return list(
            session.scalars(
                select(OutboxAlert.idempotency_key)
                .where(OutboxAlert.channel == "management")
                .order_by(OutboxAlert.id)
            )
        )


async def test_a_notification_form_sent_twice_goes_out_once(app: App, site: Site) -> None:
    # A double tap (or a form opened before someone else sent theirs) sent the notification
    # again as a follow-up (续报), and nobody was told.
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    assert "通报管理单位（第 7.3.3 条）" in html
    data = {"csrf": field(html, "csrf"), "number": field(html, "number"), **PARTS}
    url = f"{site.url}/incidents/{incident_id}/notify"

    async def send() -> tuple[int, str]:
        async with site.http.post(url, data=data, allow_redirects=False) as answer:
            return answer.status, await answer.text()

    answers = sorted(await asyncio.gather(send(), send()))
    assert [status for status, _ in answers] == [303, 409]
    refused = answers[1][1]
    assert "已有人提交了通报，本次未发送" in refused
    assert "续报（第 1 次）" in refused and "约 300 家企业信息可能外泄</textarea>" in refused
    assert _management_keys(app) == [f"incident:{incident_id}:notification:1"]
    # The form shown with the refusal is the follow-up's: sent on purpose, it goes out.
    data["number"] = field(refused, "number")
    status, _ = await send()
    assert status == 303
    assert _management_keys(app) == [
        f"incident:{incident_id}:notification:1",
        f"incident:{incident_id}:notification:2",
    ]


async def test_a_form_sent_after_its_session_ended_says_so_and_shows_what_was_typed(
    app: App, site: Site
) -> None:
    # It was answered {"error": "a valid token is needed: Authorization: Bearer …"} (or the
    # CSRF line in English), with no way back and what was typed lost.
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    old_csrf = field(html, "csrf")
    url = f"{site.url}/incidents/{incident_id}/notify"
    data = {"csrf": old_csrf, "back": f"/incidents/{incident_id}", "number": "1", **PARTS}
    site.http.cookie_jar.clear()  # signed out: a restart, 12 hours, or 退出 in another tab
    async with site.http.post(url, data=data, headers=HTML, allow_redirects=False) as expired:
        assert expired.status == 401
        page = await expired.text()
    assert "登录已失效" in page and "本次操作未执行" in page
    assert f'href="/login?next=%2Fincidents%2F{incident_id}"' in page
    assert "约 300 家企业信息可能外泄</textarea>" in page and "二、初步判定的危害" in page
    assert old_csrf not in page
    await site.sign_in(ONCALL)  # signed in again: the old page's form is stale
    async with site.http.post(url, data=data, headers=HTML, allow_redirects=False) as stale:
        assert stale.status == 403
        page = await stale.text()
    assert "表单已过期" in page and "修复越权漏洞并复测</textarea>" in page
    assert _management_keys(app) == []
    async with site.http.post(url, data=data, allow_redirects=False) as script:
        assert script.status == 403  # a script, not a browser: still the JSON line
        assert "CSRF" in (await script.json())["error"]


async def test_a_phone_notification_recorded_late_counts_at_the_time_it_was_made(
    app: App, site: Site, clock: FakeClock
) -> None:
    # The page had no time field: a call made before the deadline, recorded after it, counted
    # at the recording (late), and the notice still said it waited for delivery.
    incident_id = seed(app)
    clock.advance(minutes=130)  # ten minutes past the two hours
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    assert 'type="datetime-local" id="at" name="at"' in html
    made = (clock() - dt.timedelta(minutes=20)).astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")
    data = {
        "csrf": field(html, "csrf"),
        "number": field(html, "number"),
        "out_of_band": "电话：市数据局 王科长",
        "at": made,
        **PARTS,
    }
    url = f"{site.url}/incidents/{incident_id}/notify"
    async with site.http.post(url, data=data, allow_redirects=False) as done:
        assert (done.status, done.headers["Location"]) == (
            303,
            f"/incidents/{incident_id}?done=notify_by_phone",
        )
    incident = _incident(app, incident_id)
    assert local_text(incident.notified_at) == made.replace("T", " ") and not incident.late
    _, html = await site.page(f"/incidents/{incident_id}?done=notify_by_phone")
    assert "已记录电话或当面通报" in html and "等待管理单位渠道确认送达" not in html
    assert "已按时通报" in html


@pytest.mark.parametrize(
    ("how", "said"),
    [("电" * 300, "共 300 字，最多 200 字"), ("电话\x1b[2J王科长\x07", "含有控制字符")],
)
async def test_how_a_notification_was_made_is_a_short_plain_line(
    app: App, site: Site, how: str, said: str
) -> None:
    # The page (and the command line) stored any length and any control character there,
    # where the API refused both.
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    data = {"csrf": field(html, "csrf"), "out_of_band": how, **PARTS}
    async with site.http.post(f"{site.url}/incidents/{incident_id}/notify", data=data) as refused:
        assert refused.status == 422
        assert said in await refused.text()
    incident = _incident(app, incident_id)
    assert (incident.notified_at, incident.notified_via) == (None, None)


async def test_a_notification_sent_but_not_delivered_shows_minutes_left_then_how_late(
    app: App, site: Site, clock: FakeClock
) -> None:
    # The clock said 须于 <deadline> 前送达 without the minutes left, and the same past the
    # deadline, where `incidents show` said how late it was.
    incident_id = seed(app)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    data = {"csrf": field(html, "csrf"), "number": "1", **PARTS}
    async with site.http.post(
        f"{site.url}/incidents/{incident_id}/notify", data=data, allow_redirects=False
    ) as sent:
        assert sent.status == 303
    clock.advance(minutes=100)
    _, html = await site.page("/")
    assert "通报已提交但未送达，剩余 20 分钟" in html
    clock.advance(minutes=34)
    _, html = await site.page("/")
    assert "通报已提交但未送达，已逾期 14 分钟" in html and "前送达" not in html


async def test_two_sign_in_tabs_opened_one_after_the_other_both_sign_in(site: Site) -> None:
    # Each sign-in form replaced the one form cookie: the first tab's form was refused with
    # 表单已过期 (403).
    forms = []
    for target in ("/incidents/3", "/incidents/5"):
        async with site.http.get(
            f"{site.url}/login", params={"next": target}, headers=HTML
        ) as form:
            forms.append(field(await form.text(), "csrf"))
    async with site.http.post(
        f"{site.url}/login",
        data={"csrf": forms[0], "token": ONCALL, "next": "/incidents/3"},
        allow_redirects=False,
    ) as signed:
        assert (signed.status, signed.headers["Location"]) == (303, "/incidents/3")


def _beijing(moment: dt.datetime) -> str:
    """A time as a datetime-local field holds it (Beijing time, to the minute)."""
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%dT%H:%M")


def _acknowledged_by_another(app: App, incident_id: int) -> None:
    with app.store.session() as session:
        acknowledge(session, incident_id, "li.zhiban", app.clock())


def _resolved(app: App, incident_id: int) -> None:
    with app.store.session() as session:
        resolve(session, incident_id, "li.zhiban", app.clock())


def _closed(app: App, incident_id: int) -> None:
    with app.store.session() as session:
        parts: dict[str, str | None] = dict(PARTS)
        now = app.clock()
        notify_management(session, app.settings, incident_id, parts, "li.zhiban", now, "电话")
        resolve(session, incident_id, "li.zhiban", now)
        close(session, incident_id, "li.zhiban", now)


def _nothing(app: App, incident_id: int) -> None:
    pass


HOUR = dt.timedelta(hours=1)
NOW = dt.datetime(2026, 11, 2, 1, 0, tzinfo=dt.UTC)  # the clock fixture's start


@pytest.mark.parametrize(
    ("before", "action", "form", "said"),
    [
        (
            _nothing,
            "notify",
            {"scope": "", "measures": "  "},
            "请填写“一、初步判定的影响范围”、“三、已采取的应急处置措施”。",
        ),
        (
            _nothing,
            "notify",
            {"measures": "措" * 4800},
            "三、已采取的应急处置措施：共 4,800 字，最多 4,000 字。",
        ),
        (
            _nothing,
            "notify",
            {"harm": "外泄\x1b[2J"},
            "二、初步判定的危害：含有控制字符，请只填写普通文字。",
        ),
        (
            _nothing,
            "notify",
            {"at": _beijing(NOW - HOUR)},
            "电话或当面通报的时间（北京时间）：只用于电话或当面通报",
        ),
        (
            _nothing,
            "notify",
            {"out_of_band": "电话", "at": "明天上午"},
            "电话或当面通报的时间（北京时间）：无法识别的时间",
        ),
        (
            _nothing,
            "notify",
            {"out_of_band": "电话", "at": _beijing(NOW + HOUR)},
            "电话或当面通报的时间（北京时间）：2026-11-02 10:00 晚于现在。",
        ),
        (
            _nothing,
            "notify",
            {"out_of_band": "电话", "at": _beijing(NOW - HOUR)},
            "电话或当面通报的时间（北京时间）：2026-11-02 08:00 早于事件发生的时间"
            "（2026-11-02 09:00）。",
        ),
        (_nothing, "notify", {"number": "1; x"}, "表单已损坏（通报序号无效）"),
        (_closed, "notify", {}, "事件已关闭，不能再通报。"),
        (_acknowledged_by_another, "ack", {}, "事件已由 li.zhiban 确认。"),
        (_resolved, "ack", {}, "事件已解决，无需确认。"),
        (_resolved, "resolve", {}, "事件已解决，无需再标记为已解决。"),
    ],
    ids=[
        "missing",
        "too-long",
        "control-character",
        "at-without-phone",
        "at-not-a-time",
        "at-in-the-future",
        "at-before-the-incident",
        "number",
        "closed",
        "already-acknowledged",
        "ack-resolved",
        "resolve-resolved",
    ],
)
async def test_a_refused_incident_action_says_why_in_chinese_naming_the_forms_field(
    app: App,
    site: Site,
    before: Callable[[App, int], None],
    action: str,
    form: dict[str, str],
    said: str,
) -> None:
    # The page said 未能完成：已采取的应急处置措施 (--measures): 4,800 characters, at most 4,000,
    # in English and naming the command line's flags, which on-call cannot type on the page.
    incident_id = seed(app)
    before(app, incident_id)
    await site.sign_in(ONCALL)
    _, html = await site.page(f"/incidents/{incident_id}")
    data = {"csrf": field(html, "csrf"), "back": f"/incidents/{incident_id}"}
    if action == "notify":
        data.update({"number": "1", **PARTS, **form})
    async with site.http.post(f"{site.url}/incidents/{incident_id}/{action}", data=data) as answer:
        assert answer.status in (409, 422)
        page = await answer.text()
    error = page.split('<p class="error">', 1)[1].split("</p>", 1)[0]
    assert error.startswith("未能完成：") and said in error, error
    assert re.search("[A-Za-z]{3,}", error.replace("li.zhiban", "")) is None, error
    if action == "notify":  # what was typed is kept, in the form or (closed) to copy
        typed = {**PARTS, **form}
        assert f"{typed['rectification']}</textarea>" in page
        if "out_of_band" in typed:
            assert f'value="{typed["out_of_band"]}"' in page


async def test_a_notification_with_no_management_channel_says_to_record_a_phone_call(
    tmp_path: Path, clock: FakeClock
) -> None:
    with page_app(tmp_path, clock, management=()) as app:
        incident_id = seed(app)
        async with serve_page(app) as site:
            await site.sign_in(ONCALL)
            _, html = await site.page(f"/incidents/{incident_id}")
            data = {"csrf": field(html, "csrf"), "number": "1", **PARTS}
            url = f"{site.url}/incidents/{incident_id}/notify"
            async with site.http.post(url, data=data) as refused:
                assert refused.status == 422
                page = await refused.text()
            assert "未能完成：未配置管理单位的通报渠道（配置项 alerts.management）" in page
            assert "如已电话或当面通报，请写明方式和对象后记录。" in page
            assert "--out-of-band" not in page and "apprise" not in page
            assert f"{PARTS['measures']}</textarea>" in page
            data["out_of_band"] = "电话：市数据局 王科长"
            async with site.http.post(url, data=data, allow_redirects=False) as recorded:
                assert recorded.status == 303
