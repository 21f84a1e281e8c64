"""Recording a round: its results, their findings and the state machines, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import rules
from monitord.config import ProbeSettings
from monitord.probing.state import (
    STATE_RULES,
    advance_state,
    state_findings,
    suspension_overdue,
)
from monitord.probing.targets import CHEAP_KIND, ServiceTarget
from monitord.store import Store
from monitord.store.findings import resolve_findings, upsert_finding
from monitord.store.models import ProbeResultRow, ProbeRound, ServiceState
from monitord.types import FindingDraft, ProbeResult


@dataclass
class RoundReport:
    """What one round did."""

    round_id: int = 0
    services: int = 0
    probes: int = 0
    failures: int = 0
    blind: bool = False
    changes: list[str] = field(default_factory=list)
    deep_due: list[str] = field(default_factory=list)
    results: list[ProbeResult] = field(default_factory=list)
    findings: dict[int, list[FindingDraft]] = field(default_factory=dict)
    """Findings per index into `results`, for the CLI."""


def _rule_names_for(kind: str) -> list[str]:
    return rules.probe_rule_names(kind)


def record_results(
    store: Store,
    targets: dict[str, ServiceTarget],
    results: Sequence[ProbeResult],
    settings: ProbeSettings,
    now: dt.datetime,
    *,
    blind: bool = False,
    deep: bool = False,
) -> RoundReport:
    """Store a round's results, judge them, and move the state machines, in one transaction."""
    report = RoundReport(
        services=len(targets), probes=len(results), blind=blind, results=list(results)
    )
    with store.session() as session:
        probe_round = ProbeRound(
            started_at=min((r.started_at for r in results), default=now),
            finished_at=now,
            kinds=sorted({r.kind for r in results}),
            services=len(targets),
            probes=len(results),
            blind=blind,
        )
        session.add(probe_round)
        for index, result in enumerate(results):
            report.failures += 0 if result.success else 1
            session.add(
                ProbeResultRow(
                    service_id=result.service_id,
                    kind=result.kind,
                    target=result.target,
                    at=result.started_at,
                    success=result.success,
                    duration_ms=round(result.duration_ms, 2),
                    facts=result.facts,
                    error=result.error,
                    blind=blind,
                )
            )
            target = targets.get(result.service_id or "")
            drafts = [d for d in rules.probe_findings(result) if d.rule not in STATE_RULES]
            report.findings[index] = drafts
            if target is None:
                continue
            if blind and not result.success:
                continue  # what a blind round saw of a service is no evidence against it
            for draft in drafts:
                upsert_finding(session, draft, now)
            names = [n for n in _rule_names_for(result.kind) if n not in STATE_RULES]
            resolve_findings(
                session, names, "service", {d.subject for d in drafts}, now, subjects={target.id}
            )
            if result.kind == CHEAP_KIND:
                new_state, deep_due = advance_state(
                    session, target, result, settings, now, blind=blind
                )
                if new_state is not None:
                    state_findings(session, target, new_state, result, now)
                    report.changes.append(f"{target.id} {target.name}: {new_state}")
                if deep_due and not deep:
                    report.deep_due.append(target.id)
                suspension_overdue(session, target, now)
        if deep:
            for service_id in {r.service_id for r in results if r.service_id}:
                state = session.get(ServiceState, service_id)
                if state is not None:
                    state.last_deep_at = now
        probe_round.failures = report.failures
        session.flush()
        report.round_id = probe_round.id
    return report
