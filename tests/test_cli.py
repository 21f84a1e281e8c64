"""The CLI on a store filled from a catalogue file: sync --file, services, syncs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitord.cli import main
from monitord.textable import display_width
from tests.fakeportal import make_service


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    return path


def write_catalogue(path: Path, services: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"services": services}, ensure_ascii=False), encoding="utf-8")
    return path


def test_sync_from_a_file_then_list_services_as_json(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = write_catalogue(
        tmp_path / "catalogue.json",
        [make_service(1), make_service(2, faq_url=None, status="suspended")],
    )
    assert main(["--config", str(config), "sync", "--file", str(catalogue)]) == 0
    assert "synced 2 services: 2 added" in capsys.readouterr().out
    assert main(["--config", str(config), "services", "--json"]) == 0
    services = json.loads(capsys.readouterr().out)
    assert [(s["id"], s["status"]) for s in services] == [
        ("svc-0001", "online"),
        ("svc-0002", "suspended"),
    ]
    assert services[0]["url"] == "https://svc1.example.test/"
    assert services[0]["name"] == "测试服务1"
    assert services[1]["filing_problems"] == [
        "faq_url: missing (常见问题)",
        "suspension: status is suspended but no suspension was filed (7.2.2)",
    ]


def test_services_table_lines_up_chinese_names(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    catalogue = write_catalogue(tmp_path / "c.json", [make_service(1), make_service(22)])
    main(["--config", str(config), "sync", "--file", str(catalogue)])
    capsys.readouterr()
    main(["--config", str(config), "services"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "STATUS", "URL", "FILING", "PROBLEMS"]
    status_column = display_width(lines[0][: lines[0].index("STATUS")])
    for line in lines[1:]:
        assert display_width(line[: line.index("online")]) == status_column


def test_syncs_json_records_ok_and_failed_runs_with_reasons(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_catalogue(tmp_path / "good.json", [make_service(1)])
    bad = tmp_path / "bad.json"
    bad.write_text("<html>not json</html>", encoding="utf-8")
    assert main(["--config", str(config), "sync", "--file", str(good)]) == 0
    assert main(["--config", str(config), "sync", "--file", str(bad)]) == 1
    assert "sync failed: " in capsys.readouterr().err
    assert main(["--config", str(config), "syncs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["outcome"] for r in runs] == ["failed", "ok"]
    assert runs[0]["reason"] == f"{bad}: not valid JSON (Expecting value at line 1)"
    assert runs[0]["started_at"].endswith("+00:00")
    assert runs[1]["reason"] is None


def test_services_on_an_empty_store_says_what_to_do(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "services"]) == 0
    assert "run `monitord sync` first" in capsys.readouterr().out
