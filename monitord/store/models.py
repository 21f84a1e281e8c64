"""The store's tables (SQLAlchemy 2). Every time is stored as UTC and read back timezone-aware."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from monitord.timeutil import UTC

_writer = socket.gethostname()


def set_writer(name: str) -> None:
    """Name the daemon (its `[cluster] name`) that this process's rows are written by."""
    global _writer
    _writer = name


def writer_name() -> str:
    """The daemon this process writes as: its `[cluster] name`, else the host name."""
    return _writer


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware datetime, stored as naive UTC so every backend agrees.

    A naive value is refused: it would silently mean a different moment on each machine.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Base of every table."""


class Written:
    """A row that names the daemon that wrote it (set on insert, and on each update)."""

    daemon: Mapped[str | None] = mapped_column(
        String(100), default=writer_name, onupdate=writer_name
    )


class Service(Base):
    """A service as the portal's catalogue last described it, with its Appendix A filing."""

    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str | None] = mapped_column(String(40))
    permission: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str | None] = mapped_column(String(40))
    provider: Mapped[str | None] = mapped_column(Text)
    developer: Mapped[str | None] = mapped_column(Text)
    coverage: Mapped[list[Any]] = mapped_column(JSON, default=list)
    access_method: Mapped[str | None] = mapped_column(String(40))
    max_concurrency: Mapped[int | None] = mapped_column(Integer)
    url: Mapped[str | None] = mapped_column(Text)
    probe: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    return_codes: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    manual_url: Mapped[str | None] = mapped_column(Text)
    flowchart_url: Mapped[str | None] = mapped_column(Text)
    security_plan_url: Mapped[str | None] = mapped_column(Text)
    faq_url: Mapped[str | None] = mapped_column(Text)
    emergency_plan_url: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    planned_release: Mapped[str | None] = mapped_column(String(40))
    review: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(40), default="pending")
    suspension: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    offline_notice: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    contacts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    raw: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The record exactly as the portal sent it, unknown fields included."""
    filing_problems: Mapped[list[Any]] = mapped_column(JSON, default=list)
    unknown_values: Mapped[list[Any]] = mapped_column(JSON, default=list)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    gone: Mapped[bool] = mapped_column(Boolean, default=False)
    gone_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class ServiceEvent(Written, Base):
    """One lifecycle change of a service: online, suspended, resumed, notice filed, gone..."""

    __tablename__ = "service_events"
    __table_args__ = (Index("ix_service_events_service_at", "service_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), ForeignKey("services.id"))
    kind: Mapped[str] = mapped_column(String(60))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    from_status: Mapped[str | None] = mapped_column(String(40))
    to_status: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))


class SyncRun(Written, Base):
    """One attempt to sync the catalogue, whatever its outcome."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20), default="running")
    """running, ok, unchanged or failed."""
    reason: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(Text)
    services_seen: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    gone: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ProbeResultRow(Written, Base):
    """One probe's outcome and its measured facts."""

    __tablename__ = "probe_results"
    __table_args__ = (
        Index("ix_probe_results_service_kind_at", "service_id", "kind", "at"),
        # The hourly purge: successful results go long before failed ones.
        Index("ix_probe_results_success_at", "success", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    duration_ms: Mapped[float] = mapped_column(Float)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    blind: Mapped[bool] = mapped_column(Boolean, default=False)
    """Measured in a round monitord was blind for (every canary failed): no evidence about the
    service, left out of its uptime."""
    zone: Mapped[str | None] = mapped_column(String(100))
    """The `[cluster] zone` of the daemon that probed (with `probes.zones = 2`, a service is
    down only when both zones see it down)."""
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    """Measured while the store did not answer and written once it did: kept as evidence,
    but it moved no state machine and opened no finding."""


class Finding(Written, Base):
    """Something a check found wrong, kept open while it lasts; one row per rule and subject."""

    __tablename__ = "findings"
    __table_args__ = (UniqueConstraint("rule", "subject_kind", "subject", name="uq_finding_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rule: Mapped[str] = mapped_column(String(120))
    clause: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(20))
    subject_kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(400))
    service_id: Mapped[str | None] = mapped_column(String(200), index=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    first_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    count: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(20), default="open")
    """open, resolved or accepted."""
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    incident_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The incident this finding opened or joined, once the incident intake has seen it."""
    accepted_reason: Mapped[str | None] = mapped_column(Text)
    accepted_by: Mapped[str | None] = mapped_column(String(200))
    accepted_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """An accepted risk or false positive comes back (state open) when this passes."""
    episode: Mapped[int] = mapped_column(Integer, default=1)
    """The number of the current episode; first_seen, count and incident_id are its own."""
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the current episode's behaviour began (first log line, first failed probe);
    first_seen is when monitord stored it."""
    observed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the current episode was last seen happening (the latest log line)."""


class FindingEpisode(Written, Base):
    """One episode of a finding: it happened, stopped (resolved, or quiet for the rule's quiet
    period, or its incident ended), and may happen again as the next episode. Written when an
    episode opens and completed when it closes; the current one's live values are on its
    Finding. Never overwritten: the quarterly report counts them."""

    __tablename__ = "finding_episodes"
    __table_args__ = (UniqueConstraint("finding_id", "number", name="uq_finding_episode"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    finding_id: Mapped[int] = mapped_column(ForeignKey("findings.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(20))
    summary: Mapped[str] = mapped_column(Text, default="")
    opened_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    """When monitord found it."""
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    """When it began happening."""
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    observed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When it was last seen happening (set at close)."""
    count: Mapped[int | None] = mapped_column(Integer)
    incident_id: Mapped[int | None] = mapped_column(Integer, index=True)
    close_reason: Mapped[str | None] = mapped_column(String(40))
    """resolved, quiet (no occurrence for the rule's quiet period) or incident_ended."""


class Incident(Written, Base):
    """An incident: findings grouped by service and kind, with the clause 7.3.3 clock."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(60))
    klass: Mapped[str] = mapped_column(String(20))
    """security or availability."""
    severity: Mapped[str] = mapped_column(String(20))
    state: Mapped[str] = mapped_column(String(20), default="open")
    group_key: Mapped[str] = mapped_column(Text, index=True)
    """The kind with what the incident is about (a ZAP finding's subject holds the service id
    and the path), or manual:kind:opened-at for one opened by hand (its services are listed in
    services, however many)."""
    summary: Mapped[str] = mapped_column(Text, default="")
    services: Mapped[list[Any]] = mapped_column(JSON, default=list)
    detected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    notify_by: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    notified_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the management unit received the 7.3.3 notification: a management channel
    confirmed delivery, or it was made by phone or in person. On time or late is judged by it."""
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    notification_sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the first 7.3.3 notification was submitted (entered the outbox, or was phoned)."""
    notified_via: Mapped[str | None] = mapped_column(Text)
    """The management channel that confirmed delivery, or the out-of-band record."""
    subjects: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """What the incident is about besides services: "ip:203.0.113.7", "user:u-1001"."""
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class IncidentEvent(Written, Base):
    """One line of an incident's timeline."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(60))
    actor: Mapped[str] = mapped_column(String(200), default="monitord")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxAlert(Written, Base):
    """An alert waiting to go out (or gone out): written first, delivered by a worker.

    The core writes one row per audience ("oncall", "escalation:1", "top", "management",
    "storm"); the alert worker expands it into one row per channel, rendered, and delivers
    those. Both steps are transactions, so a crash at any moment loses nothing.
    """

    __tablename__ = "alert_outbox"
    __table_args__ = (
        # What a paced channel was sent in the last minute: the outbox is never purged, and
        # the index on state alone leads to every alert ever delivered.
        Index("ix_alert_outbox_state_delivered_at", "state", "delivered_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    channel: Mapped[str] = mapped_column(Text)
    """An audience name on a parent row; on a child, its channel's name (alerts.oncall[0],
    contact:svc-0042:…), never its URL: the URL is looked up in the settings when it is sent."""
    kind: Mapped[str] = mapped_column(String(40), default="message")
    """What happened: opened, reminder, escalation, late, notification, update, storm..."""
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    parent_id: Mapped[int | None] = mapped_column(Integer, index=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20), default="pending", index=True)
    """pending (a parent row whose audience has no channel yet waits so, with last_error naming
    the key to configure), sending (a child claimed by a delivery pass), delivered, expanded (a
    parent row), or withdrawn (a child whose channel a reload removed; its alert went to the
    audience's current channels)."""
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    """Who is sending this copy (host:pid:run) while its state is sending."""
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the claim lapses: a copy still sending then is taken over (its sender died)."""
    sent_in: Mapped[str | None] = mapped_column(String(200))
    """The key of the digest message that carried this copy to a paced chat channel."""


class AuditEntry(Written, Base):
    """Who did what, and when (clause 8.1.2)."""

    __tablename__ = "audit_trail"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ServiceState(Written, Base):
    """A service's health as the probes judge it, with the counters behind the judgement.

    Kept in the store (never on config objects) so that a restart or reload loses nothing.
    """

    __tablename__ = "service_states"

    service_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(20), default="unknown")
    """unknown, up, degraded or down."""
    since: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    successes: Mapped[int] = mapped_column(Integer, default=0)
    last_probe_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(128))
    last_deep_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    failing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When the first failed probe of the current streak started (an outage's event time)."""


class ProbeRound(Written, Base):
    """One inspection round over the services (clause 6.4: a scheduled inspection with a record)."""

    __tablename__ = "probe_rounds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    kinds: Mapped[list[Any]] = mapped_column(JSON, default=list)
    services: Mapped[int] = mapped_column(Integer, default=0)
    probes: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    blind: Mapped[bool] = mapped_column(Boolean, default=False)
    """Every canary failed: monitord lost the network, so no service was declared down."""


class ProbeRollup(Base):
    """Hourly roll-up of probe results per service and kind, kept for the yearly trend."""

    __tablename__ = "probe_rollups"
    __table_args__ = (UniqueConstraint("service_id", "kind", "hour", name="uq_rollup_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    count: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    p50_ms: Mapped[float | None] = mapped_column(Float)
    p95_ms: Mapped[float | None] = mapped_column(Float)
    p99_ms: Mapped[float | None] = mapped_column(Float)
    blind: Mapped[int] = mapped_column(Integer, default=0)
    """Results of the hour measured in blind rounds: counted here, not in count or failures."""
    latency_buckets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The successful results' latencies as a histogram ({bucket index: count}, buckets of
    monitord.store.histogram), which merges exactly across hours: a quarter's percentiles per
    service come from the sum of its hours' buckets."""
    through_id: Mapped[int | None] = mapped_column(Integer, index=True)
    """The newest probe result id the run that wrote (or last added to) this roll-up had
    counted: a result of a rolled hour with a higher id was written late, and is added to its
    hour's roll-up at the next run (monitord.store.retention.roll_up)."""


SCANNED = ("finished", "timed_out")
"""The states of a scan that ran to its end: a timed-out one (stopped at the deadline) is kept
with what it found, and counts as the quarter's scan as a finished one does."""


class Scan(Written, Base):
    """One security scan of one service with ZAP: why it ran, where it got, what it found."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    scan_key: Mapped[str] = mapped_column(String(400), unique=True)
    """The service's id (up to 200 characters) with a suffix naming the trigger (svc-0042-2026q4,
    svc-0042-event-118…): enqueueing twice is harmless."""
    trigger: Mapped[str] = mapped_column(String(40))
    """quarterly, went_online, resumed, updated, manual."""
    state: Mapped[str] = mapped_column(String(20), default="queued", index=True)
    """queued, running, finished, timed_out, failed, interrupted (SCANNED: ran to its end)."""
    queued_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The driver's ScanState, so a restarted daemon can reconcile with ZAP."""
    alerts_read: Mapped[int] = mapped_column(Integer, default=0)
    findings_new: Mapped[int] = mapped_column(Integer, default=0)
    findings_open: Mapped[int] = mapped_column(Integer, default=0)
    findings_fixed: Mapped[int] = mapped_column(Integer, default=0)
    high: Mapped[int] = mapped_column(Integer, default=0)
    medium: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    runner_host: Mapped[str | None] = mapped_column(String(200))
    runner_pid: Mapped[int | None] = mapped_column(Integer)
    """The machine and process running the scan (the daemon, or `monitord scan ID --wait`):
    while that process lives, the scan is its own and ZAP is busy with it."""


class LogSource(Base):
    """Where following one access log stopped, and the analysis state to resume with."""

    __tablename__ = "log_sources"

    daemon: Mapped[str] = mapped_column(String(100), primary_key=True, default=writer_name)
    """The daemon that follows this log: a log belongs to the machine it is on, and each
    daemon keeps its own cursors."""
    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    device: Mapped[int] = mapped_column(Integer, default=0)
    inode: Mapped[int] = mapped_column(Integer, default=0)
    offset: Mapped[int] = mapped_column(Integer, default=0)
    head: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class LogHourStat(Written, Base):
    """Access statistics of one service in one hour, from one log source (clause 6.4 c)."""

    __tablename__ = "log_hour_stats"
    __table_args__ = (UniqueConstraint("daemon", "source", "service", "hour", name="uq_log_hour"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(1000))
    service: Mapped[str] = mapped_column(String(200), index=True)
    hour: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """users, ips, status classes, latency p50/p95/p99, client kinds, top paths."""


class LogAudit(Written, Base):
    """The quarterly log audit of clause 7.3.1, as the quarterly report reads it."""

    __tablename__ = "log_audits"

    quarter: Mapped[str] = mapped_column(String(10), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    period_start: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    lines_per_day: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    empty_days: Mapped[list[Any]] = mapped_column(JSON, default=list)
    findings_by_rule: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    vendor_operations: Mapped[list[Any]] = mapped_column(JSON, default=list)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    """Whether it covers the whole quarter: written after the quarter's end once every followed
    log was read past that end (or a grace after it, whatever the logs). The daemon writes an
    audit that does not again, and the quarterly report waits for one that does."""


class ServiceRevision(Written, Base):
    """A service as the catalogue described it from `valid_from` until `valid_to` (None: still).

    Written by the catalogue sync whenever a service's record changes, so that the catalogue as
    of any past moment can be rebuilt: a report about a past quarter reads the services, their
    filings, targets and lifecycle states as they were then, not as they are now.
    """

    __tablename__ = "service_revisions"
    __table_args__ = (Index("ix_service_revisions_service_from", "service_id", "valid_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200), index=True)
    valid_from: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    valid_to: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """The service's columns as stored then (name, source, status, suspension, filing...)."""
    gone: Mapped[bool] = mapped_column(Boolean, default=False)


class QuietWindow(Written, Base):
    """A maintenance window or a suspension, recorded when it applied, so that a past quarter's
    uptime and alert record can be judged against the windows in force then (the config and the
    catalogue only hold today's)."""

    __tablename__ = "quiet_windows"
    __table_args__ = (UniqueConstraint("kind", "service_id", "starts_at", name="uq_quiet_window"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    """maintenance (from the config) or suspension (filed in the catalogue)."""
    service_id: Mapped[str] = mapped_column(String(200), default="*", index=True)
    """The service it covers; "*" for every service."""
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """The planned end; None when none was given."""
    reason: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When it actually ended (a suspension resumed), if it did."""


class ServiceStateChange(Written, Base):
    """A service's probe state moving (up, degraded, down...), kept at least
    store.retention_days (7.3.1)."""

    __tablename__ = "service_state_changes"
    __table_args__ = (Index("ix_state_changes_service_at", "service_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)


class EvidenceDocument(Base):
    """A document the standard asks for that monitord does not measure itself: a penetration
    test report, the yearly risk assessment, a security assurance plan, an emergency drill.
    The file is copied into the store's folder and kept with its SHA-256."""

    __tablename__ = "evidence_documents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    clause: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    """pentest, risk_assessment, security_plan, drill, or another word the filer chose."""
    service_id: Mapped[str | None] = mapped_column(String(200), index=True)
    """The service it is about; None for the platform as a whole."""
    document_date: Mapped[dt.date] = mapped_column(Date)
    """The date the document bears (the test was done, the assessment filed)."""
    filed_by: Mapped[str] = mapped_column(String(200))
    filed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    file_name: Mapped[str] = mapped_column(Text)
    """The name it was filed under."""
    stored_as: Mapped[str] = mapped_column(Text)
    """Its path inside the evidence folder."""
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    """In bytes: a 64-bit integer, as a document may be over 2 GiB."""
    note: Mapped[str] = mapped_column(Text, default="")


class AdminReview(Base):
    """One quarterly review of the platform's admin accounts and their rights (clause 7.3.2)."""

    __tablename__ = "admin_reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarter: Mapped[str] = mapped_column(String(10), index=True)
    reviewed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    reviewed_by: Mapped[str] = mapped_column(String(200))
    file_name: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    accounts: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Every account as read: account, role, vendor, last_login, granted_by, end_date."""
    flags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """What the review flagged: {"account", "problem", "detail"} (dormant admin, vendor account
    with no end date, a grant outside the 7.1.2 chain)."""


class Complaint(Base):
    """A user complaint about a service, from the portal's export (clause 9.1)."""

    __tablename__ = "complaints"
    __table_args__ = (UniqueConstraint("external_id", name="uq_complaint_external_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(200))
    """The portal's id of the complaint: importing an export twice adds nothing."""
    service_id: Mapped[str | None] = mapped_column(String(200), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    category: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(40), default="")
    summary: Mapped[str] = mapped_column(Text, default="")
    imported_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    source_file: Mapped[str] = mapped_column(Text, default="")


class ComplianceResult(Written, Base):
    """One compliance rule's verdict on one service (or the platform) for one quarter.

    A re-evaluation of a quarter replaces its rows; they are derived from stored evidence, so
    the same evidence gives the same verdicts."""

    __tablename__ = "compliance_results"
    __table_args__ = (UniqueConstraint("quarter", "rule", "subject", name="uq_compliance_result"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarter: Mapped[str] = mapped_column(String(10), index=True)
    rule: Mapped[str] = mapped_column(String(120))
    clause: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(200))
    """The service's id, or "" for a platform-wide rule."""
    passed: Mapped[bool] = mapped_column(Boolean)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    evaluated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class QuarterlyReport(Written, Base):
    """A quarterly report as written and sent: the PDF's hash proves what was handed over."""

    __tablename__ = "quarterly_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    quarter: Mapped[str] = mapped_column(String(10), index=True)
    generated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    pages: Mapped[int] = mapped_column(Integer, default=0)
    sent_to: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """The management channels' names it was sent to."""
    outbox_key: Mapped[str | None] = mapped_column(String(200))
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Silence(Base):
    """A silence, as Alertmanager's: alerts matching it stay out of chat until it ends.

    It quiets the chat, never the duty: a security incident's clause 7.3.3 clock and its
    notification to the management unit go on. Kept after it ends, for the report."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    services: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Service ids it covers; empty: any service."""
    kinds: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Incident kinds it covers; empty: any kind."""
    rules: Mapped[list[Any]] = mapped_column(JSON, default=list)
    """Rule names it covers; empty: any rule."""
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    starts_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    ends_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, index=True)
    expired_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When it was ended early, by hand; None when it ran to ends_at."""
    expired_by: Mapped[str | None] = mapped_column(String(200))


class ClusterMember(Base):
    """A daemon of the cluster (`monitord run`), as it last said it was alive.

    Heartbeats are stamped with the database's clock, so members need not agree on the time.
    """

    __tablename__ = "cluster_members"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    zone: Mapped[str] = mapped_column(String(100), default="default")
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    run: Mapped[str] = mapped_column(String(40))
    """A random token per start: tells this run of a daemon from an earlier one."""
    version: Mapped[str] = mapped_column(String(40), default="")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """Set when the daemon stopped cleanly; a member whose heartbeat lapsed without it died."""
    probe_share: Mapped[int] = mapped_column(Integer, default=0)
    """Services this member probed in its last round."""
    last_round_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class JobLease(Base):
    """Which daemon runs a job that must run once across the cluster, and until when.

    A lease is taken when free or lapsed and renewed by its holder's heartbeat; it is judged
    by the database's clock. `fence` grows with each new holder.
    """

    __tablename__ = "job_leases"

    job: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    fence: Mapped[int] = mapped_column(Integer, default=1)
