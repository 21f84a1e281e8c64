"""`monitord silence add|list|expire` as an on-call person types it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from monitord.cli import main
from monitord.store import open_store
from monitord.store.models import AuditEntry
from tests.fakeportal import make_service


@pytest.fixture
def config(tmp_path: Path) -> Path:
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"services": [make_service(1)]}), encoding="utf-8")
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    assert main(["--config", str(path), "sync", "--file", str(catalogue)]) == 0
    return path


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["--config", str(config), *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_add_list_and_expire_a_silence_each_audited(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(
        config,
        capsys,
        "silence",
        "add",
        "--service",
        "svc-0001",
        "--kind",
        "outage",
        "--reason",
        "机房割接",
        "--for",
        "2h",
        "--by",
        "alice",
        "--json",
    )
    assert status == 0
    added = json.loads(out)
    assert (added["services"], added["kinds"], added["active"]) == (["svc-0001"], ["outage"], True)
    status, out, _ = run(config, capsys, "silence", "list")
    assert status == 0
    assert "service=svc-0001 kind=outage" in out and "机房割接" in out and "alice" in out

    status, out, _ = run(config, capsys, "silence", "expire", str(added["id"]), "--by", "bob")
    assert (status, out.strip()) == (0, f"silence {added['id']} ended by bob")
    assert run(config, capsys, "silence", "list", "--json")[1].strip() == "[]"
    [ended] = json.loads(run(config, capsys, "silence", "list", "--all", "--json")[1])
    assert (ended["active"], ended["expired_by"]) == (False, "bob")
    status, out, _ = run(config, capsys, "silence", "expire", str(added["id"]))
    assert status == 0 and "already ended at " in out and out.endswith("nothing changed\n")

    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.session() as session:
            trail = session.execute(
                select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id)
            ).all()
    finally:
        store.dispose()
    assert [tuple(row) for row in trail] == [("alice", "silence.add"), ("bob", "silence.expire")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--service", "svc-0001", "--reason", "x"], "--until TIME or --for DURATION"),
        (
            ["--service", "svc-0001", "--reason", "x", "--for", "2h", "--until", "2030-01-01"],
            "--until and --for both say when the silence ends: give one of them",
        ),
        (["--service", "svc-0001", "--reason", "x", "--for", "soon"], "duration 'soon'"),
        (["--service", "svc-0001", "--reason", "x", "--until", "tomorrow"], "--until 'tomorrow'"),
        (["--service", "svc-0001", "--reason", "x", "--until", "2020-01-01"], "not in the future"),
        (
            # --for is capped at ten years; --until was not.
            ["--service", "svc-0001", "--reason", "x", "--until", "9999-12-31"],
            "end 9999-12-31 00:00 (CST): more than 3650 days away, the longest silence",
        ),
        (["--service", "svc-0404", "--reason", "x", "--for", "1h"], "service 'svc-0404'"),
        (["--reason", "x", "--for", "1h"], "at least one service, kind or rule"),
        (["--rule", "nothing_like_it", "--reason", "x", "--for", "1h"], "rule 'nothing_like_it'"),
    ],
)
def test_a_silence_that_cannot_work_is_refused_in_one_line(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = run(config, capsys, "silence", "add", *args)
    assert status == 2 and out == ""
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert run(config, capsys, "silence", "list", "--all", "--json")[1].strip() == "[]"


def test_a_missing_store_is_named_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "none.db"}"\n', encoding="utf-8")
    status, _, err = run(path, capsys, "silence", "list")
    assert status == 2 and "no store at" in err
    assert not (tmp_path / "none.db").exists()
