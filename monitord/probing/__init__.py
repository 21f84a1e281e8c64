"""Probe rounds: run the registered probes over the catalogue's services, judge, and record.

A round probes every online and suspended service once, spread evenly over the interval, within
a global and a per-service concurrency limit. Results go to the store; rules turn their facts into
findings; the availability results drive each service's state machine (unknown → up / degraded /
down) with hysteresis so that one lost packet alerts nobody. When every configured canary fails,
the round is blind: monitord lost the network, so it declares no service down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

import probes
import rules
from monitord.config import ProbeSettings, Settings
from monitord.store import Store
from monitord.store.findings import resolve_findings, upsert_finding
from monitord.store.models import ProbeResultRow, ProbeRound, Service, ServiceEvent, ServiceState
from monitord.timeutil import Clock, parse_time
from monitord.types import FindingDraft, ProbeContext, ProbeResult, Target

CHEAP_KIND = "availability"
# The state machine owns these: a single failed or slow result is not yet a finding.
RULE_DOWN = "service_down"
RULE_UNANNOUNCED = "unannounced_outage"
RULE_SLOW = "service_slow"
STATE_RULES = (RULE_DOWN, RULE_SLOW)
"""Declared in rules/probes.toml, where they judge one result; a round leaves them to the state
machine, which needs probes.down_after failures in a row."""
RULE_OVERDUE = "suspension_overdue"


@dataclass(frozen=True)
class ServiceTarget:
    """What a round needs to know about one catalogue service."""

    id: str
    name: str
    url: str
    status: str
    probe: dict[str, Any] | None
    return_codes: dict[str, Any] | None
    max_concurrency: int | None
    suspension: dict[str, Any] | None


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


def load_targets(store: Store, service_ids: Iterable[str] | None = None) -> list[ServiceTarget]:
    """Online and suspended services with a URL (7.2.2: a suspended service is still probed)."""
    with store.session() as session:
        query = select(Service).where(
            Service.gone.is_(False),
            Service.status.in_(("online", "suspended")),
            Service.url.is_not(None),
        )
        if service_ids is not None:
            query = select(Service).where(Service.id.in_(list(service_ids)))
        return [
            ServiceTarget(
                id=s.id,
                name=s.name,
                url=s.url or "",
                status=s.status,
                probe=s.probe,
                return_codes=s.return_codes,
                max_concurrency=s.max_concurrency,
                suspension=s.suspension,
            )
            for s in session.scalars(query.order_by(Service.id))
            if s.url
        ]


def trust_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's CAs plus the configured bundle (services under the government's own CA)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


def spec_for_target(kind: str, target: ServiceTarget | None, settings: ProbeSettings) -> Any:
    """The spec of a kind for a service: its catalogue probe object, and the config's limits."""
    overrides: dict[str, Any] = {
        "timeout_s": settings.timeout_seconds,
        "denied_networks": tuple(settings.denied_networks),
    }
    if kind == CHEAP_KIND:
        overrides["slo_ms"] = settings.slo_ms
    return probes.spec_for(
        kind,
        target.probe if target else None,
        return_codes=target.return_codes if target else None,
        **overrides,
    )


def per_service_limit(target: ServiceTarget, settings: ProbeSettings) -> int:
    """Connections at once to one service: the config's limit, and at most a tenth of what the
    provider filed as its max_concurrency, so monitord never loads a provider."""
    if target.max_concurrency:
        return max(1, min(settings.per_service_concurrency, target.max_concurrency // 10))
    return settings.per_service_concurrency


async def run_probes(
    ctx: ProbeContext,
    settings: ProbeSettings,
    jobs: Sequence[tuple[ServiceTarget | None, str, str]],
    spread_seconds: float = 0.0,
) -> list[ProbeResult]:
    """Run (target, kind, url) probes within the limits, starts spread over spread_seconds.

    The deadline is enforced here, not in the probe: a probe that overruns its timeout by more
    than five seconds is abandoned and recorded as failed.
    """
    overall = asyncio.Semaphore(settings.concurrency)
    per_service: dict[str, asyncio.Semaphore] = {}
    step = spread_seconds / len(jobs) if jobs else 0.0

    async def one(index: int, target: ServiceTarget | None, kind: str, url: str) -> ProbeResult:
        if step:
            await asyncio.sleep(index * step)
        key = target.id if target else url
        if key not in per_service:
            limit = per_service_limit(target, settings) if target else 1
            per_service[key] = asyncio.Semaphore(limit)
        spec = spec_for_target(kind, target, settings)
        started = ctx.clock()
        began = time.perf_counter()
        async with overall, per_service[key]:
            try:
                # The probe runs in this task (asyncio.timeout, not wait_for): cancelling the
                # round cancels the probe itself, so no probe outlives the session it uses.
                async with asyncio.timeout(settings.timeout_seconds + 5):
                    return await probes.PROBES[kind].probe(
                        Target(url, target.id if target else None, target.name if target else None),
                        spec,
                        ctx,
                    )
            except TimeoutError:
                error = f"no result within {settings.timeout_seconds + 5:g} s (deadline)"
            except Exception as exc:  # a probe bug must not end the round
                logger.opt(exception=exc).error("probe {} of {} crashed", kind, url)
                error = f"probe crashed: {exc.__class__.__name__}: {exc}"
        return ProbeResult(
            kind=kind,
            target=url,
            success=False,
            duration_ms=(time.perf_counter() - began) * 1000,
            started_at=started,
            error=error,
            service_id=target.id if target else None,
        )

    return list(await asyncio.gather(*(one(i, t, k, u) for i, (t, k, u) in enumerate(jobs))))


def _cert_fingerprint(facts: dict[str, Any]) -> str | None:
    parts = [facts.get(k) for k in ("cert_subject", "cert_issuer", "cert_not_after")]
    if not any(parts):
        return None
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _draft(
    rule: str,
    clause: str,
    severity: Any,
    target: ServiceTarget,
    summary: str,
    evidence: dict[str, Any],
    *,
    occurred_at: dt.datetime | None = None,
) -> FindingDraft:
    return FindingDraft(
        rule=rule,
        clause=clause,
        severity=severity,
        subject_kind="service",
        subject=target.id,
        summary=summary,
        evidence=evidence,
        service_id=target.id,
        occurred_at=occurred_at,
    )


def _judge(result: ProbeResult, settings: ProbeSettings) -> str:
    """What one availability result says on its own: fail, slow or ok."""
    if not result.success:
        return "fail"
    if result.duration_ms > settings.slo_ms:
        return "slow"
    return "ok"


def _advance_state(
    session: Session,
    target: ServiceTarget,
    result: ProbeResult,
    settings: ProbeSettings,
    now: dt.datetime,
    *,
    blind: bool,
) -> tuple[str | None, bool]:
    """Move one service's state machine; returns (the new state if it changed, deep probe due)."""
    state = session.get(ServiceState, target.id)
    if state is None:
        state = ServiceState(
            service_id=target.id, state="unknown", since=now, failures=0, successes=0
        )
        session.add(state)
    verdict = _judge(result, settings)
    state.last_probe_at = now
    state.last_error = result.error
    if verdict == "fail":
        if not blind:  # a blind round says nothing about the service
            if state.failures == 0:
                state.failing_since = result.started_at
            state.failures += 1
            state.successes = 0
    else:
        state.successes += 1
        state.failures = 0
        state.failing_since = None
    new = state.state
    if state.failures >= settings.down_after:
        new = "down"
    elif verdict != "fail":
        recovering = state.state == "down" and state.successes < settings.up_after
        if not recovering:
            new = "degraded" if verdict == "slow" else "up"
    fingerprint = _cert_fingerprint(result.facts)
    deep_due = (
        state.last_deep_at is None
        or now - state.last_deep_at >= dt.timedelta(hours=settings.deep_interval_hours)
        or (
            fingerprint is not None
            and fingerprint != state.cert_fingerprint
            and state.cert_fingerprint is not None
        )
    ) and verdict != "fail"
    if fingerprint is not None:
        state.cert_fingerprint = fingerprint
    if new == state.state:
        return None, deep_due
    session.add(
        ServiceEvent(
            service_id=target.id,
            kind=new,
            at=now,
            from_status=state.state,
            to_status=new,
            detail={"error": result.error, "duration_ms": round(result.duration_ms, 1)},
        )
    )
    state.state = new
    state.since = now
    return new, deep_due


def _state_findings(
    session: Session, target: ServiceTarget, new_state: str, result: ProbeResult, now: dt.datetime
) -> None:
    """Findings the state machine owns: down, unannounced outage, slow."""
    suspended = target.status == "suspended" and bool(target.suspension)
    evidence = {
        "error": result.error,
        "duration_ms": round(result.duration_ms, 1),
        "url": result.target,
    }
    present: set[str] = set()
    state = session.get(ServiceState, target.id)  # in the session already: no query
    began = state.failing_since if state is not None else None
    if new_state == "down" and not suspended:
        upsert_finding(
            session,
            _draft(
                RULE_DOWN,
                "6.4 a",
                "high",
                target,
                f"服务不可用：{result.error or '探测失败'}",
                evidence,
                occurred_at=began,
            ),
            now,
        )
        upsert_finding(
            session,
            _draft(
                RULE_UNANNOUNCED,
                "7.2.2",
                "medium",
                target,
                "服务中断且未报备暂停申请",
                evidence,
                occurred_at=began,
            ),
            now,
        )
        present = {RULE_DOWN, RULE_UNANNOUNCED}
    if new_state == "degraded":
        upsert_finding(
            session,
            _draft(
                RULE_SLOW,
                "6.4 b",
                "medium",
                target,
                f"响应缓慢：{result.duration_ms:.0f} ms",
                evidence,
            ),
            now,
        )
        present = {RULE_SLOW}
    for rule in (RULE_DOWN, RULE_UNANNOUNCED, RULE_SLOW):
        if rule not in present:
            resolve_findings(session, [rule], "service", set(), now, subjects={target.id})


def _suspension_overdue(session: Session, target: ServiceTarget, now: dt.datetime) -> None:
    planned = (target.suspension or {}).get("planned_resume")
    overdue = False
    if target.status == "suspended" and isinstance(planned, str):
        try:
            overdue = parse_time(planned) < now
        except ValueError:
            overdue = False
    if overdue:
        upsert_finding(
            session,
            _draft(
                RULE_OVERDUE,
                "7.2.2",
                "low",
                target,
                f"暂停已超过计划恢复时间 {planned}",
                {"suspension": target.suspension},
            ),
            now,
        )
    else:
        resolve_findings(session, [RULE_OVERDUE], "service", set(), now, subjects={target.id})


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
                new_state, deep_due = _advance_state(
                    session, target, result, settings, now, blind=blind
                )
                if new_state is not None:
                    _state_findings(session, target, new_state, result, now)
                    report.changes.append(f"{target.id} {target.name}: {new_state}")
                if deep_due and not deep:
                    report.deep_due.append(target.id)
                _suspension_overdue(session, target, now)
        if deep:
            for service_id in {r.service_id for r in results if r.service_id}:
                state = session.get(ServiceState, service_id)
                if state is not None:
                    state.last_deep_at = now
        probe_round.failures = report.failures
        session.flush()
        report.round_id = probe_round.id
    return report


async def blind_round(ctx: ProbeContext, settings: ProbeSettings) -> bool:
    """True when canaries are configured and every one of them failed."""
    if not settings.canaries:
        return False
    results = await run_probes(
        ctx, settings, [(None, CHEAP_KIND, url) for url in settings.canaries]
    )
    return all(not r.success for r in results)


@asynccontextmanager
async def probe_context(config: ProbeSettings, clock: Clock) -> AsyncIterator[ProbeContext]:
    """A probe context as rounds use it: the trusted CAs, the deny-listed probing session."""
    context = trust_context(config.ca_file)
    session = probes.make_session(
        limit=config.concurrency,
        denied_networks=tuple(config.denied_networks),
        ssl_context=context,
    )
    try:
        yield ProbeContext(
            session=session, clock=clock, ssl_context=context, ca_file=config.ca_file
        )
    finally:
        await session.close()


async def probe_round(
    store: Store,
    settings: Settings,
    clock: Clock,
    *,
    service_ids: Iterable[str] | None = None,
    kinds: Sequence[str] | None = None,
    spread: bool = True,
) -> RoundReport:
    """One inspection round: availability for every service (spread over the interval), then the
    deep kinds for services that are due; everything recorded. `kinds` forces which kinds run."""
    config = settings.probes
    targets = await asyncio.to_thread(load_targets, store, service_ids)
    by_id = {t.id: t for t in targets}
    async with probe_context(config, clock) as ctx:
        blind = await blind_round(ctx, config)
        if blind:
            logger.error("every canary failed: this round is blind and declares no service down")
        cheap = kinds is None or CHEAP_KIND in kinds
        report = RoundReport(services=len(targets), blind=blind)
        if cheap:
            jobs = [(t, CHEAP_KIND, t.url) for t in targets]
            spread_seconds = config.interval_seconds * 0.8 if spread else 0.0
            results = await run_probes(ctx, config, jobs, spread_seconds)
            report = await asyncio.to_thread(
                record_results, store, by_id, results, config, clock(), blind=blind
            )
            for change in report.changes:
                logger.info("service state: {}", change)
        deep_kinds = [k for k in (kinds or config.deep_kinds) if k != CHEAP_KIND]
        deep_ids = list(by_id) if kinds is not None else report.deep_due
        if deep_kinds and deep_ids and not blind:
            jobs = [(by_id[i], k, by_id[i].url) for i in deep_ids for k in deep_kinds]
            results = await run_probes(ctx, config, jobs)
            deep_report = await asyncio.to_thread(
                record_results, store, by_id, results, config, clock(), blind=blind, deep=True
            )
            offset = len(report.results)
            report.results += deep_report.results
            report.findings.update({offset + i: f for i, f in deep_report.findings.items()})
            report.probes += deep_report.probes
            report.failures += deep_report.failures
    logger.info(
        "probe round: {} services, {} probes, {} failed{}",
        report.services,
        report.probes,
        report.failures,
        " (blind)" if blind else "",
    )
    return report
