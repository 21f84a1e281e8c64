"""Clause 9.2: a score per service per quarter, ranked overall and within its source tier (6.1).

Six parts, each 0-100, weighted by `[evaluation]` of the config:

- availability: the allowed downtime over the real one, against the uptime target of 6.4 a;
- latency: the p95 target over the quarter's p95 (6.4 b);
- incidents: 100 less a penalty per incident of the service detected in the quarter, by severity,
  availability incidents (an outage) as well as security ones (CLAUSES.md 9.2: incidents);
- findings: 100 less the same penalty per finding of the service still open at the quarter's end;
- compliance: the share of the service's compliance verdicts that passed;
- complaints: 100 less 10 per complaint received in the quarter (9.1).

A part without data (no probe, no verdict) is left out, and the weights of the others are scaled
up to sum to 1: a service is not marked down, nor up, for what nobody measured.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from monitord.compliance.engine import Quarter, open_quarter
from monitord.config import EVALUATION_PARTS, Settings
from monitord.store.models import Complaint, Finding, FindingEpisode, Incident
from monitord.types import ComplianceVerdict, ServiceScore

PENALTY = {"info": 0.0, "low": 2.0, "medium": 10.0, "high": 25.0, "critical": 40.0}
"""Points taken from the incidents and findings parts, per incident or finding, by severity."""
COMPLAINT_PENALTY = 10.0

FORMULA = (
    "综合得分 = Σ 权重 × 分项得分（各分项 0–100 分，权重见配置 [evaluation]，合计为 1）。"
    "可用性 = 100 × min(1, 允许不可用率 ÷ 实际不可用率)，允许不可用率 = 100% − 可用率目标；"
    "响应时间 = 100 × min(1, P95 目标 ÷ 本季度 P95)；"
    "事件 = max(0, 100 − Σ 本季度每起事件扣分)，可用性事件与安全事件均计入；"
    "未关闭问题 = max(0, 100 − Σ 季度末每项未关闭问题扣分)；"
    "扣分按严重程度：严重 40、高 25、中 10、低 2、提示 0；"
    "合规 = 100 × 通过的合规规则数 ÷ 适用的合规规则数；"
    "投诉 = max(0, 100 − 10 × 本季度投诉数)。"
    "无数据的分项（如无探测记录）不参与计算，其余分项的权重按比例放大至合计为 1。"
)
"""The formula, as the quarterly report prints it."""


def _penalised(severities: Iterable[str]) -> float:
    return max(0.0, 100.0 - sum(PENALTY.get(s, 0.0) for s in severities))


def availability_part(uptime_percent: float, target_percent: float) -> float:
    """100 when the uptime reaches the target, else the allowed downtime over the real one."""
    downtime = 100.0 - uptime_percent
    if downtime <= 0 or uptime_percent >= target_percent:
        return 100.0
    return 100.0 * min(1.0, (100.0 - target_percent) / downtime)


def latency_part(p95_ms: float, target_ms: float) -> float:
    """100 when the p95 is within the target, else the target over the p95."""
    return 100.0 * min(1.0, target_ms / p95_ms) if p95_ms > 0 else 100.0


def _incident_severities(q: Quarter) -> dict[str, list[str]]:
    """The severities of each service's incidents detected in the quarter."""
    found: dict[str, list[str]] = defaultdict(list)
    for services, severity in q.session.execute(
        select(Incident.services, Incident.severity).where(
            Incident.detected_at >= q.start, Incident.detected_at < q.until
        )
    ):
        for service_id in set(services or []):
            found[str(service_id)].append(severity)
    return found


def _open_at_end(q: Quarter) -> dict[str, list[str]]:
    """The severities of each service's findings still open at the quarter's end (so far)."""
    found: dict[str, list[str]] = defaultdict(list)
    rows = q.session.execute(
        select(Finding.service_id, FindingEpisode.severity)
        .join(Finding, Finding.id == FindingEpisode.finding_id)
        .where(
            Finding.service_id.is_not(None),
            FindingEpisode.occurred_at < q.until,
            or_(FindingEpisode.closed_at.is_(None), FindingEpisode.closed_at >= q.until),
        )
    )
    for service_id, severity in rows:
        found[str(service_id)].append(severity)
    return found


def _complaints(q: Quarter) -> dict[str, int]:
    return {
        str(service_id): int(count)
        for service_id, count in q.session.execute(
            select(Complaint.service_id, func.count())
            .where(
                Complaint.service_id.is_not(None),
                Complaint.received_at >= q.start,
                Complaint.received_at < q.until,
            )
            .group_by(Complaint.service_id)
        )
    }


def _parts(
    q: Quarter,
    service_id: str,
    incidents: dict[str, list[str]],
    findings: dict[str, list[str]],
    complaints: dict[str, int],
    verdicts: list[ComplianceVerdict],
) -> dict[str, float | None]:
    """A service's six parts; None for one without data."""
    settings = q.settings.compliance
    stats = q.stats(service_id)
    availability = latency = None
    if stats is not None and stats.uptime is not None:
        target, _ = q.target(service_id, "uptime_percent", settings.uptime_percent)
        availability = availability_part(100 * stats.uptime, target)
    if stats is not None and stats.p95_ms is not None:
        target, _ = q.target(service_id, "p95_ms", settings.p95_ms)
        latency = latency_part(stats.p95_ms, target)
    compliance = 100.0 * sum(v.passed for v in verdicts) / len(verdicts) if verdicts else None
    return {
        "availability": availability,
        "latency": latency,
        "incidents": _penalised(incidents.get(service_id, [])),
        "findings": _penalised(findings.get(service_id, [])),
        "compliance": compliance,
        "complaints": max(0.0, 100.0 - COMPLAINT_PENALTY * complaints.get(service_id, 0)),
    }


def weighted_score(parts: dict[str, float | None], weights: dict[str, float]) -> float:
    """The weighted sum of the parts with data, their weights scaled up to sum to 1 (0 when no
    weighted part has data)."""
    present = {name: value for name, value in parts.items() if value is not None}
    total = sum(weights[name] for name in present)
    if total <= 0:
        return 0.0
    return sum(weights[name] * value for name, value in present.items()) / total


def score_services(
    session: Session,
    settings: Settings,
    quarter: str,
    verdicts: Iterable[ComplianceVerdict],
    now: dt.datetime,
) -> list[ServiceScore]:
    """Every service online in `quarter`, scored and ranked (1 is best) overall and within its
    source tier, best first; `verdicts` are the quarter's compliance verdicts. A part without
    data is absent from ServiceScore.parts. Writes nothing.

    Raises ValueError naming the label when it is not a quarter or has not begun.
    """
    q = open_quarter(session, settings, quarter, now)
    by_service: dict[str, list[ComplianceVerdict]] = defaultdict(list)
    for verdict in verdicts:
        if verdict.service_id is not None and verdict.quarter == quarter:
            by_service[verdict.service_id].append(verdict)
    incidents, findings, complaints = _incident_severities(q), _open_at_end(q), _complaints(q)
    weights = settings.evaluation.weights()
    scored = []
    for service_id in q.online_services():
        parts = _parts(q, service_id, incidents, findings, complaints, by_service[service_id])
        record = q.record(service_id)
        scored.append(
            ServiceScore(
                service_id=service_id,
                name=str(record.get("name") or ""),
                tier=str(record.get("source") or "unknown"),
                quarter=quarter,
                score=round(weighted_score(parts, weights), 1),
                parts={
                    name: round(value, 1)
                    for name in EVALUATION_PARTS
                    if (value := parts[name]) is not None
                },
            )
        )
    return rank(scored)


def measured(score: ServiceScore) -> bool:
    """Whether the service's availability was measured in the quarter: only then is it ranked
    (a service no probe reached would otherwise rank on its other parts alone, at the top)."""
    return "availability" in score.parts


def rank(scores: Iterable[ServiceScore]) -> list[ServiceScore]:
    """The scores best first (ties by service id), with their overall and tier ranks; the
    services whose availability was not measured follow, unranked (rank 0)."""
    ordered = sorted(scores, key=lambda s: (not measured(s), -s.score, s.service_id))
    in_tier: dict[str, int] = defaultdict(int)
    ranked = []
    for position, score in enumerate(ordered, start=1):
        if not measured(score):
            ranked.append(replace(score, rank=0, tier_rank=0))
            continue
        in_tier[score.tier] += 1
        ranked.append(replace(score, rank=position, tier_rank=in_tier[score.tier]))
    return ranked
