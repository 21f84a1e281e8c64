"""Reading a ZAP traditional-json report into the same findings a scan produces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from monitord.errors import UsageError
from monitord.scans.alerts import compare_findings, finding_key, group_alerts
from monitord.scans.report_import import ZapReportError, parse_report, read_report

SAMPLE = Path(__file__).parent / "data" / "zap-traditional-report.json"
BASE = "https://zwfw.example.gov.cn/app/"


def test_reads_a_real_report_shape() -> None:
    report = read_report(SAMPLE, service_id="svc-9")
    assert (report.program, report.version) == ("ZAP", "2.15.0")
    assert report.generated == "Wed, 12 Jun 2024 08:31:05"
    assert report.sites == ("https://zwfw.example.gov.cn", "https://cdn.example.com")
    assert report.false_positives_dropped == 1  # the anti-clickjacking alert, confidence 0
    assert report.instances == 11
    keys = {
        (f.evidence["alert_ref"], f.evidence["path"], f.evidence["param"]) for f in report.findings
    }
    assert keys == {
        ("40018", "/app/query", "name"),
        ("10202", "/app/login", ""),
        ("10202", "/app/apply", ""),
        ("10038-1", "/app/", ""),
        ("10038-1", "/app/login", ""),
        ("10035-1", "/app/", ""),
        ("10035-1", "/app/static/main.js", ""),
        ("10109", "/app/", ""),
        ("10017", "/lib/jquery.js", "https://cdn.example.com/lib/jquery.js"),
    }
    high_medium = [f for f in report.findings if f.severity in ("high", "medium")]
    assert len(high_medium) == 5

    sqli = next(f for f in report.findings if f.rule == "zap:40018")
    assert sqli.severity == "high" and sqli.clause == "8.3 b" and sqli.service_id == "svc-9"
    assert sqli.evidence["instances"] == 2
    assert sqli.evidence["risk"] == "High" and sqli.evidence["confidence"] == "Medium"
    assert sqli.evidence["cwe"] == 89 and sqli.evidence["wasc"] == 19
    assert sqli.evidence["evidence"] == "You have an error in your SQL syntax"
    # HTML paragraphs become plain lines.
    assert sqli.evidence["solution"].splitlines() == [
        "Do not trust client side input, even if there is client side validation in place.",
        "In general, type check all data on the server side.",
    ]
    assert sqli.evidence["reference"].startswith("https://cheatsheetseries.owasp.org/")
    csp_root = next(f for f in report.findings if f.subject == "10038-1 /app/")
    assert csp_root.evidence["instances"] == 2  # "/app/" and "/app/?lang=zh-CN"
    info = next(f for f in report.findings if f.rule == "zap:10109")
    assert info.severity == "info" and info.evidence["cwe"] is None


def test_base_url_keeps_only_the_service() -> None:
    report = read_report(SAMPLE, base_url=BASE)
    assert report.out_of_scope_dropped == 1
    assert not any(f.rule == "zap:10017" for f in report.findings)
    assert len(report.findings) == 8


def test_import_and_scan_findings_compare_key_by_key() -> None:
    """A provider's report and a monitord scan of the same alert give the same finding key."""
    report = read_report(SAMPLE, base_url=BASE)
    from_api = group_alerts(
        [
            {
                "pluginId": "40018",
                "alertRef": "40018",
                "name": "SQL Injection",
                "risk": "High",
                "confidence": "Medium",
                "url": "https://zwfw.example.gov.cn/app/query?name=1",
                "param": "name",
            }
        ]
    )
    diff = compare_findings([finding_key(f) for f in report.findings], from_api.findings)
    assert diff.new == frozenset()
    assert diff.still_open == {("zap:40018", "40018 /app/query [name]")}
    assert len(diff.fixed) == 7


def _report(alert: dict[str, Any]) -> dict[str, Any]:
    return {"@programName": "ZAP", "site": [{"@name": "https://a", "alerts": [alert]}]}


_ALERT = {"pluginid": "1", "riskcode": "3", "confidence": "2", "instances": [{"uri": "https://a/"}]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not a JSON object"),
        ({"@programName": "ZAP"}, "the report has no 'site'"),
        ({"site": "x"}, "'site' is not a list"),
        ({"site": [{"alerts": []}]}, "site[0] has no '@name'"),
        (_report({**_ALERT, "riskcode": "7"}), "site[0].alerts[0].riskcode is '7'"),
        (_report({**_ALERT, "confidence": "9"}), "confidence is '9'"),
        (_report({k: v for k, v in _ALERT.items() if k != "pluginid"}), "has no 'pluginid'"),
        (_report({**_ALERT, "instances": []}), "site[0].alerts[0] has no instances"),
        (_report({**_ALERT, "instances": [{"method": "GET"}]}), "instances[0] has no 'uri'"),
    ],
)
def test_malformed_reports_say_what_is_wrong(data: Any, message: str) -> None:
    with pytest.raises(ZapReportError) as caught:
        parse_report(data)
    assert message in str(caught.value)
    assert isinstance(caught.value, UsageError)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ZapReportError, match="cannot read"):
        read_report(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"site": [', encoding="utf-8")
    with pytest.raises(ZapReportError, match=r"is not JSON \(line 1"):
        read_report(broken)
    binary = tmp_path / "report.pdf"
    binary.write_bytes(b"%PDF-\xff\xfe")
    with pytest.raises(ZapReportError, match="not UTF-8"):
        read_report(binary)


def test_lone_site_object_and_bom(tmp_path: Path) -> None:
    data = {"@programName": "ZAP", "site": {"@name": "https://a", "alerts": [_ALERT]}}
    path = tmp_path / "r.json"
    path.write_text("\ufeff" + json.dumps(data), encoding="utf-8")
    report = read_report(path)
    assert [f.rule for f in report.findings] == ["zap:1"]
