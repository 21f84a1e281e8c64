"""GET /metrics: what the store holds, in the Prometheus text format, read at scrape time.

One collector reads the store in one query per family (the services' state, their last
availability probe and certificate in one), so a scrape costs the same whether the daemon has
just probed or not, and keeps no counters in memory. Labels are bounded: a service's id, an
incident class, a channel's name (a catalogue contact as `contact:<service>`, never its URL), a
finding's risk, a configured log's path. 2,000 services make about 26,000 series.

The text is written here (text format 0.0.4, which every Prometheus reads), not by
prometheus-client's generate_latest: measured at 2,000 services (bench/metrics.py), building
and writing its families cost about 175 ms of CPU per scrape, over the budget of 1 % of a core
at a scrape every 15 s (150 ms) before the store is even read; tests parse the answer with
prometheus-client's own parser.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from monitord.incidents import ACTIVE_STATES
from monitord.runtime.app import App
from monitord.runtime.jobs import ONCE_JOBS
from monitord.runtime.web.routes import APP, Route, in_web_thread, store_session
from monitord.store.models import (
    Finding,
    Incident,
    LogSource,
    OutboxAlert,
    ProbeResultRow,
    Service,
    ServiceState,
    SyncRun,
    writer_name,
)
from monitord.timeutil import parse_time
from monitord.types import IN_SERVICE

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})
_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})
_NEEDS_ESCAPE = re.compile(r'[\\"\n]')


@dataclass
class Family:
    """One metric family: its name, type, help, label names and samples."""

    name: str
    type: Literal["gauge", "counter"]
    help: str
    labels: tuple[str, ...] = ()
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, value: float, *label_values: str) -> None:
        """Add a sample with these label values (as many as the family has labels)."""
        self.samples.append((label_values, value))


def _escaped(value: str) -> str:
    """A label value as the text format writes it: backslash, quote and newline escaped."""
    return value.translate(_LABEL_ESCAPES) if _NEEDS_ESCAPE.search(value) else value


def render(families: Iterable[Family]) -> bytes:
    """The families in the Prometheus text format 0.0.4; label values and help escaped."""
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help.translate(_HELP_ESCAPES)}\n")
        lines.append(f"# TYPE {family.name} {family.type}\n")
        # One format string per family; a sample is then one % (the per-sample cost is what a
        # scrape of 26,000 series is made of).
        inner = ",".join(f'{label}="%s"' for label in family.labels)
        line = f"{family.name}{{{inner}}} %r\n" if family.labels else f"{family.name} %r\n"
        lines.extend(
            line % (*map(_escaped, values), float(value)) for values, value in family.samples
        )
    return "".join(lines).encode("utf-8", "replace")


STATES = ("up", "degraded", "down", "unknown", "suspended")
PHASES = ("dns", "connect", "tls", "first_byte", "transfer", "total")
CLASSES = ("security", "availability")
RISKS = ("critical", "high", "medium", "low", "info")
BACKLOG_STATES = ("pending", "sending")
DAY = 86400.0


def _service_families(session: Session, now: dt.datetime) -> list[Family]:
    """Each probed service's state, and its last availability probe's phases and certificate."""
    latest = (
        select(ProbeResultRow.id)
        .where(
            ProbeResultRow.service_id == Service.id,
            ProbeResultRow.kind == "availability",
        )
        .order_by(ProbeResultRow.at.desc())
        .limit(1)
        .correlate(Service)
        .scalar_subquery()
    )
    # As the status page counts them: a suspended service's outage is filed (state
    # "suspended", never "down"), and one not judged yet is "unknown", not absent.
    current = case(
        (Service.status == "suspended", "suspended"),
        else_=func.coalesce(ServiceState.state, "unknown"),
    )
    facts = ProbeResultRow.facts
    rows = session.execute(
        select(
            Service.id,
            current,
            ProbeResultRow.success,
            ProbeResultRow.at,
            *(facts[f"{phase}_ms"].as_float() for phase in PHASES),
            facts["cert_not_after"].as_string(),
        )
        .outerjoin(ServiceState, ServiceState.service_id == Service.id)
        .outerjoin(ProbeResultRow, ProbeResultRow.id == latest)
        .where(
            Service.gone.is_(False),
            Service.status.in_(IN_SERVICE),
            Service.url.is_not(None),
        )
        .order_by(Service.id)
    ).all()
    state = Family(
        "monitord_service_state",
        "gauge",
        "1 for the state the probes judge the service in (up, degraded, down, unknown), or "
        "suspended for a service whose suspension is filed (its outage expected), else 0.",
        ("service", "state"),
    )
    success = Family(
        "monitord_probe_success",
        "gauge",
        "Whether the service's last availability probe succeeded (1) or failed (0).",
        ("service",),
    )
    probed_at = Family(
        "monitord_probe_last_timestamp_seconds",
        "gauge",
        "When the service's last availability probe started, in Unix seconds.",
        ("service",),
    )
    phases = Family(
        "monitord_probe_phase_seconds",
        "gauge",
        "How long each phase of the service's last availability probe took.",
        ("service", "phase"),
    )
    expiry = Family(
        "monitord_certificate_expiry_days",
        "gauge",
        "Days until the certificate the service last presented expires (negative: expired).",
        ("service",),
    )
    for service_id, current, succeeded, at, *timings, not_after in rows:
        for name in STATES:
            state.add(1 if current == name else 0, service_id, name)
        if at is None:
            continue  # probed by no availability probe yet (or its results expired)
        success.add(1 if succeeded else 0, service_id)
        probed_at.add(at.timestamp(), service_id)
        for phase, ms in zip(PHASES, timings, strict=True):
            if ms is not None:
                phases.add(ms / 1000, service_id, phase)
        if not_after:
            days = (parse_time(not_after) - now).total_seconds() / DAY
            expiry.add(round(days, 3), service_id)
    return [state, success, probed_at, phases, expiry]


def _incident_families(session: Session, now: dt.datetime) -> list[Family]:
    """Open incidents by class, the nearest 7.3.3 clock, and notifications not delivered."""
    counts = dict.fromkeys(CLASSES, 0)
    for klass, count in session.execute(
        select(Incident.klass, func.count())
        .where(Incident.state.in_(ACTIVE_STATES))
        .group_by(Incident.klass)
    ):
        counts[klass] = count
    opened = Family(
        "monitord_incidents_open",
        "gauge",
        "Incidents open, acknowledged or notified, by class.",
        ("class",),
    )
    for klass, count in counts.items():
        opened.add(count, klass)
    # The duty lasts until the management unit received the notification, resolved or not.
    nearest, undelivered = session.execute(
        select(func.min(Incident.notify_by), func.count(Incident.notification_sent_at)).where(
            Incident.klass == "security",
            Incident.state.in_((*ACTIVE_STATES, "resolved")),
            Incident.notify_by.is_not(None),
            Incident.notified_at.is_(None),
        )
    ).one()
    clock = Family(
        "monitord_incident_clock_minutes_left",
        "gauge",
        "Minutes left on the nearest clause 7.3.3 two-hour clock (negative: overdue); absent "
        "when no security incident awaits its notification.",
    )
    if nearest is not None:
        clock.add(round((nearest - now).total_seconds() / 60, 1))
    waiting = Family(
        "monitord_notifications_undelivered",
        "gauge",
        "Security incidents whose 7.3.3 notification was sent but not yet received.",
    )
    waiting.add(undelivered)
    return [opened, clock, waiting]


def _channel_label(name: str) -> str:
    """A channel's name fit for a label: a catalogue contact's is cut to its service."""
    if name.startswith("contact:"):
        return "contact:" + name.split(":", 2)[1]
    return name


def _outbox_family(session: Session) -> Family:
    """Alerts waiting to go out, by channel (by audience while no channel is configured)."""
    backlog = Family(
        "monitord_outbox_backlog",
        "gauge",
        "Alerts waiting to be delivered, by channel; an audience's name when no channel of it "
        "is configured yet.",
        ("channel",),
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
        backlog.add(count, label)
    return backlog


def _other_families(session: Session, now: dt.datetime, followed: list[str]) -> list[Family]:
    """The last good catalogue sync's age, lines read of the logs `followed`, and open scan
    findings by risk."""
    last_sync = session.scalar(
        select(func.max(SyncRun.finished_at)).where(SyncRun.outcome.in_(("ok", "unchanged")))
    )
    age = Family(
        "monitord_last_sync_age_seconds",
        "gauge",
        "Seconds since the last good catalogue sync; absent before the first.",
    )
    if last_sync is not None:
        age.add(round((now - last_sync).total_seconds(), 1))
    lines = Family(
        "monitord_log_lines_read_total",
        "counter",
        "Access-log lines read, by followed log.",
        ("log",),
    )
    # The logs this daemon follows now: another daemon's are on its own machine and its
    # /metrics; one it stopped following at a reload keeps its row (its cursor, should it be
    # followed again) but is no series of this daemon any more.
    for path, count in session.execute(
        select(LogSource.path, LogSource.lines).where(
            LogSource.daemon == writer_name(), LogSource.path.in_(followed)
        )
    ):
        lines.add(count, path)
    risks = dict.fromkeys(RISKS, 0)
    for severity, count in session.execute(
        select(Finding.severity, func.count())
        .where(Finding.rule.like("zap:%"), Finding.state == "open")
        .group_by(Finding.severity)
    ):
        risks[severity] = count
    findings = Family(
        "monitord_scan_findings_open",
        "gauge",
        "Open security-scan (ZAP) findings, by risk.",
        ("risk",),
    )
    for risk, count in risks.items():
        findings.add(count, risk)
    return [age, lines, findings]


def _cluster_families(app: App) -> list[Family]:
    """This daemon in its cluster: the members alive, the once-only jobs it runs."""
    cluster = app.cluster
    if cluster is None:
        return []
    alive = Family(
        "monitord_cluster_members_alive",
        "gauge",
        "Daemons alive on the store, as this daemon saw at its last heartbeat.",
    )
    alive.add(len(cluster.live_names()))
    held = Family(
        "monitord_job_held",
        "gauge",
        "1 when this daemon runs the once-only job now (holds its lease), else 0.",
        ("job",),
    )
    for job in ONCE_JOBS:
        held.add(1 if cluster.holds(job) else 0, job)
    return [alive, held]


def collect(app: App) -> Iterator[Family]:
    """Every family, read from the store now in one session."""
    now = app.clock()
    with store_session(app) as session:
        yield from _service_families(session, now)
        yield from _incident_families(session, now)
        yield _outbox_family(session)
        yield from _other_families(session, now, [log.path for log in app.settings.logs.follow])
    yield from _cluster_families(app)


def exposition(app: App) -> bytes:
    """The metrics as Prometheus reads them."""
    return render(collect(app))


async def metrics(request: web.Request) -> web.Response:
    """The store's figures for Prometheus, read now (in a thread: the loop keeps serving)."""
    body = await in_web_thread(request, exposition, request.app[APP])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


ROUTES = (Route("GET", "/metrics", metrics, role="viewer"),)
