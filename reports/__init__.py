"""The quarterly report for the management unit: the store's quarter → tables (pandas) and
charts (matplotlib) → a PDF in Chinese (reportlab), with an embedded CJK font.

One public entry, `render_quarterly`: the runtime hands it the quarter's compliance verdicts,
service scores and the services' availability figures over their hours online (this package
reads the store, never the stages), and gets back the PDF's bytes,
its number of pages, the data's time range and the headline figures it shows.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from monitord.config import Settings
from monitord.errors import ReportError
from monitord.store.history import ProbeStats
from monitord.timeutil import local_text
from monitord.types import ComplianceVerdict, ServiceScore
from reports import sections
from reports.fonts import find_font
from reports.pdf import Writer, build
from reports.quarter import Quarter, least_available, read_quarter, scanned

__all__ = ["RenderedReport", "ReportError", "render_quarterly"]


@dataclass(frozen=True)
class RenderedReport:
    """A rendered report: the PDF, its pages, the data's range [start, end) and its figures."""

    pdf: bytes
    pages: int
    period: tuple[dt.datetime, dt.datetime]
    figures: dict[str, Any] = field(default_factory=dict)
    """The headline numbers the report shows, for tests and for the record."""


def _known(value: float | None) -> float | None:
    """A figure of a frame, None when there was nothing to count (pandas holds that as NaN)."""
    return None if value is None or math.isnan(value) else float(value)


def _figures(
    quarter: Quarter,
    lights: list[sections.ClauseLight],
    scores: Sequence[ServiceScore],
    worst: list[str],
) -> dict[str, Any]:
    """The headline figures as plain JSON-ready values."""
    incidents = quarter.incidents
    security = incidents[incidents["klass"] == "security"]
    findings = quarter.open_findings
    audit = quarter.log_audit
    return {
        "quarter": quarter.label,
        "period": [quarter.start.isoformat(), quarter.end.isoformat()],
        "generated_at": quarter.now.isoformat(),
        "calendar_known": quarter.calendar_known,
        "services": len(quarter.services),
        "online_services": int(quarter.services["online"].sum()),
        "probed_services": int((quarter.probes["count"] > 0).sum()),
        "probes": quarter.overall["count"],
        "failures": quarter.overall["failures"],
        "blind": quarter.overall["blind"],
        "uptime": quarter.overall["uptime"],
        "p95_ms": quarter.overall["p95_ms"],
        "tiers": {
            t.tier: {
                "services": int(t.services),
                "uptime": _known(t.uptime),
                "p95_ms": _known(t.p95_ms),
            }
            for t in quarter.tiers.itertuples()
        },
        "worst_services": worst,
        "incidents": len(incidents),
        "security_incidents": len(security),
        "late_incidents": [int(i) for i in security.loc[security["late"].astype(bool), "id"]],
        "silences": len(quarter.silences),
        "scans": len(quarter.scans),
        "scans_scanned": len(scanned(quarter)),
        "unscanned_online": list(quarter.unscanned_online),
        "open_findings": {
            severity: int((findings["severity"] == severity).sum())
            for severity in ("critical", "high", "medium")
        },
        "accepted_findings": len(quarter.accepted_findings),
        "log_lines": None if audit is None else audit["lines"],
        "empty_log_days": None if audit is None else len(audit["empty_days"]),
        "vendor_operations": None if audit is None else len(audit["vendor_operations"]),
        "admin_reviews": len(quarter.admin_reviews),
        "evidence_documents": len(quarter.evidence),
        "complaints": sum(quarter.complaints.values()),
        "clauses": sections.figures_of_lights(lights),
        "ranked_services": len(scores),
        "retention": {
            r.kind: None if r.oldest is None else r.oldest.isoformat() for r in quarter.retention
        },
    }


def render_quarterly(
    session: Session,
    settings: Settings,
    quarter: str,
    *,
    verdicts: Sequence[ComplianceVerdict],
    scores: Sequence[ServiceScore],
    availability: Mapping[str, ProbeStats],
    now: dt.datetime,
    formula: str = "",
) -> RenderedReport:
    """Draw the report of `quarter` (2026q3) from the store as it is at `now`.

    `verdicts` and `scores` are the quarter's compliance verdicts and 9.2 scores,
    `availability` each service's probe figures over the hours it was online (those the
    verdicts judge: a filed suspension's hours left out), `formula` the evaluation's formula as
    the report prints it. Raises ReportError when no CJK font can be
    embedded, or when `quarter` is not a quarter label or has not begun at `now`.
    """
    font = find_font(settings.report.font)
    try:
        data = read_quarter(session, settings, quarter, now, availability)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    if now <= data.start:
        raise ReportError(
            f"{quarter} has not begun: it starts {local_text(data.start)} Asia/Shanghai"
        )
    report = settings.report
    writer = Writer(font)
    lights = sections.clause_lights(verdicts, data.open_findings)
    worst_ids = list(least_available(data, report.worst_services)["service_id"])
    story = [
        *sections.cover(writer, data, report.operation_unit, report.management_unit),
        *sections.contents(writer),
        *sections.summary(writer, data, lights),
        # The line is clause 6.4 b's default target, which the verdicts and the 9.2 score use
        # (probes.slo_ms only marks a single slow probe).
        *sections.availability(writer, data, report.worst_services, settings.compliance.p95_ms),
        *sections.incidents(writer, data, sections.weeks(data)),
        *sections.scans(writer, data),
        *sections.log_audit(writer, data),
        *sections.registers(writer, data),
        *sections.retention(writer, data, settings.store.retention_days),
        *sections.ranking(
            writer, scores, formula, report.worst_services, sum(data.complaints.values())
        ),
        *sections.appendix(writer, data, verdicts),
    ]
    title = f"{sections.quarter_words(quarter)}服务监测与安全合规季度报告"
    header = (
        font.drawable(f"{report.operation_unit} · {title}"),
        f"数据时段：{sections.period_text(data)}",
    )
    pdf, pages = build(story, font=font, title=title, author=report.operation_unit, header=header)
    return RenderedReport(
        pdf=pdf,
        pages=pages,
        period=(data.start, data.end),
        figures=_figures(data, lights, scores, worst_ids),
    )
