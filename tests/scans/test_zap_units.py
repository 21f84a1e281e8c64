"""The pure parts of the ZAP driver: grouping, comparison, scope, settings and state."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from monitord.scans.alerts import compare_findings, group_alerts
from monitord.scans.state import ScanState, Step, ZapDriverSettings
from monitord.scans.target import scope_regex
from monitord.timeutil import UTC


def _alert(**fields: str) -> dict[str, str]:
    base = {
        "pluginId": "10020",
        "alertRef": "10020-1",
        "name": "Missing Anti-clickjacking Header",
        "risk": "Medium",
        "confidence": "Medium",
        "url": "https://a.gov.cn/app/",
        "param": "",
        "cweid": "1021",
        "wascid": "15",
    }
    base.update(fields)
    return base


def test_grouping_drops_false_positives_and_takes_the_worst() -> None:
    grouping = group_alerts(
        [
            _alert(url="https://a.gov.cn/app/?x=1", confidence="Low"),
            _alert(url="https://a.gov.cn/app/?x=2", risk="High", confidence="High"),
            _alert(url="https://a.gov.cn/app/", confidence="False Positive"),
            _alert(url="https://a.gov.cn/app/login"),
            _alert(url="https://a.gov.cn/app/login", param="user"),
            _alert(pluginId="10021", alertRef="", risk="Informational", cweid="-1", wascid="0"),
        ],
        service_id="s",
    )
    assert grouping.false_positives_dropped == 1
    assert grouping.instances == 5
    subjects = {f.subject: f for f in grouping.findings}
    assert set(subjects) == {
        "10020-1 /app/",
        "10020-1 /app/login",
        "10020-1 /app/login [user]",
        "10021 /app/",
    }
    root = subjects["10020-1 /app/"]
    assert root.severity == "high" and root.evidence["confidence"] == "High"
    assert root.evidence["instances"] == 2
    assert root.evidence["sample_urls"] == [
        "https://a.gov.cn/app/?x=1",
        "https://a.gov.cn/app/?x=2",
    ]
    info = subjects["10021 /app/"]
    assert info.rule == "zap:10021" and info.severity == "info"
    assert info.evidence["cwe"] is None and info.evidence["wasc"] is None


def test_a_risk_zap_does_not_name_is_gated_as_high() -> None:
    # Read as Informational, an unexpected risk ("Critical", "3") would pass the High/Medium gate.
    grouping = group_alerts(
        [_alert(risk="Low"), _alert(risk="Critical"), _alert(url="https://a.gov.cn/b", risk="3")]
    )
    assert {f.subject: (f.severity, f.evidence["risk"]) for f in grouping.findings} == {
        "10020-1 /app/": ("high", "Critical"),
        "10020-1 /b": ("high", "3"),
    }


def test_grouping_scope_filter() -> None:
    pattern = re.compile(scope_regex("https://a.gov.cn/app"))
    grouping = group_alerts(
        [_alert(url="https://a.gov.cn/app-old/x"), _alert(url="https://a.gov.cn/app?q=1")],
        in_scope=lambda u: bool(pattern.fullmatch(u)),
    )
    assert grouping.out_of_scope_dropped == 1 and len(grouping.findings) == 1


@pytest.mark.parametrize(
    ("target", "inside", "outside"),
    [
        ("https://a.gov.cn/app/", ["https://a.gov.cn/app/", "https://a.gov.cn/app/x?y=1"],
         ["https://a.gov.cn/app", "https://a.gov.cn/apps/", "http://a.gov.cn/app/"]),
        ("https://a.gov.cn/app", ["https://a.gov.cn/app", "https://a.gov.cn/app/x", "https://a.gov.cn/app?y"],
         ["https://a.gov.cn/app-old", "https://a.gov.cn/application"]),
        ("https://a.gov.cn:8443/a.b/", ["https://a.gov.cn:8443/a.b/c"], ["https://a.gov.cn:8443/aXb/c"]),
    ],
)  # fmt: skip
def test_scope_regex(target: str, inside: list[str], outside: list[str]) -> None:
    regex = scope_regex(target)
    assert all(re.fullmatch(regex, u) for u in inside)
    assert not any(re.fullmatch(regex, u) for u in outside)


def test_compare_findings() -> None:
    previous = [("zap:1", "a"), ("zap:2", "b")]
    diff = compare_findings(previous, [("zap:2", "b"), ("zap:3", "c")])
    assert diff.new == {("zap:3", "c")}
    assert diff.still_open == {("zap:2", "b")}
    assert diff.fixed == {("zap:1", "a")}


def test_driver_settings_hide_the_key() -> None:
    settings = ZapDriverSettings(api_key="s3cret")
    assert "s3cret" not in repr(settings)
    assert settings.zap.url == "http://127.0.0.1:8090"


def test_state_round_trip() -> None:
    moment = dt.datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    state = ScanState(
        scan_key="5",
        target_url="https://a/",
        step=Step.ACTIVE,
        steps_done=(Step.SESSION, Step.CONTEXT),
        active_scan_id="0",
        percent=57,
        started_at=moment,
        updated_at=moment,
    )
    assert ScanState.from_dict(state.to_dict()) == state
    assert state.to_dict()["steps_done"] == ["session", "context"]


def test_a_finding_summary_reads_in_chinese_around_zap_s_alert_name() -> None:
    alerts = [
        _alert(name="SQL Injection", risk="High", url="https://svc/app/page0.html", param="id")
    ]
    [finding] = group_alerts(alerts).findings
    assert finding.summary == "SQL Injection（风险：高）位于 /app/page0.html（参数 id），共 1 处"
