"""`monitord status`: what is wrong now, and an exit status scripts can test."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from monitord.cli import main
from monitord.store.models import Silence
from monitord.timeutil import UTC
from tests.conftest import FakeClock
from tests.runtime.web.pagesite import add_service, page_app, seed


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "monitord.toml"
    path.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    return path


def test_status_lists_what_is_down_the_clocks_and_silences_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock(dt.datetime.now(UTC))
    with page_app(tmp_path, clock) as app:
        incident_id = seed(app)
        with app.store.session() as session:
            session.add(
                Silence(
                    services=["svc-0002"],
                    reason="供应商计划维护",
                    created_by="zhang.san",
                    created_at=clock(),
                    starts_at=clock(),
                    ends_at=clock() + dt.timedelta(hours=2),
                )
            )
    config = write_config(tmp_path)
    assert main(["--config", str(config), "status"]) == 1
    out = capsys.readouterr().out
    assert "services: 1 down, 1 degraded, 1 up" in out
    assert out.index("svc-0001") < out.index("svc-0002")
    assert "DOWN" in out and "DEGRADED" in out and "u:pw" not in out
    assert "open incidents: 1" in out
    [row] = [line for line in out.splitlines() if line.startswith(str(incident_id))]
    assert "data_exposure 数据泄露" in row and ("剩余 119 分钟" in row or "剩余 120 分钟" in row)
    assert "service svc-0002" in out and "供应商计划维护" in out
    assert main(["--config", str(config), "status", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["anything_down"] is True
    assert [s["id"] for s in data["troubled"]] == ["svc-0001", "svc-0002"]
    assert data["incidents"][0]["minutes_left"] in (119, 120)
    assert data["silences"][0]["reason"] == "供应商计划维护"


def test_status_exits_0_when_nothing_is_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with page_app(tmp_path, FakeClock(dt.datetime.now(UTC))) as app:
        add_service(app, "svc-0002", "税务登记", "degraded")
    config = write_config(tmp_path)
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "0 down, 1 degraded" in out
    assert "open incidents: none" in out and "silences in force: none" in out
