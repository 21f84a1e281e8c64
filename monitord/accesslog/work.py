"""Access logs in the daemon: following the configured logs, storing hourly statistics and
findings, and the quarterly log audit of clause 7.3.1."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

import rules
from monitord.accesslog import nginx
from monitord.accesslog.configured import make_analyzer
from monitord.accesslog.follow import Cursor, read_new
from monitord.accesslog.sources import FileId, detect, file_id
from monitord.accesslog.stats import (
    EDGE,
    VendorOps,
    add_vendor_operations,
    counted_rows,
    merge_rows,
)
from monitord.config import FollowedLog, Settings
from monitord.redact import error_line
from monitord.store import Store
from monitord.store.findings import resolve_finding, resolve_findings, upsert_finding
from monitord.store.history import at_work_before
from monitord.store.models import (
    Finding,
    Incident,
    LogAudit,
    LogHourStat,
    LogSource,
    writer_name,
)
from monitord.timeutil import SHANGHAI, UTC, Clock, parse_time, quarter_bounds, quarter_start
from monitord.types import FindingDraft

RULE_LOG_GAP = "log_gap"
RULE_LOG_LOST = "log_lost"
VENDOR_RULE = "vendor_activity"
"""The log rule whose summary words each vendor's operations in the audit."""
FORGET_AFTER = dt.timedelta(days=7)
AUDIT_GRACE = dt.timedelta(hours=24)
"""How long after a quarter's end its audit waits for followed logs that have not moved past
the end (the quarterly report waits for the audit)."""


def store_stats(session: Session, rows: list[dict[str, Any]], log: str, fmt: str) -> int:
    """Upsert hourly statistics rows of one followed log (one per service and hour), each
    marked with the log's format (`nginx` or `json`) for `counted_rows`.

    Rows are keyed by the log's path, not its kind: two edge servers' logs of the same hour are
    two rows, where keyed by "nginx" the second would replace the first. A row for an hour
    already stored holds lines that came after that hour had closed: it is merged into the
    stored one (`stats.merge_rows`), not written over it.
    """
    for row in rows:
        row = dict(row, format=fmt)
        hour = parse_time(row["hour"])
        stored = session.scalars(
            select(LogHourStat).where(
                LogHourStat.daemon == writer_name(),
                LogHourStat.source == log,
                LogHourStat.service == row["service"],
                LogHourStat.hour == hour,
            )
        ).one_or_none()
        if stored is None:
            stored = LogHourStat(source=log, service=row["service"], hour=hour)
            session.add(stored)
        else:
            row = merge_rows(stored.stats, row)
        stored.requests = int(row.get("requests") or 0)
        stored.stats = row
    return len(rows)


def store_log_findings(
    session: Session, drafts: list[FindingDraft], now: dt.datetime, reported: dict[str, str]
) -> int:
    """Upsert the findings whose behaviour moved on since the last run (`reported` remembers
    each finding's last time), so a finding that stopped keeps its last_seen."""
    written = 0
    for draft in drafts:
        key = f"{draft.rule}|{draft.subject_kind}|{draft.subject}"
        last = str(draft.evidence.get("last_seen", ""))
        if reported.get(key) == last:
            continue
        upsert_finding(session, draft, now)
        reported[key] = last
        written += 1
    return written


@dataclass
class FollowReport:
    """What one follow pass did."""

    lines: int = 0
    stats: int = 0
    findings: int = 0
    sources: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    """Logs left out as the same file as a log followed before them."""
    missing: list[str] = field(default_factory=list)
    """Logs that do not exist (yet)."""
    failed: list[str] = field(default_factory=list)
    """Logs whose pass failed on something other than reading (a line the reader could not
    handle): named in an error, their cursor kept, the other logs read all the same."""
    ended: int = 0
    """Findings of conditions that ended (end_conditions) resolved in this pass."""


def reader_warning(settings: Settings) -> str | None:
    """Why followed nginx logs will be read slower than they could be, if they will: the C
    scan was not built when monitord was installed (no C compiler then)."""
    if not settings.logs.follow or nginx.NATIVE:
        return None
    return (
        "the nginx log reader's C core is not built (no C compiler when monitord was "
        "installed): access logs are read in numpy, at two thirds of the speed; reinstall "
        "monitord where gcc and the Python headers are installed"
    )


def follow_logs(store: Store, settings: Settings, clock: Clock) -> FollowReport:
    """Read what is new in every configured log and record what it says, each log in one
    transaction with its cursor, so a crash replays rather than loses or doubles lines.

    A log that cannot be read (no permission, a folder, ...), or whose pass fails in any other
    way, is named in an error and skipped this pass, with its cursor kept: the other logs are
    read all the same."""
    report = FollowReport()
    first_named: dict[FileId, str] = {}
    for log in settings.logs.follow:
        if not _there(store, log.path, clock()):
            report.missing.append(log.path)
            continue
        same = _read_under(log.path, first_named)
        if _noted(store, log.path, "same_as", same, clock()) and same is not None:
            # Read under both names, every request and finding would count twice.
            logger.warning(
                "access log {} is the same file as {}: it is read once, as {}",
                log.path,
                same,
                same,
            )
        if same is not None:
            report.duplicates.append(log.path)
            continue
        try:
            _follow_one(store, settings, clock, log, report)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            logger.error(
                "access log {}: cannot read it ({}); the other logs are read", log.path, reason
            )
            report.unreadable.append(log.path)
        except Exception as exc:
            # A failure of one log's pass (a line its reader cannot handle) rolled back its
            # transaction and, raised on, stopped every log after it on each pass for ever.
            logger.error(
                "access log {}: reading it failed ({}: {}); its cursor is kept and the other "
                "logs are read",
                log.path,
                type(exc).__name__,
                error_line(exc),
            )
            logger.opt(exception=exc).debug("access log {}: the failure", log.path)
            report.failed.append(log.path)
    with store.session() as session:
        report.ended = end_conditions(session, clock())
    return report


def end_conditions(session: Session, now: dt.datetime) -> int:
    """Resolve the findings of window rules that describe a condition that ends, those in an
    availability incident (error_burst's): once no window of its subject has met the rule for
    two windows (of store time since the finding last moved on), the condition is over and its
    incident may resolve. A finding in a security incident never ends by itself: the incident
    waits for a person and the 7.3.3 notification. Returns how many were resolved."""
    ending = {
        name: dt.timedelta(seconds=2 * window) for name, window in rules.log_window_rules().items()
    }
    resolved = 0
    for row in session.scalars(
        select(Finding)
        .join(Incident, Incident.id == Finding.incident_id)
        .where(
            Finding.rule.in_(sorted(ending)),
            Finding.state == "open",
            Incident.klass == "availability",
        )
    ):
        if now - row.last_seen >= ending[row.rule]:
            resolve_finding(session, row, now)
            resolved += 1
    return resolved


def followed_log_problems(settings: Settings) -> list[str]:
    """A line for each followed log this user cannot read now, naming its key in the config:
    what `check-config` warns of, since the daemon says it only once it runs."""
    return [
        f"logs.follow[{index}].path = {json.dumps(log.path)}: {problem}"
        for index, log in enumerate(settings.logs.follow)
        if (problem := _read_problem(Path(log.path))) is not None
    ]


def _read_problem(path: Path) -> str | None:
    """Why the log at path cannot be read now, or None; it is opened, not read."""
    try:
        if path.is_dir():
            return "it is a folder, not a log file"
        # Non-blocking: a FIFO with no writer would hold the open up.
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except (FileNotFoundError, NotADirectoryError):
        return "no such file; the daemon reads it once it is there"
    except OSError as exc:
        return f"cannot read it ({(exc.strerror or str(exc)).lower()})"
    return None


def _there(store: Store, path: str, now: dt.datetime) -> bool:
    """Whether the followed log at `path` exists; a warning says so when it stops existing (a
    typo in the config, a folder not there yet), and a line when it is there again, each once:
    read as missing on every pass, it was never said at all."""
    missing = not Path(path).exists()
    if _noted(store, path, "missing", True if missing else None, now):
        if missing:
            logger.warning(
                "access log {}: no such file; it is read once it is there (check the path in "
                "[logs] follow)",
                path,
            )
        else:
            logger.info("access log {} is there again: it is read", path)
    return not missing


def _noted(store: Store, path: str, key: str, value: Any, now: dt.datetime) -> bool:
    """Record `value` under `key` in the stored state of the followed log at `path` (None:
    remove it), storing a log without a cursor yet when it needs one; whether it changed, so
    a condition of the log is said once when it starts, not on every pass."""
    with store.session() as session:
        row = session.get(LogSource, (writer_name(), path))
        if (row.state.get(key) if row else None) == value:
            return False
        if row is None:
            row = LogSource(daemon=writer_name(), path=path, state={}, updated_at=now)
            session.add(row)
        state = {name: known for name, known in row.state.items() if name != key}
        row.state = state if value is None else {**state, key: value}
        return True


def _read_under(path: str, first_named: dict[FileId, str]) -> str | None:
    """The path under which the file at `path` is already read this pass (a symlink or a hard
    link to a log followed before it), or None; remembers it otherwise."""
    try:
        identity = file_id(Path(path))
    except OSError:
        return None  # unreadable: the pass says so
    if identity in first_named:
        return first_named[identity]
    first_named[identity] = path
    return None


def _follow_one(
    store: Store, settings: Settings, clock: Clock, log: FollowedLog, report: FollowReport
) -> None:
    with store.session() as session:
        row = session.get(LogSource, (writer_name(), log.path))
        cursor = (
            Cursor(
                path=log.path,
                device=row.device,
                inode=row.inode,
                offset=row.offset,
                head=row.head,
                mtime_ns=int(row.state.get("mtime_ns", 0)),
                siblings=frozenset((int(d), int(i)) for d, i in row.state.get("siblings", [])),
                target=str(row.state.get("target", "")),
            )
            if row
            else None
        )
        state = dict(row.state) if row else {}
        analyzer = make_analyzer(settings.logs, state.get("analyzer"))
        before = analyzer.lines
        last = cursor
        fmt = log.format if log.format != "auto" else state.get("format")
        for chunk in read_new(log.path, cursor):
            if chunk.lost_from is not None:
                _record_loss(session, log.path, chunk.lost_from, clock())
            if chunk.data:
                fmt = fmt or detect(chunk.data)  # as the analyzer detects it, once per log
                analyzer.feed(chunk.data, log.format, source=log.path)
            last = chunk.cursor
        if last is None or last == cursor:
            return
        now = clock()
        fmt = fmt or EDGE
        report.stats += store_stats(session, analyzer.take_closed_stats(), log.path, fmt)
        reported: dict[str, str] = dict(state.get("reported", {}))
        report.findings += store_log_findings(
            session, [f.to_draft() for f in analyzer.findings()], now, reported
        )
        # Stored now: findings quiet for a week leave the state, which stays bounded.
        analyzer.engine.forget_findings(int((now - FORGET_AFTER).timestamp()))
        live = {f"{f.rule}|{f.subject_kind}|{f.subject}" for f in analyzer.findings()}
        reported = {key: value for key, value in reported.items() if key in live}
        if row is None:
            row = LogSource(daemon=writer_name(), path=log.path)
            session.add(row)
        row.device, row.inode, row.offset, row.head = (
            last.device,
            last.inode,
            last.offset,
            last.head,
        )
        row.state = {
            "analyzer": analyzer.to_state(),
            "reported": reported,
            "format": fmt,
            # The cursor's: the store has no column for them.
            "mtime_ns": last.mtime_ns,
            "siblings": sorted([device, inode] for device, inode in last.siblings),
            "target": last.target,
            # Every hour of the log before it is stored (`logs_read_past`).
            "open_from": analyzer.stats.first_open_hour(),
        }
        row.lines = analyzer.lines
        row.updated_at = now
        report.lines += analyzer.lines - before
        report.sources.append(log.path)


def _local_day(moment: dt.datetime) -> str:
    return moment.astimezone(SHANGHAI).date().isoformat()


def previous_quarter(now: dt.datetime) -> tuple[str, dt.datetime, dt.datetime]:
    """The quarter before the one `now` is in: its label, first and last moment (exclusive)."""
    _label, start = quarter_start(now)
    label, previous_start = quarter_start(start - dt.timedelta(days=1))
    return label, previous_start, start


def log_audit(
    session: Session, settings: Settings, now: dt.datetime, quarter: str | None = None
) -> LogAudit:
    """Write (or rewrite) the log audit of a quarter (default: the previous one) and return it.

    Lines analysed per day, the days without any log line (each a 7.3.1 finding), the findings
    of the quarter by rule (the log rules', log_lost's of lines lost at a rotation, and the
    audit's own log_gap when it found days without logs), and every operation of vendor staff
    (8.3 c) that happened in the quarter, per vendor, account and action, from the hourly
    statistics (the vendor_activity finding runs on while the vendor works: its count spans
    quarters). The audit records whether it covers the whole quarter (`covers_whole_quarter`).
    """
    if quarter is None:
        label, start, end = previous_quarter(now)
    else:
        start, end = quarter_bounds(quarter)
        label = quarter
    per_day: dict[str, int] = defaultdict(int)
    stored = session.execute(
        select(
            LogHourStat.service,
            LogHourStat.hour,
            LogHourStat.stats["format"].as_string(),
            LogHourStat.requests,
            LogHourStat.stats["vendors"],
        ).where(LogHourStat.hour >= start, LogHourStat.hour < end)
    ).all()
    for _service, hour, _fmt, requests, _ops in counted_rows(stored, lambda r: (r[0], r[1], r[2])):
        per_day[_local_day(hour)] += requests
    vendors = vendor_operations(row[4] for row in stored)
    first = start.astimezone(SHANGHAI).date()
    stop = min(end, now).astimezone(SHANGHAI).date()  # exclusive: only whole days so far
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((stop - first).days)]
    empty = [d for d in days if per_day.get(d, 0) == 0]
    # Lines lost at a rotation belong in the 7.3.1 record as much as what the lines showed.
    rule_names = [*rules.log_rule_names(), RULE_LOG_LOST]
    by_rule: dict[str, int] = defaultdict(int)
    for finding in session.scalars(
        select(Finding).where(
            Finding.rule.in_(rule_names), Finding.last_seen >= start, Finding.first_seen < end
        )
    ):
        by_rule[finding.rule] += 1
    if empty:
        upsert_finding(
            session,
            FindingDraft(
                rule=RULE_LOG_GAP,
                clause="7.3.1",
                severity="medium",
                subject_kind="quarter",
                subject=label,
                summary=f"{label} 有 {len(empty)} 天没有任何访问日志",
                evidence={"days": empty},
            ),
            now,
        )
        by_rule[RULE_LOG_GAP] += 1
    else:
        # An earlier audit that saw a gap (hours not yet stored when it ran) is corrected.
        resolve_findings(session, [RULE_LOG_GAP], "quarter", set(), now, subjects={label})
    audit = session.get(LogAudit, label) or LogAudit(quarter=label)
    audit.created_at, audit.period_start, audit.period_end = now, start, end
    audit.lines = sum(per_day.values())
    audit.lines_per_day = {d: per_day.get(d, 0) for d in days}
    audit.empty_days = empty
    audit.findings_by_rule = dict(by_rule)
    audit.vendor_operations = vendors
    audit.complete = covers_whole_quarter(session, settings, start, end, now)
    session.merge(audit)
    return audit


def vendor_operations(per_hour: Iterable[VendorOps | None]) -> list[dict[str, Any]]:
    """Every vendor's operations of some hourly statistics rows (their "vendors"), one entry a
    vendor: its summary as the vendor_activity rule words it, its count and its breakdown per
    account and action (both in the entry's evidence)."""
    total: VendorOps = {}
    for ops in per_hour:
        total = add_vendor_operations(total, ops or {})
    template = rules.log_rule_summary(VENDOR_RULE)
    out: list[dict[str, Any]] = []
    for vendor, breakdown in sorted(total.items()):
        count = sum(breakdown.values())
        summary = template.format(subject=vendor, count=count, measure=count, window_min=0)
        evidence = {"count": count, "breakdown": dict(sorted(breakdown.items()))}
        out.append({"subject": vendor, "summary": summary, "evidence": evidence})
    return out


def logs_read_past(
    session: Session, settings: Settings, start: dt.datetime, end: dt.datetime
) -> bool:
    """Whether every log followed in [start, end) has been read past `end`, so that the hourly
    statistics up to `end` are stored: each has read a line dated at or after `end` and holds
    no hour before it still open (`_read_past`).

    The logs are those any daemon read in the period and those this daemon follows (which may
    not have been read yet, at start-up)."""
    followed = {
        (daemon, path)
        for daemon, path in session.execute(
            select(LogSource.daemon, LogSource.path).where(LogSource.updated_at >= start)
        )
    }
    followed |= {(writer_name(), log.path) for log in settings.logs.follow}
    return all(_read_past(session, daemon, path, end) for daemon, path in followed)


def _read_past(session: Session, daemon: str, path: str, end: dt.datetime) -> bool:
    """Whether the log `daemon` follows at `path` has been read past `end`: its first hour still
    open is at or after `end` (the newest hour read stays open until a later one comes: a quiet
    log's first hour after the quarter may be open for long), or an hour at or after `end` is
    stored (a state written before the open hour was kept)."""
    row = session.get(LogSource, (daemon, path))
    open_from = row.state.get("open_from") if row else None
    if open_from is not None and int(open_from) >= end.timestamp():
        return True
    reached = session.scalar(
        select(LogHourStat.id)
        .where(LogHourStat.daemon == daemon, LogHourStat.source == path, LogHourStat.hour >= end)
        .limit(1)
    )
    return reached is not None


def covers_whole_quarter(
    session: Session, settings: Settings, start: dt.datetime, end: dt.datetime, now: dt.datetime
) -> bool:
    """Whether an audit of [start, end) written at `now` covers the whole quarter: the quarter
    is over and every followed log has been read past its end (`logs_read_past`), or AUDIT_GRACE
    has passed since the end whatever the logs (a log that stopped, a quiet night)."""
    if now < end:
        return False
    return now >= end + AUDIT_GRACE or logs_read_past(session, settings, start, end)


def audit_due(store: Store, settings: Settings, clock: Clock) -> str | None:
    """Write the previous quarter's audit if it has none covering the whole quarter and one can
    be written now; returns its label when written.

    Written once it covers the whole quarter (`covers_whole_quarter`): written earlier, the last
    hours of the quarter, not yet stored, showed as days without logs. An audit written before
    that (`log-audit` by hand while the quarter ran, or just after its end) is written again."""
    now = clock()
    label, start, end = previous_quarter(now)
    with store.session() as session:
        written = session.get(LogAudit, label)
        if written is not None and written.complete:
            return None
        if not auditable(session, start, end):
            return None  # installed later: no logs of the quarter is no 7.3.1 gap of monitord's
        if not covers_whole_quarter(session, settings, start, end, now):
            return None
        log_audit(session, settings, now, label)
    logger.info("quarterly log audit for {} written", label)
    return label


def _record_loss(session: Session, path: str, from_byte: int, now: dt.datetime) -> None:
    """A 7.3.1 finding on a followed log whose rotated file was gone before its rest was read:
    the evidence of the quarter's logs has a hole, which a warning in the daemon's log alone
    would leave unrecorded."""
    upsert_finding(
        session,
        FindingDraft(
            rule=RULE_LOG_LOST,
            clause="7.3.1",
            severity="medium",
            subject_kind="log",
            subject=path,
            summary=(
                f"访问日志 {path} 轮转后原文件未找到：自第 {from_byte:,} 字节起未读取的日志行已丢失"
            ),
            evidence={"from_byte": from_byte},
        ),
        now,
    )


def auditable(session: Session, start: dt.datetime, end: dt.datetime) -> bool:
    """Whether the quarter [start, end) has an audit to write: monitord was at work before its
    end, or it holds statistics of its logs (logs read from their start). A store installed
    later has neither, and its days without logs are no 7.3.1 gap."""
    if at_work_before(session, end):
        return True
    found = session.scalar(
        select(LogHourStat.id).where(LogHourStat.hour >= start, LogHourStat.hour < end).limit(1)
    )
    return found is not None


def usage(store: Store, service: str, since: dt.datetime, until: dt.datetime) -> dict[str, Any]:
    """How a service was used between two moments, from the stored hourly statistics (each
    request once: `counted_rows`)."""
    with store.session() as session:
        stored = session.scalars(
            select(LogHourStat)
            .where(
                LogHourStat.service == service, LogHourStat.hour >= since, LogHourStat.hour < until
            )
            .order_by(LogHourStat.hour)
        ).all()
    rows = counted_rows(stored, lambda r: (r.service, r.hour, r.stats.get("format")))
    status: dict[str, int] = defaultdict(int)
    clients: dict[str, int] = defaultdict(int)
    per_hour: dict[dt.datetime, int] = defaultdict(int)
    for row in rows:
        per_hour[row.hour] += row.requests
        for key, value in (row.stats.get("status") or {}).items():
            status[key] += int(value or 0)
        for key, value in (row.stats.get("clients") or {}).items():
            clients[key] += int(value or 0)
    p95 = [r.stats.get("latency_ms", {}).get("p95") for r in rows]
    known = sorted(v for v in p95 if v is not None)
    return {
        "service": service,
        "since": since.astimezone(UTC).isoformat(),
        "until": until.astimezone(UTC).isoformat(),
        "hours": len(per_hour),
        "requests": sum(per_hour.values()),
        "busiest_hour_requests": max(per_hour.values(), default=0),
        "status": dict(status),
        "clients": dict(clients),
        "p95_ms_median_hour": known[len(known) // 2] if known else None,
    }
