"""The evidence register as its users run it: `monitord evidence add|list|verify`, and the query
the compliance rules and the report read (`evidence.documents`)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from monitord.cli import main
from monitord.errors import UsageError
from monitord.evidence import NewDocument, add_document, documents
from monitord.evidence.register import store_file
from monitord.store import Store, open_store
from monitord.store.models import AuditEntry, EvidenceDocument
from monitord.timeutil import quarter_bounds
from tests.conftest import FakeClock
from tests.fakeportal import make_service


def db_of(config: Path) -> Store:
    return open_store(f"sqlite:///{config.parent / 'm.db'}")


def add(config: Path, *extra: str, file: Path, clause: str = "7.3.2") -> int:
    return main(
        [
            "--config",
            str(config),
            "evidence",
            "add",
            "--clause",
            clause,
            "--kind",
            "pentest",
            "--file",
            str(file),
            "--date",
            "2026-09-20",
            "--by",
            "张三",
            *extra,
        ]
    )


def test_a_document_is_stored_once_by_its_hash_private_and_audited(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "渗透测试报告.pdf"
    report.write_bytes(b"%PDF-1.4 pen test of the portal\n" * 1000)
    sha = hashlib.sha256(report.read_bytes()).hexdigest()

    assert add(config, "--note", "第三季度渗透测试", file=report) == 0
    assert f"filed evidence 1: pentest for clause 7.3.2, dated 2026-09-20, sha256 {sha}" in (
        capsys.readouterr().out
    )
    # The same file again for the same clause adds nothing; for another clause (8.3 b, spelt
    # "8.3b") it is a second entry, and still one stored file.
    assert add(config, file=report) == 0
    assert "already in the register as evidence 1" in capsys.readouterr().out
    assert add(config, file=report, clause="8.3b") == 0
    capsys.readouterr()

    stored = [p for p in (tmp_path / "evidence").rglob("*") if p.is_file()]
    assert [p.relative_to(tmp_path / "evidence").as_posix() for p in stored] == [f"{sha[:2]}/{sha}"]
    assert stored[0].read_bytes() == report.read_bytes()
    assert stat.S_IMODE(stored[0].stat().st_mode) == 0o600

    assert main(["--config", str(config), "evidence", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["clause"], r["kind"], r["file_name"], r["sha256"]) for r in rows] == [
        (1, "7.3.2", "pentest", "渗透测试报告.pdf", sha),
        (2, "8.3 b", "pentest", "渗透测试报告.pdf", sha),
    ]
    assert rows[0]["filed_by"] == "张三"
    assert rows[0]["note"] == "第三季度渗透测试"
    assert rows[0]["size"] == report.stat().st_size
    store = db_of(config)
    with store.session() as session:
        trail = session.scalars(select(AuditEntry).where(AuditEntry.action == "evidence.add"))
        assert [(a.actor, a.subject, a.detail["sha256"]) for a in trail] == [
            ("张三", "evidence 1", sha),
            ("张三", "evidence 2", sha),
        ]
    store.dispose()


def test_filing_the_same_file_again_with_another_kind_or_date_corrects_it_audited(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It said "nothing added", exit 0, and a mistyped --kind or --date could not be corrected.
    report = tmp_path / "风险评估.pdf"
    report.write_bytes(b"%PDF-1.4 risk assessment\n")
    assert add(config, file=report) == 0  # filed as a pen test dated 2026-09-20: a mistake
    capsys.readouterr()
    again = ("--kind", "risk_assessment", "--date", "2026-09-21")
    assert add(config, *again, file=report) == 0
    assert capsys.readouterr().out.startswith(
        "already in the register as evidence 1: risk_assessment for clause 7.3.2, dated 2026-09-21"
    )
    assert main(["--config", str(config), "evidence", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["kind"], r["document_date"]) for r in rows] == [
        (1, "risk_assessment", "2026-09-21")
    ]
    store = db_of(config)
    with store.session() as session:
        (corrected,) = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "evidence.correct")
        )
        assert corrected.detail == {
            "before": {"kind": "pentest", "document_date": "2026-09-20"},
            "after": {"kind": "risk_assessment", "document_date": "2026-09-21"},
        }
    store.dispose()
    assert add(config, *again, file=report) == 0
    assert "nothing added" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"--clause": "7.3.9"},
            "--clause '7.3.9': not a clause of DB3205/T 1129-2024; expected one of 6.1, ",
        ),
        (
            {"--kind": "audit"},
            "--kind 'audit': expected one of pentest, risk_assessment, security_plan, drill, other",
        ),
        ({"--date": "2099-01-01"}, "--date 2099-01-01: is in the future (today is "),
        ({"--date": "20.9.2026"}, "--date '20.9.2026': expected a date such as 2026-09-20"),
        ({"--file": "missing.pdf"}, "--file '{tmp}/missing.pdf': cannot be read (No such file"),
        ({"--file": "docs"}, "--file '{tmp}/docs': is a folder, not a file"),
        ({"--file": "empty.pdf"}, "--file '{tmp}/empty.pdf': the file is empty"),
        ({"--service": "svc-9999"}, "--service 'svc-9999': no such service in the store"),
        ({"--by": " "}, "--by: empty; say who is doing this"),
    ],
    ids=["clause", "kind", "future", "bad-date", "missing", "folder", "empty", "service", "by"],
)
def test_every_mistake_is_one_line_naming_the_flag_and_nothing_is_filed(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4\n")
    (tmp_path / "empty.pdf").write_bytes(b"")
    (tmp_path / "docs").mkdir()
    flags = {
        "--clause": "7.3.2",
        "--kind": "pentest",
        "--file": "report.pdf",
        "--date": "2026-09-20",
        "--by": "张三",
    }
    flags.update(change)
    flags["--file"] = str(tmp_path / flags["--file"])
    argv = ["--config", str(config), "evidence", "add"]
    for flag, value in flags.items():
        argv += [flag, value]

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("monitord: " + message.format(tmp=tmp_path))
    assert err.count("\n") == 1
    assert not (tmp_path / "evidence").exists()
    store = db_of(config)
    with store.session() as session:
        assert session.scalars(select(EvidenceDocument)).all() == []
    store.dispose()


def test_a_document_about_a_service_names_a_service_of_the_catalogue(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(42)]}), encoding="utf-8")
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    plan = tmp_path / "plan.docx"
    plan.write_bytes(b"security plan")
    argv = ["--config", str(config), "evidence", "add", "--clause", "8.2"]
    argv += ["--kind", "security_plan", "--file", str(plan), "--date", "2026-03-01"]
    assert main([*argv, "--service", "svc-0042", "--by", "服务商"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "evidence", "list", "--kind", "security_plan"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:5] == ["ID", "CLAUSE", "KIND", "SERVICE", "DATE"]
    assert table[1].split()[:5] == ["1", "8.2", "security_plan", "svc-0042", "2026-03-01"]


def test_the_listing_shows_filing_times_in_shanghai_time(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], clock: FakeClock
) -> None:
    drill = tmp_path / "drill.pdf"
    drill.write_bytes(b"drill record")
    store = db_of(config)
    with store.session() as session:
        new = NewDocument("6.4 d", "drill", drill, dt.date(2026, 10, 30), "王五")
        add_document(session, tmp_path / "evidence", new, clock())  # 2026-11-02 01:00 UTC
    store.dispose()
    assert main(["--config", str(config), "evidence", "list"]) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "2026-11-02 09:00" in row
    assert "6.4 d" in row


def test_documents_are_found_by_clause_kind_and_quarter(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    files = tmp_path / "evidence"
    filed = [
        ("7.3.2", "pentest", dt.date(2026, 9, 30)),  # the last day of 2026q3
        ("7.3.2", "pentest", dt.date(2026, 10, 1)),  # the first day of 2026q4
        ("7.3.2", "risk_assessment", dt.date(2026, 8, 1)),
        ("8.2", "security_plan", dt.date(2026, 7, 1)),
    ]
    with store.session() as session:
        for number, (clause, kind, day) in enumerate(filed):
            source = tmp_path / f"doc{number}.pdf"
            source.write_bytes(f"document {number}".encode())
            add_document(session, files, NewDocument(clause, kind, source, day, "张三"), clock())
    start, end = quarter_bounds("2026q3")
    with store.session() as session:
        q3 = documents(session, since=start, until=end)
        assert [(d.clause, d.document_date) for d in q3] == [
            ("8.2", dt.date(2026, 7, 1)),
            ("7.3.2", dt.date(2026, 8, 1)),
            ("7.3.2", dt.date(2026, 9, 30)),
        ]
        pentests = documents(session, clause="7.3.2", kind="pentest", since=start, until=end)
        assert [d.document_date for d in pentests] == [dt.date(2026, 9, 30)]
        assert len(documents(session, clause="7.3.2")) == 3


def test_a_date_after_today_in_shanghai_is_refused(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    source = tmp_path / "r.pdf"
    source.write_bytes(b"r")
    clock.now = dt.datetime(2026, 11, 2, 15, 30, tzinfo=dt.UTC)  # 23:30 in Shanghai
    with store.session() as session:
        tomorrow = NewDocument("7.3.2", "pentest", source, dt.date(2026, 11, 3), "张三")
        with pytest.raises(UsageError, match=r"--date 2026-11-03: is in the future"):
            add_document(session, tmp_path / "evidence", tomorrow, clock())
        today = NewDocument("7.3.2", "pentest", source, dt.date(2026, 11, 2), "张三")
        add_document(session, tmp_path / "evidence", today, clock())


def test_an_evidence_folder_that_cannot_be_written_is_named_and_nothing_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\nfiles_dir = "{blocker / "evidence"}"\n'
    )
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF")
    assert add(config, file=report) == 2
    err = capsys.readouterr().err
    assert err.startswith("monitord: store.files_dir: cannot write the document into ")
    assert err.count("\n") == 1
    store = db_of(config)
    with store.session() as session:
        assert session.scalars(select(EvidenceDocument)).all() == []
    store.dispose()


def test_verify_names_the_files_that_are_missing_or_changed(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.pdf", tmp_path / "b.pdf"
    first.write_bytes(b"first report")
    second.write_bytes(b"second report")
    assert add(config, file=first) == 0
    assert add(config, file=second) == 0
    assert main(["--config", str(config), "evidence", "verify"]) == 0
    assert "2 document(s) checked: every file is as it was filed" in capsys.readouterr().out

    folder = tmp_path / "evidence"
    sha_a = hashlib.sha256(b"first report").hexdigest()
    sha_b = hashlib.sha256(b"second report").hexdigest()
    (folder / sha_a[:2] / sha_a).unlink()
    (folder / sha_b[:2] / sha_b).write_bytes(b"second report, edited")
    assert main(["--config", str(config), "evidence", "verify"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"evidence 1: {folder / sha_a[:2] / sha_a}: missing",
        f"evidence 2: {folder / sha_b[:2] / sha_b}: changed",
        "2 of 2 document(s) are not as they were filed",
    ]


def test_verify_reports_a_stored_file_that_is_not_a_regular_file_and_never_reads_it(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A FIFO or a symlink to /dev/zero hung verify; a symlink to a copy outside the folder
    # passed as "as it was filed".
    contents = [b"first report", b"second report", b"third report"]
    for n, content in enumerate(contents):
        source = tmp_path / f"{n}.pdf"
        source.write_bytes(content)
        assert add(config, file=source) == 0
    folder = tmp_path / "evidence"
    stored = [folder / h[:2] / h for h in (hashlib.sha256(c).hexdigest() for c in contents)]
    outside = tmp_path / "outside-copy.pdf"
    outside.write_bytes(contents[0])
    for path in stored:
        path.unlink()
    stored[0].symlink_to(outside)
    stored[1].symlink_to("/dev/zero")
    os.mkfifo(stored[2])
    capsys.readouterr()
    assert main(["--config", str(config), "evidence", "verify"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"evidence 1: {stored[0]}: not a regular file (a symbolic link)",
        f"evidence 2: {stored[1]}: not a regular file (a symbolic link)",
        f"evidence 3: {stored[2]}: not a regular file (a FIFO)",
        "3 of 3 document(s) are not as they were filed",
    ]


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux's /proc")
def test_a_copy_that_fails_midway_leaves_nothing_in_the_folder(tmp_path: Path) -> None:
    # /proc/self/mem opens, then fails at its first read (EIO): a source that breaks mid-copy.
    folder = tmp_path / "evidence"
    with pytest.raises(OSError):
        store_file(Path("/proc/self/mem"), folder)
    assert folder.is_dir()
    assert list(folder.rglob("*")) == []


def test_a_document_over_2_gib_is_filed_on_postgresql(
    pg_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    # A 2.2 GB packet capture filed as evidence: "integer out of range" on PostgreSQL. Its size
    # is what the column must hold; copying 2 GB here would cost the suite half a minute.
    capture = tmp_path / "pentest-capture.pcap"
    capture.write_bytes(b"pcap")
    with pg_store.session() as session:
        new = NewDocument("7.3.2", "pentest", capture, dt.date(2026, 10, 30), "张三")
        document, filed = add_document(session, tmp_path / "evidence", new, clock())
        assert filed == "added"
        document.size = 2**31 + 4
    with pg_store.session() as session:
        [row] = session.scalars(select(EvidenceDocument)).all()
        assert row.size == 2**31 + 4


def test_a_document_the_store_refuses_leaves_no_copy_in_the_folder(
    sqlite_store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    source = tmp_path / "pentest.pdf"
    source.write_bytes(b"%PDF-1.4 report")
    files = tmp_path / "evidence"
    with sqlite_store.session() as session:
        session.execute(
            text(
                "CREATE TRIGGER refuse BEFORE INSERT ON evidence_documents "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    with pytest.raises(IntegrityError, match="refused"), sqlite_store.session() as session:
        new = NewDocument("7.3.2", "pentest", source, dt.date(2026, 10, 30), "张三")
        add_document(session, files, new, clock())
    assert [p for p in files.rglob("*") if p.is_file()] == []
