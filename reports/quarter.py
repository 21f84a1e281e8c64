"""The quarter's tables, read from the store: what the report shows, as pandas frames.

Everything is read as it was during the quarter (the catalogue as of then, finding episodes,
roll-ups), so a report on a past quarter shows the same figures whenever it is drawn. Only the
retention section speaks of the store as it is now. Times stay aware UTC here; the PDF shows
them in Asia/Shanghai.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from monitord.config import Settings
from monitord.store import histogram
from monitord.store.history import ProbeStats, last_records, online_services, service_periods
from monitord.store.models import (
    SCANNED,
    AdminReview,
    AuditEntry,
    Complaint,
    EvidenceDocument,
    Finding,
    FindingEpisode,
    Incident,
    IncidentEvent,
    LogAudit,
    LogHourStat,
    OutboxAlert,
    ProbeResultRow,
    ProbeRollup,
    Scan,
    ServiceEvent,
    ServiceRevision,
    ServiceStateChange,
    Silence,
)
from monitord.store.retention import cutoffs
from monitord.timeutil import SHANGHAI, local_days, quarter_bounds
from monitord.workcalendar import WorkCalendar

TIERS: dict[str, str] = {
    "province": "省级平台",
    "district": "县级市（区）",
    "bureau": "市级部门",
    "association": "行业协会",
    "unknown": "未填报",
}
"""The source tiers of clause 6.1 (the catalogue's `source`), in the report's order."""


def tier_words(tier: str) -> str:
    """A source tier's Chinese name; one clause 6.1 does not name, as it was filed:
    未知层级（township）."""
    return TIERS.get(tier) or f"未知层级（{tier}）"


def tiers_in(tiers: Iterable[str]) -> list[str]:
    """The tiers of TIERS, then the others found in `tiers` (filed, unknown), sorted."""
    return [*TIERS, *sorted(set(tiers) - set(TIERS))]


NAMED_SEVERITIES = ("critical", "high", "medium")
"""Open findings of these severities are named one by one (clause 8.3 b: high and medium)."""


@dataclass(frozen=True)
class Retained:
    """One kind of record: its oldest row still stored, and how long it is kept."""

    kind: str
    oldest: dt.datetime | None
    rows: int
    keep_days: int | None
    """Days the purge keeps it; None: it is never purged."""


@dataclass
class Quarter:
    """Everything the report shows about one quarter."""

    label: str
    start: dt.datetime
    end: dt.datetime
    """The end of the data: the quarter's end, or `now` while it runs."""
    quarter_end: dt.datetime
    now: dt.datetime
    services: pd.DataFrame
    """Index service_id: every service in the catalogue at some moment of the quarter; name and
    tier as it last described them then, online: whether it was online at some moment of the
    quarter (the services the compliance verdicts judge as online)."""
    probes: pd.DataFrame
    """Per probed service: tier, name, count, failures, blind, hours, uptime, p50/p95/p99_ms,
    over the hours it was online (a filed suspension's are not counted against it)."""
    tiers: pd.DataFrame
    """Per tier: services, probed, count, failures, uptime, p95_ms (from merged histograms);
    uptime and p95_ms are NaN for a tier with no probe in the quarter."""
    overall: dict[str, Any]
    incidents: pd.DataFrame
    silences: pd.DataFrame
    """The silences in force at some time in the quarter: id, services, kinds, rules, reason,
    created_by, starts_at, ended_at, expired_by (None: ran to its end), held_back (alerts)."""
    scans: pd.DataFrame
    open_findings: pd.DataFrame
    """The medium and worse finding episodes open at the data's end and not accepted."""
    accepted_findings: pd.DataFrame
    """Those under an acceptance in force at the data's end: open_findings' columns, and at,
    reason, by and until (the acceptance's)."""
    log_audit: dict[str, Any] | None
    admin_reviews: list[dict[str, Any]]
    evidence: pd.DataFrame
    complaints: dict[str, int]
    retention: list[Retained]
    last_purge: dict[str, Any] | None
    calendar_known: bool
    unscanned_online: list[str] = field(default_factory=list)
    """The services online in the quarter without a scan that ran to its end (SCANNED)."""


def _frame(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    """A frame with exactly `columns`, empty or not (pandas drops them for an empty list)."""
    return pd.DataFrame(list(rows), columns=columns)


def _services(session: Session, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The services the catalogue held at some moment of [start, end), as it last described
    them then, and whether each was online at some moment of it: the compliance engine's
    services of the quarter (`last_records`, `online_services`)."""
    periods = service_periods(session, start, end)
    online = set(online_services(periods))
    rows = [
        {
            "service_id": service_id,
            "name": str(record.get("name") or ""),
            "tier": str(record.get("source") or "unknown"),
            "online": service_id in online,
        }
        for service_id, record in sorted(last_records(session, periods).items())
    ]
    return _frame(rows, ["service_id", "name", "tier", "online"]).set_index("service_id")


def _probes(
    stats: Mapping[str, ProbeStats], services: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Per service, per tier and overall availability and latency."""
    rows = []
    for service_id, s in stats.items():
        known = service_id in services.index
        rows.append(
            {
                "service_id": service_id,
                "name": services.at[service_id, "name"] if known else "",
                "tier": services.at[service_id, "tier"] if known else "unknown",
                "count": s.count,
                "failures": s.failures,
                "blind": s.blind,
                "hours": s.hours_probed,
                "uptime": s.uptime,
                "p50_ms": s.p50_ms,
                "p95_ms": s.p95_ms,
                "p99_ms": s.p99_ms,
            }
        )
    columns = ["service_id", "name", "tier", "count", "failures", "blind", "hours", "uptime"]
    probes = _frame(rows, [*columns, "p50_ms", "p95_ms", "p99_ms"])
    tier_rows = []
    for tier in tiers_in([*probes["tier"], *services["tier"]]):
        in_tier = probes[probes["tier"] == tier]
        merged: dict[str, int] = {}
        for service_id in in_tier["service_id"]:
            histogram.merge(merged, stats[service_id].buckets)
        count, failures = int(in_tier["count"].sum()), int(in_tier["failures"].sum())
        catalogued = int((services["tier"] == tier).sum())
        if not catalogued and in_tier.empty:
            continue
        tier_rows.append(
            {
                "tier": tier,
                "services": catalogued,
                "probed": int((in_tier["count"] > 0).sum()),
                "count": count,
                "failures": failures,
                "uptime": (count - failures) / count if count else None,
                "p95_ms": histogram.percentile(merged, 0.95),
            }
        )
    tiers = _frame(
        tier_rows, ["tier", "services", "probed", "count", "failures", "uptime", "p95_ms"]
    )
    everything: dict[str, int] = {}
    for s in stats.values():
        histogram.merge(everything, s.buckets)
    count, failures = int(probes["count"].sum()), int(probes["failures"].sum())
    overall = {
        "count": count,
        "failures": failures,
        "blind": int(probes["blind"].sum()),
        "uptime": (count - failures) / count if count else None,
        "p50_ms": histogram.percentile(everything, 0.50),
        "p95_ms": histogram.percentile(everything, 0.95),
        "p99_ms": histogram.percentile(everything, 0.99),
    }
    return probes, tiers, overall


def _incidents(session: Session, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The incidents detected in the quarter, with how late each 7.3.3 notification was."""
    rows = []
    for incident in session.scalars(
        select(Incident)
        .where(Incident.detected_at >= start, Incident.detected_at < end)
        .order_by(Incident.detected_at, Incident.id)
    ):
        late_by: dt.timedelta | None = None
        if incident.klass == "security" and incident.notify_by is not None:
            reached = incident.notified_at or end  # not notified yet: late by the data's end
            if reached > incident.notify_by:
                late_by = reached - incident.notify_by
        late = incident.late or late_by is not None
        rows.append(
            {
                "id": incident.id,
                "kind": incident.kind,
                "klass": incident.klass,
                "severity": incident.severity,
                "services": [str(s) for s in incident.services],
                "summary": incident.summary,
                "detected_at": incident.detected_at,
                "notify_by": incident.notify_by,
                "notified_at": incident.notified_at,
                "late": late,
                "late_minutes": None if late_by is None else late_by.total_seconds() / 60,
            }
        )
    columns = ["id", "kind", "klass", "severity", "services", "summary", "detected_at"]
    return _frame(rows, [*columns, "notify_by", "notified_at", "late", "late_minutes"])


def _silences(session: Session, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The silences in force at some time in [start, end), with the alerts each held back
    then (the incidents' timelines say "silenced by #id" once per alert)."""
    held_back: Counter[int] = Counter(
        detail.get("silence")
        for detail in session.scalars(
            select(IncidentEvent.detail).where(
                IncidentEvent.kind == "silenced", IncidentEvent.at >= start, IncidentEvent.at < end
            )
        )
    )
    ended = func.coalesce(Silence.expired_at, Silence.ends_at)
    rows = [
        {
            "id": silence.id,
            "services": [str(s) for s in silence.services],
            "kinds": [str(k) for k in silence.kinds],
            "rules": [str(r) for r in silence.rules],
            "reason": silence.reason,
            "created_by": silence.created_by,
            "starts_at": silence.starts_at,
            "ended_at": silence.expired_at or silence.ends_at,
            "expired_by": silence.expired_by,
            "held_back": held_back[silence.id],
        }
        for silence in session.scalars(
            select(Silence)
            .where(Silence.starts_at < end, ended > start, ended > Silence.starts_at)
            .order_by(Silence.starts_at, Silence.id)
        )
    ]
    columns = ["id", "services", "kinds", "rules", "reason", "created_by", "starts_at"]
    return _frame(rows, [*columns, "ended_at", "expired_by", "held_back"])


def _scans(session: Session, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """The scans of the quarter: queued, or ended, within it."""
    rows = [
        {
            "id": scan.id,
            "service_id": scan.service_id,
            "trigger": scan.trigger,
            "state": scan.state,
            "finished_at": scan.finished_at,
            "high": scan.high,
            "medium": scan.medium,
        }
        for scan in session.scalars(
            select(Scan)
            .where(
                ((Scan.queued_at >= start) & (Scan.queued_at < end))
                | ((Scan.finished_at >= start) & (Scan.finished_at < end))
            )
            .order_by(Scan.id)
        )
    ]
    return _frame(rows, ["id", "service_id", "trigger", "state", "finished_at", "high", "medium"])


def _findings_at_end(session: Session, end: dt.datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The critical, high and medium finding episodes still open at the data's end: those not
    accepted, and those under an acceptance in force then (with its reason, who accepted it
    and until when), as the audit trail recorded it, so that a later expiry or acceptance does
    not change a past quarter's report."""
    acceptances = _acceptances_before(session, end)
    open_rows: list[dict[str, Any]] = []
    accepted_rows: list[dict[str, Any]] = []
    for episode, finding in session.execute(
        select(FindingEpisode, Finding)
        .join(Finding, Finding.id == FindingEpisode.finding_id)
        .where(
            FindingEpisode.opened_at < end,
            FindingEpisode.closed_at.is_(None) | (FindingEpisode.closed_at >= end),
            FindingEpisode.severity.in_(NAMED_SEVERITIES),
        )
        .order_by(FindingEpisode.opened_at, FindingEpisode.id)
    ):
        row = {
            "finding_id": finding.id,
            "episode": episode.number,
            "rule": finding.rule,
            "clause": finding.clause,
            "severity": episode.severity,
            "service_id": finding.service_id or "",
            "subject": finding.subject,
            "summary": episode.summary or finding.summary,
            "opened_at": episode.opened_at,
        }
        acceptance = acceptances.get(finding.id)
        # An acceptance of an earlier episode ended with it (the finding was resolved since).
        in_force = acceptance is not None and acceptance["at"] >= episode.opened_at
        if in_force and acceptance is not None and acceptance["until"] > end:
            accepted_rows.append({**row, **acceptance})
        else:
            open_rows.append(row)
    columns = ["finding_id", "episode", "rule", "clause", "severity", "service_id", "subject"]
    columns += ["summary", "opened_at"]
    accepted_columns = [*columns, "at", "reason", "by", "until"]
    return _frame(open_rows, columns), _frame(accepted_rows, accepted_columns)


def _acceptances_before(session: Session, end: dt.datetime) -> dict[int, dict[str, Any]]:
    """The latest acceptance of each finding made before `end`: when (at), its reason, who
    accepted it (by) and until when, from the audit trail (`finding.accept`)."""
    latest: dict[int, dict[str, Any]] = {}
    for entry in session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == "finding.accept", AuditEntry.at < end)
        .order_by(AuditEntry.at, AuditEntry.id)
    ):
        try:
            finding_id = int(entry.subject.removeprefix("finding "))
            until = dt.datetime.fromisoformat(str(entry.detail["until"]))
        except (KeyError, ValueError):
            continue  # not an entry accept_finding wrote
        latest[finding_id] = {
            "at": entry.at,
            "reason": str(entry.detail.get("reason", "")),
            "by": entry.actor,
            "until": until,
        }
    return latest


def _log_audit(session: Session, label: str) -> dict[str, Any] | None:
    audit = session.get(LogAudit, label)
    if audit is None:
        return None
    return {
        "created_at": audit.created_at,
        "lines": audit.lines,
        "days": len(audit.lines_per_day),
        "empty_days": list(audit.empty_days),
        "findings_by_rule": dict(audit.findings_by_rule),
        "vendor_operations": list(audit.vendor_operations),
    }


def _admin_reviews(session: Session, label: str) -> list[dict[str, Any]]:
    return [
        {
            "reviewed_at": review.reviewed_at,
            "reviewed_by": review.reviewed_by,
            "file_name": review.file_name,
            "sha256": review.sha256,
            "accounts": len(review.accounts),
            "flags": list(review.flags),
        }
        for review in session.scalars(
            select(AdminReview).where(AdminReview.quarter == label).order_by(AdminReview.id)
        )
    ]


def _evidence(session: Session, start: dt.datetime, end: dt.datetime) -> pd.DataFrame:
    """Documents dated in the quarter (so far: today's included), and the year's risk
    assessments dated by then."""
    first, last = local_days(start, end)
    dated = EvidenceDocument.document_date
    in_quarter = (dated >= first) & (dated <= last)
    this_year = (
        (EvidenceDocument.kind == "risk_assessment")
        & (dated >= dt.date(first.year, 1, 1))
        & (dated <= last)
    )
    rows = [
        {
            "id": doc.id,
            "clause": doc.clause,
            "kind": doc.kind,
            "service_id": doc.service_id or "",
            "document_date": doc.document_date,
            "filed_by": doc.filed_by,
            "file_name": doc.file_name,
            "sha256": doc.sha256,
        }
        for doc in session.scalars(
            select(EvidenceDocument)
            .where(in_quarter | this_year)
            .order_by(EvidenceDocument.document_date, EvidenceDocument.id)
        )
    ]
    columns = ["id", "clause", "kind", "service_id", "document_date", "filed_by", "file_name"]
    return _frame(rows, [*columns, "sha256"])


def _complaints(session: Session, start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Complaints received in the quarter per service ("" for those naming none)."""
    return {
        service_id or "": int(count)
        for service_id, count in session.execute(
            select(Complaint.service_id, func.count())
            .where(Complaint.received_at >= start, Complaint.received_at < end)
            .group_by(Complaint.service_id)
        )
    }


def _kept_days(settings: Settings, now: dt.datetime) -> dict[str, int]:
    """How many days the purge keeps each kind of record it purges, read from its own cutoffs
    (monitord.store.retention.cutoffs) as if everything were rolled up."""
    cut = cutoffs(settings, now, rolled_until=now)
    assert cut.successful is not None and cut.failed is not None  # rolled up until now
    return {
        "successful": (now - cut.successful).days,
        "failed": (now - cut.failed).days,
        "rollups": (now - cut.rollups).days,
    }


def _retention(session: Session, settings: Settings, now: dt.datetime) -> list[Retained]:
    """Per kind of record, the oldest one stored now and how many days the purge keeps it
    (None: never purged; the quarterly reports of past years are built from those)."""
    days = _kept_days(settings, now)
    success = ProbeResultRow.success
    kinds: list[
        tuple[str, InstrumentedAttribute[dt.datetime], ColumnElement[bool] | None, int | None]
    ]
    kinds = [
        ("探测结果（成功）", ProbeResultRow.at, success.is_(True), days["successful"]),
        ("探测结果（失败）", ProbeResultRow.at, success.is_(False), days["failed"]),
        ("探测小时汇总", ProbeRollup.hour, None, days["rollups"]),
        # Kept as long as the roll-ups: the outages of the hours they sum.
        ("服务状态变化", ServiceStateChange.at, None, days["rollups"]),
        ("问题发现（片段）", FindingEpisode.opened_at, None, None),
        ("事件", Incident.detected_at, None, None),
        ("服务生命周期事件", ServiceEvent.at, None, None),
        ("服务目录版本", ServiceRevision.valid_from, None, None),
        ("告警与通报", OutboxAlert.created_at, None, None),
        ("操作审计记录", AuditEntry.at, None, None),
        ("访问日志小时统计", LogHourStat.hour, None, None),
    ]  # fmt: skip
    out = []
    for kind, column, where, keep_days in kinds:
        query = select(func.min(column), func.count())
        if where is not None:
            query = query.where(where)
        oldest, rows = session.execute(query).one()
        out.append(Retained(kind=kind, oldest=oldest, rows=int(rows), keep_days=keep_days))
    return out


def _last_purge(session: Session) -> dict[str, Any] | None:
    entry = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.action == "purge")
        .order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        .limit(1)
    ).first()
    return None if entry is None else {"at": entry.at, "detail": dict(entry.detail)}


def calendar_known(settings: Settings, year: int) -> bool:
    """Whether the working days of `year` are known, from the statutory calendar or the
    config's overrides (else Monday-Friday is assumed, and the report says so)."""
    return WorkCalendar.from_settings(settings.logs).knows_year(year)


def read_quarter(
    session: Session,
    settings: Settings,
    label: str,
    now: dt.datetime,
    availability: Mapping[str, ProbeStats],
) -> Quarter:
    """The quarter `label` (2026q3) as the store holds it at `now`; `availability` is each
    service's probe figures over its hours online, as the compliance verdicts judge them.

    Raises ValueError naming the label when it is not one.
    """
    start, quarter_end = quarter_bounds(label)
    start, quarter_end = start.astimezone(dt.UTC), quarter_end.astimezone(dt.UTC)
    end = max(start, min(quarter_end, now))
    services = _services(session, start, max(end, start + dt.timedelta(microseconds=1)))
    probes, tiers, overall = _probes(availability, services)
    scans = _scans(session, start, end)
    scanned = set(scans.loc[scans["state"].isin(SCANNED), "service_id"])
    online = services.index[services["online"].astype(bool)]
    open_findings, accepted_findings = _findings_at_end(session, end)
    return Quarter(
        label=label,
        start=start,
        end=end,
        quarter_end=quarter_end,
        now=now,
        services=services,
        probes=probes,
        tiers=tiers,
        overall=overall,
        incidents=_incidents(session, start, end),
        silences=_silences(session, start, end),
        scans=scans,
        open_findings=open_findings,
        accepted_findings=accepted_findings,
        log_audit=_log_audit(session, label),
        admin_reviews=_admin_reviews(session, label),
        evidence=_evidence(session, start, end),
        complaints=_complaints(session, start, end),
        retention=_retention(session, settings, now),
        last_purge=_last_purge(session),
        calendar_known=calendar_known(settings, start.astimezone(SHANGHAI).year),
        unscanned_online=sorted(s for s in online if s not in scanned),
    )


def scanned(quarter: Quarter) -> pd.DataFrame:
    """The quarter's scans that ran to its end (SCANNED), timed-out ones with what they found:
    what clause 7.3.2's verdicts count as a scan."""
    return quarter.scans[quarter.scans["state"].isin(SCANNED)]


def least_available(quarter: Quarter, count: int) -> pd.DataFrame:
    """The `count` probed services of lowest availability (then slowest p95, then id)."""
    probed = quarter.probes[quarter.probes["count"] > 0]
    ordered = probed.sort_values(["uptime", "p95_ms", "service_id"], ascending=[True, False, True])
    return ordered.head(count)


def incidents_per_week(quarter: Quarter) -> pd.Series:
    """Incidents detected per week of the quarter (weeks counted from its first day), indexed
    by each week's first day (Asia/Shanghai); every week present, zero or not."""
    first = quarter.start.astimezone(SHANGHAI).date()
    last = (quarter.quarter_end - dt.timedelta(microseconds=1)).astimezone(SHANGHAI).date()
    weeks = [first + dt.timedelta(days=7 * k) for k in range((last - first).days // 7 + 1)]
    counts: Counter[dt.date] = Counter()
    for detected in quarter.incidents["detected_at"]:
        week = (detected.astimezone(SHANGHAI).date() - first).days // 7
        counts[weeks[week]] += 1
    return pd.Series([counts[w] for w in weeks], index=weeks, dtype="int64")
