"""The two-hour clock across a SIGKILL: the daemon as a process finds a brute force in the audit
log, alerts on-call, is killed, the notification is submitted while the management channel is
down, and after restarts everything arrives exactly once and the incident is notified only when
the management unit received it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.store.models import Incident, OutboxAlert
from monitord.timeutil import UTC
from tests.fakeportal import FakePortal, make_service, serve_portal
from tests.incidents.test_clock_trust import brute_force
from tests.receivers import Webhook, serve_webhook
from tests.runtime.test_daemon_process import (  # noqa: F401 - the autouse fixture kills leftovers
    no_daemon_left_behind,
    start_daemon,
    store_of,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    async with serve_portal(FakePortal(services=[make_service(1)])) as site:
        yield site


def follow_config(
    config: Path, portal_url: str, audit: Path, hook: Webhook, bureau: Webhook
) -> None:
    def url(receiver: Webhook, path: str) -> str:
        return receiver.url.replace("http://", "json://") + path

    write_config(
        config,
        portal_url,
        extra=f"""
[logs]
follow = [{{ path = "{audit}", format = "json" }}]
follow_interval_seconds = 0.3
[incidents]
check_interval_seconds = 0.3
[alerts]
oncall = ["{url(hook, "/oncall")}"]
management = ["{url(bureau, "/management")}"]
delivery_interval_seconds = 0.3
retry_seconds = 0.3
retry_max_seconds = 0.6
""",
    )


def the_incident(config: Path) -> Incident | None:
    store = store_of(config)
    try:
        with store.session() as session:
            return session.get(Incident, 1)
    finally:
        store.dispose()


def delivery_recorded(config: Path, kind: str) -> bool:
    """Whether the store records an alert of this kind (opened, notification) delivered."""
    store = store_of(config)
    try:
        with store.session() as session:
            delivered = select(OutboxAlert.id).where(
                OutboxAlert.kind == kind, OutboxAlert.state == "delivered"
            )
            return session.scalar(delivered) is not None
    finally:
        store.dispose()


async def notify(config: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitord.cli",
        "--config",
        str(config),
        "incidents",
        "notify",
        "1",
        "--scope",
        "企业开办服务，全市",
        "--harm",
        "可能泄露登录凭据",
        "--measures",
        "已封禁来源 IP",
        "--rectification",
        "启用登录验证码",
        "--by",
        "alice",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_sigkill_loses_no_alert_sends_none_twice_and_keeps_the_clock_honest(
    tmp_path: Path, portal: FakePortal
) -> None:
    config = tmp_path / "monitord.toml"
    audit = tmp_path / "audit.jsonl"
    async with serve_webhook() as hook, serve_webhook() as bureau:
        follow_config(config, portal.url, audit, hook, bureau)
        brute_force(audit, dt.datetime.now(UTC) - dt.timedelta(minutes=3))
        daemon = await start_daemon(config)
        await wait_for(lambda: delivery_recorded(config, "opened"), "the on-call alert recorded")
        daemon.process.kill()
        await daemon.process.wait()

        bureau.failing = True  # the management unit's channel is down
        said = await notify(config)
        assert "not delivered yet" in said
        submitted = the_incident(config)
        assert submitted is not None and submitted.notification_sent_at is not None
        assert submitted.notified_at is None

        daemon = await start_daemon(config)
        await wait_for(lambda: bureau.refused >= 2, "the restarted daemon retrying")
        bureau.failing = False
        # Killed once the delivery is recorded: it must not go out again. (Killed between the
        # channel taking it and the record, it would go again with the same key, which the
        # receiver can drop: delivery is at least once, and each copy says its key.)
        await wait_for(lambda: delivery_recorded(config, "notification"), "the delivery recorded")
        daemon.process.kill()
        await daemon.process.wait()

        daemon = await start_daemon(config)
        # Killed after the copy was marked delivered, perhaps before the incident was told: the
        # restarted daemon records it, at the time the channel took it.
        await wait_for(
            lambda: getattr(the_incident(config), "notified_at", None) is not None,
            "the incident notified",
        )
        delivered = the_incident(config)
        assert delivered is not None and delivered.notified_at is not None
        assert delivered.late is False
        await asyncio.sleep(1.5)  # several delivery passes of the third daemon
        await daemon.stop()

    keys = Counter(m["key"] for m in [*hook.received, *bureau.received])
    assert [k for k, n in keys.items() if n > 1] == []  # nothing sent twice
    assert len(bureau.received) == 1
    assert [m["title"].split("#")[0] for m in hook.received].count("【安全事件】") == 1
