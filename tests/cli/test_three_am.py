"""Every command as on-call staff read it at 3 a.m.: times in Asia/Shanghai to the minute (JSON
keeps ISO 8601 with its offset), codes with their Chinese names, the 7.3.3 clock in words,
columns whole when piped, and a repeated action that exits 0 with a note."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitord.cli import main
from monitord.store.findings import upsert_finding
from monitord.store.models import (
    EvidenceDocument,
    QuarterlyReport,
    Scan,
    Silence,
)
from monitord.textable import format_table, show_whole_cells
from monitord.timeutil import SHANGHAI, UTC
from monitord.types import FindingDraft
from tests.conftest import FakeClock
from tests.runtime.web.pagesite import page_app, seed

AT = dt.datetime(2026, 11, 30, 7, 5, 42, 639686, tzinfo=UTC)
"""A stored moment: 15:05 in Asia/Shanghai, which a person must never read as 07:05."""
AT_CST = "2026-11-30 15:05"
LATER = dt.datetime(2099, 1, 1, 0, 30, tzinfo=UTC)
"""When the silence ends: 08:30 in Asia/Shanghai."""
LONG_REASON = "计划维护：核心数据库主备切换与存储扩容，预计影响企业开办与税务登记两项服务"
"""Wider than the 40 columns a listing is cut to on a terminal."""
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d|\+00:00|\bNone\b")
"""What a person must not be shown: ISO times, UTC offsets, Python's None."""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A store holding one of everything a person reads a time of; the security incident
    was opened 2 h 20 min ago, so its clock is 20 minutes overdue."""
    clock = FakeClock(dt.datetime.now(UTC) - dt.timedelta(minutes=140))
    with page_app(tmp_path, clock) as app:
        incident_id = seed(app)
        with app.store.session() as session:
            finding = upsert_finding(
                session,
                FindingDraft(
                    rule="brute_force_login",
                    clause="7.3.3",
                    severity="high",
                    subject_kind="ip",
                    subject="203.0.113.9",
                    summary="登录失败 60 次",
                    service_id="svc-0001",
                ),
                AT,
            )
            finding.incident_id = incident_id
            session.add_all(
                [
                    Scan(
                        service_id="svc-0001",
                        scan_key="k1",
                        trigger="manual",
                        state="finished",
                        queued_at=AT,
                        next_attempt_at=AT,
                        started_at=AT,
                        finished_at=AT,
                    ),
                    EvidenceDocument(
                        clause="7.3.2",
                        kind="pentest",
                        document_date=AT.date(),
                        filed_by="王值班",
                        filed_at=AT,
                        file_name="pentest.pdf",
                        stored_as="x/pentest.pdf",
                        sha256="0" * 64,
                        size=1,
                    ),
                    QuarterlyReport(
                        quarter="2026q3", generated_at=AT, path="/r.pdf", sha256="1" * 64
                    ),
                    Silence(
                        kinds=["outage"],
                        reason=LONG_REASON,
                        created_by="王值班",
                        created_at=AT,
                        starts_at=AT,
                        ends_at=LATER,
                    ),
                ]
            )
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    return path


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["--config", str(config), *args])
    return status, capsys.readouterr().out


def test_incidents_show_reads_in_shanghai_time_with_names_findings_and_the_clock(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run(config, capsys, "incidents", "show", "1")
    assert status == 0
    assert not ISO_UTC.search(out), out
    assert "data_exposure 数据泄露" in out and "security 安全事件" in out
    assert "open 待处理" in out and "high 高" in out
    assert re.search(r"已逾期 (20|21) 分钟", out), out
    assert re.search(r"^  late +no 否$", out, re.M), out  # not Python's False
    # The findings that made the incident, with when they were last seen.
    assert f"brute_force_login (7.3.3)  203.0.113.9  x1  last {AT_CST}" in out
    # JSON keeps ISO 8601 with the offset.
    status, out = run(config, capsys, "incidents", "show", "1", "--json")
    data = json.loads(out)
    assert data["findings"][0]["last_seen"] == AT.isoformat()
    assert data["occurred_at"].endswith("+00:00")


def test_incidents_list_names_the_codes_and_says_minutes_overdue(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run(config, capsys, "incidents", "list")
    assert status == 0
    [row] = out.splitlines()[1:]
    assert "data_exposure 数据泄露" in row and "open 待处理" in row
    assert re.search(r"已逾期 (20|21) 分钟", row), row


def test_a_second_ack_exits_0_and_says_nothing_changed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config, capsys, "incidents", "ack", "1", "--by", "bob") == (
        0,
        "incident 1 acknowledged by bob\n",
    )
    status, out = run(config, capsys, "incidents", "ack", "1", "--by", "carol")
    assert status == 0
    assert (
        out == "incident 1 is already acknowledged by bob (acknowledged 已确认): nothing changed\n"
    )
    assert run(config, capsys, "incidents", "resolve", "1")[0] == 0
    status, out = run(config, capsys, "incidents", "resolve", "1")
    assert (status, out) == (
        0,
        "incident 1 is already resolved (resolved 已解决): nothing changed\n",
    )


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["findings"], AT_CST),
        (["scan", "status"], AT_CST),
        (["evidence", "list"], AT_CST),
        (["reports"], AT_CST),
        (["silence", "list"], "2099-01-01 08:30"),
    ],
)
def test_listings_show_times_in_shanghai_to_the_minute(
    config: Path, capsys: pytest.CaptureFixture[str], command: list[str], shown: str
) -> None:
    status, out = run(config, capsys, *command)
    assert status == 0
    assert shown in out, out
    assert not ISO_UTC.search(out), out


def test_findings_show_severities_with_their_names(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run(config, capsys, "findings")
    assert status == 0
    assert "high 高" in out.splitlines()[1] and "open 未处理" in out.splitlines()[1]


def test_status_names_the_service_states(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = run(config, capsys, "status")
    assert status == 1  # a service is down
    assert "DOWN 中断" in out and "DEGRADED 降级" in out


def test_usage_reads_its_range_and_hours_in_shanghai_time(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = run(
        config,
        capsys,
        "usage",
        "svc-0001",
        "--since",
        "2026-11-30T15:00",
        "--until",
        "2026-11-30T16:00",
    )
    assert status == 0
    assert "2026-11-30 15:00 CST" in out and "2026-11-30 16:00 CST" in out
    assert not ISO_UTC.search(out), out


def test_analyse_shows_a_finding_at_its_shanghai_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Failed logins from one address at 23:10 Shanghai time (15:10 UTC): the finding must read
    # 23:10, not 15:10 or 15:10:00+00:00, which look like office hours.
    log = tmp_path / "access.log"
    log.write_text(
        "".join(
            f'203.0.113.9 - - [30/Nov/2026:23:10:{i:02d} +0800] "POST /auth/login HTTP/1.1" '
            f'401 12 "-" "curl/8"\n'
            for i in range(50)
        ),
        encoding="utf-8",
    )
    status = main(["analyse", str(log)])
    out = capsys.readouterr().out
    assert status == 0
    [row] = [line for line in out.splitlines() if line.startswith("brute_force_ip")]
    assert "high 高" in row
    assert "2026-11-30 23:10" in row
    assert not ISO_UTC.search(out), out


def test_columns_are_whole_when_piped_and_cut_on_a_terminal_unless_wide() -> None:
    long = "x" * 70
    try:
        show_whole_cells(True)
        assert long in format_table(["A"], [[long]])
        show_whole_cells(False)
        assert long not in format_table(["A"], [[long]])
    finally:
        show_whole_cells(False)


def test_a_listing_piped_to_a_script_keeps_every_character(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # capsys is not a terminal: the reason, 76 columns wide, comes whole, as a script needs it.
    status, out = run(config, capsys, "silence", "list")
    assert status == 0
    assert LONG_REASON in out and "…" not in out


def on_a_terminal(config: Path, *args: str) -> str:
    """What `monitord args` prints to a terminal (a pseudo-terminal as its stdout)."""
    main_fd, terminal = pty.openpty()
    with os.fdopen(main_fd, "rb", buffering=0) as screen:
        done = subprocess.run(
            [sys.executable, "-m", "monitord.cli", "--config", str(config), *args],
            stdout=terminal,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        assert done.returncode == 0, done.stderr
        shown = b""
        while True:
            try:
                chunk = screen.read(65536)
            except OSError:  # EIO: the terminal's other end is closed, all is read
                break
            if not chunk:
                break
            shown += chunk
    return shown.decode()


def test_on_a_terminal_columns_are_cut_and_wide_shows_them_whole(config: Path) -> None:
    cut = on_a_terminal(config, "silence", "list")
    assert LONG_REASON not in cut and "…" in cut
    assert LONG_REASON in on_a_terminal(config, "silence", "list", "--wide")


def test_incidents_open_refuses_an_unknown_kind_in_one_line_naming_the_known_ones(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = ["incidents", "open", "--kind", "outgae", "--service", "svc-0001", "--summary", "x"]
    status = main(["--config", str(config), *words])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("monitord: --kind 'outgae': expected one of ") and "outage" in err
    assert err.count("\n") == 1


def test_incidents_open_refuses_a_future_time_in_the_time_the_person_typed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Typed as Asia/Shanghai: the refusal must read 08:30 too, not 2099-01-01T00:30:00+00:00.
    words = ["incidents", "open", "--kind", "outage", "--service", "svc-0001", "--summary", "x"]
    status = main(["--config", str(config), *words, "--occurred-at", "2099-01-01T08:30"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "monitord: --occurred-at 2099-01-01 08:30 (CST): is in the future\n"


def test_sync_logs_its_lines_in_shanghai_time_on_a_server_kept_in_utc(tmp_path: Path) -> None:
    # Servers often run with TZ=UTC: a log line stamped 17:57 when it is 01:57 in Shanghai sends
    # on-call staff looking at the wrong hour.
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text("[]", encoding="utf-8")
    before = dt.datetime.now(SHANGHAI).replace(second=0, microsecond=0, tzinfo=None)
    command = ["--config", str(config), "sync", "--file", str(catalogue)]
    done = subprocess.run(
        [sys.executable, "-m", "monitord.cli", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TZ": "UTC"},
    )
    after = dt.datetime.now(SHANGHAI).replace(tzinfo=None)
    assert done.returncode == 1
    [logged] = [line for line in done.stderr.splitlines() if "ERROR" in line]
    stamp = dt.datetime.strptime(logged[:19], "%Y-%m-%d %H:%M:%S")
    assert before <= stamp <= after, logged
