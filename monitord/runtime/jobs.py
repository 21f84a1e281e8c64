"""The daemon's jobs, listed in one place. Each is a small async function of the App.

This module is wiring: it is where the core meets the plug-ins (alerts, probes, rules).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loguru import logger

from monitord.accesslog.work import audit_due, follow_logs
from monitord.catalogue import SyncOutcome, sync_catalogue
from monitord.cluster import SharedCoordinator
from monitord.compliance import evaluate_quarter, quarters_due, store_verdicts
from monitord.config import Settings
from monitord.errors import MonitordError
from monitord.incidents import confirm_deliveries, intake, work_clocks
from monitord.probing import (
    Schedule,
    deep_round,
    load_targets,
    next_window,
    probe_round,
    release_withdrawn,
)
from monitord.redact import error_line, one_line
from monitord.runtime.app import App
from monitord.runtime.delivery import deliver_alerts
from monitord.runtime.reporting import confirm_report_deliveries, send_due_report
from monitord.scans import (
    driver_settings,
    expire_acceptances,
    finished_scan_count,
    scan_pass,
    zap,
)
from monitord.store import STORE_GONE_ERRORS
from monitord.store.retention import purge, roll_up
from monitord.workcalendar import WorkCalendar


@dataclass(frozen=True)
class Job:
    """A scheduled job: its name, what it does, and how often (from the settings)."""

    name: str
    run: Callable[[App], Awaitable[object]]
    interval_seconds: Callable[[Settings], float]
    run_at_start: bool = True
    once: bool = True
    """Runs on one daemon of the cluster at a time (the holder of its lease); otherwise on
    every daemon, on its own part of the work."""
    without_store: bool = False
    """Runs while the store does not answer (it keeps what it cannot write)."""
    aligned: bool = False
    """Runs at whole multiples of its interval on the wall clock (the probe rounds' windows,
    the same on every daemon), not an interval after its last start."""
    release_memory: bool = False
    """After each run, the C heap's free pages go back to the system (monitord.runtime.heap):
    a run that allocates and frees much at once would otherwise leave them resident."""
    stops_at_once: bool = False
    """A stop cancels a run under way at once instead of granting it `daemon.grace_seconds`:
    for all-or-nothing work, which loses nothing when cut short and could otherwise hold the
    stop through its retries."""


async def catalogue_sync(app: App, file: str | None = None) -> SyncOutcome:
    """Sync the service catalogue from the portal (or from a file of the same shape)."""
    assert app.http is not None, "the App is started"
    outcome = await sync_catalogue(
        app.store,
        app.settings.portal,
        app.settings.secrets.portal_token,
        app.clock,
        session=app.http,
        file=file,
        calendar=WorkCalendar.from_settings(app.settings.logs),
    )
    withdrawn = await asyncio.to_thread(release_withdrawn, app.store, app.clock())
    if withdrawn:
        logger.info(
            "no longer probed, their probe findings resolved: {}", ", ".join(withdrawn[:20])
        )
    return outcome


async def sync_once(app: App, file: str | None = None) -> SyncOutcome:
    """`monitord sync`: the job once, the App opened and closed around it."""
    async with app:
        return await catalogue_sync(app, file)


async def probe_services(app: App) -> None:
    """One inspection round, in the window of the round clock that comes next: every online and
    suspended service this daemon probes, each at its slot (monitord.probing.schedule).

    In a cluster the round covers every service and asks the split, slot by slot, which are
    this daemon's, so that a service whose daemon joined or went away keeps its slot. While the
    store does not answer, the round probes the services it last listed and keeps the results
    in memory; they are written, late, once it answers (monitord.probing.backlog).
    """
    backlog = app.probe_backlog
    try:
        targets = await asyncio.to_thread(load_targets, app.store)
    except STORE_GONE_ERRORS:
        if not backlog.targets:
            raise
        targets = backlog.targets
    else:
        backlog.remember(targets)
        await _write_backlog(app)
    interval = app.settings.probes.interval_seconds
    start, skip_passed = next_window(app.probe_window, app.clock().timestamp(), interval)
    app.probe_window = start
    schedule = Schedule(start, interval, skip_passed)
    once_within = None
    cluster = app.cluster
    if isinstance(cluster, SharedCoordinator):
        # A joining member counts once its own rounds surely run; a member gone is seen
        # within a lease and a heartbeat, and its passed slots are then taken over.
        lease, beat = cluster.settings.lease_seconds, cluster.settings.heartbeat_seconds
        schedule = dataclasses.replace(
            schedule,
            split=lambda: cluster.split(settle_seconds=lease),
            watch_seconds=lease + beat,
            counted=cluster.counted,
        )
        once_within = dt.timedelta(seconds=interval / 2)
    report = await probe_round(
        app.store,
        app.settings,
        app.clock,
        targets=targets,
        backlog=backlog,
        once_within=once_within,
        schedule=schedule,
        limits=app.probe_limits,
        deep_later=app.deep_due,
    )
    if cluster is not None:
        await asyncio.to_thread(cluster.record_round, report.services)


async def deep_probes(app: App) -> None:
    """The deep probes (`probes.deep_kinds`) of the services the probe rounds found due, run
    beside the rounds, which keep their slots meanwhile; they share the rounds' limits (the
    connections to each service, the probes in flight) and take at most half of the probes
    in flight. In a cluster, a service is deep-probed by the daemon that probes it now."""
    mine = None
    cluster = app.cluster
    if isinstance(cluster, SharedCoordinator):
        split = cluster.split(settle_seconds=cluster.settings.lease_seconds)
        mine = split.mine
    taken = app.deep_due.take(mine)
    if not taken:
        return
    recorded_at = None
    try:
        await deep_round(app.store, app.settings, app.clock, taken, app.probe_limits)
        recorded_at = app.clock()
    finally:
        app.deep_due.done(taken, recorded_at)


async def _write_backlog(app: App) -> None:
    """Write the results kept through an outage, if the store takes them now. A store that
    reads but cannot be written (a full disk) keeps them waiting: the round goes on all the
    same, and keeps its own results beside them."""
    if not len(app.probe_backlog):
        return
    try:
        await asyncio.to_thread(app.probe_backlog.write, app.store)  # says what it wrote
    except STORE_GONE_ERRORS as exc:
        logger.debug("the kept probe results cannot be written yet ({})", error_line(exc))


def _housekeeping(app: App) -> int:
    now = app.clock()
    rolled = roll_up(app.store, now)
    purge(app.store, app.settings, now)  # logs and audits what it removed, table by table
    return rolled


async def housekeeping(app: App) -> None:
    """Roll probe results up by the hour and purge what is past its retention."""
    rolled = await asyncio.to_thread(_housekeeping, app)
    if rolled:
        logger.info("housekeeping: {} hourly roll-ups written", rolled)


async def security_scans(app: App) -> None:
    """Queue due ZAP scans, reconcile interrupted ones, and run what is queued."""
    if not app.settings.zap.enabled:
        return
    scanner = zap.ZapScanner(driver_settings(app.settings), clock=app.clock)
    # A scan another live daemon is running is its own (it held this job before): not resumed.
    others = app.cluster.live_names() - {app.cluster.name} if app.cluster else set()
    report = await scan_pass(
        app.store, app.settings, app.clock, scanner=scanner, others_running=frozenset(others)
    )
    if report.ran:
        done = await asyncio.to_thread(finished_scan_count, app.store)
        every = app.settings.zap.restart_advice_after_scans
        if done >= every and done % every < len(report.ran):
            logger.warning("ZAP has run {} scans: restart it to release memory (see README)", done)


async def follow_access_logs(app: App) -> None:
    """Read what is new in the configured access logs; statistics and findings to the store."""
    if not app.settings.logs.follow:
        return
    report = await asyncio.to_thread(follow_logs, app.store, app.settings, app.clock)
    if report.lines:
        logger.info(
            "access logs: {} new lines, {} hourly statistics, {} findings updated",
            report.lines,
            report.stats,
            report.findings,
        )


async def quarterly_log_audit(app: App) -> None:
    """Write the previous quarter's log audit (7.3.1) once it is over and its logs are read."""
    await asyncio.to_thread(audit_due, app.store, app.settings, app.clock)


def _evaluate_compliance(app: App) -> dict[str, int]:
    """Evaluate and store the quarters due, each in its own transaction; failed verdicts by
    quarter."""
    with app.store.session() as session:
        due = quarters_due(session, app.clock())
    failed = {}
    for label in due:
        with app.store.session() as session:
            now = app.clock()
            verdicts = evaluate_quarter(session, app.settings, label, now)
            store_verdicts(session, label, verdicts, now)
        failed[label] = sum(not v.passed for v in verdicts)
    return failed


async def compliance_evaluation(app: App) -> None:
    """Evaluate the compliance rules for the current quarter (and the previous one once it
    is over and audited), storing the verdicts the report reads."""
    for label, failed in (await asyncio.to_thread(_evaluate_compliance, app)).items():
        logger.info("compliance {} evaluated: {} verdicts failed", label, failed)


def _incident_pass(app: App) -> tuple[list[int], list[int], int]:
    with app.store.session() as session:
        now = app.clock()
        # Here, not in the scan job: an acceptance expires whether ZAP is enabled or not, and
        # the finding it reopens gets its incident (and two-hour clock) in this same pass.
        expire_acceptances(session, now)
        report = intake(session, app.settings, now)
        reminders = work_clocks(session, app.settings, now)
    return report.opened, report.resolved, reminders


async def incident_clock(app: App) -> None:
    """Reopen findings whose acceptance expired, open incidents from new findings, and work
    every incident's clock."""
    opened, resolved, alerts = await asyncio.to_thread(_incident_pass, app)
    for incident_id in opened:
        logger.info("incident {} opened", incident_id)
    for incident_id in resolved:
        logger.info("incident {} resolved: all its findings are gone", incident_id)
    if alerts:
        logger.info("{} reminder/escalation/deadline alert(s) queued", alerts)


def _confirm_deliveries(app: App) -> tuple[list[int], list[str]]:
    with app.store.session() as session:
        return confirm_deliveries(session), confirm_report_deliveries(session)


async def alert_delivery(app: App) -> None:
    """Deliver due alerts from the outbox through apprise; a notification the management unit
    received stops its incident's clock at once."""
    report = await deliver_alerts(app)
    if report.delivered:
        incidents, reports = await asyncio.to_thread(_confirm_deliveries, app)
        for incident_id in incidents:
            logger.info("incident {}: the management unit received its notification", incident_id)
        for quarter in reports:
            logger.info("the {} report was delivered to the management unit by e-mail", quarter)


async def quarterly_report(app: App) -> None:
    """Write the last quarter's report and send it to the management unit, once per quarter,
    from the first working day at 09:00 (Asia/Shanghai)."""

    def progress(step: str) -> None:
        logger.info("quarterly report: {}", step)

    try:
        written = await asyncio.to_thread(
            send_due_report, app.store, app.settings, app.clock(), progress
        )
    except MonitordError as exc:
        # A folder that cannot be written, a font that cannot be embedded: said in one line,
        # and tried again at the next run.
        logger.error("the quarterly report could not be written: {}", one_line(str(exc)))
        return
    if written is not None:
        logger.info(
            "the {} report is written ({}, {} pages, SHA-256 {}) and queued for the "
            "management unit",
            written.quarter,
            written.path,
            written.pages,
            written.sha256,
        )


JOBS: tuple[Job, ...] = (
    # All or nothing: nothing changes until the whole catalogue is read and applied in one
    # transaction, so a stop cuts short its retries of a portal that does not answer.
    Job(
        "catalogue-sync",
        catalogue_sync,
        lambda s: s.portal.sync_interval_seconds,
        stops_at_once=True,
    ),
    # The first round starts at once, in the window under way (a new store has no services
    # until the first catalogue sync has landed: the next round has them).
    # A round is paced by its slots over 80 % of the interval, not by work: it never ends within
    # the grace period, so a stop cuts it at once (it records what it measured as it ends).
    Job(
        "probes",
        probe_services,
        lambda s: s.probes.interval_seconds,
        once=False,
        without_store=True,
        aligned=True,
        release_memory=True,
        stops_at_once=True,
    ),
    # Beside the rounds, in a job of its own: a round that waited for its deep probes (the tls
    # probe alone may take three timeouts) left the windows that passed meanwhile unprobed.
    # What a stop cuts short is probed again at the next start (its services are still due).
    Job(
        "deep-probes",
        deep_probes,
        lambda s: s.probes.interval_seconds,
        once=False,
        stops_at_once=True,
    ),
    Job("security-scans", security_scans, lambda s: s.zap.check_interval_seconds),
    # A log belongs to the machine it is on: every daemon follows its own.
    Job("access-logs", follow_access_logs, lambda s: s.logs.follow_interval_seconds, once=False),
    Job("log-audit", quarterly_log_audit, lambda s: 6 * 3600.0),
    Job("quarterly-report", quarterly_report, lambda s: 3600.0),
    Job("housekeeping", housekeeping, lambda s: 3600.0),
    Job("compliance", compliance_evaluation, lambda s: 6 * 3600.0),
    Job("incidents", incident_clock, lambda s: s.incidents.check_interval_seconds),
    Job("alert-delivery", alert_delivery, lambda s: s.alerts.delivery_interval_seconds),
)

ONCE_JOBS: tuple[str, ...] = tuple(job.name for job in JOBS if job.once)
"""The jobs that run on one daemon of the cluster at a time."""
