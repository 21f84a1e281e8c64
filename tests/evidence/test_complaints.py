"""Users' complaints from the portal's export (clause 9.1): `monitord complaints import FILE`,
CSV or JSON lines, idempotent by id, bad rows named by line and skipped without losing the
good ones; and `evidence.complaints_in`, which the service evaluation reads."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.cli import main
from monitord.evidence import complaints_in, import_complaints
from monitord.store import Store, open_store
from monitord.store.models import AuditEntry, Complaint
from monitord.timeutil import UTC, quarter_bounds
from tests.conftest import FakeClock

CSV = (
    "\ufeffid,service_id,received_at,category,status,summary\n"
    "C-1,svc-0001,2026-09-01T10:00,办理投诉,处理中,办理进度很慢\n"
    '"C-2",,2026-09-02,咨询,已办结,"多行的\n摘要"\n'
    "C-3,svc-0002,2026-09-30T23:59:59+08:00,投诉,已受理,\n"
)


def stored(config: Path) -> dict[str, tuple[str | None, dt.datetime, str, str]]:
    store = open_store(f"sqlite:///{config.parent / 'm.db'}")
    with store.session() as session:
        rows = {
            c.external_id: (c.service_id, c.received_at, c.status, c.summary)
            for c in session.scalars(select(Complaint))
        }
    store.dispose()
    return rows


def run_import(config: Path, path: Path) -> int:
    return main(["--config", str(config), "complaints", "import", str(path), "--by", "赵六"])


def test_a_csv_export_imported_twice_adds_nothing_and_a_changed_status_updates_it(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "complaints.csv"
    export.write_text(CSV, encoding="utf-8")
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "3 complaint(s): 3 added, 0 updated, 0 unchanged\n"
    assert stored(config) == {
        "C-1": (
            "svc-0001",
            dt.datetime(2026, 9, 1, 2, 0, tzinfo=UTC),
            "处理中",
            "办理进度很慢",
        ),
        "C-2": (None, dt.datetime(2026, 9, 1, 16, 0, tzinfo=UTC), "已办结", "多行的\n摘要"),
        "C-3": ("svc-0002", dt.datetime(2026, 9, 30, 15, 59, 59, tzinfo=UTC), "已受理", ""),
    }

    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "3 complaint(s): 0 added, 0 updated, 3 unchanged\n"
    export.write_text(CSV.replace("处理中", "已办结"), encoding="utf-8")
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "3 complaint(s): 0 added, 1 updated, 2 unchanged\n"
    after = stored(config)
    assert len(after) == 3
    assert after["C-1"][2] == "已办结"

    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    with store.session() as session:
        trail = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "complaints.import")
        ).all()
        assert [(a.actor, a.detail["added"], a.detail["updated"]) for a in trail] == [
            ("赵六", 3, 0),
            ("赵六", 0, 0),
            ("赵六", 0, 1),
        ]
    store.dispose()


def test_an_export_excel_saved_as_plain_csv_on_a_chinese_windows_is_read(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Excel's "CSV" (not "CSV UTF-8") on a Chinese Windows writes GB18030 without a mark.
    export = tmp_path / "complaints.csv"
    export.write_bytes(CSV.removeprefix("\ufeff").encode("gb18030"))
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "3 complaint(s): 3 added, 0 updated, 0 unchanged\n"
    after = stored(config)
    assert after["C-1"][2:] == ("处理中", "办理进度很慢")
    assert after["C-2"][3] == "多行的\n摘要"


def test_json_lines_are_read_too(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "export.txt"  # no telling suffix: the first character says JSON
    lines = [
        {"id": 1001, "service_id": "svc-0001", "received_at": "2026-08-01T09:00:00+08:00"},
        {"id": "1002", "received_at": "2026-08-02T01:00:00Z", "category": "建议", "extra": 1},
    ]
    export.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n")
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "2 complaint(s): 2 added, 0 updated, 0 unchanged\n"
    assert stored(config) == {
        "1001": ("svc-0001", dt.datetime(2026, 8, 1, 1, 0, tzinfo=UTC), "", ""),
        "1002": (None, dt.datetime(2026, 8, 2, 1, 0, tzinfo=UTC), "", ""),
    }


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "header-only.csv"])
def test_an_empty_export_is_fine(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    export = tmp_path / name
    export.write_text("id,received_at\n" if name.startswith("header") else "")
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "0 complaint(s): 0 added, 0 updated, 0 unchanged\n"


def test_bad_rows_are_named_by_line_and_skipped_and_the_good_ones_kept(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "complaints.csv"
    export.write_text(
        "id,service_id,received_at,category,status,summary\n"
        "C-1,svc-0001,2026-09-01T10:00,投诉,open,ok\n"
        "C-2,svc-0001,yesterday,投诉,open,bad time\n"
        ",svc-0001,2026-09-01,投诉,open,no id\n"
        f"C-4,svc-0001,2026-09-01,投诉,{'x' * 41},status too long\n"
        "C-5,svc-0001,2026-09-01,投诉,open,x,surplus\n"
        "C-6,svc-0002,2026-09-03,投诉,open,ok\n",
        encoding="utf-8",
    )
    assert run_import(config, export) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"monitord: {export}: line 3: received_at 'yesterday': expected an ISO 8601 time such "
        "as 2026-09-20T10:30: skipped",
        f"monitord: {export}: line 4: id: missing: skipped",
        f"monitord: {export}: line 5: status: longer than 40 characters: skipped",
        f"monitord: {export}: line 6: more values than the header has columns: skipped",
    ]
    assert captured.out == "2 complaint(s): 2 added, 0 updated, 0 unchanged; 4 bad row(s) skipped\n"
    assert sorted(stored(config)) == ["C-1", "C-6"]


def test_bad_json_lines_are_named_and_skipped(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "complaints.jsonl"
    export.write_text(
        '{"id": "A", "received_at": "2026-09-01"}\n'
        "not json\n"
        "[1, 2]\n"
        '{"id": true, "received_at": "2026-09-01"}\n'
        '{"id": "B"}\n'
        '{"id": "C", "received_at": "2026-09-02", "summary": "第一段\u2028第二段"}\n'
        '[{"id": "D", "received_at": "2026-09-02"}]\n'
    )
    assert run_import(config, export) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"monitord: {export}: line 2: not a JSON object: skipped",
        f"monitord: {export}: line 3: a JSON array; expected one JSON object per line (JSON "
        "lines): skipped",
        f"monitord: {export}: line 4: id: expected text, got bool: skipped",
        f"monitord: {export}: line 5: received_at: missing: skipped",
        f"monitord: {export}: line 7: a JSON array; expected one JSON object per line (JSON "
        "lines): skipped",
    ]
    complaints = stored(config)
    assert sorted(complaints) == ["A", "C"]
    assert complaints["C"][3] == "第一段\u2028第二段"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"service_id,received_at\nsvc-1,2026-09-01\n",
            "complaints.csv: line 1: the header lacks column(s) id; expected id,service_id,",
        ),
        (
            b"id,received_at\nC-1,2026-09-01\nC-2,\xff\xfe",
            "complaints.csv: line 3: neither UTF-8 nor GB18030 text (save it as CSV UTF-8)",
        ),
        (
            "id,received_at,summary\nC-1,2026-09-01,页面打不开\nC-2,".encode()
            + "二〇".encode("gbk"),
            "complaints.csv: line 3: not UTF-8 text, though the text before it is UTF-8 Chinese",
        ),
    ],
    ids=["no-id-column", "neither-utf8-nor-gb18030", "utf8-then-not"],
)
def test_a_file_that_cannot_be_read_at_all_imports_nothing(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    export = tmp_path / "complaints.csv"
    export.write_bytes(content)
    assert run_import(config, export) == 2
    assert capsys.readouterr().err.startswith("monitord: " + message)
    assert stored(config) == {}


def test_complaints_in_takes_those_received_in_the_quarter(
    store: Store, tmp_path: Path, clock: FakeClock
) -> None:
    export = tmp_path / "complaints.csv"
    export.write_text(
        "id,received_at\n"
        "q2-last,2026-06-30T23:59:59\n"  # Shanghai: still 2026q2
        "q3-first,2026-07-01T00:00:00\n"
        "q3-last,2026-09-30T23:59:59\n"
        "q4-first,2026-10-01T00:00:00\n",
        encoding="utf-8",
    )
    with store.session() as session:
        result = import_complaints(session, export, clock(), "赵六")
        assert (result.added, result.bad) == (4, [])
    with store.session() as session:
        q3 = complaints_in(session, *quarter_bounds("2026q3"))
        assert [c.external_id for c in q3] == ["q3-first", "q3-last"]


def test_a_gb18030_export_is_read_whichever_chinese_comes_first(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GB18030's 投诉 (CD B6 CB DF) begins with bytes that read as valid two-byte UTF-8.
    export = tmp_path / "complaints.csv"
    export.write_bytes(
        (
            "id,received_at,service_id,category,status,summary\n"
            "C-1001,2026-11-02T10:30,svc-0001,投诉,已处理,页面打不开\n"
            "C-1002,2026-11-03 09:00,svc-0002,咨询,处理中,无法登录\n"
        ).encode("gb18030")
    )
    assert run_import(config, export) == 0
    assert capsys.readouterr().out == "2 complaint(s): 2 added, 0 updated, 0 unchanged\n"
    after = stored(config)
    assert after["C-1001"][2:] == ("已处理", "页面打不开")
    assert after["C-1002"][2:] == ("处理中", "无法登录")


def test_a_utf8_file_with_a_byte_order_mark_and_a_broken_line_names_that_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "complaints.csv"
    export.write_bytes(
        "\ufeffid,received_at,summary\nC-1,2026-09-01,页面打不开\nC-2,".encode()
        + "二〇".encode("gbk")
    )
    assert run_import(config, export) == 2
    assert capsys.readouterr().err == (
        "monitord: complaints.csv: line 3: not UTF-8 text, though the text before it is UTF-8 "
        "Chinese (save it as CSV UTF-8)\n"
    )
    assert stored(config) == {}
