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
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from loguru import logger
from sqlalchemy.exc import InterfaceError, OperationalError

import probes
from monitord.config import ProbeSettings, Settings
from monitord.probing.backlog import ProbeBacklog, UnrecordedRound
from monitord.probing.record import RoundReport, record_results
from monitord.store import Store
from monitord.timeutil import Clock
from monitord.types import ProbeContext, ProbeResult, Target

__all__ = [
    "ProbeBacklog",
    "RoundReport",
    "ServiceTarget",
    "load_targets",
    "probe_context",
    "probe_round",
    "record_results",
    "run_probes",
    "spec_for_target",
    "trust_context",
]
from monitord.probing.targets import (
    CHEAP_KIND,
    ServiceTarget,
    load_targets,
    per_service_limit,
    spec_for_target,
)

SPREAD_TICK_SECONDS = 1.0
"""A spread round starts its probes in batches, one batch a second: 2,000 probes started one by
one every 24 ms cost more than twice the CPU of the same probes started a second's worth at a
time (each lone start wakes the loop, and finds the caches cold, on its own)."""


def trust_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's CAs plus the configured bundle (services under the government's own CA)."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(ca_file)
    return context


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
            delay = index * step
            await asyncio.sleep(delay - delay % SPREAD_TICK_SECONDS)
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
    targets: Sequence[ServiceTarget] | None = None,
    backlog: ProbeBacklog | None = None,
    once_within: dt.timedelta | None = None,
) -> RoundReport:
    """One inspection round: availability for every service (spread over the interval), then the
    deep kinds for services that are due; everything recorded. `kinds` forces which kinds run.

    The daemon hands `targets` (its share, read by it) and a `backlog`: when the round cannot
    be recorded because the store does not answer, its availability results are kept there
    (monitord.probing.backlog) and the store's error is raised.
    """
    config = settings.probes
    if targets is None:
        targets = await asyncio.to_thread(load_targets, store, service_ids)
    by_id = {t.id: t for t in targets}
    zone = settings.cluster.zone
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
            try:
                report = await asyncio.to_thread(
                    record_results,
                    store,
                    by_id,
                    results,
                    config,
                    clock(),
                    blind=blind,
                    zone=zone,
                    once_within=once_within,
                )
            except (OperationalError, InterfaceError):  # the store does not answer
                if backlog is None:
                    raise
                backlog.keep(UnrecordedRound(clock(), results, blind, zone))
                # The daemon says once that the store is away and that the probes keep their
                # results: a warning each round would repeat it every interval of the outage.
                logger.debug(
                    "the round's {} results are kept in memory ({} round(s) waiting) and "
                    "written once the store answers",
                    len(results),
                    len(backlog),
                )
                raise
            for change in report.changes:
                logger.info("service state: {}", change)
        deep_kinds = [k for k in (kinds or config.deep_kinds) if k != CHEAP_KIND]
        deep_ids = list(by_id) if kinds is not None else report.deep_due
        if deep_kinds and deep_ids and not blind:
            jobs = [(by_id[i], k, by_id[i].url) for i in deep_ids for k in deep_kinds]
            results = await run_probes(ctx, config, jobs)
            deep_report = await asyncio.to_thread(
                record_results,
                store,
                by_id,
                results,
                config,
                clock(),
                blind=blind,
                deep=True,
                zone=zone,
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
