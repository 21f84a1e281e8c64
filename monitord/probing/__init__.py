"""Probe rounds: run the registered probes over the catalogue's services, judge, and record.

A round probes every online and suspended service once, each at its slot of the interval
(monitord.probing.schedule), within a global and a per-service concurrency limit. Results go
to the store; rules turn their facts into findings; the availability results drive each
service's state machine (unknown → up / degraded / down) with hysteresis so that one lost
packet alerts nobody. When every configured canary fails, the round is blind: monitord lost the
network, so it declares no service down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager

from loguru import logger

import probes
from monitord.config import ProbeSettings, Settings
from monitord.probing.backlog import ProbeBacklog, UnrecordedRound, record_late
from monitord.probing.deep import DeepQueue
from monitord.probing.prober import ProbeLimits, Prober, run_probes
from monitord.probing.record import RoundReport, met_another_transaction, record_results
from monitord.probing.schedule import Schedule, next_window, probe_at_once, spread_round
from monitord.probing.targets import CHEAP_KIND, ServiceTarget, load_targets, spec_for_target
from monitord.probing.withdrawn import release_withdrawn
from monitord.store import STORE_GONE_ERRORS, Store
from monitord.timeutil import Clock
from monitord.types import ProbeContext, ProbeResult

__all__ = [
    "DeepQueue",
    "ProbeBacklog",
    "ProbeLimits",
    "RoundReport",
    "Schedule",
    "ServiceTarget",
    "deep_round",
    "load_targets",
    "next_window",
    "probe_context",
    "probe_round",
    "record_results",
    "release_withdrawn",
    "run_probes",
    "spec_for_target",
]


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
    context = probes.trust_context(config.ca_file)
    session = probes.make_session(
        limit=config.concurrency,
        denied_networks=tuple(config.denied_networks),
        ssl_context=context,
    )
    try:
        yield ProbeContext(
            session=session,
            clock=clock,
            ssl_context=context,
            ca_file=config.ca_file,
            tls_resume_s=config.tls_resume_minutes * 60,
        )
    finally:
        await session.close()


def merge_reports(into: RoundReport, part: RoundReport) -> None:
    """Add a recorded batch's report to its round's."""
    offset = len(into.results)
    into.results += part.results
    into.findings.update({offset + i: f for i, f in part.findings.items()})
    into.probes += part.probes
    into.failures += part.failures
    into.changes += part.changes
    into.deep_due += part.deep_due
    into.round_id = part.round_id or into.round_id


def in_target_order(report: RoundReport, targets: Sequence[ServiceTarget]) -> None:
    """Put a report's results (recorded as they came) in the order of `targets`, each with its
    findings, as the CLI prints them."""
    position = {t.id: i for i, t in enumerate(targets)}
    order = sorted(
        range(len(report.results)),
        key=lambda i: position.get(report.results[i].service_id or "", len(position)),
    )
    report.results = [report.results[i] for i in order]
    report.findings = {
        new: report.findings[old] for new, old in enumerate(order) if old in report.findings
    }


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
    schedule: Schedule | None = None,
    progress: Callable[[int, int], None] | None = None,
    limits: ProbeLimits | None = None,
    deep_later: DeepQueue | None = None,
) -> RoundReport:
    """One inspection round: availability for every service (each at its slot of the round,
    or all at once when not `spread`), then the deep kinds for services that are due;
    everything recorded. `kinds` forces which kinds run.

    The daemon's rounds hand the services due for their deep probes to `deep_later` instead
    (the daemon runs them with `deep_round`, beside the next rounds: a round that waited for
    them would leave the windows that passed meanwhile unprobed), and share `limits` with them.

    The daemon hands `targets` (every service, read by it), the `schedule` (the round's window
    and who probes what) and a `backlog`: what cannot be recorded because the store does not
    answer is kept there (monitord.probing.backlog), the round goes on, and the store's error
    is raised at its end. `progress`, when given, is told (probes done, probes in all) of each
    phase: the availability results as each batch of them is recorded, then the deep probes as
    each ends.
    """
    config = settings.probes
    began = clock()
    if targets is None:
        targets = await asyncio.to_thread(load_targets, store, service_ids)
    by_id = {t.id: t for t in targets}
    zone = settings.cluster.zone
    async with probe_context(config, clock) as ctx:
        blind = await blind_round(ctx, config)
        if blind:
            logger.error("every canary failed: this round is blind and declares no service down")
        report = RoundReport(blind=blind)
        lost: list[BaseException] = []

        async def record(results: list[ProbeResult], late: bool = False) -> None:
            if lost:  # the store went away earlier in this round: keep the rest in memory
                assert backlog is not None
                backlog.keep(UnrecordedRound(clock(), results, blind, zone))
                return
            try:
                if late:  # measured while the other daemons did not count this one alive
                    round_ = UnrecordedRound(clock(), results, blind, zone)
                    await asyncio.to_thread(record_late, store, round_)
                    # Said, as the backlog's late results are: late rows no line accounts
                    # for look like results lost or doubled.
                    logger.info(
                        "{} probe results measured while the cluster did not count this daemon "
                        "alive are written (late)",
                        len(results),
                    )
                    return
                part = await asyncio.to_thread(
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
            # The store does not answer, or takes no write (a read-only standby after a
            # failover raises InternalError): the round goes on.
            except STORE_GONE_ERRORS as exc:
                if backlog is None or met_another_transaction(exc):
                    raise  # a conflict that outlasted the tries is a failure, not an outage
                lost.append(exc)
                backlog.keep(UnrecordedRound(clock(), results, blind, zone))
                # The daemon says once that the store is away and that the probes keep their
                # results: a warning each round would repeat it every interval of the outage.
                logger.debug(
                    "{} results are kept in memory ({} batch(es) waiting) and written once "
                    "the store answers",
                    len(results),
                    len(backlog),
                )
                return
            merge_reports(report, part)
            for change in part.changes:
                logger.info("service state: {}", change)
            if progress is not None:
                progress(report.probes, len(targets))

        if kinds is None or CHEAP_KIND in kinds:
            if spread:
                if schedule is None:
                    start = clock().timestamp()
                    schedule = Schedule(start=start, interval=config.interval_seconds)
                await spread_round(Prober(ctx, config, limits), targets, schedule, record)
            else:
                await probe_at_once(Prober(ctx, config, limits), targets, record)
                in_target_order(report, targets)
        if lost:
            raise lost[0]
        deep_kinds = [k for k in (kinds or config.deep_kinds) if k != CHEAP_KIND]
        deep_ids = list(by_id) if kinds is not None else report.deep_due
        if deep_later is not None:
            if not blind:
                deep_later.add((by_id[i] for i in report.deep_due), began)
        elif deep_kinds and deep_ids and not blind:
            deep = [by_id[i] for i in deep_ids]
            part = await _probe_deep(ctx, store, settings, deep, deep_kinds, progress, limits)
            merge_reports(report, part)
    report.services = len({r.service_id for r in report.results})
    logger.info(
        "probe round: {} services, {} probes, {} failed{}",
        report.services,
        report.probes,
        report.failures,
        " (blind)" if blind else "",
    )
    return report


async def _probe_deep(
    ctx: ProbeContext,
    store: Store,
    settings: Settings,
    targets: Sequence[ServiceTarget],
    kinds: Sequence[str],
    progress: Callable[[int, int], None] | None,
    limits: ProbeLimits | None,
) -> RoundReport:
    """Run `kinds` on each of `targets` and record them (their deep probes ran now).

    Beside other probes (`limits` given), these take at most half of `probes.concurrency`
    at once: the availability probes always have the other half.
    """
    config = settings.probes
    jobs = [(t, k, t.url) for t in targets for k in kinds]
    share = max(1, config.concurrency // 2) if limits is not None else None
    results = await run_probes(ctx, config, jobs, progress, limits=limits, most_at_once=share)
    return await asyncio.to_thread(
        record_results,
        store,
        {t.id: t for t in targets},
        results,
        config,
        ctx.clock(),
        deep=True,
        zone=settings.cluster.zone,
    )


async def deep_round(
    store: Store,
    settings: Settings,
    clock: Clock,
    targets: Sequence[ServiceTarget],
    limits: ProbeLimits,
) -> RoundReport:
    """The deep kinds (`probes.deep_kinds`) for services the rounds found due, run beside the
    availability rounds within the `limits` they share; recorded."""
    kinds = [k for k in settings.probes.deep_kinds if k != CHEAP_KIND]
    if not kinds or not targets:
        return RoundReport()
    async with probe_context(settings.probes, clock) as ctx:
        report = await _probe_deep(ctx, store, settings, targets, kinds, None, limits)
    logger.info(
        "deep probes: {} services, {} probes, {} failed",
        len(targets),
        report.probes,
        report.failures,
    )
    return report
