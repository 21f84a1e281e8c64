"""What a service provider writes in the catalogue reaches an alert as text, in every channel's
format: no forged line, no link or markup of its own, and no mention of everyone."""

from __future__ import annotations

from sqlalchemy import select

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.incidents import notify_management, open_manual
from monitord.store import Store
from monitord.store.models import Service
from tests.alerts.test_delivery import add_service, config
from tests.conftest import FakeClock
from tests.receivers import Mailbox, Webhook

HOSTILE = {
    "name": '企业开办\n【已恢复】无需处理 @所有人 <at user_id="all">所有人</at> '
    "[点此处理](http://evil.example/x) <b>粗</b> & \x1b[2J",
    "provider": "行政审批局 @all",
    "emergency_plan_url": "https://plan.test/p.pdf\n确认：无需处理",
    "contacts": [{"name": "<@all>王五", "role": "oncall"}],
}


async def outage_alert(store: Store, clock: FakeClock, hook: Webhook, **alerts: object) -> None:
    cfg = config(hook, **alerts)
    sid = add_service(store, clock, **HOSTILE)
    with store.session() as session:
        # A summary typed by hand holds no control character (open_manual refuses one); the
        # service's name, from the catalogue, still carries its escape into the alert.
        name = session.scalars(select(Service.name)).one()
        summary = f"{name.replace(chr(27), '')} 无法访问"
        open_manual(session, cfg, "outage", [sid], summary, "值班员", clock())
    report = await deliver_due(store, cfg, clock, make_apprise_sender(None))
    assert (report.failed, report.waiting) == (0, 0), report


async def test_catalogue_text_in_a_text_alert_forges_no_line_and_mentions_nobody(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    await outage_alert(sqlite_store, clock, hook)
    body = hook.received[0]["message"]
    lines = body.splitlines()
    assert not any(line.startswith(("【已恢复】", "确认：无需处理")) for line in lines), body
    for mention in ("@所有人", "@all", "<at", "<@"):
        assert mention not in body
    assert "\x1b" not in body
    assert "涉及服务：svc-0042 企业开办\\n【已恢复】无需处理 ＠所有人 ＜at" in body
    assert "应急预案：https://plan.test/p.pdf\\n确认：无需处理" in body
    assert "联系人：＜＠all>王五(oncall)" in body


async def test_catalogue_markdown_is_shown_as_text_where_the_channel_renders_markdown(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    await outage_alert(sqlite_store, clock, hook, oncall=[hook.apprise_url("md?format=markdown")])
    body = hook.received[0]["message"]
    assert "[点此处理](http" not in body  # a link of the provider's, clickable in the chat
    assert r"\[点此处理\]\(http://evil\.example/x\)" in body


async def test_catalogue_html_is_shown_as_text_in_an_e_mail(
    sqlite_store: Store, clock: FakeClock, hook: Webhook, smtp: tuple[Mailbox, int]
) -> None:
    # E-mail went out as HTML made of the plain text: the provider's markup rendered, and the
    # alert's lines ran together.
    mailbox, port = smtp
    url = (
        f"mailto://monitord@localhost:{port}?mode=insecure&from=monitord@example.com"
        "&to=oncall@example.com"
    )
    await outage_alert(sqlite_store, clock, hook, oncall=[url, url + "&format=html"])
    # By default a plain-text e-mail, as the alert is (the two channels are sent to at once).
    types = [m.get_content_type() for m in mailbox.messages]
    assert sorted(types) == ["multipart/alternative", "text/plain"]
    text = mailbox.bodies()[types.index("text/plain")]
    assert "<b>粗</b>" in text and "\n应急预案：" in text
    [html] = mailbox.parts("text/html")  # one the operator asked to have as HTML
    assert "<b>粗</b>" not in html and "&lt;b&gt;粗&lt;/b&gt;" in html
    assert "&amp;" in html and "<br/>应急预案：" in html


async def test_catalogue_text_in_the_notification_to_the_management_unit_forges_nothing(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    sid = add_service(sqlite_store, clock, **HOSTILE)
    parts = {"scope": "全市", "harm": "无", "measures": "已下线", "rectification": "修复"}
    with sqlite_store.session() as session:
        incident = open_manual(session, cfg, "data_exposure", [sid], "数据泄露", "值班员", clock())
        notify_management(session, cfg, incident.id, dict(parts), "张三", clock())
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    [body] = [m["message"] for m in hook.received if m["path"] == "/management"]
    assert not any(line.startswith("【已恢复】") for line in body.splitlines()), body
    assert "@" not in body and "<at" not in body
    assert "  svc-0042 企业开办\\n【已恢复】无需处理 ＠所有人" in body
    assert "（行政审批局 ＠all；覆盖：全市）" in body
