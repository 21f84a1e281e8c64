"""GET /metrics: what the store holds, in the Prometheus text format, read at scrape time.

One custom collector reads the store in one query per family (the services' state, their last
availability probe and certificate in one), so a scrape costs the same whether the daemon has
just probed or not, and needs no counters kept in memory. Labels are bounded: a service's id,
an incident class, a channel's name (a catalogue contact as `contact:<service>`, never its
URL), a finding's risk, a configured log's path. 2,000 services make about 20,000 series.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitord.incidents import ACTIVE_STATES
from monitord.runtime.app import App
from monitord.runtime.web.routes import APP, Route
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
from monitord.timeutil import parse_time

STATES = ("up", "degraded", "down", "unknown")
PHASES = ("dns", "connect", "tls", "first_byte", "transfer", "total")
CLASSES = ("security", "availability")
RISKS = ("critical", "high", "medium", "low", "info")
BACKLOG_STATES = ("pending", "sending")
DAY = 86400.0


def _service_families(session: Session, now: dt.datetime) -> Iterator[GaugeMetricFamily]:
    """Each probed service's state, and its last availability probe's phases and certificate."""
    latest = (
        select(ProbeResultRow.id)
        .where(
            ProbeResultRow.service_id == ServiceState.service_id,
            ProbeResultRow.kind == "availability",
        )
        .order_by(ProbeResultRow.at.desc())
        .limit(1)
        .correlate(ServiceState)
        .scalar_subquery()
    )
    facts = ProbeResultRow.facts
    rows = session.execute(
        select(
            ServiceState.service_id,
            ServiceState.state,
            ProbeResultRow.success,
            ProbeResultRow.at,
            *(facts[f"{phase}_ms"].as_float() for phase in PHASES),
            facts["cert_not_after"].as_string(),
        )
        .join(Service, Service.id == ServiceState.service_id)
        .outerjoin(ProbeResultRow, ProbeResultRow.id == latest)
        .where(Service.gone.is_(False), Service.status.in_(("online", "suspended")))
        .order_by(ServiceState.service_id)
    ).all()
    state = GaugeMetricFamily(
        "monitord_service_state",
        "1 for the state the probes judge the service in (up, degraded, down, unknown), else 0.",
        labels=["service", "state"],
    )
    success = GaugeMetricFamily(
        "monitord_probe_success",
        "Whether the service's last availability probe succeeded (1) or failed (0).",
        labels=["service"],
    )
    probed_at = GaugeMetricFamily(
        "monitord_probe_last_timestamp_seconds",
        "When the service's last availability probe started, in Unix seconds.",
        labels=["service"],
    )
    phases = GaugeMetricFamily(
        "monitord_probe_phase_seconds",
        "How long each phase of the service's last availability probe took.",
        labels=["service", "phase"],
    )
    expiry = GaugeMetricFamily(
        "monitord_certificate_expiry_days",
        "Days until the certificate the service last presented expires (negative: expired).",
        labels=["service"],
    )
    for service_id, current, succeeded, at, *timings, not_after in rows:
        for name in STATES:
            state.add_metric([service_id, name], 1.0 if current == name else 0.0)
        if at is None:
            continue  # probed by no availability probe yet (or its results expired)
        success.add_metric([service_id], 1.0 if succeeded else 0.0)
        probed_at.add_metric([service_id], at.timestamp())
        for phase, ms in zip(PHASES, timings, strict=True):
            if ms is not None:
                phases.add_metric([service_id, phase], ms / 1000)
        if not_after:
            days = (parse_time(not_after) - now).total_seconds() / DAY
            expiry.add_metric([service_id], round(days, 3))
    yield from (state, success, probed_at, phases, expiry)


def _incident_families(session: Session, now: dt.datetime) -> Iterator[GaugeMetricFamily]:
    """Open incidents by class, the nearest 7.3.3 clock, and notifications not delivered."""
    counts = dict.fromkeys(CLASSES, 0)
    for klass, count in session.execute(
        select(Incident.klass, func.count())
        .where(Incident.state.in_(ACTIVE_STATES))
        .group_by(Incident.klass)
    ):
        counts[klass] = count
    opened = GaugeMetricFamily(
        "monitord_incidents_open",
        "Incidents open, acknowledged or notified, by class.",
        labels=["class"],
    )
    for klass, count in counts.items():
        opened.add_metric([klass], count)
    yield opened
    # The duty lasts until the management unit received the notification, resolved or not.
    on_the_clock = (
        Incident.klass == "security",
        Incident.state.in_((*ACTIVE_STATES, "resolved")),
        Incident.notify_by.is_not(None),
        Incident.notified_at.is_(None),
    )
    nearest, undelivered = session.execute(
        select(
            func.min(Incident.notify_by),
            func.count(Incident.notification_sent_at),
        ).where(*on_the_clock)
    ).one()
    clock = GaugeMetricFamily(
        "monitord_incident_clock_minutes_left",
        "Minutes left on the nearest clause 7.3.3 two-hour clock (negative: overdue); absent "
        "when no security incident awaits its notification.",
    )
    if nearest is not None:
        clock.add_metric([], round((nearest - now).total_seconds() / 60, 1))
    yield clock
    yield GaugeMetricFamily(
        "monitord_notifications_undelivered",
        "Security incidents whose 7.3.3 notification was sent but not yet received.",
        value=undelivered,
    )


def _channel_label(name: str) -> str:
    """A channel's name fit for a label: a catalogue contact's is cut to its service."""
    if name.startswith("contact:"):
        return "contact:" + name.split(":", 2)[1]
    return name


def _outbox_family(session: Session) -> GaugeMetricFamily:
    """Alerts waiting to go out, by channel (by audience while no channel is configured)."""
    backlog = GaugeMetricFamily(
        "monitord_outbox_backlog",
        "Alerts waiting to be delivered, by channel; an audience's name when no channel of it "
        "is configured yet.",
        labels=["channel"],
    )
    counts: dict[str, int] = {}
    for channel, count in session.execute(
        select(OutboxAlert.channel, func.count())
        .where(OutboxAlert.state.in_(BACKLOG_STATES))
        .group_by(OutboxAlert.channel)
    ):
        label = _channel_label(channel)
        counts[label] = counts.get(label, 0) + count
    for label, count in sorted(counts.items()):
        backlog.add_metric([label], count)
    return backlog


def _other_families(session: Session, now: dt.datetime) -> Iterator[Metric]:
    """The last good catalogue sync's age, log lines read, and open scan findings by risk."""
    last_sync = session.scalar(
        select(func.max(SyncRun.finished_at)).where(SyncRun.outcome.in_(("ok", "unchanged")))
    )
    age = GaugeMetricFamily(
        "monitord_last_sync_age_seconds",
        "Seconds since the last good catalogue sync; absent before the first.",
    )
    if last_sync is not None:
        age.add_metric([], round((now - last_sync).total_seconds(), 1))
    yield age
    lines = CounterMetricFamily(
        "monitord_log_lines_read", "Access-log lines read, by followed log.", labels=["log"]
    )
    for path, count in session.execute(select(LogSource.path, LogSource.lines)):
        lines.add_metric([path], count)
    yield lines
    risks = dict.fromkeys(RISKS, 0)
    for severity, count in session.execute(
        select(Finding.severity, func.count())
        .where(Finding.rule.like("zap:%"), Finding.state == "open")
        .group_by(Finding.severity)
    ):
        risks[severity] = count
    findings = GaugeMetricFamily(
        "monitord_scan_findings_open",
        "Open security-scan (ZAP) findings, by risk.",
        labels=["risk"],
    )
    for risk, count in risks.items():
        findings.add_metric([risk], count)
    yield findings


class StoreCollector(Collector):
    """Reads every family from the store when Prometheus scrapes; keeps nothing between."""

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        """Nothing: registering must not read the store."""
        return []

    def collect(self) -> Iterator[Metric]:
        """Every family, read in one session."""
        now = self.app.clock()
        with self.app.store.session() as session:
            yield from _service_families(session, now)
            yield from _incident_families(session, now)
            yield _outbox_family(session)
            yield from _other_families(session, now)


def exposition(app: App) -> bytes:
    """The metrics as Prometheus reads them: text format 0.0.4, which every Prometheus
    reads (the names need none of 1.0.0's UTF-8)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(app))
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    """The store's figures for Prometheus, read now (in a thread: the loop keeps serving)."""
    body = await asyncio.to_thread(exposition, request.app[APP])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


ROUTES = (Route("GET", "/metrics", metrics, role="viewer"),)
