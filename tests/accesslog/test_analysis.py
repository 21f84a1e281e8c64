"""Whole analyses of generated traffic: each planted behaviour is found, normal traffic of the
same size yields nothing, and follow mode's incremental feeding agrees with a one-shot run."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from typing import Any

import pytest

from monitord.accesslog import Analyzer
from monitord.accesslog.analysis import analyse_to_json
from monitord.timeutil import UTC
from monitord.types import FindingDraft
from rules.log_rule_file import load_rules
from rules.log_rules import LogRuleEngine
from tests.conftest import sigint_as_in_a_terminal
from tests.logrules import analyse

Logs = Any  # tests/accesslog/conftest.py's Logs: files and the events that made them

# rule → (subject kind, how to find the planted subject among the events)
PLANTED = {
    "brute_force_login": "user",
    "brute_force_ip": "ip",
    "credential_stuffing": "ip",
    "scanner_probing": "ip",
    "request_flood": "ip",
    "scraping": "user",
    "account_sharing": "user",
    "off_hours_privileged": "user",
    "role_grant_violation": "user",
    "level_violation": "user",
    "vendor_activity": "vendor",
    "error_burst": "service",
}


def by_hour(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statistics rows in one order, whatever order they were written in."""
    return sorted(rows, key=lambda r: (r["hour"], r["source"], r["service"]))


@pytest.fixture(scope="module")
def planted_result(planted_logs: Logs) -> dict[str, object]:
    return analyse([planted_logs.nginx, planted_logs.audit]).to_json()


def _subject(logs: Logs, rule: str, kind: str) -> str:
    column = {"user": "user_id", "service": "service_id"}.get(kind, kind)
    values = Counter(getattr(e, column) for e in logs.events if e.label == rule)
    return str(values.most_common(1)[0][0])


def test_every_rule_is_planted() -> None:
    assert set(PLANTED) == {r.name for r in load_rules()}


@pytest.mark.parametrize("rule", sorted(PLANTED))
def test_each_planted_behaviour_is_found(
    rule: str, planted_logs: Logs, planted_result: dict[str, object]
) -> None:
    kind = PLANTED[rule]
    subject = _subject(planted_logs, rule, kind)
    findings = planted_result["findings"]
    assert isinstance(findings, list)
    mine = [f for f in findings if f["rule"] == rule]
    assert [f["subject"][kind] for f in mine] == [subject], mine
    f = mine[0]
    assert f["count"] >= 1 and 1 <= len(f["evidence"]) <= 5
    assert f["first_seen"] <= f["last_seen"]
    assert set(f) == {"rule", "clause", "severity", "subject", "first_seen", "last_seen",
                      "count", "evidence"}  # fmt: skip


def test_normal_traffic_of_the_same_size_yields_no_finding(normal_logs: Logs) -> None:
    result = analyse([normal_logs.nginx, normal_logs.audit])
    assert result.lines > 40_000 and result.rejected == 0
    assert [f.to_json() for f in result.findings] == []


def test_json_output_shape_and_stats(planted_logs: Logs, planted_result: dict[str, object]) -> None:
    out = json.loads(json.dumps(planted_result, ensure_ascii=False))
    assert set(out) == {"lines", "rejected", "rejected_samples", "stats", "findings"}
    n_edge = len(planted_logs.events)
    n_audit = sum(1 for e in planted_logs.events if not e.edge_only)
    assert out["lines"] == n_edge + n_audit and out["rejected"] == 0
    per_source = Counter()
    for row in out["stats"]:
        per_source[row["source"]] += row["requests"]
        assert row["requests"] == sum(row["status"].values()) == sum(row["clients"].values())
        assert row["ips"] >= 1 and row["users"] <= row["requests"]
        lat = row["latency_ms"]
        assert lat["p50"] <= lat["p95"] <= lat["p99"]
        assert len(row["top_paths"]) <= 10
        dt.datetime.fromisoformat(row["hour"])
    assert per_source == {"nginx": n_edge, "json": n_audit}
    burst = [
        r for r in out["stats"] if r["service"] == "svc-0009" and r["status"].get("5xx", 0) >= 100
    ]
    assert burst, "the error burst shows in its service's hour"


def test_follow_mode_in_small_chunks_with_restarts_agrees(planted_logs: Logs) -> None:
    """Feed the audit log in 64 KiB pieces, persisting state through JSON between pieces, as the
    daemon's follow job does; the findings and stats equal a one-shot analysis."""
    data = planted_logs.audit.read_bytes()
    analyzer = Analyzer(LogRuleEngine.load())
    stats: list[dict[str, object]] = []
    offset = 0
    while offset < len(data):
        piece = data[offset : offset + (64 << 10)]
        offset += analyzer.feed(piece, final=offset + len(piece) >= len(data))
        stats += analyzer.take_closed_stats()
        state = json.loads(json.dumps(analyzer.to_state()))
        analyzer = Analyzer.from_state(state, LogRuleEngine.load())
    assert offset == len(data)
    final = analyzer.result()
    once = analyse([planted_logs.audit])
    assert final.lines == once.lines
    by_key = {(r["hour"], r["service"]): r for r in stats + final.stats}
    for row in once.stats:
        assert by_key.pop((row["hour"], row["service"])) == row
    assert by_key == {}
    got = {(f.rule, f.subject): f.count for f in final.findings}
    want = {(f.rule, f.subject): f.count for f in once.findings}
    assert got == want


def test_since_until_and_progress(planted_logs: Logs) -> None:
    seen: list[tuple[int, int]] = []
    since = dt.datetime(2026, 6, 2, 0, tzinfo=UTC)
    until = dt.datetime(2026, 6, 2, 4, tzinfo=UTC)  # 08:00-12:00 in Shanghai on the plant day
    result = analyse(
        [planted_logs.audit], since=since, until=until, progress=lambda *a: seen.append(a)
    )
    assert seen and seen[-1][0] == result.lines
    hours = {r["hour"] for r in result.stats}
    assert hours and all(since.isoformat() <= h < until.isoformat() for h in hours)
    assert "brute_force_login" in {f.rule for f in result.findings}
    assert "off_hours_privileged" not in {f.rule for f in result.findings}


def test_findings_convert_to_drafts(planted_result: dict[str, object], planted_logs: Logs) -> None:
    drafts = analyse([planted_logs.audit]).drafts()
    assert drafts and all(isinstance(d, FindingDraft) for d in drafts)
    vendor = next(d for d in drafts if d.rule == "vendor_activity")
    assert vendor.clause == "8.3 c" and vendor.subject_kind == "vendor"
    assert vendor.evidence["breakdown"] == {"u-vendor-1 admin": 5}
    assert vendor.evidence["count"] == 5 and vendor.summary


def test_streamed_json_equals_the_whole_result(planted_logs: Logs) -> None:
    # `monitord analyse --json` writes rows as their hours close (small blocks: many batches);
    # what it prints must be the very object a one-shot analysis returns.
    inputs = [planted_logs.nginx, planted_logs.audit]
    whole = analyse(inputs, block_size=1 << 16).to_json()
    out = io.StringIO()
    result = analyse_to_json(inputs, out, block_size=1 << 16, engine=LogRuleEngine.load())
    streamed = json.loads(out.getvalue())
    expected = json.loads(json.dumps(whole, ensure_ascii=False))

    assert by_hour(streamed.pop("stats")) == by_hour(expected.pop("stats"))
    assert streamed == expected
    assert result.stats == []  # nothing kept: the rows went out as they closed
    batches: list[int] = []
    analyse(inputs, block_size=1 << 16, on_stats=lambda rows: batches.append(len(rows)))
    assert len(batches) > 10 and sum(batches) == len(whole["stats"])


def test_statistics_do_not_depend_on_how_the_inputs_are_cut(planted_logs: Logs) -> None:
    # The edge log and the audit log cover the same days and are read side by side; an hour
    # must close only when both have passed it, whatever the block size, or one log's rows of
    # that hour would come late and be split into a second row.
    inputs = [planted_logs.nginx, planted_logs.audit]
    small = analyse(inputs, block_size=1 << 16).stats
    whole = analyse(inputs, block_size=1 << 24).stats
    keys = [(r["source"], r["service"], r["hour"]) for r in small]
    assert len(keys) == len(set(keys))

    assert by_hour(small) == by_hour(whole)


def test_both_logs_do_not_count_a_request_twice(planted_logs: Logs) -> None:
    # The edge log and the audit log record the same requests: a rule reading both counts the
    # lines of the log that saw most, never their sum.
    def counts(*paths: object) -> dict[tuple[str, str], int]:
        return {(f.rule, f.subject): f.count for f in analyse(list(paths)).findings}

    both = counts(planted_logs.nginx, planted_logs.audit)
    edge, audit = counts(planted_logs.nginx), counts(planted_logs.audit)
    shared = [k for k in both if k in edge and k in audit]
    assert {rule for rule, _ in shared} >= {"request_flood", "error_burst"}
    for key in shared:
        assert both[key] == max(edge[key], audit[key]), key


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS starts no thread on one core")
def test_analyse_starts_no_threads_or_allocator_it_does_not_use(normal_logs: Logs) -> None:
    # numpy's OpenBLAS would start a thread per further core at import, only to spin (analysis
    # does no linear algebra), and pyarrow its default mimalloc pool, whose reserved pages cost
    # peak memory though analysis allocates through the C library's malloc. After the command
    # only the interpreter's own thread is left (jemalloc's, which pyarrow starts whatever the
    # pool, names itself once it runs: it is given a few seconds to), and mimalloc never held a
    # byte.
    script = textwrap.dedent(
        f"""
        import io, os, sys
        from monitord.cli import main
        sys.stdout = io.StringIO()
        status = main(["analyse", "--json", {str(normal_logs.nginx)!r}])
        sys.stdout = sys.__stdout__
        import time
        import pyarrow as pa
        me = open("/proc/self/comm").read()
        TASKS = "/proc/self/task"
        deadline = time.monotonic() + 5
        while True:
            tasks = [open(f"/proc/self/task/{{t}}/comm").read() for t in os.listdir(TASKS)]
            if tasks.count(me) == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        print(status, tasks.count(me), pa.mimalloc_memory_pool().max_memory())
        """
    )
    unset = ("OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.split() == ["0", "1", "0"]


class _Recorded(io.BytesIO):
    """A log stream that notes which threads read it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.readers: set[str] = set()

    def readinto(self, buffer: Any) -> int:
        self.readers.add(threading.current_thread().name)
        return super().readinto(buffer)


def test_the_file_is_read_off_the_thread_that_adds_up(normal_logs: Logs) -> None:
    # The main thread (statistics and rules) is the one the analysis waits for: the next block
    # is read from the file on another thread meanwhile, and the result is the same.
    data = normal_logs.nginx.read_bytes()
    stream = _Recorded(data)
    got = analyse([stream], block_size=1 << 16).to_json()
    assert stream.readers and threading.main_thread().name not in stream.readers
    assert got == analyse([io.BytesIO(data)], block_size=1 << 16).to_json()


def reading_stdin(pid: int) -> bool:
    """Whether a thread of the process is blocked in read(2) on its standard input (x86-64:
    syscall 0, first argument 0), from /proc/PID/task/*/syscall."""
    tasks = f"/proc/{pid}/task"
    for tid in os.listdir(tasks):
        try:
            with open(f"{tasks}/{tid}/syscall", encoding="ascii") as handle:
                said = handle.read().split()
        except OSError:
            continue  # the thread ended meanwhile
        if said[:2] == ["0", "0x0"]:
            return True
    return False


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="reads x86-64 syscall numbers")
def test_ctrl_c_ends_analyse_while_it_waits_for_standard_input() -> None:
    # The read blocked on stdin ran on a pool's worker, which the process joined at exit: after
    # Ctrl-C it waited until the pipe was closed.
    process = subprocess.Popen(
        [sys.executable, "-m", "monitord.cli", "analyse", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=sigint_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 30
        while not reading_stdin(process.pid):
            assert time.monotonic() < deadline, "analyse never started reading"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
    finally:
        if process.poll() is None:
            process.kill()
        assert process.stdin is not None
        process.stdin.close()
        process.wait()


def test_a_brute_force_split_between_two_edge_logs_read_side_by_side_is_found(
    tmp_path: Any,
) -> None:
    # 50 failed logins from one address, 5 s apart, alternating between two edge servers; the
    # first server also saw another address fail once an hour later. The first log's later
    # line closed the 15:00 windows before the second log's half of the attack was read.
    def line(moment: dt.datetime, ip: str) -> str:
        stamp = moment.strftime("%d/%b/%Y:%H:%M:%S +0800")
        return f'{ip} - - [{stamp}] "POST /auth/login HTTP/1.1" 401 10 "-" "curl"\n'

    start = dt.datetime(2026, 7, 3, 15, 0)
    attack = [line(start + dt.timedelta(seconds=5 * i), "45.95.147.9") for i in range(50)]
    edge_a, edge_b = tmp_path / "a.log", tmp_path / "b.log"
    edge_a.write_text("".join(attack[0::2]) + line(start + dt.timedelta(hours=1), "58.1.1.1"))
    edge_b.write_text("".join(attack[1::2]))
    result = analyse([str(edge_a), str(edge_b)])
    found = {(f.rule, f.subject): f.count for f in result.findings}
    assert found.get(("brute_force_ip", "45.95.147.9")) == 50
