"""The quarterly report job: written once per quarter from its first working day, and sent to the
management unit through the outbox, by e-mail with the PDF attached (real apprise, aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from sqlalchemy import select

from monitord.accesslog.work import audit_due, log_audit
from monitord.config import Settings, parse_config
from monitord.runtime.app import App
from monitord.runtime.jobs import alert_delivery, quarterly_log_audit, quarterly_report
from monitord.runtime.reporting import due_quarter, send_due_report
from monitord.store import Store
from monitord.store.models import LogAudit, OutboxAlert, QuarterlyReport, SyncRun
from monitord.store.outbox import enqueue
from monitord.timeutil import SHANGHAI, UTC
from monitord.workcalendar import WorkCalendar
from tests.conftest import FakeClock
from tests.receivers import Webhook, free_port, serve_smtp, serve_webhook

pytestmark = pytest.mark.timeout(60)

PASSWORD = "pw-for-tests"
# The first working day of 2026q4 is Thursday 8 October: 1-7 October is National Day.
FIRST_WORKING_MORNING = dt.datetime(2026, 10, 8, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    async with serve_webhook() as webhook:
        yield webhook


def mail_url(port: int) -> str:
    return (
        f"mailto://monitord:{{smtp_password}}@localhost:{port}?mode=insecure"
        "&from=monitord@example.com&to=sjj@example.gov.cn"
    )


def settings(tmp_path: Path, management: list[str]) -> Settings:
    values: dict[str, Any] = {
        "alerts": {"management": management, "retry_seconds": 30.0, "retry_max_seconds": 60.0},
        "report": {"dir": str(tmp_path / "reports")},
    }
    return parse_config(values, "test", env={"MONITORD_SMTP_PASSWORD": PASSWORD})


def app_at(store: Store, cfg: Settings, when: dt.datetime) -> tuple[App, FakeClock]:
    """The App at `when`, on a store that monitord has worked on since 2026q3 began."""
    watched_since(store, dt.datetime(2026, 7, 1, 8, tzinfo=SHANGHAI))
    clock = FakeClock(when.astimezone(UTC))
    return App(settings=cfg, store=store, clock=clock), clock


def watched_since(store: Store, moment: dt.datetime) -> None:
    """A catalogue sync at `moment`, the sign that monitord was at work then (once per store)."""
    with store.session() as session:
        if session.scalar(select(SyncRun.id).limit(1)) is None:
            session.add(SyncRun(started_at=moment, finished_at=moment, source="test", outcome="ok"))


def pdf_attachments(message: Message) -> list[tuple[str, bytes]]:
    found = []
    for part in message.walk():
        if part.get_content_type() == "application/pdf":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            found.append((part.get_filename() or "", payload))
    return found


def reports(store: Store) -> list[QuarterlyReport]:
    with store.session() as session:
        return list(session.scalars(select(QuarterlyReport).order_by(QuarterlyReport.id)).all())


def copies(store: Store) -> list[OutboxAlert]:
    with store.session() as session:
        rows = session.scalars(
            select(OutboxAlert).where(OutboxAlert.parent_id.is_not(None)).order_by(OutboxAlert.id)
        )
        return list(rows.all())


@pytest.mark.parametrize(
    ("local", "due"),
    [
        ("2026-10-01T10:00", None),  # National Day: not a working day
        ("2026-10-08T08:59", None),  # the first working day, before 09:00
        ("2026-10-08T09:00", "2026q3"),
        ("2026-12-31T23:59", "2026q3"),  # a daemon down all quarter still writes it
        ("2026-07-01T09:00", "2026q2"),  # a Wednesday: the quarter's first day works
    ],
)
def test_the_report_is_due_from_the_first_working_day_of_the_next_quarter_at_nine(
    local: str, due: str | None
) -> None:
    now = dt.datetime.fromisoformat(local).replace(tzinfo=SHANGHAI)
    assert due_quarter(now, WorkCalendar()) == due


async def test_the_job_sends_the_pdf_by_email_and_a_chat_line_once_and_records_delivery(
    store: Store, tmp_path: Path, hook: Webhook
) -> None:
    with serve_smtp() as (mailbox, port):
        cfg = settings(tmp_path, [mail_url(port), hook.apprise_url("sjj")])
        app, clock = app_at(store, cfg, FIRST_WORKING_MORNING - dt.timedelta(minutes=1))
        await quarterly_report(app)
        assert reports(store) == []  # 08:59: not yet
        clock.advance(minutes=1)
        await quarterly_report(app)
        assert reports(store) == []  # it waits for the quarter's log audit
        await quarterly_log_audit(app)
        await quarterly_report(app)
        await quarterly_report(app)  # the next hour's run: already done
        [record] = reports(store)
        assert (record.quarter, record.outbox_key) == ("2026q3", "report:2026q3")
        assert Path(record.path) == tmp_path / "reports" / "monitord-2026q3.pdf"
        for _ in range(3):
            await alert_delivery(app)
            clock.advance(seconds=5)

    [mail] = mailbox.messages
    [(name, pdf)] = pdf_attachments(mail)
    assert name == "monitord-2026q3.pdf"
    assert hashlib.sha256(pdf).hexdigest() == record.sha256
    assert pdf.startswith(b"%PDF")
    [text] = mailbox.parts("text/plain") or mailbox.parts("text/html")
    assert "2026年第三季度" in text and "见本邮件附件" in text
    [chat] = hook.received
    assert chat["title"] == "【季度合规报告】2026年第三季度"
    assert f"SHA-256：{record.sha256}" in chat["message"]
    assert f"页数：{record.pages}" in chat["message"]
    assert "已通过电子邮件发送" in chat["message"]
    assert chat["message"].startswith("苏州市数据局：")  # [report] management_unit
    assert "报告单位：苏商通运营单位" in chat["message"]
    assert chat["key"].startswith("report:2026q3#")
    [after] = reports(store)
    assert after.delivered_at == clock.now - dt.timedelta(seconds=15)  # the first pass
    assert after.sent_to == ["alerts.management[0]", "alerts.management[1]"]


async def test_a_crash_between_writing_and_sending_sends_the_report_once_after_restart(
    store: Store, tmp_path: Path
) -> None:
    with serve_smtp() as (mailbox, port):
        cfg = settings(tmp_path, [mail_url(port)])
        before, _clock = app_at(store, cfg, FIRST_WORKING_MORNING)
        await quarterly_log_audit(before)
        await quarterly_report(before)  # written and queued; the process dies here
        after, clock = app_at(store, cfg, FIRST_WORKING_MORNING + dt.timedelta(hours=1))
        await quarterly_report(after)  # the restarted daemon's first run
        for _ in range(3):
            await alert_delivery(after)
            clock.advance(seconds=5)
    assert len(reports(store)) == 1
    assert len(mailbox.messages) == 1


async def test_a_failed_send_is_retried_until_the_mail_server_takes_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    port = free_port()
    cfg = settings(tmp_path, [mail_url(port)])
    app, clock = app_at(sqlite_store, cfg, FIRST_WORKING_MORNING)
    await quarterly_log_audit(app)
    await quarterly_report(app)
    await alert_delivery(app)  # nothing listens yet
    [copy] = copies(sqlite_store)
    assert (copy.state, copy.attempts) == ("pending", 1)
    assert reports(sqlite_store)[0].delivered_at is None
    with serve_smtp(port) as (mailbox, _port):
        clock.advance(seconds=30)
        await alert_delivery(app)
    [(_name, pdf)] = pdf_attachments(mailbox.messages[0])
    assert hashlib.sha256(pdf).hexdigest() == reports(sqlite_store)[0].sha256
    assert reports(sqlite_store)[0].delivered_at == clock.now


async def test_a_report_file_changed_after_recording_is_not_sent_and_says_why(
    sqlite_store: Store, tmp_path: Path
) -> None:
    with serve_smtp() as (mailbox, port):
        cfg = settings(tmp_path, [mail_url(port)])
        app, clock = app_at(sqlite_store, cfg, FIRST_WORKING_MORNING)
        await quarterly_log_audit(app)
        await quarterly_report(app)
        path = Path(reports(sqlite_store)[0].path)
        original = path.read_bytes()
        path.write_bytes(original + b"% edited\n")
        await alert_delivery(app)
        [copy] = copies(sqlite_store)
        assert mailbox.messages == []
        assert copy.state == "pending"
        assert f"the attachment {path} is not the file recorded" in (copy.last_error or "")
        path.write_bytes(original)  # put back as recorded: it goes at the next attempt
        clock.advance(seconds=30)
        await alert_delivery(app)
    assert len(mailbox.messages) == 1


async def test_the_job_never_overwrites_a_report_written_from_the_command_line(
    sqlite_store: Store, tmp_path: Path
) -> None:
    cfg = settings(tmp_path, [])
    from monitord.runtime.reporting import write_report

    now = FIRST_WORKING_MORNING.astimezone(UTC)
    watched_since(sqlite_store, dt.datetime(2026, 7, 1, 8, tzinfo=SHANGHAI))
    by_hand = write_report(sqlite_store, cfg, "2026q3", now)
    kept = by_hand.path.read_bytes()
    audit_due(sqlite_store, cfg, lambda: now)
    written = send_due_report(sqlite_store, cfg, now)
    assert written is not None
    assert written.path == tmp_path / "reports" / "monitord-2026q3-2.pdf"
    assert by_hand.path.read_bytes() == kept
    assert hashlib.sha256(kept).hexdigest() == by_hand.sha256


async def test_on_a_paced_mail_channel_the_report_is_never_folded_into_a_digest(
    sqlite_store: Store, tmp_path: Path
) -> None:
    with serve_smtp() as (mailbox, port):
        cfg = settings(tmp_path, [mail_url(port)])
        cfg = cfg.model_copy(
            update={"alerts": cfg.alerts.model_copy(update={"rate_per_minute": {"mailto": 1}})}
        )
        app, clock = app_at(sqlite_store, cfg, FIRST_WORKING_MORNING)
        with sqlite_store.session() as session:
            for n in (1, 2):
                enqueue(session, f"note:{n}", "management", "message", clock())
        await quarterly_log_audit(app)
        await quarterly_report(app)
        for _ in range(3):
            await alert_delivery(app)
            clock.advance(seconds=61)
    digest, report = mailbox.messages
    assert "告警汇总" in str(make_header(decode_header(digest["Subject"])))
    assert pdf_attachments(digest) == []
    [(_name, pdf)] = pdf_attachments(report)
    assert hashlib.sha256(pdf).hexdigest() == reports(sqlite_store)[0].sha256


async def test_a_report_that_cannot_be_drawn_is_one_logged_line_and_tried_again(
    sqlite_store: Store, tmp_path: Path
) -> None:
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"not a font")
    cfg = settings(tmp_path, [])
    cfg = cfg.model_copy(update={"report": cfg.report.model_copy(update={"font": str(not_a_font)})})
    app, _clock = app_at(sqlite_store, cfg, FIRST_WORKING_MORNING)
    logged: list[tuple[str, str]] = []
    handler = logger.add(lambda m: logged.append((m.record["level"].name, m.record["message"])))
    try:
        await quarterly_log_audit(app)
        await quarterly_report(app)
    finally:
        logger.remove(handler)
    errors = [text for level, text in logged if level == "ERROR"]
    [error] = errors
    assert error.startswith(
        f"the quarterly report could not be written: report.font {str(not_a_font)!r}: "
    )
    assert "\n" not in error
    assert reports(sqlite_store) == [] and copies(sqlite_store) == []
    assert list((tmp_path / "reports").glob("*")) == []  # nothing half-written


@pytest.mark.parametrize(
    ("first_sync", "sent"),
    [
        (dt.datetime(2026, 9, 30, 23, 59, tzinfo=SHANGHAI), True),
        (dt.datetime(2026, 10, 1, 0, 0, tzinfo=SHANGHAI), False),  # installed after 2026q3
    ],
)
def test_no_report_goes_out_for_a_quarter_monitord_was_not_at_work_in(
    sqlite_store: Store, tmp_path: Path, first_sync: dt.datetime, sent: bool
) -> None:
    cfg = settings(tmp_path, [])
    now = FIRST_WORKING_MORNING.astimezone(UTC)
    watched_since(sqlite_store, first_sync)
    audit_due(sqlite_store, cfg, lambda: now)
    written = send_due_report(sqlite_store, cfg, now)
    assert (written is not None) == sent
    assert len(reports(sqlite_store)) == int(sent)


STOPPED_RUN = """
import datetime as dt, os, signal, sys
from monitord.config import parse_config
from monitord.runtime import reporting
from monitord.store import open_store

url, folder, point, now = sys.argv[1:]
record = reporting._record

def killed(*args):
    os.kill(os.getpid(), signal.SIGKILL)

def store_fails(*args):
    raise OSError("the store does not answer")

if point == "writing":  # the file written, not yet named
    reporting._place = killed
elif point == "named":  # named, not yet recorded
    reporting._record = killed
elif point == "recorded":  # recorded and queued, its temporary file not yet removed
    reporting._record = lambda *args: (record(*args), killed())
else:  # the record's transaction fails
    reporting._record = store_fails
settings = parse_config({"report": {"dir": folder}}, "test", env={})
reporting.send_due_report(open_store(url), settings, dt.datetime.fromisoformat(now))
"""


@pytest.mark.parametrize(
    ("point", "status"),
    [("writing", -9), ("named", -9), ("recorded", -9), ("record fails", 1)],
)
def test_a_run_stopped_at_any_step_leaves_the_quarters_report_under_its_own_name(
    sqlite_store: Store, tmp_path: Path, point: str, status: int
) -> None:
    # Killed between naming the file and recording it, the job left an unrecorded
    # monitord-2026q3.pdf; the next run wrote and sent monitord-2026q3-2.pdf, so the file with
    # the quarter's name was not the one handed over. A kill while writing left a .tmp for good.
    cfg = settings(tmp_path, [])
    now = FIRST_WORKING_MORNING.astimezone(UTC)
    watched_since(sqlite_store, dt.datetime(2026, 7, 1, 8, tzinfo=SHANGHAI))
    audit_due(sqlite_store, cfg, lambda: now)
    folder = tmp_path / "reports"
    url = f"sqlite:///{tmp_path / 'monitord.db'}"
    stopped = subprocess.run(
        [sys.executable, "-c", STOPPED_RUN, url, str(folder), point, now.isoformat()],
        capture_output=True,
        timeout=60,
    )
    assert stopped.returncode == status, stopped.stderr.decode()

    send_due_report(sqlite_store, cfg, now)  # the next run
    [record] = reports(sqlite_store)
    assert Path(record.path) == folder / "monitord-2026q3.pdf"
    assert hashlib.sha256(Path(record.path).read_bytes()).hexdigest() == record.sha256
    assert [p.name for p in folder.iterdir()] == ["monitord-2026q3.pdf"]  # nothing else left


def test_a_report_being_written_by_a_live_run_is_left_to_it(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # Another run has named its report and is recording it: its temporary file is locked.
    cfg = settings(tmp_path, [])
    now = FIRST_WORKING_MORNING.astimezone(UTC)
    watched_since(sqlite_store, dt.datetime(2026, 7, 1, 8, tzinfo=SHANGHAI))
    audit_due(sqlite_store, cfg, lambda: now)
    folder = tmp_path / "reports"
    folder.mkdir()
    theirs = folder / "monitord-2026q3.pdf"
    temporary = folder / ".monitord-2026q3.pdf.abc123_x.tmp"
    temporary.write_bytes(b"%PDF another run's report")
    os.link(temporary, theirs)
    with temporary.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        written = send_due_report(sqlite_store, cfg, now)
    assert written is not None and written.path == folder / "monitord-2026q3-2.pdf"
    assert theirs.read_bytes() == b"%PDF another run's report"
    assert temporary.exists()


def test_the_report_waits_for_the_whole_quarters_audit_not_one_run_by_hand_before(
    sqlite_store: Store, tmp_path: Path
) -> None:
    # `log-audit --quarter 2026q3` run on 15 September left its audit of 76 days: on the next
    # quarter's first working day the report went out with it at once (7.3.1 and 8.3 c red).
    cfg = settings(tmp_path, [])
    watched_since(sqlite_store, dt.datetime(2026, 7, 1, 8, tzinfo=SHANGHAI))
    by_hand = dt.datetime(2026, 9, 15, 12, 5, tzinfo=SHANGHAI)
    with sqlite_store.session() as session:
        log_audit(session, cfg, by_hand, "2026q3")
    now = FIRST_WORKING_MORNING.astimezone(UTC)
    assert send_due_report(sqlite_store, cfg, now) is None
    assert reports(sqlite_store) == []
    assert audit_due(sqlite_store, cfg, lambda: now) == "2026q3"
    assert send_due_report(sqlite_store, cfg, now) is not None
    with sqlite_store.session() as session:
        audit = session.get(LogAudit, "2026q3")
        assert audit is not None and audit.created_at == now
        assert len(audit.lines_per_day) == 92
