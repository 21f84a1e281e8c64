"""`monitord report` and `monitord reports` from the command line."""

from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
from pathlib import Path

import pytest

from monitord.cli import main
from monitord.runtime import reporting
from monitord.runtime.reporting import WrittenReport
from monitord.store import open_store


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "monitord.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n'
        f'[report]\ndir = "{tmp_path / "reports"}"\n',
        encoding="utf-8",
    )
    open_store(f"sqlite:///{tmp_path / 'm.db'}").dispose()  # as the daemon leaves it
    return path


def report(config: Path, *args: str) -> int:
    return main(["--config", str(config), "report", *args])


def test_report_writes_the_pdf_records_it_and_prints_path_hash_and_pages(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(config, "--quarter", "2026q3") == 0
    out, err = capsys.readouterr()
    path = tmp_path / "reports" / "monitord-2026q3.pdf"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert out.splitlines()[:2] == [f"report 2026q3: {path}", f"sha256 {digest}"]
    assert out.splitlines()[2].split()[0] == "pages"
    assert "rendering the PDF" in err  # progress goes to stderr, the result alone to stdout
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    assert main(["--config", str(config), "reports", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["quarter"], row["path"], row["sha256"]) == ("2026q3", str(path), digest)
    assert (row["sent_to"], row["delivered_at"]) == ([], None)
    assert main(["--config", str(config), "reports"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["QUARTER", "GENERATED", "(CST)", "SHA256"]
    assert table[1].split()[0] == "2026q3" and digest[:12] in table[1]


def test_report_to_a_chosen_file_and_never_over_a_recorded_one(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = tmp_path / "out" / "q3.pdf"
    assert report(config, "--quarter", "2026q3", "--out", str(chosen)) == 0
    first = chosen.read_bytes()
    capsys.readouterr()
    assert report(config, "--quarter", "2026q3", "--out", str(chosen)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"monitord: --out {chosen}: this file is the 2026q3 report recorded ")
    assert err.count("\n") == 1
    assert chosen.read_bytes() == first
    # The default path, taken by a recorded report, gets a number instead.
    assert report(config, "--quarter", "2026q3") == 0
    assert report(config, "--quarter", "2026q3") == 0
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "monitord-2026q3-2.pdf",
        "monitord-2026q3.pdf",
    ]


def test_report_never_replaces_a_file_it_did_not_record(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A restored backup, or another store's report in the same folder.
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "monitord-2026q3.pdf").write_bytes(b"a report from a backup")
    assert report(config, "--quarter", "2026q3") == 0
    assert capsys.readouterr().out.startswith(f"report 2026q3: {folder / 'monitord-2026q3-2.pdf'}")
    assert (folder / "monitord-2026q3.pdf").read_bytes() == b"a report from a backup"
    mine = tmp_path / "mine.pdf"
    mine.write_bytes(b"my notes")
    assert report(config, "--quarter", "2026q3", "--out", str(mine)) == 2
    assert capsys.readouterr().err == (
        f"monitord: --out {mine}: a file is already there, and monitord never replaces one; "
        "choose another file\n"
    )
    assert mine.read_bytes() == b"my notes"


def test_a_report_is_written_where_the_file_system_has_no_links(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # vfat and some network shares refuse a hard link: the report is named by a rename, still
    # never over a file already there.
    def no_links(source: str, target: Path) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(target))

    monkeypatch.setattr(reporting.os, "link", no_links)
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "monitord-2026q3.pdf").write_bytes(b"a report from a backup")
    assert report(config, "--quarter", "2026q3") == 0
    assert (folder / "monitord-2026q3.pdf").read_bytes() == b"a report from a backup"
    assert (folder / "monitord-2026q3-2.pdf").read_bytes().startswith(b"%PDF")
    assert sorted(p.name for p in folder.iterdir()) == [
        "monitord-2026q3-2.pdf",
        "monitord-2026q3.pdf",
    ]


def test_two_reports_written_at_once_each_keep_their_own_file(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitord.config import load_config
    from monitord.runtime.reporting import write_report

    settings = load_config(config)
    store = open_store(settings.store.url)
    now = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
    inner: list[WrittenReport] = []

    def another_run_meanwhile(step: str) -> None:
        # While this run renders, a second one is written whole to the same default path.
        if "rendering" in step and not inner:
            inner.append(write_report(store, settings, "2026q3", now))

    try:
        outer = write_report(store, settings, "2026q3", now, progress=another_run_meanwhile)
    finally:
        store.dispose()
    assert inner[0].path.name == "monitord-2026q3.pdf"
    assert outer.path.name == "monitord-2026q3-2.pdf"
    assert main(["--config", str(config), "reports", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len({row["path"] for row in rows}) == 2
    for row in rows:
        assert hashlib.sha256(Path(row["path"]).read_bytes()).hexdigest() == row["sha256"]
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == [
        "monitord-2026q3-2.pdf",
        "monitord-2026q3.pdf",
    ]  # no temporary file left


@pytest.mark.parametrize(
    ("quarter", "message"),
    [
        ("2026q5", "monitord: --quarter: '2026q5' is not a quarter such as 2026q3"),
        ("Q3", "monitord: --quarter: 'q3' is not a quarter such as 2026q3"),
        ("2099q1", "monitord: --quarter: '2099q1' has not begun: it starts 2099-01-01 00:00"),
    ],
)
def test_a_bad_or_future_quarter_is_refused_in_one_line(
    tmp_path: Path,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    quarter: str,
    message: str,
) -> None:
    assert report(config, "--quarter", quarter) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "reports").exists()


def test_a_folder_that_cannot_be_written_is_one_line(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    assert report(config, "--quarter", "2026q3", "--out", str(blocker / "q3.pdf")) == 2
    err = capsys.readouterr().err.splitlines()
    # Said before the render (minutes for a city's services), not after it.
    assert err == [f"monitord: {blocker / 'q3.pdf'}: cannot write the report (File exists)"]
    assert report(config, "--quarter", "2026q3", "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"monitord: {tmp_path}: cannot write the report (Is a directory)"]


def test_reports_with_none_recorded_says_how_to_write_one(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "reports"]) == 0
    assert "no reports yet" in capsys.readouterr().out
