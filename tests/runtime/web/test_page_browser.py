"""The status page in real headless Chromium: sign in, see a down service and an incident's
clock, acknowledge with a click, see the state change, add a silence with the form and see it
listed. Skipped where Chromium is absent.

With MONITORD_SCREENSHOT=docs/status-page.png it also writes the README's screenshot there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.incidents import open_manual
from monitord.runtime.app import App
from monitord.store.models import Finding, Incident, Silence
from tests.conftest import FakeClock
from tests.runtime.web.chromium import Tab, chromium_path, open_tab
from tests.runtime.web.pagesite import (
    ONCALL,
    add_results,
    add_service,
    page_app,
    seed,
    serve_page,
)

CHROMIUM = chromium_path()
pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (apt-get install chromium, as .ci/run does): the "
        "status page is not driven in a browser here",
    ),
]


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    with page_app(tmp_path, clock) as built:
        yield built


def busy_morning(app: App, clock: FakeClock) -> int:
    """A late security incident, a fresh one and an outage, a silence, alerts waiting for a
    channel; returns the fresh security incident's id."""
    add_service(app, "svc-0004", "不动产登记查询", "up")
    with app.store.session() as session:
        open_manual(
            session,
            app.settings,
            "abnormal_behaviour",
            ["svc-0004"],
            "同一地址 5 分钟内 320 次登录失败（疑似暴力破解）",
            "monitord",
            clock(),
        )
    clock.advance(minutes=125)
    incident_id = seed(app)
    with app.store.session() as session:
        open_manual(
            session,
            app.settings,
            "outage",
            ["svc-0001"],
            "连续 3 次探测失败：HTTP 503",
            "monitord",
            clock(),
        )
        session.add(
            Silence(
                services=["svc-0002"],
                reason="服务商计划维护（已报备）",
                created_by="zhang.san",
                created_at=clock(),
                starts_at=clock(),
                ends_at=clock() + dt.timedelta(hours=3),
            )
        )
    add_results(app, "svc-0001", [(m, m > 45, 140.0 + m) for m in range(5, 600, 10)])
    return incident_id


async def test_on_call_signs_in_sees_the_clock_and_acknowledges_with_a_click(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    incident_id = busy_morning(app, clock)
    async with serve_page(app) as site, open_tab(CHROMIUM, tmp_path / "profile") as tab:
        await tab.send("Page.navigate", url=f"{site.url}/")
        await tab.wait_for("location.pathname === '/login' && document.getElementById('token')")
        await tab.evaluate(
            f"document.getElementById('token').value = {json.dumps(ONCALL)};"
            "document.querySelector('form[action=\"/login\"] button').click()"
        )
        await tab.wait_for("location.pathname === '/' && document.querySelector('.card')")
        text = await tab.text()
        assert "svc-0001 企业开办一件事" in text and "中断" in text
        assert "剩余 120 分钟" in text
        assert "已逾期 5 分钟" in text
        # The stylesheet was allowed by the CSP and applied: the late clock is red.
        colour = await tab.evaluate("getComputedStyle(document.querySelector('.clock.late')).color")
        assert colour == "rgb(198, 40, 40)"
        if os.environ.get("MONITORD_SCREENSHOT"):
            await tab.screenshot(Path(os.environ["MONITORD_SCREENSHOT"]), 900, 1200)
        await tab.evaluate(
            f"document.querySelector('form[action=\"/incidents/{incident_id}/ack\"] button')"
            ".click()"
        )
        await tab.wait_for("document.body.innerText.includes('已确认。')")
        card = await tab.evaluate(f"document.getElementById('incident-{incident_id}').innerText")
        assert "已确认" in card and "待确认" not in card
        assert (
            await tab.evaluate(
                f"!!document.querySelector('form[action=\"/incidents/{incident_id}/ack\"]')"
            )
            is False
        )
        shot = tmp_path / "page.png"
        await tab.screenshot(shot, 412, 900)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        await add_a_silence(tab)
    with app.store.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None
        assert (incident.state, incident.acknowledged_by) == ("acknowledged", "zhang.san")
        added = session.scalars(select(Silence).order_by(Silence.id.desc())).first()
        assert added is not None
        assert (added.services, added.kinds, added.created_by) == (
            ["svc-0003"],
            ["outage"],
            "zhang.san",
        )


async def add_a_silence(tab: Tab) -> None:
    """From the front page, follow the link to the silences, fill the form as a person does
    and send it; the new silence is listed there and on the front page."""
    await tab.evaluate("document.querySelector('a[href=\"/silences\"]').click()")
    await tab.wait_for("location.pathname === '/silences' && document.getElementById('reason')")
    await tab.evaluate(
        "document.getElementById('services').value = 'svc-0003';"
        "document.querySelector('input[name=kinds][value=outage]').click();"
        "document.getElementById('reason').value = '社保系统割接（已报备）';"
        "document.getElementById('for').value = '2h';"
        "document.querySelector('#add-silence button').click()"
    )
    await tab.wait_for("document.body.innerText.includes('静默已添加。')")
    text = await tab.text()
    assert "服务：svc-0003；类型：服务中断" in text and "社保系统割接（已报备）" in text
    await tab.send("Page.navigate", url=str(await tab.evaluate("location.origin")) + "/")
    await tab.wait_for("document.body.innerText.includes('生效中的静默（2）')")


async def _thirty_seconds_later(tab: Tab) -> None:
    """Let the page's timers run 31 s of virtual time (no waiting), and any reload finish."""
    await tab.send("Emulation.setVirtualTimePolicy", policy="advance", budget=31_000)
    await tab.wait_for("true")


async def test_a_refused_notification_stays_on_screen_past_the_pages_reload(
    app: App, clock: FakeClock, tmp_path: Path
) -> None:
    # The page reloaded its address every 30 s: a refusal answering the form's POST turned
    # into {"error": "Method Not Allowed"} and what was typed was gone.
    assert CHROMIUM is not None
    incident_id = seed(app)
    async with serve_page(app) as site, open_tab(CHROMIUM, tmp_path / "profile") as tab:
        await tab.send("Page.navigate", url=f"{site.url}/incidents/{incident_id}")
        await tab.wait_for("location.pathname === '/login' && document.getElementById('token')")
        await tab.evaluate(
            f"document.getElementById('token').value = {json.dumps(ONCALL)};"
            "document.querySelector('form[action=\"/login\"] button').click()"
        )
        await tab.wait_for(f"location.pathname === '/incidents/{incident_id}'")
        await tab.evaluate(
            "document.getElementById('scope').value = '企业开办服务';"
            "document.getElementById('harm').value = '约 300 家企业信息可能外泄';"
            "document.getElementById('measures').value = '措'.repeat(4001);"
            "document.getElementById('rectification').value = '修复越权漏洞';"
            "document.querySelector('#notify button').click()"
        )
        await tab.wait_for("document.querySelector('.error')")
        await _thirty_seconds_later(tab)
        assert await tab.evaluate("location.pathname") == f"/incidents/{incident_id}/notify"
        assert await tab.evaluate("document.getElementById('harm').value") == (
            "约 300 家企业信息可能外泄"
        )


async def test_on_a_phone_an_incidents_findings_table_stays_within_the_screen(
    app: App, tmp_path: Path
) -> None:
    # At 390 px the findings table ran off the screen (摘要 and 首次发现 out of sight), pushed
    # by a rule name and a URL with nowhere to break.
    assert CHROMIUM is not None
    incident_id = seed(app)
    now = app.clock()
    with app.store.session() as session:
        session.add(
            Finding(
                rule="plain_http_access_without_redirect_to_https", clause="6.3.2 a",
                severity="high", subject_kind="service", subject="svc-0001",
                service_id="svc-0001", summary="明文访问 http://svc-0001.test/" + "x" * 80,
                first_seen=now, last_seen=now, incident_id=incident_id,
            )
        )  # fmt: skip
    async with serve_page(app) as site, open_tab(CHROMIUM, tmp_path / "profile") as tab:
        await tab.send(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=900,
            deviceScaleFactor=1,
            mobile=True,
        )
        await tab.send("Page.navigate", url=f"{site.url}/incidents/{incident_id}")
        await tab.wait_for("document.getElementById('token')")
        await tab.evaluate(
            f"document.getElementById('token').value = {json.dumps(ONCALL)};"
            "document.querySelector('form[action=\"/login\"] button').click()"
        )
        await tab.wait_for("document.querySelector('table')")
        assert await tab.evaluate("document.documentElement.scrollWidth") == 390
        right = await tab.evaluate(
            "Math.max(...[...document.querySelectorAll('th')].map(th => "
            "th.getBoundingClientRect().right))"
        )
        assert right <= 390  # 首次发现 in sight
