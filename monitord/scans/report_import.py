"""Read a ZAP "traditional-json" report into the same findings a monitord scan produces.

Providers file their own pen-test results (clause 8.3 b). ZAP's baseline and full scans
(`zap-baseline.py -J`, `zap-full-scan.py -J`) and the Report Generation add-on's
"traditional-json" template write one shape:

    {"@programName": "ZAP", "@version": "2.15.0", "@generated": "Tue, 4 Jun 2024 ...",
     "site": [{"@name": "https://svc.example.gov.cn", "@host": ..., "@port": ..., "@ssl": ...,
               "alerts": [{"pluginid": "10038", "alertRef": "10038-1", "alert": "...",
                           "name": "...", "riskcode": "2", "confidence": "3",
                           "riskdesc": "Medium (High)", "desc": "<p>...</p>",
                           "instances": [{"uri": ..., "method": ..., "param": ...,
                                          "attack": ..., "evidence": ..., "otherinfo": ...}],
                           "count": "3", "solution": "<p>...</p>", "otherinfo": ...,
                           "reference": "<p>...</p>", "cweid": "693", "wascid": "15",
                           "sourceid": "3"}]}]}

Risk codes are 0–3 (Informational … High) and confidence codes 0–4 (False Positive, Low,
Medium, High, Confirmed), as in ZAP's `Alert` class. Texts are HTML paragraphs; they are turned
into plain text. Each instance becomes an alert in ZAP API form and goes through the same
`group_alerts`, so an imported report and a monitord scan of the same service compare key by key.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitord.config import ZapSettings
from monitord.errors import UsageError
from monitord.scans.alerts import clean_text, group_alerts
from monitord.scans.client import json_nesting_problem
from monitord.scans.target import scope_regex
from monitord.timeutil import SHANGHAI, UTC
from monitord.types import FindingDraft

__all__ = [
    "ZapReport",
    "ZapReportError",
    "generated_at",
    "parse_report",
    "read_report",
    "site_problem",
]

_RISKS = {"0": "Informational", "1": "Low", "2": "Medium", "3": "High"}
_CONFIDENCES = {"0": "False Positive", "1": "Low", "2": "Medium", "3": "High", "4": "Confirmed"}


class ZapReportError(UsageError):
    """The file is not a ZAP traditional-json report monitord can read; the message says why."""


@dataclass(frozen=True)
class ZapReport:
    """A report read into findings, with what it says about itself."""

    program: str
    version: str
    generated: str
    sites: tuple[str, ...]
    findings: tuple[FindingDraft, ...]
    instances: int
    false_positives_dropped: int
    out_of_scope_dropped: int


def _plain(value: Any) -> str:
    """ZAP's report texts are HTML paragraphs; keep the words and one line per paragraph."""
    if value is None:
        return ""
    text = re.sub(r"</p>\s*<p>|<br\s*/?>", "\n", str(value))
    text = re.sub(r"<[^>]+>", "", text)
    return html.unescape(text).strip()


def _need(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ZapReportError(f"{where} has no {key!r}: not a ZAP traditional-json report")
    return mapping[key]


def parse_report(
    data: Any,
    *,
    service_id: str | None = None,
    base_url: str | None = None,
    max_field_bytes: int | None = None,
) -> ZapReport:
    """Turn a parsed traditional-json report into findings.

    `base_url`, when given, keeps only instances under the service's URL (a report may cover
    several sites). A text over `max_field_bytes` is left out of its finding with a note, as
    for a scan. Raises `ZapReportError` naming what is missing or malformed.
    """
    if not isinstance(data, Mapping):
        raise ZapReportError("the report is not a JSON object: not a ZAP traditional-json report")
    sites = _need(data, "site", "the report")
    if isinstance(sites, Mapping):  # older ZAP versions wrote a lone site as an object
        sites = [sites]
    if not isinstance(sites, list):
        raise ZapReportError("the report's 'site' is not a list")

    alerts: list[dict[str, Any]] = []
    names: list[str] = []
    for s_index, site in enumerate(sites):
        where = f"site[{s_index}]"
        if not isinstance(site, Mapping):
            raise ZapReportError(f"{where} is not an object")
        names.append(clean_text(_need(site, "@name", where)))
        site_alerts = site.get("alerts") or []
        if not isinstance(site_alerts, list):
            raise ZapReportError(f"{where}.alerts is not a list")
        for a_index, alert in enumerate(site_alerts):
            alerts.extend(_instances(alert, f"{where}.alerts[{a_index}]"))

    in_scope = None
    if base_url is not None:
        pattern = re.compile(scope_regex(base_url))
        in_scope = lambda url: bool(pattern.fullmatch(url))  # noqa: E731
    grouping = group_alerts(
        alerts, service_id=service_id, in_scope=in_scope, max_field_bytes=max_field_bytes
    )
    return ZapReport(
        program=clean_text(data.get("@programName", "")),
        version=clean_text(data.get("@version", "")),
        generated=clean_text(data.get("@generated", "")),
        sites=tuple(names),
        findings=grouping.findings,
        instances=grouping.instances,
        false_positives_dropped=grouping.false_positives_dropped,
        out_of_scope_dropped=grouping.out_of_scope_dropped,
    )


def _instances(alert: Any, where: str) -> list[dict[str, Any]]:
    """One report alert → its instances, each in the field names of ZAP's API."""
    if not isinstance(alert, Mapping):
        raise ZapReportError(f"{where} is not an object")
    plugin = str(_need(alert, "pluginid", where))
    riskcode = str(_need(alert, "riskcode", where))
    if riskcode not in _RISKS:
        raise ZapReportError(f"{where}.riskcode is {riskcode!r}, expected 0, 1, 2 or 3")
    confidence = str(alert.get("confidence", "2"))
    if confidence not in _CONFIDENCES:
        raise ZapReportError(f"{where}.confidence is {confidence!r}, expected 0 to 4")
    instances = alert.get("instances") or []
    if not isinstance(instances, list):
        raise ZapReportError(f"{where}.instances is not a list")
    if not instances:
        raise ZapReportError(f"{where} has no instances")
    common = {
        "pluginId": plugin,
        "alertRef": str(alert.get("alertRef") or plugin),
        "name": str(alert.get("name") or alert.get("alert") or ""),
        "risk": _RISKS[riskcode],
        "confidence": _CONFIDENCES[confidence],
        "description": _plain(alert.get("desc")),
        "solution": _plain(alert.get("solution")),
        "reference": _plain(alert.get("reference")),
        "cweid": str(alert.get("cweid", "-1")),
        "wascid": str(alert.get("wascid", "-1")),
    }
    out = []
    for i_index, instance in enumerate(instances):
        if not isinstance(instance, Mapping):
            raise ZapReportError(f"{where}.instances[{i_index}] is not an object")
        item = dict(common)
        # Some tools put cweid/solution/... on the instance; the instance's own value wins.
        for key in ("cweid", "wascid"):
            if instance.get(key) not in (None, ""):
                item[key] = str(instance[key])
        for key in ("solution", "reference"):
            if instance.get(key):
                item[key] = _plain(instance[key])
        item.update(
            url=str(_need(instance, "uri", f"{where}.instances[{i_index}]")),
            method=str(instance.get("method", "")),
            param=str(instance.get("param", "")),
            evidence=str(instance.get("evidence", "")),
            attack=str(instance.get("attack", "")),
        )
        out.append(item)
    return out


def read_report(
    path: str | Path,
    *,
    service_id: str | None = None,
    base_url: str | None = None,
    max_bytes: int = ZapSettings().max_answer_mb << 20,
    max_field_bytes: int | None = ZapSettings().max_field_kb << 10,
) -> ZapReport:
    """Read a traditional-json report file; see `parse_report`.

    A file over `max_bytes` (zap.max_answer_mb) is refused before it is read.
    """
    limit = f"zap.max_answer_mb ({max_bytes / (1 << 20):g} MiB)"
    too_large = ZapReportError(f"{path} is larger than {limit}: not read as a ZAP JSON report")
    try:
        with Path(path).open("rb") as file:
            if Path(path).is_file() and Path(path).stat().st_size > max_bytes:
                raise too_large
            data = file.read(max_bytes + 1)  # a pipe tells no size beforehand
    except OSError as exc:
        raise ZapReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise too_large
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ZapReportError(f"{path} is not UTF-8 text: not a ZAP JSON report") from None
    if not text.strip():
        raise ZapReportError(f"{path} is empty: not a ZAP JSON report")
    # Python's JSON decoder recurses once per nesting level; no report nests this deep.
    problem = json_nesting_problem(data)
    if problem is not None:
        raise ZapReportError(f"{path} {problem}: not a ZAP JSON report")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZapReportError(
            f"{path} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return parse_report(
        parsed, service_id=service_id, base_url=base_url, max_field_bytes=max_field_bytes
    )


_GENERATED = "%a, %d %b %Y %H:%M:%S"
"""How ZAP writes `@generated` ("Wed, 12 Jun 2024 08:31:05"), in the time zone of its host."""


def generated_at(report: ZapReport, now: dt.datetime) -> dt.datetime:
    """When ZAP wrote the report (Asia/Shanghai when it names no zone): the time of the scan it
    records. Raises `ZapReportError` when it gives none, or one after `now`."""
    text = report.generated.strip()
    if not text:
        raise ZapReportError("the report has no '@generated' time: when was the scan?")
    try:
        moment = dt.datetime.strptime(text, _GENERATED)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ZapReportError(
                f"the report's '@generated' {text!r} is not a time such as "
                "'Wed, 12 Jun 2024 08:31:05'"
            ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    if moment > now:
        raise ZapReportError(f"the report's '@generated' {text!r} is in the future")
    return moment.astimezone(UTC)


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port


def site_problem(report: ZapReport, service_url: str) -> str | None:
    """Why the report is not of the service's site (scheme, host and port), or None."""
    if _origin(service_url) in {_origin(site) for site in report.sites}:
        return None
    sites = ", ".join(report.sites[:3]) + (" …" if len(report.sites) > 3 else "")
    return f"the report is of {sites or 'no site'}, not of the service's site {service_url}"
