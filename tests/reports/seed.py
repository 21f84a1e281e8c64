"""A store holding a quarter of monitord's records, written row by row as monitord writes them,
with the figures a report on it must show (`Seeded`), for the report's tests and benchmark.

The services have every source tier, a few names in scripts the report's font lacks (Arabic,
Tibetan, emoji) and one with markup characters; roll-ups carry latency histograms and blind
results; security incidents are notified on time, late, and never; finding episodes are open
and closed at the quarter's end; one take-down notice spans National Day.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from monitord.store import histogram
from monitord.store.models import (
    AdminReview,
    AuditEntry,
    Complaint,
    EvidenceDocument,
    Finding,
    FindingEpisode,
    Incident,
    LogAudit,
    ProbeRollup,
    Scan,
    ServiceRevision,
)
from monitord.timeutil import SHANGHAI, UTC, quarter_bounds
from monitord.types import ComplianceVerdict, ServiceScore

TIER_CYCLE = ("province", "district", "bureau", "association", "district", "bureau", None)
SPECIAL_NAMES = {
    3: "خدمة تسجيل الشركات",  # Arabic
    4: "ཚོང་ལས་ཐོ་འགོད་ཞབས་ཞུ།",  # Tibetan
    5: "🏢 企业开办一件事 😀",  # emoji around Chinese
    6: "<b>税务 & 社保</b>",  # paragraph markup characters
}
RULES = (
    ("6.2.2", "filing_complete"),
    ("6.3.2 a", "tls_policy"),
    ("6.4 a", "uptime_target"),
    ("7.3.2", "quarterly_scan"),
    ("8.3 b", "no_high_medium_vulnerability"),
)


@dataclass
class Seeded:
    """What was written, and the figures a report on it must show."""

    quarter: str
    start: dt.datetime
    end: dt.datetime
    service_ids: list[str]
    names: dict[str, str]
    tiers: dict[str, str]
    count: dict[str, int] = field(default_factory=dict)
    """Probes per service over its hours online (the suspended one's are not counted)."""
    failures: dict[str, int] = field(default_factory=dict)
    blind: int = 0
    buckets: dict[str, dict[str, int]] = field(default_factory=dict)
    late_incidents: list[int] = field(default_factory=list)
    on_time_incidents: list[int] = field(default_factory=list)
    incidents: int = 0
    open_high: list[str] = field(default_factory=list)
    """Rules of the high findings open at the quarter's end."""
    closed_high: list[str] = field(default_factory=list)
    verdicts: list[ComplianceVerdict] = field(default_factory=list)
    scores: list[ServiceScore] = field(default_factory=list)
    log_lines: int = 0

    def tier_uptime(self, tier: str) -> float:
        """The availability of a tier, as (count − failures) / count over its services."""
        ids = [s for s in self.service_ids if self.tiers[s] == tier and self.count.get(s)]
        count = sum(self.count[s] for s in ids)
        return (count - sum(self.failures[s] for s in ids)) / count


def _name(index: int) -> str:
    return SPECIAL_NAMES.get(index, f"企业服务事项{index:04d}")


def _revisions(session: Session, seeded: Seeded, before: dt.datetime) -> None:
    rows = []
    for index, service_id in enumerate(seeded.service_ids):
        status = "suspended" if index % 50 == 7 else "online"
        record: dict[str, Any] = {
            "id": service_id,
            "name": seeded.names[service_id],
            "source": TIER_CYCLE[index % len(TIER_CYCLE)],
            "status": status,
        }
        if index == 8:  # a take-down notice filed across National Day (2026-10-01..08)
            record["offline_notice"] = {"filed_at": "2026-09-29", "offline_at": "2026-10-20"}
        rows.append(
            {
                "service_id": service_id,
                "valid_from": before,
                "valid_to": None,
                "fingerprint": f"fp-{index}",
                "record": record,
                "gone": False,
            }
        )
    session.execute(insert(ServiceRevision), rows)


def _rollups(session: Session, seeded: Seeded, rng: random.Random, hours_step: int) -> None:
    """One roll-up per service every `hours_step` hours of the quarter."""
    step = dt.timedelta(hours=hours_step)
    batch: list[dict[str, Any]] = []
    for index, service_id in enumerate(seeded.service_ids):
        if index % 50 == 9:
            continue  # a service in the catalogue that was never probed
        base = 40 + 30 * (index % 17)
        hour = seeded.start
        while hour < seeded.end:
            count = 60
            healthy = 0.9 - 0.04 * (index % 7)  # so that the tiers differ
            failures = 0 if rng.random() < healthy else rng.randint(1, 6 + index % 5)
            blind = 3 if rng.random() < 0.01 else 0
            buckets: dict[str, int] = {}
            successes = count - failures
            for share in (successes // 2, successes // 4, successes // 8):  # a few latencies
                key = str(histogram.bucket_of(base * rng.lognormvariate(0, 0.35)))
                buckets[key] = buckets.get(key, 0) + share
                successes -= share
            key = str(histogram.bucket_of(base * rng.lognormvariate(0.6, 0.35)))  # a slow tail
            buckets[key] = buckets.get(key, 0) + successes
            batch.append(
                {
                    "service_id": service_id,
                    "kind": "availability",
                    "hour": hour,
                    "count": count,
                    "failures": failures,
                    "p50_ms": None,
                    "p95_ms": None,
                    "p99_ms": None,
                    "blind": blind,
                    "latency_buckets": buckets,
                }
            )
            if index % 50 != 7:  # a suspended service's probes do not count (6.4 a)
                seeded.count[service_id] = seeded.count.get(service_id, 0) + count
                seeded.failures[service_id] = seeded.failures.get(service_id, 0) + failures
                histogram.merge(seeded.buckets.setdefault(service_id, {}), buckets)
                seeded.blind += blind
            if len(batch) >= 5000:
                session.execute(insert(ProbeRollup), batch)
                batch = []
            hour += step
    if batch:
        session.execute(insert(ProbeRollup), batch)


def _incidents(session: Session, seeded: Seeded) -> None:
    start = seeded.start
    cases = [  # (days in, class, severity, notified after detection, late flag)
        (3, "security", "high", dt.timedelta(minutes=50), False),
        (10, "security", "medium", dt.timedelta(minutes=115), False),
        (17, "security", "high", dt.timedelta(minutes=155), True),  # 35 minutes late
        (30, "security", "critical", None, True),  # never notified
        (45, "availability", "medium", None, False),
        (46, "availability", "high", None, False),
        (60, "security", "medium", dt.timedelta(minutes=30), False),
        (80, "availability", "medium", None, False),
    ]
    for n, (days, klass, severity, notified, late) in enumerate(cases):
        detected = start + dt.timedelta(days=days, hours=3)
        incident = Incident(
            kind="vulnerability" if klass == "security" else "outage",
            klass=klass,
            severity=severity,
            state="closed",
            group_key=f"seed-{n}",
            summary=f"种子事件 {n}",
            services=[seeded.service_ids[n]],
            detected_at=detected,
            occurred_at=detected,
            notify_by=detected + dt.timedelta(hours=2) if klass == "security" else None,
            notified_at=detected + notified if notified else None,
            late=late,
        )
        session.add(incident)
        session.flush()
        seeded.incidents += 1
        if klass == "security":
            (seeded.late_incidents if late else seeded.on_time_incidents).append(incident.id)


def _findings(session: Session, seeded: Seeded) -> None:
    start, end = seeded.start, seeded.end
    ids = seeded.service_ids
    base = 20 + 5 * int(seeded.quarter[5])  # each quarter's findings on other services
    cases = [  # (rule, severity, opened days in, closed days in or None)
        ("zap_sql_injection", "high", 20, None),
        ("zap_xss_reflected", "medium", 40, None),
        ("zap_path_traversal", "high", 10, 25),
        ("hsts_missing", "low", 5, None),
        ("zap_csrf", "medium", 70, 95),  # closed after the quarter: open at its end
    ]
    for n, (rule, severity, opened, closed) in enumerate(cases):
        opened_at = start + dt.timedelta(days=opened)
        closed_at = None if closed is None else start + dt.timedelta(days=closed)
        finding = Finding(
            rule=rule,
            clause="8.3 b",
            severity=severity,
            subject_kind="service",
            subject=ids[(base + n) % len(ids)],
            service_id=ids[(base + n) % len(ids)],
            summary=f"{rule} 发现于 {ids[(base + n) % len(ids)]}",
            first_seen=opened_at,
            last_seen=closed_at or end,
            state="open" if closed is None else "resolved",
            resolved_at=closed_at,
        )
        session.add(finding)
        session.flush()
        session.add(
            FindingEpisode(
                finding_id=finding.id,
                number=1,
                severity=severity,
                summary=finding.summary,
                opened_at=opened_at,
                occurred_at=opened_at,
                closed_at=closed_at,
                close_reason=None if closed is None else "resolved",
            )
        )
        if severity == "high":
            still_open = closed_at is None or closed_at >= end
            (seeded.open_high if still_open else seeded.closed_high).append(rule)


def _scans(session: Session, seeded: Seeded) -> None:
    for index, service_id in enumerate(seeded.service_ids):
        if index % 25 == 24:
            continue  # not scanned this quarter
        at = seeded.start + dt.timedelta(days=5 + index % 60)
        session.add(
            Scan(
                service_id=service_id,
                scan_key=f"{service_id}-{seeded.quarter}",
                trigger="quarterly",
                state="failed" if index % 40 == 13 else "finished",
                queued_at=at,
                next_attempt_at=at,
                started_at=at,
                finished_at=at + dt.timedelta(minutes=40),
                high=1 if index == 10 else 0,
                medium=2 if index == 11 else 0,
            )
        )


def _registers(session: Session, seeded: Seeded) -> None:
    start, label = seeded.start, seeded.quarter
    days = [(start + dt.timedelta(days=d)).astimezone(UTC).date().isoformat() for d in range(92)]
    per_day = {d: 1000 + i for i, d in enumerate(days)}
    per_day[days[40]] = 0
    seeded.log_lines = sum(per_day.values())
    session.add(
        LogAudit(
            quarter=label,
            created_at=seeded.end + dt.timedelta(hours=2),
            period_start=start,
            period_end=seeded.end,
            lines=seeded.log_lines,
            lines_per_day=per_day,
            empty_days=[days[40]],
            findings_by_rule={"brute_force_account": 4, "vendor_activity": 2},
            vendor_operations=[
                {"subject": "vendor-zhang", "summary": "夜间登录运维后台 3 次", "evidence": {}},
                {"subject": "vendor-li", "summary": "修改服务配置 1 次", "evidence": {}},
            ],
        )
    )
    session.add(
        AdminReview(
            quarter=label,
            reviewed_at=start + dt.timedelta(days=80),
            reviewed_by="王审查",
            file_name="accounts-2026q3.csv",
            sha256="ab" * 32,
            accounts=[{"account": f"admin-{i}"} for i in range(12)],
            flags=[
                {"account": "admin-3", "problem": "dormant_admin", "detail": "120 天未登录"},
                {
                    "account": "vendor-li",
                    "problem": "vendor_without_end_date",
                    "detail": "第三方账号无截止日期",
                },
            ],
        )
    )
    first_day = start.astimezone(SHANGHAI).date()
    year = first_day.year
    # The year's risk assessment: filed in its first quarter, or (for a q4) in that quarter.
    risk_date = dt.date(year, 1, 15) if label[5] in "123" else first_day + dt.timedelta(days=10)
    for kind, clause, date, name in (
        ("pentest", "7.3.2", first_day + dt.timedelta(days=81), f"pentest-{label}.pdf"),
        ("risk_assessment", "7.3.2", risk_date, f"risk-{label}.pdf"),
        ("drill", "6.4 d", first_day - dt.timedelta(days=120), f"drill-before-{label}.pdf"),
    ):
        session.add(
            EvidenceDocument(
                clause=clause,
                kind=kind,
                document_date=date,
                filed_by="李登记",
                filed_at=dt.datetime.combine(date, dt.time(9), UTC),
                file_name=name,
                stored_as=f"evidence/{name}",
                sha256="cd" * 32,
                size=1000,
            )
        )
    for n in range(5):
        session.add(
            Complaint(
                external_id=f"c-{label}-{n}",
                service_id=seeded.service_ids[n],
                received_at=start + dt.timedelta(days=10 * n + 1),
                category="办理",
                status="closed",
                summary="办理页面打不开",
                imported_at=seeded.end,
            )
        )
    session.add(
        AuditEntry(
            at=start + dt.timedelta(days=50),
            actor="monitord",
            action="purge",
            subject="housekeeping",
            detail={  # as monitord.store.retention.purge records it
                "deleted": {"probe_results": 1200, "sync_runs": 30},
                "before": {
                    "probe_results": {
                        "successful": "2026-07-21T00:00:00+00:00",
                        "failed": "2025-07-16T00:00:00+00:00",
                    },
                    "sync_runs": {"all": "2025-07-16T00:00:00+00:00"},
                },
            },
        )
    )


def _judgements(seeded: Seeded) -> None:
    for index, service_id in enumerate(seeded.service_ids):
        for clause, rule in RULES:
            passed = not (
                (rule == "no_high_medium_vulnerability" and index in (10, 11))
                or (rule == "quarterly_scan" and index % 25 == 24)
                or (rule == "filing_complete" and index % 13 == 0)
            )
            seeded.verdicts.append(
                ComplianceVerdict(rule, clause, service_id, seeded.quarter, passed, {})
            )
    seeded.verdicts.append(
        ComplianceVerdict(
            "offline_notice", "7.2.4", seeded.service_ids[8], seeded.quarter, True,
            {"working_days": 11},
        )
    )  # fmt: skip
    for clause, rule, passed, evidence in (
        ("7.3.1", "log_audit", True, {}),
        ("7.3.2", "quarterly_pentest", True, {}),
        ("7.3.3", "incidents_notified", False, {"late": seeded.late_incidents}),
    ):
        seeded.verdicts.append(
            ComplianceVerdict(rule, clause, None, seeded.quarter, passed, evidence)
        )
    for index, service_id in enumerate(seeded.service_ids):
        count = seeded.count.get(service_id, 0)
        uptime = (count - seeded.failures.get(service_id, 0)) / count if count else 0.0
        parts = {"availability": uptime * 100, "latency": 90.0, "incidents": 100.0,
                 "findings": 100.0, "compliance": 80.0, "complaints": 100.0}  # fmt: skip
        tier = TIER_CYCLE[index % len(TIER_CYCLE)] or "unknown"
        score = round(0.5 * parts["availability"] + 0.5 * parts["compliance"] - index % 7, 2)
        seeded.scores.append(
            ServiceScore(service_id, seeded.names[service_id], tier, seeded.quarter, score, parts)
        )


def seed_quarter(
    session: Session,
    quarter: str = "2026q3",
    *,
    services: int = 200,
    hours_step: int = 24,
    prefix: str = "svc",
    rng_seed: int = 7,
    catalogue: bool = True,
) -> Seeded:
    """Write a quarter of records for `services` services (ids `prefix`-0000...), one roll-up
    every `hours_step` hours each; `catalogue` False when an earlier call wrote the services."""
    start, end = (moment.astimezone(UTC) for moment in quarter_bounds(quarter))
    ids = [f"{prefix}-{i:04d}" for i in range(services)]
    seeded = Seeded(
        quarter=quarter,
        start=start,
        end=end,
        service_ids=ids,
        names={s: _name(i) for i, s in enumerate(ids)},
        tiers={s: TIER_CYCLE[i % len(TIER_CYCLE)] or "unknown" for i, s in enumerate(ids)},
    )
    rng = random.Random(rng_seed)
    if catalogue:
        _revisions(session, seeded, start - dt.timedelta(days=30))
    _rollups(session, seeded, rng, hours_step)
    _incidents(session, seeded)
    _findings(session, seeded)
    _scans(session, seeded)
    _registers(session, seeded)
    _judgements(seeded)
    return seeded
