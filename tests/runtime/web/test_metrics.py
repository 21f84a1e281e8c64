"""GET /metrics over real HTTP, parsed with prometheus-client's own parser: every family says
what the store holds, with bounded labels and never a URL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

import monitord.store
from monitord.config import parse_config
from monitord.runtime.app import App, build_app
from monitord.runtime.web import build_web_app
from monitord.runtime.web.auth import new_token, token_hash
from monitord.runtime.web.metrics import Family, render
from monitord.store import Store
from monitord.store.models import (
    Finding,
    Incident,
    LogSource,
    OutboxAlert,
    ProbeResultRow,
    Service,
    ServiceState,
    SyncRun,
)
from tests.conftest import FakeClock, table_locked

VIEWER = new_token()
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def app(store_url: str, clock: FakeClock) -> Iterator[App]:
    """The app on each store backend: the metrics' queries read JSON facts in SQL."""
    settings = parse_config(
        {
            "store": {"url": store_url},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [{"name": "grafana", "role": "viewer", "sha256": token_hash(VIEWER)}],
            },
            "logs": {"follow": [{"path": "/var/log/nginx/access.log"}]},
        },
        "test",
        {},
    )
    with build_app(settings, clock=clock) as built:
        yield built


@pytest.fixture
async def base(app: App) -> AsyncIterator[str]:
    server = TestServer(build_web_app(app), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url(""))
    await server.close()


async def scrape(base: str, token: str | None = VIEWER) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{base}/metrics", headers=headers) as response,
    ):
        if response.status == 200:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.status, await response.text()


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def service(session: Any, now: dt.datetime, sid: str, **changes: Any) -> None:
    values: dict[str, Any] = {
        "name": sid,
        "status": "online",
        "url": f"https://{sid}.portal.test/secret-path?token=abc",
        "first_seen": now,
        "last_seen": now,
        **changes,
    }
    session.add(Service(id=sid, **values))


def probe(session: Any, sid: str, at: dt.datetime, success: bool, **facts: Any) -> None:
    session.add(
        ProbeResultRow(
            service_id=sid,
            kind="availability",
            target=f"https://{sid}.portal.test/secret-path",
            at=at,
            success=success,
            duration_ms=facts.get("total_ms", 0.0),
            facts={"url": f"https://{sid}.portal.test/secret-path", **facts},
        )
    )


def seed(store: Store, now: dt.datetime) -> None:
    hour = dt.timedelta(hours=1)
    with store.session() as s:
        service(s, now, "svc-0001")
        service(s, now, "svc-0002", status="suspended")
        service(s, now, "svc-0003", gone=True)  # gone: no longer reported
        service(s, now, "svc-0004")  # probed, but no availability result kept
        service(s, now, "svc-0005")  # online, not judged yet: no state row
        for sid, state in (
            ("svc-0001", "up"),
            ("svc-0002", "down"),
            ("svc-0003", "up"),
            ("svc-0004", "unknown"),
        ):
            s.add(ServiceState(service_id=sid, state=state, since=now))
        probe(s, "svc-0001", now - 2 * hour, False, total_ms=9000.0)  # older: not reported
        probe(
            s,
            "svc-0001",
            now - dt.timedelta(minutes=1),
            True,
            dns_ms=1.5,
            connect_ms=2.0,
            tls_ms=30.0,
            first_byte_ms=120.0,
            transfer_ms=4.0,
            total_ms=157.5,
            cert_not_after=(now + dt.timedelta(days=12, hours=12)).isoformat(),
        )
        probe(s, "svc-0002", now - dt.timedelta(minutes=2), False, dns_ms=3.0)
        s.add(ProbeResultRow(
            service_id="svc-0001", kind="tls", target="x", at=now, success=True,
            duration_ms=1.0, facts={"total_ms": 99999.0},
        ))  # fmt: skip

        def incident(klass: str, state: str, **more: Any) -> None:
            s.add(
                Incident(
                    kind="outage" if klass == "availability" else "vulnerability",
                    klass=klass,
                    severity="high",
                    state=state,
                    group_key=f"{klass}:{state}:{len(more)}",
                    services=["svc-0001"],
                    detected_at=now - hour,
                    **more,
                )
            )

        incident("security", "open", notify_by=now + dt.timedelta(minutes=47))
        incident(
            "security",
            "acknowledged",
            notify_by=now + dt.timedelta(minutes=90),
            notification_sent_at=now - dt.timedelta(minutes=5),
        )
        incident("security", "resolved", notify_by=now - dt.timedelta(minutes=10), late=True)
        incident(
            "security",
            "notified",
            notify_by=now - dt.timedelta(minutes=30),
            notified_at=now - dt.timedelta(minutes=50),
        )
        incident("availability", "open")
        incident("availability", "closed")

        def alert(key: str, channel: str, state: str, parent: int | None = 1) -> None:
            s.add(
                OutboxAlert(
                    idempotency_key=key,
                    channel=channel,
                    parent_id=parent,
                    title="",
                    body="",
                    created_at=now,
                    next_attempt_at=now,
                    state=state,
                )
            )

        alert("a", "alerts.oncall[0]", "pending")
        alert("b", "alerts.oncall[0]", "sending")
        alert("c", "alerts.oncall[0]", "delivered")
        alert("d", "contact:svc-0001:mail:ops@provider.test", "pending")
        alert("e", "contact:svc-0001:json://hook.provider.test/***", "pending")
        alert("f", "management", "pending", parent=None)  # no management channel yet
        s.add_all(
            [
                SyncRun(started_at=now - hour, finished_at=now - hour, source="t", outcome="ok"),
                SyncRun(
                    started_at=now - dt.timedelta(minutes=10),
                    finished_at=now - dt.timedelta(minutes=10),
                    source="t",
                    outcome="failed",
                ),
                LogSource(path="/var/log/nginx/access.log", lines=123456, updated_at=now),
            ]
        )
        for n, (severity, state) in enumerate(
            [("high", "open"), ("medium", "open"), ("medium", "open"), ("high", "resolved")]
        ):
            s.add(
                Finding(
                    rule=f"zap:{n}",
                    clause="8.3 b",
                    severity=severity,
                    subject_kind="service",
                    subject="svc-0001",
                    first_seen=now,
                    last_seen=now,
                    state=state,
                )
            )
        s.add(
            Finding(
                rule="service_down",
                clause="6.4",
                severity="high",
                subject_kind="service",
                subject="svc-0002",
                first_seen=now,
                last_seen=now,
            )
        )


def pick(found: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in found.items() if sample == name}


async def test_every_family_says_what_the_store_holds(
    app: App, base: str, clock: FakeClock
) -> None:
    seed(app.store, clock())
    status, text = await scrape(base)
    assert status == 200
    found = samples(text)

    states = pick(found, "monitord_service_state")
    assert {labels: v for labels, v in states.items() if v == 1} == {
        (("service", "svc-0001"), ("state", "up")): 1,
        # Its suspension is filed: a rule on state="down" pages nobody for it.
        (("service", "svc-0002"), ("state", "suspended")): 1,
        (("service", "svc-0004"), ("state", "unknown")): 1,
        (("service", "svc-0005"), ("state", "unknown")): 1,  # it had no series at all
    }
    assert len(states) == 4 * 5  # every state of every reported service; svc-0003 is gone
    assert pick(found, "monitord_probe_success") == {
        (("service", "svc-0001"),): 1.0,
        (("service", "svc-0002"),): 0.0,
    }
    assert (
        pick(found, "monitord_probe_last_timestamp_seconds")[(("service", "svc-0001"),)]
        == (clock() - dt.timedelta(minutes=1)).timestamp()
    )
    phases = pick(found, "monitord_probe_phase_seconds")
    assert {dict(k)["phase"]: v for k, v in phases.items() if dict(k)["service"] == "svc-0001"} == {
        "dns": 0.0015,
        "connect": 0.002,
        "tls": 0.03,
        "first_byte": 0.12,
        "transfer": 0.004,
        "total": 0.1575,
    }
    assert {k: v for k, v in phases.items() if dict(k)["service"] == "svc-0002"} == {
        (("phase", "dns"), ("service", "svc-0002")): 0.003
    }
    assert pick(found, "monitord_certificate_expiry_days") == {(("service", "svc-0001"),): 12.5}

    assert pick(found, "monitord_incidents_open") == {
        (("class", "security"),): 3,
        (("class", "availability"),): 1,
    }
    # The resolved, late, never-notified one is the nearest: ten minutes overdue.
    assert found[("monitord_incident_clock_minutes_left", ())] == -10
    assert found[("monitord_notifications_undelivered", ())] == 1
    assert pick(found, "monitord_outbox_backlog") == {
        (("channel", "alerts.oncall[0]"),): 2,
        (("channel", "contact:svc-0001"),): 2,
        (("channel", "management"),): 1,
    }
    assert found[("monitord_last_sync_age_seconds", ())] == 3600
    assert pick(found, "monitord_log_lines_read_total") == {
        (("log", "/var/log/nginx/access.log"),): 123456
    }
    assert pick(found, "monitord_scan_findings_open") == {
        (("risk", "critical"),): 0,
        (("risk", "high"),): 1,
        (("risk", "medium"),): 2,
        (("risk", "low"),): 0,
        (("risk", "info"),): 0,
    }
    # Labels are ids and names, never an address: no URL, host or e-mail address leaks out.
    assert "portal.test" not in text and "provider.test" not in text and "://" not in text


async def test_an_empty_store_answers_with_zeros_and_no_made_up_values(base: str) -> None:
    status, text = await scrape(base)
    assert status == 200
    found = samples(text)
    assert pick(found, "monitord_incidents_open") == {
        (("class", "security"),): 0,
        (("class", "availability"),): 0,
    }
    assert ("monitord_incident_clock_minutes_left", ()) not in found
    assert ("monitord_last_sync_age_seconds", ()) not in found
    assert pick(found, "monitord_service_state") == {}


async def test_a_locked_table_answers_a_503_rather_than_holding_the_scrape(
    app: App, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # probe_results locked (VACUUM FULL): /metrics held every scrape until the lock went.
    if app.store.url.get_backend_name() != "postgresql":
        pytest.skip("SQLite's readers are never held by a writer's lock (WAL)")
    monkeypatch.setattr(monitord.store, "LOCK_WAIT_SECONDS", 0.5)
    with table_locked(app.store.engine, "probe_results"):
        status, body = await asyncio.wait_for(scrape(base), 10)
    assert status == 503
    assert "the store does not answer now" in body
    assert (await scrape(base))[0] == 200


async def test_metrics_need_a_token(base: str) -> None:
    assert (await scrape(base, token=None))[0] == 401
    assert (await scrape(base, token="wrong"))[0] == 401


def test_label_values_and_help_are_escaped_as_prometheus_reads_them() -> None:
    odd = 'svc-"0001"\\\nx 品'
    family = Family("monitord_test", "gauge", 'help with \\ and "quotes"\nand a line', ("v",))
    family.add(0.25, odd)
    family.add(3, "plain")
    [parsed] = text_string_to_metric_families(render([family]).decode())
    assert [(s.labels["v"], s.value) for s in parsed.samples] == [(odd, 0.25), ("plain", 3.0)]
    assert parsed.documentation == 'help with \\ and "quotes"\nand a line'


async def test_each_daemon_exports_its_own_logs_and_the_jobs_it_runs(
    app: App, base: str, clock: FakeClock
) -> None:
    from monitord.cluster import make_coordinator
    from monitord.runtime.jobs import ONCE_JOBS

    app.cluster = make_coordinator(app.store, app.settings.cluster, clock)
    app.cluster.join()
    app.cluster.beat(ONCE_JOBS)  # takes the leases on PostgreSQL
    with app.store.session() as s:
        s.add_all(
            [
                LogSource(path="/var/log/nginx/access.log", lines=10, updated_at=clock()),
                # Followed until a reload took it out of [logs] follow: a stale series.
                LogSource(path="/var/log/nginx/old.log", lines=7, updated_at=clock()),
                # The same path on another machine, followed by the daemon there.
                LogSource(
                    daemon="other", path="/var/log/nginx/access.log", lines=99, updated_at=clock()
                ),
            ]
        )
    status, text = await scrape(base)
    assert status == 200
    found = samples(text)
    assert pick(found, "monitord_log_lines_read_total") == {
        (("log", "/var/log/nginx/access.log"),): 10
    }
    assert found[("monitord_cluster_members_alive", ())] == 1
    assert found[("monitord_job_held", (("job", "incidents"),))] == 1
    assert found[("monitord_job_held", (("job", "alert-delivery"),))] == 1
