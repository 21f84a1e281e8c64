"""ZAP's alerts into findings: grouped by plugin, path and parameter, risk read as severity,
and compared with the previous scan (new, still open, fixed)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from monitord.names import SEVERITY_NAMES
from monitord.textable import shortened, storable
from monitord.types import FindingDraft, Severity

ZAP_CLAUSE = "8.3 b"
"""The clause every ZAP finding serves: scan before going live and after each update."""


@dataclass(frozen=True)
class AlertGrouping:
    """Alerts turned into findings: one finding per (alert ref, URL path, parameter)."""

    findings: tuple[FindingDraft, ...]
    instances: int
    """Alert instances that went into the findings."""
    false_positives_dropped: int
    out_of_scope_dropped: int = 0


@dataclass(frozen=True)
class FindingDiff:
    """A scan compared with the service's previous one, by finding key (rule, subject)."""

    new: frozenset[tuple[str, str]]
    still_open: frozenset[tuple[str, str]]
    fixed: frozenset[tuple[str, str]]


# --------------------------------------------------------------------------------------------
# Alerts → findings
# --------------------------------------------------------------------------------------------

_RISK_TO_SEVERITY: dict[str, Severity] = {
    "high": "high",
    "medium": "medium",
    "low": "low",
    "informational": "info",
    "info": "info",
}
_RISK_RANK = {"informational": 0, "info": 0, "low": 1, "medium": 2, "high": 3}
_UNKNOWN_RISK_RANK = 4
"""A risk ZAP does not name (not one of its four): ranked above High and gated as High, so that
an unexpected answer can never let a vulnerability through the 7.3.2 gate as Informational."""
_CONFIDENCE_RANK = {"low": 1, "medium": 2, "high": 3, "confirmed": 4}
_SAMPLE_URLS = 5


def clean_text(value: Any) -> str:
    """`value` as text that every store takes and every terminal prints: U+FFFD in place of
    NULs and lone UTF-16 surrogates.

    ZAP's texts are Java strings and may hold both (evidence cut out of a binary response);
    a lone surrogate cannot be encoded as UTF-8 (SQLite refused the finding, and the whole
    scan was lost), nor a NUL kept in a PostgreSQL text.
    """
    return storable("" if value is None else str(value))


def _text(value: Any) -> str:
    return clean_text(value).strip()


def _ident(value: Any) -> int | None:
    """CWE/WASC ids: ZAP writes "-1" or "0" for none; anything but a plain number is none."""
    text = _text(value)
    # ASCII digits, and few: str.isdigit() takes "²", which int() refuses, and int() refuses
    # over 4,300 digits.
    if not re.fullmatch(r"-?[0-9]{1,9}", text):
        return None
    number = int(text)
    return number if number > 0 else None


def finding_key(draft: FindingDraft) -> tuple[str, str]:
    """The key under which the store keeps a finding: (rule, subject)."""
    return (draft.rule, draft.subject)


def group_alerts(
    alerts: Iterable[Mapping[str, Any]],
    *,
    service_id: str | None = None,
    in_scope: Callable[[str], bool] | None = None,
    max_field_bytes: int | None = None,
) -> AlertGrouping:
    """Group ZAP alert instances into findings under clause 8.3 b.

    Each alert is a mapping with ZAP API field names (`pluginId`, `alertRef`, `name`, `risk`,
    `confidence`, `url`, `param`, `evidence`, `cweid`, `wascid`, `solution`, `reference`,
    `description`). Instances with confidence "False Positive" are dropped, and so are URLs
    that `in_scope` rejects. Instances are grouped by (alert ref — or plugin id when ZAP gives
    none —, URL path, parameter); a group takes the highest risk and confidence of its members.
    A text over `max_field_bytes` (UTF-8) is not kept in the finding: a note says how large it
    was; a subject too long for the store ends in a digest of the whole.
    """
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    dropped_fp = 0
    dropped_scope = 0
    for alert in alerts:
        if _text(alert.get("confidence")).lower() == "false positive":
            dropped_fp += 1
            continue
        url = _text(alert.get("url"))
        if in_scope is not None and not in_scope(url):
            dropped_scope += 1
            continue
        plugin = _text(alert.get("pluginId")) or "0"
        ref = _text(alert.get("alertRef")) or plugin
        path = urlsplit(url).path or "/"
        groups.setdefault((ref, path, _text(alert.get("param"))), []).append(alert)

    findings = [
        _finding(ref, path, param, members, service_id, max_field_bytes)
        for (ref, path, param), members in sorted(groups.items())
    ]
    return AlertGrouping(
        findings=tuple(findings),
        instances=sum(len(m) for m in groups.values()),
        false_positives_dropped=dropped_fp,
        out_of_scope_dropped=dropped_scope,
    )


def _risk_rank(alert: Mapping[str, Any]) -> int:
    risk = _text(alert.get("risk")).lower() or "informational"
    return _RISK_RANK.get(risk, _UNKNOWN_RISK_RANK)


def _kept(text: str, max_bytes: int | None) -> str:
    """`text`, or a note in its place when it is over `max_bytes` of UTF-8."""
    if max_bytes is None or len(text) * 4 <= max_bytes:  # at most 4 bytes a character
        return text
    size = len(text.encode("utf-8"))  # clean_text left nothing UTF-8 cannot encode
    if size <= max_bytes:
        return text
    return f"(left out: {-(-size // 1024)} KiB, over zap.max_field_kb = {max_bytes // 1024})"


_SUBJECT_LENGTH = 190
"""The longest subject `group_alerts` makes: the store's column holds 400 characters, and
`scans.scoped` puts the service id (at most 200) and a space before it."""


def _subject(ref: str, path: str, param: str) -> str:
    """The finding's subject; a long one is cut and ends in a digest of the whole, so that two
    long paths stay two findings and a rescan finds the same one again."""
    subject = f"{ref} {path}" + (f" [{param}]" if param else "")
    if len(subject) <= _SUBJECT_LENGTH:
        return subject
    digest = hashlib.sha256(subject.encode("utf-8")).hexdigest()[:16]
    return f"{subject[: _SUBJECT_LENGTH - 17]}…{digest}"


def _finding(
    ref: str,
    path: str,
    param: str,
    members: list[Mapping[str, Any]],
    service_id: str | None,
    max_field_bytes: int | None,
) -> FindingDraft:
    def kept(field: str, alert: Mapping[str, Any] | None = None) -> str:
        return _kept(_text((alert or worst).get(field)), max_field_bytes)

    worst = max(members, key=_risk_rank)
    surest = max(members, key=lambda a: _CONFIDENCE_RANK.get(_text(a.get("confidence")).lower(), 0))
    risk = _text(worst.get("risk")) or "Informational"
    # The store keeps rule names to 120 characters; ZAP's plugin ids are a few digits.
    plugin = shortened(_text(worst.get("pluginId")) or "0", 100)
    name = _kept(
        _text(worst.get("name")) or _text(worst.get("alert")) or f"ZAP rule {plugin}",
        max_field_bytes,
    )
    sample = next((a for a in members if _text(a.get("evidence"))), worst)
    urls = sorted({_text(a.get("url")) for a in members})
    # The summary is an incident's title for people: ZAP's alert name stays as ZAP wrote it,
    # monitord's words around it are Chinese.
    where = shortened(path + (f"（参数 {param}）" if param else ""), 200)
    severity = _RISK_TO_SEVERITY.get(risk.lower(), "high")
    return FindingDraft(
        rule=f"zap:{plugin}",
        clause=ZAP_CLAUSE,
        severity=severity,
        subject_kind="web_path",
        subject=_subject(ref, path, param),
        summary=f"{name}（风险：{SEVERITY_NAMES[severity]}）位于 {where}，共 {len(members)} 处",
        service_id=service_id,
        evidence={
            "name": name,
            "plugin_id": plugin,
            "alert_ref": _kept(ref, max_field_bytes),
            "risk": _kept(risk, max_field_bytes),
            "confidence": kept("confidence", surest),
            "cwe": _ident(worst.get("cweid")),
            "wasc": _ident(worst.get("wascid")),
            "path": _kept(path, max_field_bytes),
            "param": _kept(param, max_field_bytes),
            "evidence": kept("evidence", sample),
            "description": kept("description"),
            "solution": kept("solution"),
            "reference": kept("reference"),
            "instances": len(members),
            "sample_urls": [_kept(u, max_field_bytes) for u in urls[:_SAMPLE_URLS]],
        },
    )


def compare_findings(
    previous: Iterable[tuple[str, str]], current: Iterable[tuple[str, str] | FindingDraft]
) -> FindingDiff:
    """Compare the finding keys of the service's previous scan with this scan's findings."""
    before = frozenset(previous)
    now = frozenset(finding_key(c) if isinstance(c, FindingDraft) else c for c in current)
    return FindingDiff(new=now - before, still_open=now & before, fixed=before - now)
