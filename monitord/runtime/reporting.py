"""The quarterly report, written and handed over.

The one place that, for a quarter, evaluates the compliance rules, scores the services, renders
the PDF, writes it, records it (a QuarterlyReport row: quarter, time, path, SHA-256, pages) and
queues the e-mail to the management unit through the outbox. The record is the evidence of what
was handed over, so a report never replaces a file: not a recorded report's, nor one restored
from a backup or written by another store or another run at the same time.

The report job runs from the first working day of a quarter, 09:00 Asia/Shanghai, and writes
the last quarter's report once: the record with its outbox key says it was done, across
restarts. The record and the outbox row are written in one transaction, so a crash leaves
either neither (the job writes the report again) or both (the alert worker sends it once).
The file's temporary twin lasts, locked, until that transaction is over: what a run killed
before it left (the temporary file, and the report it had named but not recorded) the next run
removes, so the report it writes takes the quarter's own name.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.routing import MAIL_SCHEMES
from monitord.config import Settings
from monitord.errors import UsageError
from monitord.store import Store
from monitord.store.history import ProbeStats, at_work_before
from monitord.store.models import LogAudit, OutboxAlert, QuarterlyReport
from monitord.store.outbox import enqueue
from monitord.timeutil import (
    SHANGHAI,
    UTC,
    begun_quarter_bounds,
    local_text,
    quarter_bounds,
    quarter_start,
)
from monitord.workcalendar import WorkCalendar

if TYPE_CHECKING:
    from reports import RenderedReport

Progress = Callable[[str], None]
"""Told what a long step is doing, for people waiting (the CLI prints it on stderr)."""

REPORT_KIND = "report"
"""The outbox kind of a report handed to the management unit (alerts.delivery attaches it)."""
AUDIENCE = "management"
SEND_FROM = dt.time(9, 0)
"""The report job starts on the quarter's first working day at this time (Asia/Shanghai)."""


@dataclass(frozen=True)
class WrittenReport:
    """A report written and recorded."""

    id: int
    quarter: str
    path: Path
    sha256: str
    pages: int
    generated_at: dt.datetime
    period_start: dt.datetime
    period_end: dt.datetime
    """The end of the data: the quarter's end, or the time of writing for a quarter not over."""
    outbox_key: str | None


def _quiet(_step: str) -> None:
    """Progress that nobody watches."""


def outbox_key(quarter: str) -> str:
    """The idempotency key of a quarter's report sent to the management unit."""
    return f"{REPORT_KIND}:{quarter}"


def report_period(quarter: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The time the report of `quarter` covers, as of `now`: the whole quarter once it is over.

    Raises UsageError, in one line, for a label that is not a quarter such as 2026q3 and for a
    quarter that has not begun.
    """
    try:
        start, end = begun_quarter_bounds(quarter, now)
    except ValueError as exc:
        raise UsageError(f"--quarter: {exc}") from None
    return start, min(end, now)


def default_path(settings: Settings, quarter: str) -> Path:
    """Where a quarter's report goes unless told: `monitord-2026q3.pdf` in `[report] dir`."""
    return Path(settings.report.dir) / f"monitord-{quarter}.pdf"


def _recorded(session: Session, path: Path) -> QuarterlyReport | None:
    return session.scalars(
        select(QuarterlyReport).where(QuarterlyReport.path == str(path)).limit(1)
    ).first()


def free_path(session: Session, path: Path, *, chosen: bool) -> Path:
    """The absolute path to write a report to: never a file already there (a recorded report's,
    whose SHA-256 must keep naming it, a restored backup's, another store's), nor a recorded
    report's path. The default path gets a number (monitord-2026q3-2.pdf); a path the user
    `chosen` is refused with a UsageError."""
    path = path.resolve()
    if not _taken(session, path):
        return path
    if chosen:
        row = _recorded(session, path)
        if row is None:
            raise UsageError(
                f"--out {path}: a file is already there, and monitord never replaces one; "
                "choose another file"
            )
        raise UsageError(
            f"--out {path}: this file is the {row.quarter} report recorded "
            f"{local_text(row.generated_at)} (SHA-256 {row.sha256[:12]}…), kept as written; "
            "choose another file"
        )
    number = 2
    while True:
        candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
        if not _taken(session, candidate):
            return candidate
        number += 1


def _taken(session: Session, path: Path) -> bool:
    """Whether a file is at `path` (a dangling link too) or a report is recorded there."""
    return os.path.lexists(path) or _recorded(session, path) is not None


def check_writable(path: Path) -> None:
    """Make sure a report can be written at `path` before the minutes its render takes.

    Raises UsageError naming the path when its folder cannot be made or written, or when the
    path is a folder.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror})") from None


@contextmanager
def write_new(path: Path, data: bytes) -> Iterator[None]:
    """Write a new file whole or not at all, never over one already there, and keep it only once
    the body (its record) is done: a temporary file beside it, locked and synced, is linked to
    `path` (which fails when `path` exists); the body runs; then the temporary name goes.

    A body that raises takes the file away again. A run killed meanwhile leaves the temporary
    file, its lock gone with the run: the next run's `settle_leftovers` removes it, with the
    file linked to it when nothing recorded that. Raises FileExistsError when a file took
    `path` meanwhile (another run), and UsageError naming the path when its folder cannot be
    made or written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
        )
    except OSError as exc:
        raise UsageError(f"{path}: cannot write the report ({exc.strerror})") from None
    with os.fdopen(handle, "wb") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX)  # held to the end: this writer is alive
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
            _place(temporary, path)
            _sync_folder(path.parent)  # the new name itself lasts only once the folder is synced
        except BaseException as exc:
            Path(temporary).unlink(missing_ok=True)
            if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
                raise UsageError(f"{path}: cannot write the report ({exc.strerror})") from None
            raise
        try:
            yield
        except BaseException:
            if _same_file(file.fileno(), path):
                path.unlink()  # not recorded: never left under the report's name
            raise
        finally:
            Path(temporary).unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _same_file(handle: int, path: Path) -> bool:
    """Whether `path` names the file open as `handle`."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    opened = os.fstat(handle)
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


def settle_leftovers(store: Store, wanted: Path, started: float) -> None:
    """Remove what a run killed while writing a report to `wanted` (or to one of its numbered
    names) left in the folder: its temporary file (write_new's), and the report linked to it
    when nothing recorded that (nobody was handed it). A temporary file still locked (its writer
    is at work) or written since `started` (time.time() when this run began) is left alone.
    A file that cannot be removed is logged, never an error: the report then takes the next
    free name."""
    pattern = re.compile(
        rf"\.(?P<name>{re.escape(wanted.stem)}(?:-\d+)?{re.escape(wanted.suffix)})"
        r"\.[a-z0-9_]+\.tmp"
    )
    try:
        names = os.listdir(wanted.parent)
    except OSError:
        return  # no folder yet: nothing was left in it
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        temporary = wanted.parent / name
        try:
            _settle(store, temporary, wanted.parent / match["name"], started)
        except OSError as exc:
            logger.warning(
                "{}, left by a report run that stopped: cannot clear it ({})",
                temporary,
                exc.strerror,
            )


def _settle(store: Store, temporary: Path, path: Path, started: float) -> None:
    try:
        handle = os.open(temporary, os.O_RDONLY)
    except FileNotFoundError:
        return  # its writer finished meanwhile
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer is at work
        if os.fstat(handle).st_mtime >= started:
            return  # made by a run that began after this one: it locks it in a moment
        if _same_file(handle, path):
            with store.session() as session:
                recorded = _recorded(session, path) is not None
            if not recorded:
                path.unlink()
                logger.warning(
                    "{}: removed, a report written but never recorded (the run writing it "
                    "stopped before it could record it; nobody was handed it)",
                    path,
                )
        temporary.unlink(missing_ok=True)
    finally:
        os.close(handle)


def _place(temporary: str, path: Path) -> None:
    """Give the written file its name: a link, which unlike a rename never replaces what is
    there (FileExistsError); on a file system without links (vfat, some network shares), a
    rename once the name is seen to be free (there no temporary twin tells a killed run's report
    from another's: it is kept, and the next run takes the next free name)."""
    try:
        os.link(temporary, path)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(temporary, path)


def online_availability(
    session: Session, settings: Settings, quarter: str, now: dt.datetime
) -> dict[str, ProbeStats]:
    """Each service's availability figures over the hours it was online in `quarter` (up to
    `now`), as the compliance engine judges clauses 6.4 a and b and scores 9.2: the hours of a
    filed suspension are not counted. A service without a probe then is absent."""
    from monitord.compliance.engine import open_quarter

    q = open_quarter(session, settings, quarter, now)
    return {sid: stats for sid in q.online_services() if (stats := q.stats(sid)) is not None}


def render(
    store: Store, settings: Settings, quarter: str, now: dt.datetime, progress: Progress
) -> RenderedReport:
    """Evaluate the quarter's compliance rules (their verdicts stored), score the services and
    render the PDF: the one call into the compliance engine and the renderer."""
    from monitord.compliance import FORMULA, evaluate_quarter, score_services, store_verdicts
    from reports import render_quarterly

    with store.session() as session:
        progress(f"{quarter}: evaluating the compliance rules")
        verdicts = evaluate_quarter(session, settings, quarter, now)
        progress(f"{quarter}: scoring the services (clause 9.2)")
        scores = score_services(session, settings, quarter, verdicts, now)
        availability = online_availability(session, settings, quarter, now)
        store_verdicts(session, quarter, verdicts, now)
    # Committed before the render: its seconds hold no write lock that probes and alerts wait on.
    with store.session() as session:
        progress(f"{quarter}: rendering the PDF")
        return render_quarterly(
            session,
            settings,
            quarter,
            verdicts=verdicts,
            scores=scores,
            availability=availability,
            now=now,
            formula=FORMULA,
        )


def write_report(
    store: Store,
    settings: Settings,
    quarter: str,
    now: dt.datetime,
    *,
    out: Path | None = None,
    send: bool = False,
    progress: Progress = _quiet,
) -> WrittenReport:
    """Render a quarter's report, write it (to `out`, else the default path) and record it;
    with `send`, also queue it for the management unit, in the record's transaction.

    Raises UsageError for a bad or future quarter, and for a file that cannot be written.
    """
    report_period(quarter, now)  # a bad or future quarter is refused before any work
    started = time.time()
    wanted = (out or default_path(settings, quarter)).resolve()
    check_writable(wanted)
    settle_leftovers(store, wanted, started)
    with store.session() as session:
        free_path(session, wanted, chosen=out is not None)  # a taken --out: refused now
    rendered = render(store, settings, quarter, now, progress)
    while True:
        # Chosen again after the render: another run may have written meanwhile.
        with store.session() as session:
            path = free_path(session, wanted, chosen=out is not None)
        progress(f"{quarter}: writing {path}")
        try:
            with write_new(path, rendered.pdf):
                return _record(store, settings, quarter, now, path, rendered, send)
        except FileExistsError:
            continue  # taken since: the next free name (a chosen --out is refused)


def _record(
    store: Store,
    settings: Settings,
    quarter: str,
    now: dt.datetime,
    path: Path,
    rendered: RenderedReport,
    send: bool,
) -> WrittenReport:
    """Record a report written to `path`; with `send`, queue it in the same transaction."""
    digest = hashlib.sha256(rendered.pdf).hexdigest()
    key = outbox_key(quarter) if send else None
    with store.session() as session:
        row = QuarterlyReport(
            quarter=quarter,
            generated_at=now,
            path=str(path),
            sha256=digest,
            pages=rendered.pages,
            sent_to=[],
            outbox_key=key,
        )
        session.add(row)
        session.flush()
        written = WrittenReport(
            id=row.id,
            quarter=quarter,
            path=path,
            sha256=digest,
            pages=rendered.pages,
            generated_at=now,
            period_start=rendered.period[0],
            period_end=rendered.period[1],
            outbox_key=key,
        )
        if key is not None:
            payload = _payload(written, settings)
            enqueue(session, key, AUDIENCE, REPORT_KIND, now, payload=payload)
    return written


def _payload(report: WrittenReport, settings: Settings) -> dict[str, Any]:
    """What the outbox row carries: what the message says, and the file the e-mail attaches."""
    return {
        "management_unit": settings.report.management_unit,
        "operation_unit": settings.report.operation_unit,
        "report_id": report.id,
        "quarter": report.quarter,
        "path": str(report.path),
        "sha256": report.sha256,
        "pages": report.pages,
        "period_start": report.period_start.astimezone(UTC).isoformat(),
        "period_end": report.period_end.astimezone(UTC).isoformat(),
    }


def first_send_time(quarter_begins: dt.datetime, calendar: WorkCalendar) -> dt.datetime:
    """When the report job may start in a quarter: its first working day, at SEND_FROM."""
    day = quarter_begins.astimezone(SHANGHAI).date()
    while not calendar.is_workday(day):
        day += dt.timedelta(days=1)
    return dt.datetime.combine(day, SEND_FROM, tzinfo=SHANGHAI)


def due_quarter(now: dt.datetime, calendar: WorkCalendar) -> str | None:
    """The quarter whose report is due at `now` (the last one, from the current quarter's first
    working day at 09:00 on), or None before that."""
    _label, begins = quarter_start(now)
    if now < first_send_time(begins, calendar):
        return None
    last, _start = quarter_start(begins - dt.timedelta(days=1))
    return last


def _watched(session: Session, quarter: str) -> bool:
    """Whether monitord was at work in the quarter: a store installed later holds nothing of
    it, and the management unit gets no empty report."""
    _start, end = quarter_bounds(quarter)
    return at_work_before(session, end)


def send_due_report(
    store: Store, settings: Settings, now: dt.datetime, progress: Progress = _quiet
) -> WrittenReport | None:
    """The report job: write the last quarter's report and queue it for the management unit,
    once per quarter (its record says so); None when it is not due, waits for the quarter's log
    audit covering the whole quarter, is done, or monitord was not at work in that quarter."""
    quarter = due_quarter(now, WorkCalendar.from_settings(settings.logs))
    if quarter is None:
        return None
    # Also once the report is done: a run killed after recording it left its temporary file.
    settle_leftovers(store, default_path(settings, quarter).resolve(), time.time())
    with store.session() as session:
        done = session.scalar(
            select(QuarterlyReport.id).where(QuarterlyReport.outbox_key == outbox_key(quarter))
        )
        # The report's 7.3.1 section reads the quarter's log audit, which the log-audit job
        # writes once the quarter is over and its logs are read past the end: the report waits
        # for that one, not one run by hand before (while the quarter ran, or just after it).
        audit = session.get(LogAudit, quarter)
        audited = audit is not None and audit.complete
        watched = _watched(session, quarter)
    if done is not None or not audited or not watched:
        return None
    if not any(url.partition(":")[0].lower() in MAIL_SCHEMES for url in settings.alerts.management):
        logger.warning(
            "the {} report goes to the management unit, but alerts.management has no e-mail "
            "(mailto://) channel: it gets no PDF until one is configured",
            quarter,
        )
    return write_report(store, settings, quarter, now, send=True, progress=progress)


def confirm_report_deliveries(session: Session) -> list[str]:
    """Record, on each sent report, the channels that confirmed delivery (sent_to) and when its
    e-mail with the PDF was first delivered (delivered_at). Returns the quarters newly delivered."""
    delivered: list[str] = []
    reports = session.scalars(
        select(QuarterlyReport).where(QuarterlyReport.outbox_key.is_not(None))
    ).all()
    for report in reports:
        parent = session.scalar(
            select(OutboxAlert.id).where(OutboxAlert.idempotency_key == report.outbox_key)
        )
        copies = session.scalars(
            select(OutboxAlert)
            .where(OutboxAlert.parent_id == parent, OutboxAlert.state == "delivered")
            # Channels are sent to at once: those delivered at the same time go by rank.
            .order_by(OutboxAlert.delivered_at, OutboxAlert.id)
        ).all()
        names = [copy.channel for copy in copies]
        if names != list(report.sent_to):
            report.sent_to = names
        mails = [c.delivered_at for c in copies if c.payload.get("attach") and c.delivered_at]
        if mails and report.delivered_at is None:
            report.delivered_at = mails[0]
            delivered.append(report.quarter)
    return delivered


def report_rows(store: Store) -> list[dict[str, Any]]:
    """Every recorded report, newest first, as `monitord reports --json` prints them."""
    with store.session() as session:
        rows = session.scalars(
            select(QuarterlyReport).order_by(
                QuarterlyReport.generated_at.desc(), QuarterlyReport.id.desc()
            )
        ).all()
        return [
            {
                "id": row.id,
                "quarter": row.quarter,
                "generated_at": row.generated_at.astimezone(UTC).isoformat(),
                "path": row.path,
                "sha256": row.sha256,
                "pages": row.pages,
                "sent_to": list(row.sent_to),
                "delivered_at": row.delivered_at.astimezone(UTC).isoformat()
                if row.delivered_at
                else None,
            }
            for row in rows
        ]
