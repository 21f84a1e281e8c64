"""`monitord compliance` and `monitord evaluation` on a seeded store, and the daemon's job."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from monitord.cli import main
from monitord.config import Settings, parse_config
from monitord.runtime.app import App
from monitord.runtime.jobs import compliance_evaluation
from monitord.store import Store, open_store
from monitord.store.models import ComplianceResult, LogAudit, SyncRun
from monitord.store.retention import purge
from monitord.timeutil import quarter_start, system_clock
from tests.compliance.seed import END, Q3, START, seed_platform, seed_services, t
from tests.conftest import FakeClock


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()  # as the daemon leaves it
    return path


@pytest.fixture
def seeded(config: Path, tmp_path: Path) -> Path:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        seed_services(store)
    finally:
        store.dispose()
    return config


def test_json_lists_every_verdict_with_null_for_the_platform(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(seeded), "compliance", "--quarter", Q3, "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert set(verdicts[0]) == {
        "rule", "clause", "service_id", "quarter", "passed", "pending", "evidence"
    }  # fmt: skip
    audit = next(v for v in verdicts if v["rule"] == "log_audit")
    assert audit["service_id"] is None and audit["passed"] is False and audit["quarter"] == Q3
    gaps = next(
        v for v in verdicts if v["rule"] == "probed_throughout" and v["service_id"] == "bad"
    )
    assert gaps["evidence"]["gap_hours"] == 3


def test_the_table_counts_each_rule_and_names_who_failed(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(seeded), "compliance", "--quarter", Q3]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"compliance {Q3}: ")
    assert lines[1].split() == ["RULE", "CLAUSE", "PASSED", "FAILED", "PENDING", "FAILING"]
    filing = next(line for line in lines if line.startswith("filing_complete "))
    assert filing.split()[1:5] == ["6.2.2", "10", "1", "0"] and filing.split()[-1] == "bad"
    pentest = next(line for line in lines if line.startswith("quarterly_pentest "))
    assert pentest.split()[-1] == "(platform)"


def test_the_verdicts_shown_are_stored_for_the_report(seeded: Path, tmp_path: Path) -> None:
    assert main(["--config", str(seeded), "compliance", "--quarter", Q3]) == 0
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.session() as session:
            rows = session.scalar(
                select(func.count())
                .select_from(ComplianceResult)
                .where(ComplianceResult.quarter == Q3)
            )
    finally:
        store.dispose()
    assert rows and rows > 20


def stored_verdicts(url: str, quarter: str) -> list[tuple[object, ...]]:
    store = open_store(url)
    try:
        with store.session() as session:
            return [
                tuple(row)
                for row in session.execute(
                    select(
                        ComplianceResult.rule,
                        ComplianceResult.subject,
                        ComplianceResult.passed,
                        ComplianceResult.evidence,
                        ComplianceResult.evaluated_at,
                    )
                    .where(ComplianceResult.quarter == quarter)
                    .order_by(ComplianceResult.id)
                )
            ]
    finally:
        store.dispose()


@pytest.mark.parametrize("command", ["compliance", "evaluation"])
def test_a_quarter_whose_records_are_purged_is_not_judged_again(
    seeded: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Judged again once a purge had removed the state changes of its outages and its first
    # sync run, a quarter passed 7.2.2 and failed 7.3.1: its verdicts of the time were replaced.
    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--config", str(seeded), "compliance", "--quarter", Q3]) == 0
    judged = stored_verdicts(url, Q3)
    store = open_store(url)
    try:
        # Long after: the quarter's roll-ups are past probes.rollup_retention_days.
        deleted = purge(store, parse_config({}, "t", env={}), END + dt.timedelta(days=430))
    finally:
        store.dispose()
    assert deleted["probe_rollups"] > 0
    capsys.readouterr()

    assert main(["--config", str(seeded), command, "--quarter", Q3]) == 2
    assert capsys.readouterr().err == (
        f"monitord: {Q3} is not judged again: records it is judged from (state changes, sync "
        f"runs, roll-ups) before {END + dt.timedelta(days=30):%Y-%m-%d %H:%M} Asia/Shanghai "
        "are purged (store.retention_days, probes.rollup_retention_days); its stored "
        "verdicts stand\n"
    )
    assert stored_verdicts(url, Q3) == judged


def test_the_evaluation_ranks_the_services(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(seeded), "evaluation", "--quarter", Q3, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    ranked = [s["rank"] for s in scores if "availability" in s["parts"]]
    assert ranked == list(range(1, len(ranked) + 1))
    # A service no probe measured follows, unranked.
    assert {s["rank"] for s in scores if "availability" not in s["parts"]} <= {0}
    assert scores[0]["service_id"] == "good" and scores[-1]["score"] <= scores[0]["score"]
    assert main(["--config", str(seeded), "compliance", "--quarter", Q3, "--scores"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"evaluation {Q3}: {len(scores)} services (clause 9.2)"
    assert "综合得分" in out


def test_the_current_quarter_is_the_default(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "compliance", "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    assert {v["quarter"] for v in verdicts} == {quarter_start(system_clock())[0]}


def test_a_duty_not_due_yet_is_pending_not_passed(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # While the quarter runs, its log audit and vendor audit are not due: they were counted
    # PASSED, as if done.
    assert main(["--config", str(config), "compliance"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for rule in ("log_audit", "vendor_operations_audited"):
        line = next(line for line in lines if line.startswith(f"{rule} "))
        assert line.split()[-4:] == ["0", "0", "1", "-"], line
    assert lines[0].endswith(" pending")
    assert main(["--config", str(config), "compliance", "--json"]) == 0
    verdicts = json.loads(capsys.readouterr().out)
    audit = next(v for v in verdicts if v["rule"] == "log_audit")
    assert audit["pending"] is True


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("2026q5", "--quarter: '2026q5' is not a quarter such as 2026q3"),
        ("2099q1", "--quarter: '2099q1' has not begun: it starts 2099-01-01 00:00 Asia/Shanghai"),
    ],
)
@pytest.mark.parametrize("command", ["compliance", "evaluation"])
def test_a_bad_quarter_is_one_line_and_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str], label: str, message: str, command: str
) -> None:
    assert main(["--config", str(config), command, "--quarter", label]) == 2
    assert capsys.readouterr().err == f"monitord: {message}\n"


def test_the_job_evaluates_the_current_quarter_and_the_last_one_once_audited(
    sqlite_store: Store,
) -> None:
    seed_platform(sqlite_store, good=True)
    clock = FakeClock(t("2026-10-02 09:00"))  # Q4 has begun; Q3's audit is not written yet
    app = App(settings=Settings(), store=sqlite_store, clock=clock)

    def evaluated() -> dict[str, list[object]]:
        with sqlite_store.session() as session:
            rows = session.execute(
                select(ComplianceResult.quarter, ComplianceResult.evaluated_at)
            ).all()
        out: dict[str, list[object]] = {}
        for quarter, at in rows:
            out.setdefault(quarter, []).append(at)
        return {q: sorted(set(ats)) for q, ats in out.items()}

    with sqlite_store.session() as session:  # the audit is written a week into the quarter
        session.delete(session.get(LogAudit, Q3))
    with app:
        asyncio.run(compliance_evaluation(app))
        assert evaluated() == {Q3: [clock.now], "2026q4": [clock.now]}
        first = clock.now
        clock.advance(hours=6)
        asyncio.run(compliance_evaluation(app))
        assert evaluated() == {Q3: [first], "2026q4": [clock.now]}  # Q3 done: not again
        with sqlite_store.session() as session:
            session.add(
                LogAudit(quarter=Q3, created_at=clock.now, period_start=START, period_end=END)
            )
        clock.advance(hours=6)
        asyncio.run(compliance_evaluation(app))
        assert evaluated() == {Q3: [clock.now], "2026q4": [clock.now]}  # once more, audited


@pytest.mark.parametrize(
    "command",
    [
        ["compliance", "--json"],
        ["evaluation", "--json"],
        ["log-audit"],
        ["review", "admins", "--file", "accounts.csv"],
        ["report"],
    ],
)
def test_every_quarter_argument_takes_either_case(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:  # at work in 2026q3: its log audit has a quarter to audit
        session.add(SyncRun(started_at=START, finished_at=START, source="test", outcome="ok"))
    store.dispose()
    accounts = tmp_path / "accounts.csv"
    accounts.write_text(
        "account,role,vendor,last_login,granted_by,end_date\nboss,法人,,2026-09-01,,\n",
        encoding="utf-8",
    )
    config.write_text(config.read_text() + f'[report]\ndir = "{tmp_path / "reports"}"\n')
    command = [str(accounts) if part == "accounts.csv" else part for part in command]
    assert main(["--config", str(config), *command, "--quarter", "2026Q3"]) == 0
    assert "2026Q3" not in capsys.readouterr().out  # recorded and shown as 2026q3
