"""Access logs in the daemon: follow mode into the store across rotation and restarts, findings,
the quarterly log audit, and `monitord analyse`."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select

from monitord.accesslog.work import follow_logs, log_audit, usage
from monitord.config import Settings, parse_config
from monitord.demo.synth import nginx_time
from monitord.store import Store, open_store
from monitord.store.models import (
    Finding,
    LogAudit,
    LogHourStat,
    LogSource,
    Service,
    SyncRun,
    writer_name,
)
from tests.conftest import FakeClock, logged

START = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))


def nginx_line(moment: dt.datetime, n: int, service: str = "svc-0042") -> str:
    stamp = nginx_time(moment)
    return (
        f'58.210.1.{n % 200} - - [{stamp}] "GET /svc/{service}/query?id={n} HTTP/1.1" 200 '
        f'512 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0" 0.042'
    )


def audit_line(moment: dt.datetime, **fields: Any) -> str:
    record = {
        "ts": moment.isoformat(),
        "ip": "58.210.1.9",
        "user_id": "u-1",
        "level": "L3",
        "role": "handler",
        "company": "91320500MA1XXXXXXX",
        "vendor": None,
        "service_id": "svc-0042",
        "action": "view",
        "method": "GET",
        "path": "/x",
        "status": 200,
        "bytes": 100,
        "duration_ms": 20,
        "ua": "Mozilla/5.0",
    }
    record.update(fields)
    return json.dumps(record, ensure_ascii=False)


def config(*logs: tuple[Path, str]) -> Settings:
    return parse_config(
        {"logs": {"follow": [{"path": str(p), "format": f} for p, f in logs]}}, "t", env={}
    )


def total_requests(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.sum(LogHourStat.requests))) or 0)


def lines_seen(store: Store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.sum(LogSource.lines))) or 0)


def test_follow_mode_counts_every_line_once_across_rotation_and_restart(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(90)))
    follow_logs(sqlite_store, cfg, clock)
    with log.open("a") as handle:  # more lines, then logrotate renames the file
        handle.writelines(nginx_line(START + i * minute, i) + "\n" for i in range(90, 120))
    log.rename(tmp_path / "access.log.1")
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(120, 200)))
    follow_logs(sqlite_store, cfg, clock)
    follow_logs(sqlite_store, cfg, clock)  # nothing new: nothing counted twice
    assert lines_seen(sqlite_store) == 200
    # Hours 09:00 and 10:00 have closed (the log has reached 12:19); 11:00 and 12:00 stay open.
    assert total_requests(sqlite_store) == 120
    with sqlite_store.session() as session:
        hours = session.scalars(select(LogHourStat.hour).order_by(LogHourStat.hour)).all()
    assert hours == [START, START + dt.timedelta(hours=1)]


def test_two_edge_logs_of_the_same_hours_are_both_counted(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    edges = [tmp_path / "edge1.log", tmp_path / "edge2.log"]
    minute = dt.timedelta(minutes=1)
    for k, log in enumerate(edges):
        log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(150 + k)))
    follow_logs(sqlite_store, config((edges[0], "nginx"), (edges[1], "nginx")), clock)
    # 09:00 has closed in both logs: 60 requests each, neither replacing the other.
    assert total_requests(sqlite_store) == 120


def test_a_log_that_cannot_be_read_is_named_and_the_others_are_read(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A folder or a named pipe where a log should be (or a log the daemon's user may not read)
    # stopped the pass with a traceback or blocked it for ever, and no log after it was read.
    folder, pipe, edge = tmp_path / "not-a-log", tmp_path / "pipe", tmp_path / "edge.log"
    folder.mkdir()
    os.mkfifo(pipe)
    minute = dt.timedelta(minutes=1)
    edge.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(150)))
    with logged("ERROR") as errors:
        logs = config((folder, "nginx"), (pipe, "nginx"), (edge, "nginx"))
        report = follow_logs(sqlite_store, logs, clock)
    assert report.unreadable == [str(folder), str(pipe)] and report.sources == [str(edge)]
    assert lines_seen(sqlite_store) == 150
    assert errors == [
        f"access log {path}: cannot read it (not a regular file); the other logs are read\n"
        for path in (folder, pipe)
    ]


def test_lines_that_come_after_their_hour_closed_are_added_not_written_over(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    minute = dt.timedelta(minutes=1)
    lines = [nginx_line(START + i * minute / 2, i) for i in range(100)]  # 09:00-09:50
    lines.append(nginx_line(START + 150 * minute, 100))  # 11:30 closes 09:00
    log.write_text("".join(line + "\n" for line in lines))
    follow_logs(sqlite_store, cfg, clock)
    # A log shipper delivers 09:xx lines two hours late; 14:00 closes everything before 13:00.
    late = [nginx_line(START + 55 * minute, 200 + i) for i in range(7)]
    late.append(nginx_line(START + 300 * minute, 300))
    with log.open("a") as handle:
        handle.writelines(line + "\n" for line in late)
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        nine = session.scalars(
            select(LogHourStat).where(LogHourStat.hour == START.astimezone(dt.UTC))
        ).one()
    assert nine.requests == 107
    assert nine.stats["status"] == {"2xx": 107}
    assert sum(n for _, n in nine.stats["top_paths"]) <= 107
    assert nine.stats["ips"] >= 100


def test_brute_force_in_the_audit_log_becomes_one_finding_that_keeps_updating(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    second = dt.timedelta(seconds=20)
    log.write_text(
        "".join(audit_line(START + i * second, action="login_failed") + "\n" for i in range(10))
    )
    follow_logs(sqlite_store, cfg, clock)
    with log.open("a") as handle:
        handle.writelines(
            audit_line(START + (10 + i) * second, action="login_failed") + "\n" for i in range(10)
        )
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        findings = session.scalars(select(Finding).where(Finding.rule == "brute_force_login")).all()
    assert len(findings) == 1
    assert findings[0].clause == "7.3.1" and findings[0].severity == "high"
    assert "u-1" in findings[0].subject


def test_a_window_found_in_a_later_pass_quotes_the_lines_of_earlier_passes_first(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # Four failed logins, then four more in the next pass: the evidence began at the fifth.
    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    ten, ten_past_one = START + dt.timedelta(hours=1), START + dt.timedelta(hours=1, minutes=1)
    failed = [audit_line(ten + dt.timedelta(seconds=i), action="login_failed") for i in range(4)]
    later = [
        audit_line(ten_past_one + dt.timedelta(seconds=i), action="login_failed") for i in range(4)
    ]
    log.write_text("".join(line + "\n" for line in failed))
    follow_logs(sqlite_store, cfg, clock)
    with log.open("a") as handle:
        handle.writelines(line + "\n" for line in later)
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        [finding] = session.scalars(select(Finding).where(Finding.rule == "brute_force_login"))
        assert finding.evidence["lines"] == [*failed, later[0]]


def test_the_quarterly_audit_counts_days_and_flags_days_without_logs(
    sqlite_store: Store, clock: FakeClock
) -> None:
    q3 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    with sqlite_store.session() as session:
        for day in range(92):
            if day in (10, 11):
                continue  # the log shipper was down for two days
            session.add(
                LogHourStat(
                    source="nginx",
                    service="svc-0042",
                    hour=q3 + dt.timedelta(days=day, hours=10),
                    requests=100,
                    stats={"status": {"2xx": 100}},
                )
            )
    clock.now = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        audit = log_audit(session, Settings(), clock())
    assert audit.quarter == "2026q3"
    assert audit.lines == 9000
    assert audit.empty_days == ["2026-07-11", "2026-07-12"]
    assert len(audit.lines_per_day) == 92
    with sqlite_store.session() as session:
        gap = session.scalars(select(Finding).where(Finding.rule == "log_gap")).one()
        assert session.get(LogAudit, "2026q3") is not None
    assert (gap.subject, gap.clause) == ("2026q3", "7.3.1")
    assert gap.evidence == {"days": ["2026-07-11", "2026-07-12"]}
    used = usage(sqlite_store, "svc-0042", q3, q3 + dt.timedelta(days=92))
    assert used["requests"] == 9000 and used["status"] == {"2xx": 9000}


def test_analyse_cli_json_shape_and_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    log = tmp_path / "access.log"
    log.write_text("".join(nginx_line(START, i) + "\n" for i in range(20)) + "garbage \x00\n")
    assert main(["analyse", str(log), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"lines", "rejected", "rejected_samples", "stats", "findings"}
    assert (result["lines"], result["rejected"]) == (21, 1)
    assert main(["analyse", str(tmp_path / "nope.log")]) == 2
    assert "nope.log: no such file or directory" in capsys.readouterr().err


def test_analyse_cli_refuses_an_empty_time_range_and_warns_of_an_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    log = tmp_path / "access.log"
    log.write_text(nginx_line(START, 0) + "\n")
    assert main(["analyse", str(log), "--since", "2026-06-05", "--until", "2026-06-01"]) == 2
    err = capsys.readouterr().err
    assert "--since 2026-06-05 is not before --until 2026-06-01" in err
    assert "Traceback" not in err
    empty = tmp_path / "logs"
    empty.mkdir()
    assert main(["analyse", str(empty), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"{empty}: no log files in this folder" in captured.err
    assert json.loads(captured.out)["lines"] == 0


def test_analyse_cli_names_an_input_it_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from monitord.cli import main

    # A socket file exists but cannot be opened as a file (as root, a mode would not stop it).
    path = tmp_path / "access.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        assert main(["analyse", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot be read (" in err and "Traceback" not in err


def test_analyse_cli_names_a_file_name_too_long_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    path = tmp_path / ("日" * 100 + ".log")  # 300 bytes: over the file system's 255
    assert main(["analyse", str(path)]) == 2
    assert capsys.readouterr().err == f"monitord: {path}: cannot be read (File name too long)\n"


def test_findings_quiet_for_a_week_leave_the_follow_state_but_stay_stored(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    second = dt.timedelta(seconds=20)
    log.write_text(
        "".join(audit_line(START + i * second, action="login_failed") + "\n" for i in range(10))
    )
    clock.now = START + dt.timedelta(minutes=5)
    follow_logs(sqlite_store, cfg, clock)
    clock.now = START + dt.timedelta(days=8)
    with log.open("a") as handle:
        handle.write(audit_line(clock.now, action="view") + "\n")
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        source = session.get(LogSource, (writer_name(), str(log)))
        assert source is not None
        assert source.state["analyzer"]["rules"]["findings"] == []
        assert source.state["reported"] == {}
        assert session.scalars(select(Finding.rule)).all() == ["brute_force_login"]


def test_usage_cli_refuses_a_range_it_cannot_show_and_says_when_nothing_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:
        now = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
        session.add(Service(id="svc-0042", name="企业开办", first_seen=now, last_seen=now))
    store.dispose()
    usage_of = ["--config", str(config), "usage", "svc-0042"]
    # --until alone had been replaced, without a word, by the end of the last quarter.
    assert main([*usage_of, "--until", "2026-09-01"]) == 2
    assert "--until needs --since" in capsys.readouterr().err
    assert main([*usage_of, "--since", "2026-10-01", "--until", "2026-09-01"]) == 2
    assert "--since 2026-10-01 is not before --until 2026-09-01" in capsys.readouterr().err
    # Zeros alone do not tell a quiet service from a mistyped id.
    assert main([*usage_of, "--since", "2026-07-01", "--until", "2026-10-01", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["requests"] == 0
    assert (
        "no statistics of svc-0042 are stored from 2026-07-01 00:00 to 2026-10-01 00:00 (CST)"
        in (captured.err)
    )
    # A mistyped id gave the same zeros and exit 0.
    assert main(["--config", str(config), "usage", "svc-0404"]) == 2
    assert capsys.readouterr().err == "monitord: 'svc-0404': no such service in the store\n"


def test_the_log_audit_of_a_quarter_not_begun_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    url = f"sqlite:///{tmp_path / 'm.db'}"
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{url}"\n', encoding="utf-8")
    open_store(url).dispose()
    # A mistyped year wrote an audit of 2099q1, and with it an open 7.3.1 finding of days
    # without logs that had not happened yet.
    assert main(["--config", str(config), "log-audit", "--quarter", "2099q1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "monitord: --quarter: '2099q1' has not begun: it starts 2099-01-01 00:00 Asia/Shanghai\n"
    )
    store = open_store(url)
    try:
        with store.session() as session:
            assert session.scalars(select(LogAudit)).all() == []
            assert session.scalars(select(Finding)).all() == []
    finally:
        store.dispose()


@pytest.mark.parametrize("command", [["usage", "svc-0042"], ["log-audit"]])
def test_log_commands_name_the_store_they_did_not_find(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    from monitord.cli import main

    config = tmp_path / "monitord.toml"
    config.write_text('[store]\nurl = "sqlite:////proc/monitord-test/m.db"\n', encoding="utf-8")
    assert main(["--config", str(config), *command]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("monitord: no store at /proc/monitord-test/m.db") and "Traceback" not in err
    )


def test_the_daemon_is_told_when_followed_logs_will_be_read_without_the_c_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitord.accesslog import nginx
    from monitord.accesslog.work import reader_warning

    followed = config((tmp_path / "access.log", "nginx"))
    monkeypatch.setattr(nginx, "NATIVE", True)
    assert reader_warning(followed) is None
    monkeypatch.setattr(nginx, "NATIVE", False)
    assert "C core is not built" in (reader_warning(followed) or "")
    assert reader_warning(config()) is None  # no log followed: nothing to say


def test_a_line_nested_100000_deep_is_rejected_and_following_goes_past_it(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # In a block Arrow rejects, the line raised RecursionError in the line-by-line fallback:
    # the pass failed every time, and the cursor never moved past it.
    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    second = dt.timedelta(seconds=20)
    deep = '{"ts": "2026-11-02T09:01:00+08:00", "ua": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = [audit_line(START + i * second, action="login_failed") for i in range(10)]
    lines.insert(5, deep)
    log.write_text("".join(line + "\n" for line in lines))
    report = follow_logs(sqlite_store, cfg, clock)
    assert report.lines == 11
    with log.open("a") as handle:
        handle.writelines(
            audit_line(START + (10 + i) * second, action="login_failed") + "\n" for i in range(10)
        )
    report = follow_logs(sqlite_store, cfg, clock)
    assert report.lines == 10
    with sqlite_store.session() as session:
        source = session.get(LogSource, (writer_name(), str(log)))
        assert source is not None
        assert source.offset == log.stat().st_size
        analyzer = source.state["analyzer"]
        finding = session.scalars(select(Finding).where(Finding.rule == "brute_force_login")).one()
    assert (analyzer["lines"], analyzer["rejected"]) == (21, 1)
    assert analyzer["rejected_samples"][0].startswith(f'{log}: {{"ts": "2026-11-02T09:01:00')
    assert finding.evidence["count"] == 20  # the lines around it are all read


def test_an_address_failing_logins_in_both_followed_logs_opens_one_incident(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # 120 failed logins from one address in ten minutes, in the edge log and the audit log:
    # one brute_force_ip finding (each request counted once) beside the audit log's
    # credential_stuffing on the same address, and one abnormal-behaviour incident for both.
    from monitord.incidents import intake
    from monitord.store.models import Incident

    edge, audit = tmp_path / "access.log", tmp_path / "audit.jsonl"
    cfg = config((edge, "nginx"), (audit, "json"))
    five = dt.timedelta(seconds=5)
    moments = [START + i * five for i in range(120)]
    edge.write_text(
        "".join(
            f'45.95.147.9 - - [{nginx_time(m)}] "POST /auth/login HTTP/1.1" 401 64 "-" '
            '"Mozilla/5.0" 0.030 "-"\n'
            for m in moments
        )
    )
    failed = {"ip": "45.95.147.9", "action": "login_failed", "method": "POST", "status": 401}
    audit.write_text(
        "".join(
            audit_line(m, user_id=f"u-{i}", path="/auth/login", **failed) + "\n"
            for i, m in enumerate(moments)
        )
    )
    clock.now = START + dt.timedelta(minutes=15)
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        found = session.scalars(select(Finding).where(Finding.rule == "brute_force_ip")).all()
        assert [(f.subject, f.evidence["count"]) for f in found] == [("45.95.147.9", 120)]
        on_the_address = session.scalars(
            select(Finding.rule).where(Finding.subject == "45.95.147.9")
        )
        assert sorted(on_the_address) == ["brute_force_ip", "credential_stuffing"]
        intake(session, cfg, clock())
        incidents = session.scalars(select(Incident)).all()
        about_the_address = [i for i in incidents if "45.95.147.9" in i.group_key]
        assert [(i.kind, i.klass) for i in about_the_address] == [
            ("abnormal_behaviour", "security")
        ]


def test_a_request_in_both_the_edge_log_and_the_audit_log_is_used_and_audited_once(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # The edge log and the audit log carry the same requests, one every 30 minutes: usage said
    # 48 hours and 96 requests for one day, and the audit counted each day's lines twice.
    edge, audit = tmp_path / "access.log", tmp_path / "audit.jsonl"
    q3 = dt.datetime(2026, 7, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    moments = [q3 + i * dt.timedelta(minutes=30) for i in range(3 * 48)]
    edge.write_text("".join(nginx_line(m, i) + "\n" for i, m in enumerate(moments)))
    audit.write_text("".join(audit_line(m) + "\n" for m in moments))
    follow_logs(sqlite_store, config((edge, "nginx"), (audit, "auto")), clock)
    day = usage(sqlite_store, "svc-0042", q3, q3 + dt.timedelta(days=1))
    assert (day["hours"], day["requests"], day["busiest_hour_requests"]) == (24, 48, 2)
    assert day["status"] == {"2xx": 48}
    clock.now = dt.datetime(2026, 10, 2, 2, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        audited = log_audit(session, config((edge, "nginx"), (audit, "auto")), clock(), "2026q3")
    assert [audited.lines_per_day[d] for d in ("2026-07-01", "2026-07-02")] == [48, 48]
    # Where the edge log has no row for an hour, the audit log's row counts.
    edge.write_text("")
    with sqlite_store.session() as session:
        session.execute(delete(LogHourStat).where(LogHourStat.source == str(edge)))
    assert usage(sqlite_store, "svc-0042", q3, q3 + dt.timedelta(days=1))["requests"] == 48


def test_a_pass_that_fails_on_one_log_still_reads_the_others_and_keeps_its_cursor(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A reader that raised on a line of one log rolled back the pass, and no log after it was
    # ever read again.
    from monitord.accesslog import jsonlog

    audit, edge = tmp_path / "audit.jsonl", tmp_path / "access.log"
    minute = dt.timedelta(minutes=1)
    audit.write_text("".join(audit_line(START + i * minute) + "\n" for i in range(10)))
    edge.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(150)))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a reader bug")

    monkeypatch.setattr(jsonlog, "parse", broken)
    with logged("ERROR") as errors:
        report = follow_logs(sqlite_store, config((audit, "json"), (edge, "nginx")), clock)
    assert report.failed == [str(audit)] and report.sources == [str(edge)]
    assert errors == [
        f"access log {audit}: reading it failed (ValueError: a reader bug); its cursor is "
        "kept and the other logs are read\n"
    ]
    assert lines_seen(sqlite_store) == 150
    with sqlite_store.session() as session:
        assert session.get(LogSource, (writer_name(), str(audit))) is None
    monkeypatch.undo()
    report = follow_logs(sqlite_store, config((audit, "json"), (edge, "nginx")), clock)
    assert report.sources == [str(audit)] and lines_seen(sqlite_store) == 160


def test_the_quarterly_audit_waits_for_the_logs_to_pass_the_quarters_end(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # Written at start-up before the logs were read, the audit of 2026q3 found no stored hour
    # of 30 September (its only lines, at 23:xx, were not stored until the log moved past them)
    # and flagged a day without logs that was never corrected.
    from monitord.accesslog.work import audit_due

    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    q3 = dt.datetime(2026, 7, 1, 23, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    days = [q3 + dt.timedelta(days=d, minutes=m) for d in range(92) for m in (0, 40)]
    log.write_text("".join(nginx_line(m, i) + "\n" for i, m in enumerate(days)))
    clock.now = dt.datetime(2026, 9, 30, 16, 30, tzinfo=dt.UTC)  # 00:30 on 1 October
    assert audit_due(sqlite_store, cfg, clock) is None  # at start-up: nothing read yet
    follow_logs(sqlite_store, cfg, clock)
    assert audit_due(sqlite_store, cfg, clock) is None  # 30 September 23:00 is not stored
    october = q3 + dt.timedelta(days=92)
    with log.open("a") as handle:
        handle.writelines(
            nginx_line(october + i * dt.timedelta(hours=1), i) + "\n" for i in range(4)
        )
    clock.now += dt.timedelta(hours=3)
    follow_logs(sqlite_store, cfg, clock)
    assert audit_due(sqlite_store, cfg, clock) == "2026q3"
    with sqlite_store.session() as session:
        audit = session.get(LogAudit, "2026q3")
        assert audit is not None and audit.empty_days == [] and audit.lines == 184
        assert session.scalars(select(Finding).where(Finding.rule == "log_gap")).all() == []


def test_a_quiet_log_whose_first_hour_after_the_quarter_is_open_has_been_read_past_it(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A JSON audit log with one line at 00:10 on 1 October: every hour of the quarter stored,
    # but the audit waited for a stored hour after the end, which the open 00:00 hour was not,
    # and was written a day late, first by hand as "not read past the end".
    from monitord.accesslog.work import audit_due, logs_read_past
    from monitord.timeutil import quarter_bounds

    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    q3 = dt.datetime(2026, 7, 1, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    log.write_text("".join(audit_line(q3 + dt.timedelta(days=d)) + "\n" for d in range(92)))
    clock.now = dt.datetime(2026, 9, 30, 16, 30, tzinfo=dt.UTC)  # 00:30 on 1 October
    follow_logs(sqlite_store, cfg, clock)
    assert audit_due(sqlite_store, cfg, clock) is None  # no line after the end yet
    with log.open("a") as handle:
        handle.write(audit_line(dt.datetime(2026, 10, 1, 0, 10, tzinfo=q3.tzinfo)) + "\n")
    follow_logs(sqlite_store, cfg, clock)
    assert audit_due(sqlite_store, cfg, clock) == "2026q3"
    with sqlite_store.session() as session:
        audit = session.get(LogAudit, "2026q3")
        assert audit is not None and audit.complete
        assert audit.empty_days == [] and audit.lines == 92
    # A late line of the quarter's last hour, that hour open again: not read past it any more.
    with log.open("a") as handle:
        handle.write(audit_line(dt.datetime(2026, 9, 30, 23, 50, tzinfo=q3.tzinfo)) + "\n")
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        assert not logs_read_past(session, cfg, *quarter_bounds("2026q3"))


def test_the_quarterly_audit_counts_lines_lost_and_days_without_logs_among_its_findings(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A quarter with a log_lost finding reported "findings by rule: none": the 7.3.1 record
    # did not say that lines were lost.
    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    morning = dt.datetime(2026, 9, 10, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(morning + i * minute, i) + "\n" for i in range(100)))
    clock.now = morning + dt.timedelta(hours=3)
    follow_logs(sqlite_store, cfg, clock)
    log.unlink()  # rotated and removed before its rest was read
    log.write_text("".join(nginx_line(morning + i * minute, i) + "\n" for i in range(100, 200)))
    follow_logs(sqlite_store, cfg, clock)
    clock.now = dt.datetime(2026, 10, 5, 3, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        audit = log_audit(session, cfg, clock(), "2026q3")
    assert audit.findings_by_rule == {"log_lost": 1, "log_gap": 1}


def test_an_audit_run_by_hand_before_the_logs_passed_the_end_is_written_again_by_the_daemon(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # `log-audit` at 00:31 on 1 October, before the log had moved past 30 September 23:00,
    # found that day without logs; the daemon kept it as the quarter's audit, the report said
    # 无日志的日期：2026-09-30 and the log_gap finding stayed open.
    from monitord.accesslog.work import audit_due

    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    q3 = dt.datetime(2026, 7, 1, 23, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    days = [q3 + dt.timedelta(days=d, minutes=m) for d in range(92) for m in (0, 40)]
    log.write_text("".join(nginx_line(m, i) + "\n" for i, m in enumerate(days)))
    clock.now = dt.datetime(2026, 9, 30, 16, 31, tzinfo=dt.UTC)  # 00:31 on 1 October
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        by_hand = log_audit(session, cfg, clock(), "2026q3")
        assert by_hand.empty_days == ["2026-09-30"] and not by_hand.complete
    with log.open("a") as handle:
        october = q3 + dt.timedelta(days=92)
        handle.writelines(nginx_line(october + dt.timedelta(hours=i), i) + "\n" for i in range(4))
    clock.now += dt.timedelta(hours=3)
    follow_logs(sqlite_store, cfg, clock)
    assert audit_due(sqlite_store, cfg, clock) == "2026q3"
    with sqlite_store.session() as session:
        audit = session.get(LogAudit, "2026q3")
        assert audit is not None and audit.complete
        assert audit.empty_days == [] and audit.lines == 184
        gap = session.scalars(select(Finding).where(Finding.rule == "log_gap")).one()
        assert gap.state == "resolved"
    assert audit_due(sqlite_store, cfg, clock) is None  # the whole quarter's: kept


def test_the_quarterly_audit_is_written_a_day_after_the_end_whatever_the_logs(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    from monitord.accesslog.work import audit_due

    cfg = config((tmp_path / "never-written.log", "nginx"))
    at_work_since(sqlite_store, dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    clock.now = dt.datetime(2026, 10, 1, 15, 0, tzinfo=dt.UTC)  # 23:00 on 1 October
    assert audit_due(sqlite_store, cfg, clock) is None
    clock.now += dt.timedelta(hours=1)
    assert audit_due(sqlite_store, cfg, clock) == "2026q3"


def at_work_since(store: Store, moment: dt.datetime) -> None:
    """The store's first catalogue sync, at moment."""
    with store.session() as session:
        session.add(SyncRun(started_at=moment, finished_at=moment, source="test", outcome="ok"))


def test_no_audit_of_a_quarter_before_monitord_was_installed(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A new site's first start wrote 2026q3's audit: 92 days without logs, a 7.3.1 finding.
    from monitord.accesslog.work import audit_due

    cfg = config((tmp_path / "access.log", "nginx"))
    clock.now = dt.datetime(2026, 12, 5, 3, 0, tzinfo=dt.UTC)
    at_work_since(sqlite_store, clock.now)
    assert audit_due(sqlite_store, cfg, clock) is None
    with sqlite_store.session() as session:
        assert session.scalars(select(LogAudit)).all() == []
        assert session.scalars(select(Finding)).all() == []


def test_an_audit_run_by_hand_while_the_quarter_ran_is_written_again_once_it_ended(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # `log-audit --quarter 2026q4` on 5 December wrote 65 days; the daemon then never wrote the
    # whole quarter's, and the report went out with the partial one.
    from monitord.accesslog.work import audit_due

    cfg = config((tmp_path / "never-written.log", "nginx"))
    at_work_since(sqlite_store, dt.datetime(2026, 8, 1, tzinfo=dt.UTC))
    clock.now = dt.datetime(2026, 12, 5, 3, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        log_audit(session, cfg, clock(), "2026q4")
    clock.now = dt.datetime(2027, 1, 3, 3, 0, tzinfo=dt.UTC)
    assert audit_due(sqlite_store, cfg, clock) == "2026q4"
    with sqlite_store.session() as session:
        audit = session.get(LogAudit, "2026q4")
        assert audit is not None and len(audit.lines_per_day) == 92
    assert audit_due(sqlite_store, cfg, clock) is None  # written after the end: kept


def test_a_later_audit_without_the_gap_resolves_the_gap_finding(
    sqlite_store: Store, clock: FakeClock
) -> None:
    q3 = dt.datetime(2026, 7, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))

    def stored(days: range) -> None:
        with sqlite_store.session() as session:
            for day in days:
                session.add(
                    LogHourStat(
                        source="access.log",
                        service="svc-0042",
                        hour=q3 + dt.timedelta(days=day),
                        requests=1,
                        stats={"status": {"2xx": 1}},
                    )
                )

    stored(range(91))  # 30 September's hour is not stored yet
    clock.now = dt.datetime(2026, 10, 1, 2, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        assert log_audit(session, Settings(), clock(), "2026q3").empty_days == ["2026-09-30"]
    stored(range(91, 92))
    clock.now += dt.timedelta(hours=1)
    with sqlite_store.session() as session:
        assert log_audit(session, Settings(), clock(), "2026q3").empty_days == []
    with sqlite_store.session() as session:
        gap = session.scalars(select(Finding).where(Finding.rule == "log_gap")).one()
    assert (gap.state, gap.subject) == ("resolved", "2026q3")


def test_a_followed_log_and_a_symlink_to_it_are_read_once(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # Followed under both names, the log's requests were stored twice and usage doubled.
    log, link = tmp_path / "access.log", tmp_path / "current.log"
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(150)))
    link.symlink_to(log)
    with logged("WARNING") as warnings:
        report = follow_logs(sqlite_store, config((log, "nginx"), (link, "nginx")), clock)
        follow_logs(sqlite_store, config((log, "nginx"), (link, "nginx")), clock)
    assert report.duplicates == [str(link)] and report.sources == [str(log)]
    # Said once, not on every pass (288 times a day at the default interval).
    assert warnings == [f"access log {link} is the same file as {log}: it is read once, as {log}\n"]
    assert lines_seen(sqlite_store) == 150 and total_requests(sqlite_store) == 60


def test_a_symlink_repointed_to_another_folder_reads_the_rest_of_its_old_target(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # current.log -> d1/access.log, then -> d2/access.log (dated folders): the 10 lines still
    # in d1/access.log were called lost, with a warning and a log_lost finding.
    link, day1, day2 = tmp_path / "current.log", tmp_path / "d1", tmp_path / "d2"
    day1.mkdir()
    day2.mkdir()
    minute = dt.timedelta(minutes=1)

    def lines(numbers: range) -> str:
        return "".join(nginx_line(START + i * minute, i) + "\n" for i in numbers)

    (day1 / "access.log").write_text(lines(range(100)))
    link.symlink_to("d1/access.log")
    cfg = config((link, "nginx"))
    follow_logs(sqlite_store, cfg, clock)
    with (day1 / "access.log").open("a") as handle:
        handle.write(lines(range(100, 110)))
    (day2 / "access.log").write_text(lines(range(110, 130)))
    link.unlink()
    link.symlink_to("d2/access.log")
    with logged("WARNING") as warnings:
        assert follow_logs(sqlite_store, cfg, clock).lines == 30
    assert warnings == [] and lines_seen(sqlite_store) == 130
    with sqlite_store.session() as session:
        assert session.scalars(select(Finding).where(Finding.rule == "log_lost")).all() == []


def test_a_cursor_stored_before_it_kept_the_symlink_s_target_reads_on(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    log = tmp_path / "access.log"
    cfg = config((log, "nginx"))
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(50)))
    follow_logs(sqlite_store, cfg, clock)
    with sqlite_store.session() as session:
        source = session.get(LogSource, (writer_name(), str(log)))
        assert source is not None
        source.state = {k: v for k, v in source.state.items() if k != "target"}
    with log.open("a") as handle:
        handle.writelines(nginx_line(START + i * minute, i) + "\n" for i in range(50, 80))
    assert follow_logs(sqlite_store, cfg, clock).lines == 30
    assert lines_seen(sqlite_store) == 80


def test_analyse_reads_a_file_given_twice_or_linked_in_its_folder_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    folder = tmp_path / "logs"
    folder.mkdir()
    log = folder / "access.log"
    log.write_text("".join(nginx_line(START, i) + "\n" for i in range(45)))
    (folder / "current").symlink_to(log)
    assert main(["analyse", str(log), str(log), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["lines"] == 45
    assert f"monitord: {log} is already read (as {log}): read once" in captured.err
    assert main(["analyse", str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["lines"] == 45
    assert f"monitord: {folder / 'current'} is the same file as {log}: read once" in captured.err
    other = folder / "access.log.1"
    other.write_text(nginx_line(START, 99) + "\n")
    assert main(["analyse", str(log), str(folder)]) == 2
    assert f"{log} in {folder} is also given as {log}: give each file once" in (
        capsys.readouterr().err
    )


def test_analyse_names_a_file_of_a_folder_it_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file of the folder the user may not read (chmod 000: root reads it all the same, so the
    # refusal is made here) ended `analyse` with a PermissionError traceback.
    from monitord.cli import logs, main

    folder = tmp_path / "ud"
    folder.mkdir()
    (folder / "a.log").write_text(nginx_line(START, 0) + "\n")
    (folder / "b.log").write_text(nginx_line(START, 1) + "\n")
    opened = Path.open

    def refuse_b(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "b.log":
            raise PermissionError(13, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse_b)
    expected = f"monitord: {folder / 'b.log'}: cannot be read (Permission denied)"
    assert main(["analyse", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "Traceback" not in err
    assert f"in {folder}: make it readable, or move it out of the folder" in err
    # Made unreadable between the check and the reading: the same line.
    monkeypatch.setattr(logs, "_check_input", lambda path: None)
    assert main(["analyse", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and "Traceback" not in err


def test_a_json_log_with_a_byte_order_mark_is_told_as_json() -> None:
    from monitord.accesslog.sources import detect

    # Told as nginx, every line of the audit log was rejected.
    assert detect(b"\xef\xbb\xbf" + audit_line(START).encode() + b"\n") == "json"
    assert detect(b"\xef\xbb\xbf\n" + audit_line(START).encode() + b"\n") == "json"


def test_lines_lost_at_a_rotation_are_a_7_3_1_finding_not_only_a_warning(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # The warning went to the daemon's log alone: the quarter's evidence had a hole nobody saw.
    log = tmp_path / "access.log"
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(3)))
    follow_logs(sqlite_store, config((log, "nginx")), clock)
    read = log.stat().st_size
    with log.open("a") as handle:
        handle.write(nginx_line(START + 3 * minute, 3) + "\n")  # written, never read
    log.unlink()  # rotated and removed before the next pass
    log.write_text(nginx_line(START + 4 * minute, 4) + "\n")
    with logged("WARNING"):
        follow_logs(sqlite_store, config((log, "nginx")), clock)
    with sqlite_store.session() as session:
        (lost,) = session.scalars(select(Finding).where(Finding.rule == "log_lost")).all()
    assert (lost.clause, lost.subject, lost.evidence) == ("7.3.1", str(log), {"from_byte": read})
    assert lost.summary.startswith(f"访问日志 {log} 轮转后原文件未找到")


def test_log_audit_by_hand_of_a_quarter_before_monitord_was_at_work_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Run right after installing, it wrote 2026q3's audit: 92 days without logs, a 7.3.1 finding.
    from monitord.cli import main

    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    at_work_since(store, dt.datetime(2026, 10, 20, tzinfo=dt.UTC))
    store.dispose()
    assert main(["--config", str(config), "log-audit", "--quarter", "2026q3"]) == 2
    assert capsys.readouterr().err == (
        "monitord: 2026q3: monitord was not at work then (no catalogue sync before its end) and "
        "holds no log of it: there is nothing to audit\n"
    )
    assert main(["--config", str(config), "log-audit", "--quarter", "0001q1"]) == 2
    assert "is not a quarter monitord can hold (from 1970q1 on)" in capsys.readouterr().err


def test_each_quarter_s_audit_lists_the_vendor_operations_that_happened_in_it(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A vendor working on 30 September and again in October and December: its one running
    # finding gave the fourth quarter all 25 operations, and the third quarter none.
    log = tmp_path / "audit.jsonl"
    cst = dt.timezone(dt.timedelta(hours=8))
    second = dt.timedelta(seconds=1)
    vendor = {"vendor": "acme-it", "user_id": "v-1", "role": "admin"}
    september = dt.datetime(2026, 9, 30, 10, 0, tzinfo=cst)
    october = dt.datetime(2026, 10, 9, 10, 0, tzinfo=cst)
    december = dt.datetime(2026, 12, 1, 10, 0, tzinfo=cst)
    lines = [audit_line(september + i * second, action="admin", **vendor) for i in range(20)]
    lines += [audit_line(october + i * second, **vendor) for i in range(3)]
    lines += [audit_line(december + i * second, **vendor) for i in range(2)]
    lines.append(audit_line(dt.datetime(2027, 1, 2, 10, 0, tzinfo=cst)))  # past the quarter
    cfg = config((log, "json"))
    for part in (lines[:20], lines[20:23], lines[23:]):  # passes days apart, as the daemon reads
        with log.open("a") as handle:
            handle.writelines(line + "\n" for line in part)
        follow_logs(sqlite_store, cfg, clock)
    clock.now = dt.datetime(2027, 1, 3, 2, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        q3 = log_audit(session, cfg, clock(), "2026q3").vendor_operations
        q4 = log_audit(session, cfg, clock(), "2026q4").vendor_operations
    assert q3 == [
        {
            "subject": "acme-it",
            "summary": "第三方 acme-it 的人员账号操作 20 次（供审计）",
            "evidence": {"count": 20, "breakdown": {"v-1 admin": 20}},
        }
    ]
    assert q4 == [
        {
            "subject": "acme-it",
            "summary": "第三方 acme-it 的人员账号操作 5 次（供审计）",
            "evidence": {"count": 5, "breakdown": {"v-1 view": 5}},
        }
    ]


def test_analyse_cli_counts_a_request_in_both_the_edge_and_the_audit_log_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.cli import main

    # The same 10 requests in both logs read as 20; an hour only the audit log has counts.
    edge, audit = tmp_path / "access.log", tmp_path / "audit.jsonl"
    minute = dt.timedelta(minutes=1)
    edge.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(10)))
    later = START + dt.timedelta(hours=3)
    audit.write_text(
        "".join(audit_line(START + i * minute) + "\n" for i in range(10))
        + "".join(audit_line(later + i * minute) + "\n" for i in range(4))
    )
    assert main(["analyse", str(edge), str(audit)]) == 0
    out = capsys.readouterr().out
    assert "svc-0042  14" in out, out


def test_late_lines_in_a_renamed_log_do_not_count_its_requests_twice(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # logrotate `create`, and the edge server writing on to the renamed file until told to
    # reopen: a pass saw the new file empty, and the renamed one was then taken for its copy
    # and read again from its first byte, its 100 requests stored twice.
    log, renamed = tmp_path / "access.log", tmp_path / "access.log.1"
    cfg = config((log, "nginx"))
    minute = dt.timedelta(minutes=1)
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(100)))
    follow_logs(sqlite_store, cfg, clock)
    log.rename(renamed)
    log.write_text("")
    then = log.stat().st_mtime_ns - 60 * 10**9  # created at the rotation, a minute ago
    os.utime(log, ns=(then, then))
    follow_logs(sqlite_store, cfg, clock)
    with renamed.open("a") as handle:
        handle.writelines(nginx_line(START + i * minute, i) + "\n" for i in range(100, 105))
    log.write_text("".join(nginx_line(START + i * minute, i) + "\n" for i in range(105, 200)))
    follow_logs(sqlite_store, cfg, clock)
    follow_logs(sqlite_store, cfg, clock)
    # Hours 09:00 and 10:00 have closed: the 5 late lines were written after the old file
    # was left, the rest once each.
    assert total_requests(sqlite_store) == 115
    assert lines_seen(sqlite_store) == 195


def test_nul_and_lone_surrogates_in_audit_values_are_stored_not_a_log_switched_off(
    tmp_path: Path, store: Store, clock: FakeClock
) -> None:
    # One audit line with "\u0000" in its account or service failed every pass on PostgreSQL
    # (no NUL in a text), and one with "\ud800" on both stores: the cursor never moved again and
    # nothing after it in that log was analysed, the brute-force finding never stored.
    log = tmp_path / "audit.jsonl"
    cfg = config((log, "json"))
    second = dt.timedelta(seconds=20)
    lines = [
        audit_line(START + i * second, user_id=user, service_id=service, action="login_failed")
        for i, (user, service) in enumerate(
            [("admin\x00", "svc-\x004")] * 9 + [("admin-half-pair", "svc-0042")] * 9
        )
    ]
    lines = [line.replace("admin-half-pair", "admin\\ud800") for line in lines]
    lines.append(audit_line(START + dt.timedelta(hours=2)))  # closes the hours before
    for part in (lines[:9], lines[9:18], lines[18:]):  # each kind in a block of its own
        with log.open("a") as handle:
            handle.writelines(f"{line}\n" for line in part)
        assert follow_logs(store, cfg, clock).failed == []
    assert lines_seen(store) == 19
    assert total_requests(store) == 18
    with store.session() as session:
        subjects = session.scalars(
            select(Finding.subject).where(Finding.rule == "brute_force_login")
        ).all()
        services = set(session.scalars(select(LogHourStat.service)).all())
    assert len(subjects) == 1 and "admin\ufffd" in subjects[0]
    assert "svc-\ufffd4" in services


def test_analyse_names_a_file_whose_name_is_not_utf8_in_its_rejected_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rejected line's sample names its file: with a name of bytes that are not UTF-8,
    # `--json` wrote half its object, then a traceback (orjson takes no lone surrogate).
    from monitord.cli import main

    log = Path(os.fsdecode(bytes(tmp_path) + b"/acc\xff\xfe.log"))
    log.write_bytes(nginx_line(START, 0).encode() + b"\n\x00\x00\x00\xff\xfe garbage\n")
    assert main(["analyse", "--json", str(log)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["lines"], result["rejected"]) == (2, 1)
    assert result["rejected_samples"][0].startswith(f"{tmp_path}/acc\\xff\\xfe.log: ")
    assert main(["analyse", str(log)]) == 0
    # The text form quotes the sample as Python does: its backslashes doubled.
    assert f"{tmp_path}/acc\\\\xff\\\\xfe.log: " in capsys.readouterr().out


def test_a_followed_log_that_does_not_exist_is_said_once_and_read_once_it_is_there(
    tmp_path: Path, sqlite_store: Store, clock: FakeClock
) -> None:
    # A typo in [logs] follow, or a folder not there yet: nothing was ever said, and the only
    # sign was days without logs in the next quarterly audit.
    log = tmp_path / "nginx" / "access.log"
    cfg = config((log, "nginx"))
    with logged("INFO") as said:
        for _ in range(3):
            assert follow_logs(sqlite_store, cfg, clock).missing == [str(log)]
        log.parent.mkdir()
        log.write_text(
            "".join(nginx_line(START + i * dt.timedelta(minutes=1), i) + "\n" for i in range(150))
        )
        follow_logs(sqlite_store, cfg, clock)
        follow_logs(sqlite_store, cfg, clock)
    assert said == [
        f"access log {log}: no such file; it is read once it is there (check the path in "
        "[logs] follow)\n",
        f"access log {log} is there again: it is read\n",
    ]
    assert lines_seen(sqlite_store) == 150 and total_requests(sqlite_store) == 60
