"""`monitord incidents …` as an on-call person uses it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from monitord.cli import main
from monitord.runtime.app import build_app
from monitord.runtime.delivery import deliver_alerts
from monitord.runtime.settings import load_settings
from monitord.store import Store
from monitord.store.models import OutboxAlert
from tests.conftest import PostgresServer, wait_for
from tests.fakeportal import make_service
from tests.receivers import Webhook, serve_webhook


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with serve_webhook() as webhook:
        yield webhook


@pytest.fixture
def config(tmp_path: Path, hook: Webhook) -> Path:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(1)]}), encoding="utf-8")
    path = tmp_path / "monitord.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
        f'[alerts]\noncall = ["{hook.apprise_url("oncall")}"]\n'
        f'management = ["{hook.apprise_url("management")}"]\nservice_contacts = false\n',
        encoding="utf-8",
    )
    assert main(["--config", str(path), "sync", "--file", str(catalogue)]) == 0
    return path


async def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    # In a thread: the command runs its own event loop, and ours must keep serving the webhook.
    status = await asyncio.to_thread(main, ["--config", str(config), *args])
    out, err = capsys.readouterr()
    return status, out, err


async def open_incident(
    config: Path, capsys: pytest.CaptureFixture[str], kind: str, summary: str
) -> str:
    """Open an incident on svc-0001 by hand; its id."""
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "open",
        "--kind",
        kind,
        "--service",
        "svc-0001",
        "--summary",
        summary,
    )
    assert status == 0
    return out.strip()


async def test_open_ack_notify_resolve_round_trip(
    config: Path, capsys: pytest.CaptureFixture[str], hook: Webhook
) -> None:
    capsys.readouterr()
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "open",
        "--kind",
        "data_exposure",
        "--service",
        "svc-0001",
        "--summary",
        "服务商电话报告数据泄露",
        "--occurred-at",
        "2026-11-29T08:30",
        "--by",
        "alice",
    )
    assert status == 0
    incident_id = int(out.strip())
    status, out, _ = await run(config, capsys, "incidents", "list", "--json")
    [listed] = json.loads(out)
    assert {k: listed[k] for k in ("id", "kind", "class", "state", "services", "late")} == {
        "id": incident_id,
        "kind": "data_exposure",
        "class": "security",
        "state": "open",
        "services": ["svc-0001"],
        "late": False,
    }
    assert listed["occurred_at"] == "2026-11-29T00:30:00+00:00"
    assert listed["notify_by"] is not None and listed["notified_at"] is None

    status, out, _ = await run(config, capsys, "incidents", "ack", str(incident_id), "--by", "bob")
    assert (status, out.strip()) == (0, f"incident {incident_id} acknowledged by bob")
    status, _, err = await run(
        config,
        capsys,
        "incidents",
        "notify",
        str(incident_id),
        "--scope",
        "全市",
        "--harm",
        "企业信息外泄",
    )
    assert status == 2
    assert err == (
        "monitord: the notification is missing: 已采取的应急处置措施 (--measures); "
        "整改措施 (--rectification)\n"
    )
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "notify",
        str(incident_id),
        "--scope",
        "全市",
        "--harm",
        "企业信息外泄",
        "--measures",
        "下线接口",
        "--rectification",
        "修复并复测",
        "--by",
        "bob",
    )
    assert status == 0
    assert "delivered to 1 channel(s)" in out
    assert [m["path"] for m in hook.received] == ["/management"]
    status, out, _ = await run(config, capsys, "incidents", "show", str(incident_id), "--json")
    shown = json.loads(out)
    assert shown["state"] == "notified" and shown["notified_at"] is not None
    assert [e["kind"] for e in shown["timeline"]] == [
        "opened",
        "acknowledged",
        "notified",
        "delivered",
    ]
    assert [e["actor"] for e in shown["timeline"]] == ["alice", "bob", "bob", "monitord"]
    status, out, _ = await run(config, capsys, "incidents", "resolve", str(incident_id))
    assert status == 0
    status, out, _ = await run(config, capsys, "incidents", "list", "--json")
    assert json.loads(out) == []
    status, out, _ = await run(
        config, capsys, "incidents", "close", str(incident_id), "--by", "carol"
    )
    assert (status, out.strip()) == (0, f"incident {incident_id} closed by carol")


async def test_notify_with_the_channel_down_still_succeeds_and_says_it_waits(
    config: Path, capsys: pytest.CaptureFixture[str], hook: Webhook
) -> None:
    await open_incident(config, capsys, "vulnerability", "渗透测试发现越权")
    hook.failing = True
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "notify",
        "1",
        "--scope",
        "a",
        "--harm",
        "b",
        "--measures",
        "c",
        "--rectification",
        "d",
    )
    assert status == 0
    assert "waits in the outbox and the running daemon will deliver it" in out
    # Its state said 已通报 (notified) beside "sent, NOT DELIVERED": submitted is what it is.
    _, listed, _ = await run(config, capsys, "incidents", "list")
    assert "notified 已提交通报" in listed and "sent, NOT DELIVERED" in listed


async def test_notify_held_back_by_the_channel_is_not_called_unreachable(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], hook: Webhook
) -> None:
    # Nothing failed, yet nothing was left for the command to send (the running daemon had
    # claimed the copy, or the channel's pace held it): it said the channel could not be reached.
    shared = hook.apprise_url("shared")
    config.write_text(
        config.read_text(encoding="utf-8")
        .replace(hook.apprise_url("oncall"), shared)
        .replace(hook.apprise_url("management"), shared)
        + "rate_per_minute = { json = 1 }\n",
        encoding="utf-8",
    )
    await open_incident(config, capsys, "vulnerability", "渗透测试发现越权")
    with build_app(load_settings(config)) as app:
        await deliver_alerts(app)  # the opening alert: the channel's one message this minute
    assert [r["path"] for r in hook.received] == ["/shared"]
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "notify",
        "1",
        "--scope",
        "a",
        "--harm",
        "b",
        "--measures",
        "c",
        "--rectification",
        "d",
    )
    assert status == 0
    assert "could not be reached" not in out
    assert (
        "not delivered by this command: another monitord process (the running daemon) is "
        "sending it, or the channel's alerts.rate_per_minute holds it for a moment; it waits in "
        "the outbox. `monitord incidents show 1` says when the management unit received it"
    ) in out
    assert len(hook.received) == 1


async def test_a_security_incident_cannot_be_closed_unnotified(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await open_incident(config, capsys, "data_exposure", "疑似泄露")
    await run(config, capsys, "incidents", "resolve", "1")
    status, _, err = await run(config, capsys, "incidents", "close", "1")
    assert status == 2
    assert "never notified to the management unit (7.3.3)" in err


async def test_a_security_incident_resolved_before_it_is_notified_stays_listed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It dropped out of the list and the status while its reminders and the late mark went on.
    await open_incident(config, capsys, "data_exposure", "疑似泄露")
    await run(config, capsys, "incidents", "resolve", "1")
    _, listed, _ = await run(config, capsys, "incidents", "list")
    assert "resolved 已解决, NOT NOTIFIED 未通报" in listed and "剩余 1" in listed
    _, out, _ = await run(config, capsys, "status")
    assert "open incidents: 1" in out and "NOT NOTIFIED" in out
    _, out, _ = await run(config, capsys, "status", "--json")
    assert [i["id"] for i in json.loads(out)["incidents"]] == [1]


async def test_bad_incident_commands_are_one_line_errors(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await run(config, capsys, "incidents", "ack", "99"))[2] == (
        "monitord: no incident 99: see `monitord incidents list`\n"
    )
    status, _, err = await run(
        config,
        capsys,
        "incidents",
        "open",
        "--kind",
        "outage",
        "--service",
        "svc-0001",
        "--summary",
        "x",
        "--occurred-at",
        "yesterday",
    )
    assert status == 2 and "--occurred-at 'yesterday': expected an ISO 8601 time" in err


async def test_a_service_named_twice_is_listed_once(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "open",
        "--kind",
        "outage",
        "--service",
        "svc-0001",
        "--service",
        "svc-0001",
        "--summary",
        "电话报告无法访问",
        "--json",
    )
    assert status == 0
    assert json.loads(out)["services"] == ["svc-0001"]


async def test_notifying_of_an_availability_incident_claims_no_deadline(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "within the deadline" of an incident that has none.
    await open_incident(config, capsys, "outage", "电话报告无法访问")
    status, out, _ = await run(
        config,
        capsys,
        "incidents",
        "notify",
        "1",
        "--scope",
        "a",
        "--harm",
        "b",
        "--measures",
        "c",
        "--rectification",
        "d",
    )
    assert status == 0
    assert "an availability incident has no 7.3.3 deadline" in out
    assert "within the deadline" not in out


async def test_notes_and_summaries_are_checked_as_the_api_checks_them_and_shown(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The API refuses a note over 4,000 characters or with an escape sequence; the command
    # line stored both, and the escape rewrote the terminal of whoever ran `incidents show`.
    opening = ["incidents", "open", "--kind", "outage", "--service", "svc-0001"]
    status, _, err = await run(config, capsys, *opening, "--summary", "注" * 4001)
    assert (status, err) == (2, "monitord: --summary: 4,001 characters, at most 4,000\n")
    status, _, err = await run(config, capsys, *opening, "--summary", "服务中断\x1b[2J")
    assert (status, err) == (
        2,
        "monitord: --summary: holds a control character; write plain text\n",
    )
    status, out, _ = await run(config, capsys, *opening, "--summary", "  服务中断  ")
    incident = out.strip()
    for command in ("ack", "resolve"):
        status, _, err = await run(
            config, capsys, "incidents", command, incident, "--note", "已处理\x1b[31m"
        )
        assert (status, err) == (
            2,
            "monitord: --note: holds a control character; write plain text\n",
        )
    await run(config, capsys, "incidents", "ack", incident, "--note", "正在排查网关", "--by", "bob")
    await run(config, capsys, "incidents", "resolve", incident, "--note", "  已重启网关 ")
    status, out, _ = await run(config, capsys, "incidents", "show", incident)
    assert status == 0
    assert "服务中断" in out and "  服务中断  " not in out
    timeline = out.split("timeline (CST):")[1]
    assert "acknowledged   bob  正在排查网关" in timeline
    assert "resolved" in timeline and timeline.rstrip().count("已重启网关") == 1


async def test_a_shell_without_the_smtp_password_leaves_the_notification_to_the_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's shell need not hold the daemon's secrets. Sending from it failed, said "the
    # channel could not be reached", and counted an attempt the daemon then waited out.
    monkeypatch.delenv("MONITORD_SMTP_PASSWORD", raising=False)
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(1)]}), encoding="utf-8")
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[alerts]\nservice_contacts = false\n'
        'management = ["mailto://monitord:{smtp_password}@localhost:1?to=duty@example.cn"]\n',
        encoding="utf-8",
    )
    assert (await run(config, capsys, "sync", "--file", str(catalogue)))[0] == 0
    incident = await open_incident(config, capsys, "data_exposure", "数据泄露")
    parts = ["--scope", "全市", "--harm", "泄露", "--measures", "下线", "--rectification", "修复"]
    status, out, _ = await run(config, capsys, "incidents", "notify", incident, *parts)
    assert status == 0
    assert (
        "queued: the running daemon delivers it (alerts.management[0] needs the SMTP password, "
        "and this shell has no MONITORD_SMTP_PASSWORD)"
    ) in out
    assert "could not be reached" not in out
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.session() as session:
            queued = session.scalars(select(OutboxAlert)).all()
            assert [(a.attempts, a.last_error) for a in queued if a.kind == "notification"] == [
                (0, None)
            ]
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("command", "change", "said"),
    [
        (
            "ack",
            "state = 'acknowledged', acknowledged_at = now(), acknowledged_by = 'zhang.san'",
            "incident 1 is already acknowledged by zhang.san (acknowledged 已确认): "
            "nothing changed",
        ),
        (
            "resolve",
            "state = 'resolved', resolved_at = now()",
            "incident 1 is already resolved (resolved 已解决): nothing changed",
        ),
    ],
)
async def test_a_change_that_loses_the_race_to_another_session_changes_nothing(
    tmp_path: Path,
    postgres: PostgresServer | None,
    capsys: pytest.CaptureFixture[str],
    command: str,
    change: str,
    said: str,
) -> None:
    # Another session held the incident and acknowledged it meanwhile: the ack said "was
    # already acknowledged by zhang.san", exit 2, where a repeat says "nothing changed", exit 0.
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(1)]}), encoding="utf-8")
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    assert (await run(config, capsys, "sync", "--file", str(catalogue)))[0] == 0
    await open_incident(config, capsys, "data_exposure", "疑似泄露")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    name = make_url(url).database
    try:
        with engine.connect() as other:
            other.execute(text("select id from incidents where id = 1 for update"))
            cli = asyncio.create_task(run(config, capsys, "incidents", command, "1"))
            # Autocommit: a transaction sees pg_stat_activity as it was when it began.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher:
                waiting = text(
                    "select count(*) from pg_stat_activity where datname = :name "
                    "and wait_event_type = 'Lock'"
                )
                await wait_for(
                    lambda: watcher.execute(waiting, {"name": name}).scalar(), "the CLI to wait"
                )
            other.execute(text(f"update incidents set {change} where id = 1"))
            other.commit()
            status, out, err = await cli
    finally:
        engine.dispose()
    assert (status, out.strip(), err) == (0, said, "")
