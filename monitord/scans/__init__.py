"""Security scans with OWASP ZAP: triggers, running them, and their findings (7.3.2, 8.3 b).

Every online service is scanned once a quarter (spread over the quarter's first weeks), and at
once when it goes online, resumes (7.2.3) or deploys a new version (its `updated_at` changes).
Each scan is a row keyed by its trigger, so enqueueing is idempotent; its progress is stored as
it goes, so a restarted daemon reconciles with ZAP instead of forgetting. Findings of High and
Medium risk on an online service open a security incident through the usual intake (8.3 b).
A service URL ZAP must not be pointed at (not http(s), or in `probes.denied_networks`) is
recorded as a failed scan with the reason and never queued; the driver checks again, names
resolved and redirects followed, when a scan starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Any

from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitord.config import Settings, read_secret_file
from monitord.errors import UsageError, ZapError, ZapOccupied, ZapTargetRefused
from monitord.redact import one_line
from monitord.scans import zap
from monitord.scans.state import ScanState, ZapDriverSettings
from monitord.scans.target import target_problem
from monitord.store import Store, audit, gone_from_this_host, hold_alone
from monitord.store.findings import resolve_finding, resolve_findings, upsert_finding
from monitord.store.models import SCANNED, Finding, Scan, Service, ServiceEvent
from monitord.textable import shortened, storable
from monitord.timeutil import SHANGHAI, Clock, quarter_start
from monitord.types import FindingDraft

SCAN_START_LOCK_KEY = int.from_bytes(b"mon-scan", "big")
"""The PostgreSQL advisory lock a scan's start holds while it checks that ZAP is free."""
SCAN_TRIGGERS = {"went_online": "went_online", "resumed": "resumed", "updated": "updated"}
RULE_QUARTER_MISSING = "quarterly_scan_missing"
ACTIVE = ("queued", "running")


def driver_settings(settings: Settings) -> ZapDriverSettings:
    """The scan driver's settings: the [zap] table, its resolved API key, the denied networks."""
    key = settings.secrets.zap_api_key
    return ZapDriverSettings(
        zap=settings.zap,
        api_key=key.get_secret_value() if key else "",
        denied_networks=tuple(settings.probes.denied_networks),
    )


@functools.lru_cache(maxsize=100_000)  # asked for every online service at every pass
def spread_offset(service_id: str, days: int) -> dt.timedelta:
    """A stable offset within the first `days` of a quarter, so scans do not all start at once."""
    digest = int(hashlib.sha256(service_id.encode()).hexdigest()[:8], 16)
    return dt.timedelta(hours=digest % (days * 24))


def _enqueue(
    session: Session,
    service_id: str,
    url: str,
    key: str,
    trigger: str,
    now: dt.datetime,
    settings: Settings,
    known: set[str] | None = None,
) -> bool:
    """Queue a scan of the service at `url` under `key` unless one exists; a target ZAP must not
    scan is recorded as a failed scan with the reason instead, and never reaches the queue.

    known: the keys already queued, read once by the caller (else looked up)."""
    if known is not None:
        if key in known:
            return False
        known.add(key)
    elif session.scalar(select(Scan.id).where(Scan.scan_key == key)) is not None:
        return False
    refused = target_problem(url, settings.probes.denied_networks)
    if refused is not None:
        logger.warning("scan {} of {} not queued: {}", key, service_id, refused)
    session.add(
        Scan(
            service_id=service_id,
            scan_key=key,
            trigger=trigger,
            state="queued" if refused is None else "failed",
            queued_at=now,
            next_attempt_at=now,
            finished_at=None if refused is None else now,
            progress={},
            error=None if refused is None else f"not scanned: {refused}",
        )
    )
    return refused is None


def enqueue_due(session: Session, settings: Settings, now: dt.datetime) -> list[str]:
    """Queue the scans that are due: quarterly ones and those triggered by lifecycle events.

    A handful of queries whatever the number of services (it runs every minute): the keys
    already queued this quarter and the last scan of each service are each read once, and only
    the columns used (a whole service row holds a dozen JSON documents to decode).
    """
    queued: list[str] = []
    label, start = quarter_start(now)
    week_ago = now - dt.timedelta(days=7)
    online: dict[str, str] = {
        service_id: url or ""  # never empty: the query asks for a URL
        for service_id, url in session.execute(
            select(Service.id, Service.url).where(
                Service.status == "online", Service.gone.is_(False), Service.url.is_not(None)
            )
        )
    }
    # A quarterly key is queued within its quarter, an event's within a week of the event.
    known = set(
        session.scalars(select(Scan.scan_key).where(Scan.queued_at >= min(start, week_ago)))
    )
    for service_id, url in online.items():
        if now >= start + spread_offset(service_id, settings.zap.quarterly_spread_days):
            key = f"{service_id}-{label}"
            if _enqueue(session, service_id, url, key, "quarterly", now, settings, known):
                queued.append(key)
    session.flush()
    recent = session.execute(
        select(ServiceEvent.id, ServiceEvent.service_id, ServiceEvent.kind, ServiceEvent.at)
        .where(ServiceEvent.kind.in_(list(SCAN_TRIGGERS)), ServiceEvent.at >= week_ago)
        .order_by(ServiceEvent.id)
    ).all()
    if not recent:
        return queued
    last_queued = dict(
        session.execute(
            select(Scan.service_id, func.max(Scan.queued_at))
            .where(Scan.queued_at >= week_ago)
            .group_by(Scan.service_id)
        ).all()
    )
    for event_id, service_id, kind, at in recent:
        if service_id not in online:
            continue
        last = last_queued.get(service_id)
        if last is not None and last > at:
            continue  # a scan queued since (the first sync's quarterly one) covers this event
        key = f"{service_id}-event-{event_id}"
        trigger = SCAN_TRIGGERS[kind]
        if _enqueue(session, service_id, online[service_id], key, trigger, now, settings, known):
            queued.append(key)
            last_queued[service_id] = now
    return queued


def scanned_service(session: Session, service_id: str) -> Service:
    """The service a person asked to scan; UsageError when there is none with a URL."""
    service = session.get(Service, service_id)
    if service is None or service.gone:
        raise UsageError(f"{service_id!r}: no such service in the store (see `monitord services`)")
    if not service.url:
        raise UsageError(
            f"{service_id!r} has no URL to scan: its filing gives none that is http(s) "
            "(`monitord services` shows its filing problems)"
        )
    return service


def enqueue_manual(
    session: Session, service_id: str, actor: str, now: dt.datetime, settings: Settings
) -> tuple[Scan, bool]:
    """Queue a scan a person asked for; returns the scan and whether it was queued now.

    A scan of the service already queued (not yet started, or queued again after an
    interruption) is the one returned, due at once: a second one would scan the service twice.
    `ZapTargetRefused` when ZAP must not scan it, or when scans are switched off (the daemon
    would never start it)."""
    if not settings.zap.enabled:
        raise ZapTargetRefused(
            "not scanned: [zap] enabled = false, so no scan runs; set it to true (with zap.url "
            "and its API key) to scan",
            retryable=False,
        )
    service = scanned_service(session, service_id)
    refused = target_problem(service.url or "", settings.probes.denied_networks)
    if refused is not None:
        raise ZapTargetRefused(f"not scanned: {refused}")
    waiting = session.scalars(
        select(Scan)
        .where(Scan.service_id == service.id, Scan.state == "queued")
        .order_by(Scan.id)
        .limit(1)
    ).first()
    if waiting is not None:
        # Asked for now: a retry waiting out its back-off is not left to wait.
        waiting.next_attempt_at = min(waiting.next_attempt_at, now)
        audit(session, now, actor, "scan.request", service_id, {"scan_key": waiting.scan_key})
        return waiting, False
    key = f"{service_id}-manual-{now.strftime('%Y%m%dT%H%M%S')}"
    _enqueue(session, service.id, service.url or "", key, "manual", now, settings)
    audit(session, now, actor, "scan.request", service_id, {"scan_key": key})
    session.flush()
    return session.scalars(select(Scan).where(Scan.scan_key == key)).one(), True


def check_quarter(session: Session, settings: Settings, now: dt.datetime) -> int:
    """A 7.3.2 finding for each online service not scanned this quarter by the deadline."""
    _label, start = quarter_start(now)
    deadline = start + dt.timedelta(days=settings.zap.quarterly_deadline_days)
    missing: set[str] = set()
    if now >= deadline:
        scanned = set(
            session.scalars(
                select(Scan.service_id).where(Scan.state.in_(SCANNED), Scan.finished_at >= start)
            )
        )
        for service in session.scalars(
            select(Service).where(Service.status == "online", Service.gone.is_(False))
        ):
            if service.id in scanned:
                continue
            missing.add(service.id)
            upsert_finding(
                session,
                FindingDraft(
                    rule=RULE_QUARTER_MISSING,
                    clause="7.3.2",
                    severity="medium",
                    subject_kind="service",
                    subject=service.id,
                    service_id=service.id,
                    summary=f"本季度（{_label}）尚未完成漏洞扫描",
                    evidence={"quarter_start": start.isoformat(), "deadline": deadline.isoformat()},
                ),
                now,
            )
    resolve_findings(session, [RULE_QUARTER_MISSING], "service", missing, now)
    return len(missing)


def expire_acceptances(session: Session, now: dt.datetime) -> int:
    """Accepted risks and false positives whose expiry passed come back as open findings.

    Only findings still accepted: one a clean rescan fixed is resolved, and stays so.
    """
    expired = session.scalars(
        select(Finding).where(Finding.state == "accepted", Finding.accepted_until < now)
    ).all()
    for finding in expired:
        finding.state = "open"
        finding.incident_id = None
        audit(
            session,
            now,
            "monitord",
            "finding.acceptance_expired",
            f"finding {finding.id}",
            {"accepted_by": finding.accepted_by, "reason": finding.accepted_reason},
        )
    return len(expired)


def accept_finding(
    session: Session, finding_id: int, reason: str, until: dt.datetime, actor: str, now: dt.datetime
) -> Finding:
    """Accept an open finding as a false positive or tolerated risk, with a reason and an
    expiry; a resolved one is refused (UsageError). Characters no store holds (a lone surrogate
    of a non-UTF-8 argument, NUL) are kept as U+FFFD, as the evidence register keeps them."""
    finding = session.get(Finding, finding_id)
    if finding is None:
        raise UsageError(f"no finding {finding_id}: see `monitord findings`")
    if finding.state == "resolved":
        # An acceptance of what is already fixed would bring it back, open, when it expires.
        raise UsageError(f"finding {finding_id} is resolved: there is no risk left to accept")
    if not reason.strip():
        raise UsageError("--reason: say why this finding is accepted")
    if until <= now:
        # The day as the person gave it: Beijing's, not the store's UTC one (a day earlier).
        raise UsageError(f"--until {until.astimezone(SHANGHAI).date()}: must be in the future")
    reason, actor = storable(reason.strip()), storable(actor)
    finding.state = "accepted"
    finding.accepted_reason = reason
    finding.accepted_by = actor
    finding.accepted_until = until
    audit(
        session,
        now,
        actor,
        "finding.accept",
        f"finding {finding_id}",
        {"reason": reason, "until": until.isoformat(), "rule": finding.rule},
    )
    return finding


def scoped(draft: FindingDraft, service_id: str) -> FindingDraft:
    """A ZAP finding's subject made unique per service (two services may share a path)."""
    return dataclasses.replace(
        draft, subject=f"{service_id} {draft.subject}", service_id=service_id
    )


def store_findings(
    session: Session, service_id: str, drafts: list[FindingDraft], now: dt.datetime, complete: bool
) -> tuple[int, int, int]:
    """Store a scan's findings; returns (new, still open, fixed). Fixed only for a complete scan.

    A finding the complete scan no longer sees is fixed, accepted or not: an accepted risk that
    is gone needs no acceptance any more, and must not come back when the acceptance expires.
    """
    previous = {
        f.subject: f
        for f in session.scalars(
            select(Finding).where(
                Finding.service_id == service_id,
                Finding.rule.like("zap:%"),
                Finding.state != "resolved",
            )
        )
    }
    current = [scoped(d, service_id) for d in drafts]
    new = sum(1 for d in current if d.subject not in previous)
    for draft in current:
        upsert_finding(session, draft, now)
    fixed = 0
    if complete:
        present = {d.subject for d in current}
        for subject, finding in previous.items():
            if subject not in present:
                resolve_finding(session, finding, now)
                fixed += 1
    return new, len(current) - new, fixed


@dataclass
class ScanReport:
    """What one pass of the scan job did."""

    queued: list[str] = dataclasses.field(default_factory=list)
    ran: list[str] = dataclasses.field(default_factory=list)
    zap_error: str | None = None


def _save(store: Store, scan_id: int, **changes: Any) -> None:
    with store.session() as session:
        row = session.get(Scan, scan_id)
        assert row is not None
        for name, value in changes.items():
            setattr(row, name, value)


def _requeue(store: Store, scan_id: int, now: dt.datetime, why: str) -> None:
    """Queue an interrupted scan again, to run at once; `why` is kept as its error."""
    _save(store, scan_id, state="queued", next_attempt_at=now, error=why)


def _token(settings: Settings, service_id: str) -> str | None:
    path = settings.zap.auth_token_files.get(service_id)
    if not path:
        return None
    try:
        return read_secret_file(path)
    except ValueError as exc:  # checked at load: it changed since
        logger.error("zap.auth_token_files[{}] = {}: expected {}", service_id, path, exc)
        return None


def runner_alive(scan: Scan, live_daemons: frozenset[str]) -> bool:
    """Whether the process that runs `scan` still runs it.

    A process of this machine is asked directly (not this one: it runs its scans to the end
    before it looks again); another machine's counts while its daemon is one of
    `live_daemons`, the cluster's other live members.
    """
    if scan.runner_host == socket.gethostname() and scan.runner_pid:
        if scan.runner_pid == os.getpid():
            return False
        return not gone_from_this_host(scan.runner_host, scan.runner_pid)
    return scan.daemon is not None and scan.daemon in live_daemons


def occupying_scan(session: Session, live_daemons: frozenset[str]) -> Scan | None:
    """The running scan a live process owns, if any: it holds ZAP's one session."""
    running = session.scalars(select(Scan).where(Scan.state == "running").order_by(Scan.id))
    return next((scan for scan in running if runner_alive(scan, live_daemons)), None)


def _occupied(scan: Scan) -> ZapOccupied:
    who = (
        f"pid {scan.runner_pid} on {scan.runner_host}"
        if scan.runner_pid
        else f"daemon {scan.daemon or '?'}"
    )
    return ZapOccupied(
        f"ZAP is running scan {scan.id} of {scan.service_id} ({who}); one ZAP runs one scan "
        "at a time (a scan owns ZAP's session)"
    )


async def run_scan(
    store: Store,
    settings: Settings,
    scanner: zap.ZapScanner,
    scan_id: int,
    clock: Clock,
    resume: ScanState | None = None,
    live_daemons: frozenset[str] = frozenset(),
) -> str:
    """Run one queued (or resumable) scan to its end and record everything; returns its state.

    Raises `ZapOccupied`, the scan left as it was, while a live process runs a scan (this one
    or another): ZAP has one session, and a scan starts by making a new one. live_daemons: the
    cluster's other live members (`runner_alive`).
    """

    def load() -> tuple[str, str, int]:
        with store.session() as session:
            # Two processes starting a scan at once see each other's claim rather than both
            # passing the check below.
            hold_alone(session, SCAN_START_LOCK_KEY)
            busy = occupying_scan(session, live_daemons)
            if busy is not None:
                raise _occupied(busy)
            row = session.get(Scan, scan_id)
            assert row is not None
            service = session.get(Service, row.service_id)
            row.state = "running"
            row.runner_host, row.runner_pid = socket.gethostname(), os.getpid()
            row.started_at = row.started_at or clock()
            row.attempts += 1
            return row.service_id, (service.url if service else "") or "", row.attempts

    service_id, url, attempts = await asyncio.to_thread(load)
    key = f"{service_id}-{scan_id}"

    async def progress(state: ScanState) -> None:
        await asyncio.to_thread(_save, store, scan_id, progress=state.to_dict())

    def finish(outcome: zap.ScanOutcome) -> str:
        now = clock()
        with store.session() as session:
            new, still, fixed = store_findings(
                session, service_id, list(outcome.findings), now, complete=not outcome.timed_out
            )
            row = session.get(Scan, scan_id)
            assert row is not None
            row.state = outcome.state.status
            row.finished_at = now
            row.progress = outcome.state.to_dict()
            row.alerts_read = outcome.alerts_read
            row.findings_new, row.findings_open, row.findings_fixed = new, still, fixed
            row.high = sum(1 for d in outcome.findings if d.severity == "high")
            row.medium = sum(1 for d in outcome.findings if d.severity == "medium")
            row.error = str(outcome.reason) if outcome.reason else None
            return row.state

    try:
        outcome = await scanner.scan(
            url,
            scan_key=key,
            service_id=service_id,
            bearer_token=_token(settings, service_id),
            on_progress=progress,
            resume=resume,
        )
        state = await asyncio.to_thread(finish, outcome)
    except asyncio.CancelledError:
        why = "interrupted by shutdown; queued again"
        await asyncio.to_thread(_requeue, store, scan_id, clock(), why)
        raise
    except ZapError as exc:
        return await _attempt_failed(store, scan_id, service_id, attempts, clock, exc)
    except Exception as exc:
        # A fault of monitord's own: logged with its traceback, and the row must not say
        # "running" for ever (nor the pass stop the other scans).
        logger.exception("scan {} of {}: unexpected error", scan_id, service_id)
        said = one_line(shortened(str(exc), 200))
        error = ZapError(f"monitord failed during the scan ({type(exc).__name__}: {said})")
        return await _attempt_failed(store, scan_id, service_id, attempts, clock, error)
    logger.info(
        "scan {} of {} {}: {} alerts, {} findings",
        scan_id,
        service_id,
        state,
        outcome.alerts_read,
        len(outcome.findings),
    )
    return state


async def _attempt_failed(
    store: Store, scan_id: int, service_id: str, attempts: int, clock: Clock, exc: ZapError
) -> str:
    """Record a failed attempt: queued again later when it may help, else failed for good."""
    retry = exc.retryable and attempts < 5
    wait = dt.timedelta(minutes=5 * 2 ** (attempts - 1))
    await asyncio.to_thread(
        _save,
        store,
        scan_id,
        state="queued" if retry else "failed",
        error=str(exc),
        next_attempt_at=clock() + wait,
        finished_at=None if retry else clock(),
    )
    logger.error(
        "scan {} of {} failed{}: {}",
        scan_id,
        service_id,
        f", retrying in {wait}" if retry else "",
        exc,
    )
    return "queued" if retry else "failed"


async def scan_pass(
    store: Store,
    settings: Settings,
    clock: Clock,
    *,
    scanner: zap.ZapScanner,
    others_running: frozenset[str] = frozenset(),
) -> ScanReport:
    """One pass of the scan job: queue what is due, reconcile stale runs, run one scan.

    One ZAP runs one scan at a time (a scan owns ZAP's session): while a live process runs one
    (another daemon finishing it, or `monitord scan ID --wait`), the pass only queues.
    others_running: the other live daemons of the cluster (`runner_alive`).
    """
    report = ScanReport()

    def bookkeeping() -> list[str]:
        now = clock()
        with store.session() as session:
            queued = enqueue_due(session, settings, now)
            check_quarter(session, settings, now)
        return queued

    report.queued = await asyncio.to_thread(bookkeeping)
    if report.queued:
        shown = ", ".join(report.queued[:5]) + (" …" if len(report.queued) > 5 else "")
        logger.info("{} scan(s) queued: {}", len(report.queued), shown)

    def stale_and_due() -> tuple[str | None, list[tuple[int, dict[str, Any]]], list[int]]:
        now = clock()
        with store.session() as session:
            busy = occupying_scan(session, others_running)
            if busy is not None:
                return str(_occupied(busy)), [], []
            stale = [
                (s.id, s.progress)
                for s in session.scalars(select(Scan).where(Scan.state == "running"))
            ]
            due = list(
                session.scalars(
                    select(Scan.id)
                    .where(Scan.state == "queued", Scan.next_attempt_at <= now)
                    .order_by(Scan.id)
                )
            )
        return None, stale, due

    busy, stale, due = await asyncio.to_thread(stale_and_due)
    if busy is not None:
        logger.info("scans wait: {}", busy)
        return report
    if not stale and not due:
        return report
    try:
        await scanner.version()
    except ZapError as exc:
        report.zap_error = str(exc)
        logger.error("ZAP is not usable, {} scan(s) wait: {}", len(stale) + len(due), exc)
        return report
    resumes: list[tuple[int, ScanState]] = []
    for scan_id, progress in stale:
        # Its process is gone (runner_alive): ask ZAP whether it still has that scan.
        verdict = await scanner.reconcile(ScanState.from_dict(progress)) if progress else None
        if verdict is not None and verdict.verdict == "resumable":
            resumes.append((scan_id, ScanState.from_dict(progress)))
        else:
            reason = verdict.reason if verdict else "no progress was recorded"
            await asyncio.to_thread(_requeue, store, scan_id, clock(), f"interrupted: {reason}")
            due.insert(0, scan_id)
    # One at a time, each to its end: a resumed scan first (it holds ZAP's session), else the
    # first one due.
    work: list[tuple[int, ScanState | None]] = [*resumes] or [(sid, None) for sid in due[:1]]
    for scan_id, resume in work:
        try:
            await run_scan(
                store, settings, scanner, scan_id, clock, resume, live_daemons=others_running
            )
        except ZapOccupied as exc:  # a `monitord scan ID --wait` started just now
            logger.info("scan {} waits: {}", scan_id, exc)
            break
        report.ran.append(str(scan_id))
    return report


def scan_dict(scan: Scan) -> dict[str, Any]:
    """A scan as plain JSON-ready values (the CLI's and the API's shape)."""
    return {
        "id": scan.id,
        "service_id": scan.service_id,
        "trigger": scan.trigger,
        "state": scan.state,
        "step": scan.progress.get("step"),
        "percent": scan.progress.get("percent"),
        "queued_at": scan.queued_at.isoformat(),
        "started_at": scan.started_at.isoformat() if scan.started_at else None,
        "finished_at": scan.finished_at.isoformat() if scan.finished_at else None,
        "attempts": scan.attempts,
        "alerts_read": scan.alerts_read,
        "high": scan.high,
        "medium": scan.medium,
        "new": scan.findings_new,
        "still_open": scan.findings_open,
        "fixed": scan.findings_fixed,
        "error": scan.error,
    }


def scan_rows(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Recent scans, newest first, as plain dicts."""
    with store.session() as session:
        rows = session.scalars(select(Scan).order_by(Scan.id.desc()).limit(limit)).all()
        return [scan_dict(r) for r in rows]


def finished_scan_count(store: Store) -> int:
    """How many scans ZAP has run (for the restart advice)."""
    with store.session() as session:
        return (
            session.scalar(select(func.count()).select_from(Scan).where(Scan.state.in_(SCANNED)))
            or 0
        )
