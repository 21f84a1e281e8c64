"""Drive an OWASP ZAP instance through its Python client (`zaproxy`) to scan one service.

A scan is a fixed sequence of steps (`STEPS`): a fresh ZAP session, a context scoped to the
service URL, an optional bearer-token header, the spider, optionally the AJAX spider, waiting
for the passive scanner, making sure the URL is in ZAP's sites tree, the active scan, and
reading the alerts back. Every change of step or percentage is handed to the caller as a
`ScanState` — a small immutable value that the core stores as it is (`to_dict`/`from_dict`),
so a scan survives a daemon restart: `ZapScanner.reconcile` tells whether ZAP still knows it,
and `ZapScanner.scan(..., resume=state)` carries on from the last completed step.

ZAP's failures are expected, not exceptional; each becomes one `ZapError` subclass with a
one-line message and a `retryable` flag:

    ZapError                  (monitord.errors.MonitordError)
    ├── ZapUnavailable        nothing answers at the ZAP address (refused, DNS)       retry
    ├── ZapAuthRejected       ZAP closed the connection without an answer: wrong or
    │                         missing API key, or this address is not permitted       no retry
    ├── ZapTimeout            one API call took longer than the per-call timeout      retry
    ├── ZapBadAnswer          an answer of the wrong shape (not JSON, not a number,   retry
    │   │                     nested deeper than MAX_JSON_DEPTH)
    │   └── ZapAnswerTooLarge an answer over `max_answer_bytes` (zap.max_answer_mb)   no retry
    ├── ZapApiError           ZAP refused a call with an error code (`.code`)         by code
    │   ├── ZapScanForgotten  a scan id or session ZAP no longer knows (restarted)    retry
    │   ├── ZapUrlNotFound    `url_not_found`: the URL is not in ZAP's sites tree     retry
    │   └── ZapBusy           `scan_in_progress`: the AJAX spider is already running  retry
    ├── ZapDeadline           the scan passed its deadline (stopped in ZAP)           retry
    ├── ZapScanStuck          the active scan stayed at one percentage too long       retry
    └── ZapTargetRefused      the service URL is not one ZAP may be pointed at: not
                              http(s), or it or a redirect lies in a denied network   no retry

`ZapDeadline` and `ZapScanStuck` are not raised: they are the `reason` of an outcome whose
status is "timed_out" and which still carries the findings read so far.

Before ZAP hears of a target, `check_target` refuses what it must not scan: a URL that is not
http(s) or has no host, a host in `denied_networks` (as the probes refuse it, see
`monitord.netguard`), or a service URL that redirects into one. ZAP itself is kept on the
service: its context includes only the service URL and what lies beneath it (`scope_regex`), the
spiders and the active scan run in that context (ZAP's spider and active scanner follow no
redirect out of it), `accessUrl` follows no redirect, and alerts outside it are dropped. The AJAX
spider drives a browser, which follows redirects itself: the check before the scan is what keeps
the service URL from sending it into a denied network.

The client is synchronous and sets no timeout, so every call runs in a worker thread
(`asyncio.to_thread`) under `asyncio.wait_for`, and the client's transport is given a socket
timeout too so that a hung ZAP cannot pin worker threads forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import aiohttp
import requests
from loguru import logger as _logger
from zapv2 import ZAPv2

from monitord import netguard
from monitord.errors import MonitordError
from monitord.redact import mask_url, one_line
from monitord.textable import shortened, storable
from monitord.timeutil import Clock, system_clock
from monitord.types import FindingDraft, Severity

__all__ = [
    "STEPS",
    "ZAP_CLAUSE",
    "AlertGrouping",
    "FindingDiff",
    "Reconciliation",
    "ScanOutcome",
    "ScanState",
    "Step",
    "ZapAnswerTooLarge",
    "ZapApiError",
    "ZapAuthRejected",
    "ZapBadAnswer",
    "ZapBusy",
    "ZapDeadline",
    "ZapError",
    "ZapScanForgotten",
    "ZapScanStuck",
    "ZapScanner",
    "ZapSettings",
    "ZapTargetRefused",
    "ZapTimeout",
    "ZapUnavailable",
    "ZapUrlNotFound",
    "check_target",
    "clean_text",
    "compare_findings",
    "default_client",
    "finding_key",
    "group_alerts",
    "json_nesting_problem",
    "scope_regex",
    "state_json",
    "target_problem",
]

ZAP_CLAUSE = "8.3 b"
"""The clause every ZAP finding serves: scan before going live and after each update."""

# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class ZapError(MonitordError):
    """A ZAP failure, told in one line; `retryable` says whether trying later makes sense."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable


class ZapUnavailable(ZapError):
    """Nothing answers at ZAP's address: ZAP is not running, or the address is wrong."""


class ZapAuthRejected(ZapError):
    """ZAP closed the connection without answering, which is how it treats a bad API key."""

    retryable = False


class ZapTimeout(ZapError):
    """One API call did not finish within the per-call timeout."""


class ZapBadAnswer(ZapError):
    """ZAP answered something that is not the shape its API documents."""


class ZapApiError(ZapError):
    """ZAP refused a call with one of its error codes (`does_not_exist`, `url_not_found`, ...)."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        http_status: int | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.code = code
        self.http_status = http_status


class ZapScanForgotten(ZapApiError):
    """ZAP no longer knows a scan id or session that monitord started: it was restarted."""


class ZapUrlNotFound(ZapApiError):
    """ZAP refused to attack a URL that is not in its sites tree (the target did not answer)."""


class ZapBusy(ZapApiError):
    """ZAP is already running the one scan of this kind it allows (the AJAX spider)."""


class ZapDeadline(ZapError):
    """The scan passed its deadline and was stopped in ZAP (the reason of a timed-out scan)."""


class ZapScanStuck(ZapError):
    """The active scan reported the same percentage for too many polls and was stopped."""


class ZapAnswerTooLarge(ZapBadAnswer):
    """A ZAP answer over the size cap (`zap.max_answer_mb`), refused unread past it; trying
    again reads the same answer, so it is not retried."""

    retryable = False


class ZapTargetRefused(ZapError):
    """The service URL is not one ZAP may be pointed at; ZAP was not asked to scan it."""

    retryable = False


# Codes for which a later retry cannot help: monitord asked for something that does not exist
# in ZAP's configuration or sent a malformed request.
_PERMANENT_CODES = frozenset(
    {
        "bad_action",
        "bad_view",
        "bad_type",
        "bad_format",
        "no_implementor",
        "missing_parameter",
        "illegal_parameter",
        "url_not_in_context",
        "mode_violation",
        "disabled",
    }
)


def _api_error(
    code: str, endpoint: str, message: str | None, http_status: int | None
) -> ZapApiError:
    """Build the error for ZAP error `code` returned by `endpoint`."""
    said = f"{code}: {message}" if message else code
    text = f"ZAP refused {endpoint} ({said})"
    if code == "url_not_found":
        return ZapUrlNotFound(
            f"{text}; the service URL is not in ZAP's sites tree — it did not answer ZAP",
            code=code,
            http_status=http_status,
        )
    if code == "scan_in_progress":
        return ZapBusy(
            f"{text}; another AJAX spider is running in ZAP", code=code, http_status=http_status
        )
    return ZapApiError(
        text,
        code=code,
        http_status=http_status,
        retryable=code not in _PERMANENT_CODES,
    )


# --------------------------------------------------------------------------------------------
# Settings, state and results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZapSettings:
    """What the scan driver needs from the `[zap]` config table, passed in explicitly.

    `api_key` is the secret itself, resolved by the caller; it is left out of `repr` so that
    printing the settings never shows it.
    """

    url: str = "http://127.0.0.1:8090"
    api_key: str = field(default="", repr=False)
    spider_max_depth: int = 5
    spider_max_children: int = 0
    """Top-level children the spider follows; 0 means ZAP's default (no limit)."""
    spider_minutes: int = 10
    ajax_spider: bool = False
    ajax_spider_minutes: int = 10
    passive_deadline_s: float = 600.0
    scan_policy: str | None = None
    """ZAP scan policy name for the active scan; None uses ZAP's default policy."""
    scan_deadline_s: float = 4 * 3600.0
    """The whole scan, from its first step; past it the scan is stopped and timed out."""
    call_timeout_s: float = 30.0
    poll_interval_s: float = 5.0
    stuck_polls: int = 60
    """Active-scan polls at one unchanged percentage after which the scan counts as stuck."""
    page_size: int = 500
    denied_networks: tuple[str, ...] = netguard.DEFAULT_DENIED_NETWORKS
    """Networks no scan may target, nor reach through a redirect (`probes.denied_networks`)."""
    max_answer_bytes: int = 32 << 20
    """The largest answer read from ZAP; a larger one is refused (`ZapAnswerTooLarge`)."""
    max_field_bytes: int = 64 << 10
    """The largest alert text (evidence, description...) kept in a finding; a larger one is
    left out with a note saying so."""

    def __post_init__(self) -> None:
        """Refuse values that would make a scan loop or never end."""
        for name in ("spider_max_depth", "spider_minutes", "ajax_spider_minutes", "stuck_polls"):
            if getattr(self, name) < 1:
                raise ValueError(f"zap.{name} must be at least 1, got {getattr(self, name)!r}")
        if self.spider_max_children < 0:
            raise ValueError(
                f"zap.spider_max_children must be >= 0, got {self.spider_max_children}"
            )
        for name in ("passive_deadline_s", "scan_deadline_s", "call_timeout_s", "poll_interval_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"zap.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("max_answer_bytes", "max_field_bytes"):
            if getattr(self, name) < 1024:
                raise ValueError(f"zap.{name} must be at least 1024, got {getattr(self, name)}")
        if not 1 <= self.page_size <= 10_000:
            raise ValueError(f"zap.page_size must be 1..10000, got {self.page_size}")
        if urlsplit(self.url).scheme not in ("http", "https"):
            raise ValueError(f"zap.url must be an http(s) URL, got {self.url!r}")


class Step(StrEnum):
    """The steps of one scan, in `STEPS` order."""

    SESSION = "session"
    CONTEXT = "context"
    AUTH = "auth"
    SPIDER = "spider"
    AJAX_SPIDER = "ajax_spider"
    PASSIVE = "passive"
    ACCESS = "access"
    ACTIVE = "active"
    ALERTS = "alerts"
    DONE = "done"


STEPS: tuple[Step, ...] = tuple(Step)

ScanStatus = Literal["running", "finished", "timed_out", "failed", "interrupted"]


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: Any) -> dt.datetime | None:
    return None if not text else dt.datetime.fromisoformat(str(text))


@dataclass(frozen=True)
class ScanState:
    """Where one scan stands: what the core persists on every progress report.

    `scan_key` is the store's stable id for the scan; it names the ZAP session and context so
    that a restarted daemon can find them again. The ZAP ids are strings, as ZAP gives them.
    """

    scan_key: str
    target_url: str
    status: ScanStatus = "running"
    step: Step = Step.SESSION
    steps_done: tuple[Step, ...] = ()
    session_name: str = ""
    context_name: str = ""
    context_id: str | None = None
    spider_scan_id: str | None = None
    active_scan_id: str | None = None
    percent: int = 0
    """Progress of the current step, 0–100, when ZAP reports one."""
    started_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    message: str | None = None
    """One line: why the scan failed or timed out, or a note such as a passive queue cut short."""
    retryable: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (times as ISO 8601) for the store."""
        return {
            "scan_key": self.scan_key,
            "target_url": self.target_url,
            "status": self.status,
            "step": self.step.value,
            "steps_done": [s.value for s in self.steps_done],
            "session_name": self.session_name,
            "context_name": self.context_name,
            "context_id": self.context_id,
            "spider_scan_id": self.spider_scan_id,
            "active_scan_id": self.active_scan_id,
            "percent": self.percent,
            "started_at": _iso(self.started_at),
            "updated_at": _iso(self.updated_at),
            "message": self.message,
            "retryable": self.retryable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScanState:
        """Rebuild a state saved with `to_dict`."""
        return cls(
            scan_key=str(data["scan_key"]),
            target_url=str(data["target_url"]),
            status=data.get("status", "running"),
            step=Step(data.get("step", Step.SESSION.value)),
            steps_done=tuple(Step(s) for s in data.get("steps_done", ())),
            session_name=str(data.get("session_name", "")),
            context_name=str(data.get("context_name", "")),
            context_id=data.get("context_id"),
            spider_scan_id=data.get("spider_scan_id"),
            active_scan_id=data.get("active_scan_id"),
            percent=int(data.get("percent", 0)),
            started_at=_from_iso(data.get("started_at")),
            updated_at=_from_iso(data.get("updated_at")),
            message=data.get("message"),
            retryable=data.get("retryable"),
        )


ProgressCallback = Callable[[ScanState], Awaitable[None]]


@dataclass(frozen=True)
class AlertGrouping:
    """Alerts turned into findings: one finding per (alert ref, URL path, parameter)."""

    findings: tuple[FindingDraft, ...]
    instances: int
    """Alert instances that went into the findings."""
    false_positives_dropped: int
    out_of_scope_dropped: int = 0


@dataclass(frozen=True)
class ScanOutcome:
    """The end of a scan that got as far as reading alerts: finished or timed out."""

    state: ScanState
    findings: tuple[FindingDraft, ...]
    alerts_read: int
    """Distinct alerts read from ZAP's pages."""
    alerts_expected: int
    """What ZAP's `numberOfAlerts` said before paging; differs only if ZAP changed meanwhile."""
    false_positives_dropped: int
    reason: ZapError | None = None
    """For a timed-out scan: `ZapDeadline` or `ZapScanStuck`."""

    @property
    def timed_out(self) -> bool:
        """True when the scan was stopped before ZAP finished it."""
        return self.state.status == "timed_out"


@dataclass(frozen=True)
class Reconciliation:
    """What ZAP says about a scan the store thought was running.

    verdict: "resumable" (ZAP still has the session and scan: `scan(resume=state)` carries on),
    "interrupted" (ZAP forgot it — restarted or another session: mark it and queue it again), or
    "unknown" (ZAP could not be asked; `error` says why: try again later).
    """

    verdict: Literal["resumable", "interrupted", "unknown"]
    reason: str
    error: ZapError | None = None


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
    where = shortened(path + (f" (parameter {param})" if param else ""), 200)
    return FindingDraft(
        rule=f"zap:{plugin}",
        clause=ZAP_CLAUSE,
        severity=_RISK_TO_SEVERITY.get(risk.lower(), "high"),
        subject_kind="web_path",
        subject=_subject(ref, path, param),
        summary=f"{name} ({shortened(risk, 40)}) at {where}, {len(members)} instance(s)",
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


def scope_regex(target_url: str) -> str:
    """The include regex for a service URL: the URL itself and everything beneath it.

    A URL without a trailing slash must not also take in its siblings (`/svc` vs `/svc-old`),
    so only a path separator, query or fragment may follow it. ZAP matches context regexes
    against the whole URL (Java `matches()`), as `re.fullmatch` does here.
    """
    escaped = re.escape(target_url)
    if target_url.endswith("/"):
        return escaped + ".*"
    return escaped + "(?:[/?#].*)?"


# --------------------------------------------------------------------------------------------
# Targets: what ZAP may be pointed at
# --------------------------------------------------------------------------------------------

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
"""Redirects of the service URL followed by `check_target` (browsers stop at 20)."""


def _shown(url: str) -> str:
    """A catalogue URL as a message may quote it: secrets masked, one short printable line."""
    return one_line(shortened(mask_url(url), 120))


def target_problem(url: str, networks: Iterable[str]) -> str | None:
    """Why `url` may not be scanned, judged without looking anything up; None when it may.

    A scan target is an http(s) URL with a host; a host written as an address must not lie in
    a denied network. Names are checked when the scan starts (`check_target`).
    """
    if not url.strip():
        return "the service has no URL to scan"
    shown = _shown(url)
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError:
        return f"{shown} is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return f"{shown} is not an http(s) URL; ZAP scans web services only"
    if not parts.hostname:
        return f"{shown} has no host"
    return _denied_address(url, parts.hostname, networks)


def _denied_address(url: str, host: str, networks: Iterable[str]) -> str | None:
    """Why `url` may not be scanned when its host is an address in a denied network."""
    try:
        network = netguard.denied_network(host, networks)
    except ValueError:  # a name, not an address: checked when it is resolved
        return None
    if network is None:
        return None
    return f"{_shown(url)}: {host} is inside denied network {network} (probes.denied_networks)"


def _next_hop(current: str, location: str) -> tuple[str, str] | None:
    """The URL a redirect leads to and its host, or None when ZAP would not follow it there."""
    try:
        following = urljoin(current, location.strip())
        parts = urlsplit(following)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number 0-65535)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None  # ZAP follows http(s) redirects only
    return following, parts.hostname


def _refused(url: str, refusal: Exception) -> ZapTargetRefused:
    """The error for `url`, whose host the deny list refused (`refusal` says how)."""
    said = str(refusal).removeprefix("refused: ")
    return ZapTargetRefused(f"{_shown(url)}: {said} (probes.denied_networks)")


async def _refuse_if_denied(
    url: str, networks: tuple[str, ...], timeout_s: float, first: bool
) -> bool:
    """Resolve the host of `url` and refuse it when it lands in a denied network.

    Returns False when the name does not resolve; for the service URL itself (`first`) that
    is an error instead, since its addresses cannot be checked.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        await netguard.resolve_checked(host, port, networks, timeout_s)
    except netguard.DeniedTargetError as exc:
        raise _refused(url, exc) from None
    except (OSError, TimeoutError) as exc:
        if first:
            reason = "no answer in time" if isinstance(exc, TimeoutError) else exc.strerror
            raise ZapError(
                f"cannot check {_shown(url)} against probes.denied_networks: {host} does not "
                f"resolve ({one_line(reason or str(exc))})"
            ) from None
        return False
    return True


async def check_target(url: str, networks: Iterable[str], timeout_s: float) -> list[str]:
    """Refuse a target ZAP must not be pointed at, following the service URL's redirects.

    Raises `ZapTargetRefused` when `target_problem` says so, when the host resolves into a
    denied network, or when the URL redirects (within `MAX_REDIRECTS`) to such a place; a
    retryable `ZapError` when the host does not resolve. Returns notes on what could not be
    checked (the service did not answer): ZAP's own scope still keeps it on the service.
    """
    denied = tuple(networks)
    problem = target_problem(url, denied)
    if problem is not None:
        raise ZapTargetRefused(f"not scanned: {problem}")
    current = url.strip()
    # The guarded resolver also checks the address aiohttp itself connects to.
    connector = aiohttp.TCPConnector(
        resolver=netguard.GuardedResolver(denied), force_close=True, ssl=False
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        for hop in range(MAX_REDIRECTS + 1):
            via = "" if hop == 0 else f"{_shown(url)} redirects to "
            try:
                if not await _refuse_if_denied(current, denied, timeout_s, first=hop == 0):
                    return [f"{via}{_shown(current)}, which does not resolve"]
                location = await _redirect(session, current, timeout_s)
            except ZapTargetRefused as exc:
                raise ZapTargetRefused(f"not scanned: {via}{exc}") from None
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, netguard.DeniedResolution):
                    # The name resolved elsewhere a moment before: a rebinding attempt.
                    refused = _refused(current, exc.os_error)
                    raise ZapTargetRefused(f"not scanned: {via}{refused}") from None
                return [f"could not check where {_shown(current)} leads ({one_line(str(exc))})"]
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                reason = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
                return [f"could not check where {_shown(current)} leads ({one_line(reason)})"]
            hop_to = None if location is None else _next_hop(current, location)
            if hop_to is None:
                return []
            current, host = hop_to
            problem = _denied_address(current, host, denied)
            if problem is not None:
                raise ZapTargetRefused(f"not scanned: {_shown(url)} redirects to {problem}")
    return [f"stopped following the redirects of {_shown(url)} after {MAX_REDIRECTS}"]


async def _redirect(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str | None:
    """Where `url` redirects to, or None when it answers otherwise; the body is not read."""
    async with session.get(
        url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=timeout_s)
    ) as response:
        if response.status in _REDIRECT_STATUSES:
            return response.headers.get("Location")
        return None


# --------------------------------------------------------------------------------------------
# JSON nesting: Python's decoder recurses once per level, so depth is checked before decoding
# --------------------------------------------------------------------------------------------

MAX_JSON_DEPTH = 32
"""Deeper than any answer or report of ZAP's (an alert in a page is 3 levels deep, in a
traditional-json report 5) and far from the decoder's recursion limit."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_CURLY_TO_SQUARE = bytes.maketrans(b"{}", b"[]")


def json_nesting_problem(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """ "nests more than N levels deep" when decoding `data` as JSON would go deeper than
    `max_depth`; None otherwise (including when it is not JSON at all: the decoder says so).

    Works on the brackets outside strings, removing the innermost pairs one level per pass,
    in C-speed byte operations: a 32 MiB answer is checked in well under a second.
    """
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None
    brackets = _JSON_STRING.sub(b"", data).translate(_CURLY_TO_SQUARE, _NOT_BRACKET)
    too_deep = b"[" * (max_depth + 1)  # that many opened in a row is that deep already
    for _ in range(max_depth):
        if too_deep in brackets:
            return f"nests more than {max_depth} levels deep"
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break  # only unpaired brackets are left
        brackets = shorter
    else:
        if brackets:
            return f"nests more than {max_depth} levels deep"
    # Unpaired brackets: the decoder fails on them, but only after descending through the
    # ones left open, one recursion each.
    if brackets.count(b"[") > max_depth:
        return f"nests more than {max_depth} levels deep"
    return None


# --------------------------------------------------------------------------------------------
# The client: zaproxy's ZAPv2 with a socket timeout and ZAP's error answers turned into errors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer of ZAP's API, read whole within the size cap."""

    status: int
    content_type: str | None
    body: bytes


_CHUNK = 64 << 10


def _read_capped(
    response: requests.Response, endpoint: str, max_bytes: int, deadline: float
) -> bytes:
    """The body of `response`, refused past `max_bytes` or when it is still coming at
    `deadline` (time.monotonic), so that neither a huge nor a trickling answer holds on."""
    limit = f"zap.max_answer_mb ({max_bytes / (1 << 20):g} MiB)"
    declared = response.headers.get("Content-Length", "")
    if re.fullmatch(r"[0-9]+", declared) and (len(declared) > 18 or int(declared) > max_bytes):
        raise ZapAnswerTooLarge(
            f"ZAP's answer to {endpoint} is larger than {limit}; it was not read"
        )
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise ZapAnswerTooLarge(
                f"ZAP's answer to {endpoint} is larger than {limit}; the rest was not read"
            )
        if time.monotonic() > deadline:
            raise ZapTimeout(f"ZAP's answer to {endpoint} was still arriving when its time was up")
        chunks.append(chunk)
    return b"".join(chunks)


def _decoded(data: bytes, endpoint: str) -> Any:
    """ZAP's JSON answer decoded; ValueError when it is not JSON, ZapBadAnswer when it nests
    deeper than any answer of ZAP's (the decoder would recurse once per level)."""
    problem = json_nesting_problem(data, MAX_JSON_DEPTH)
    if problem is not None:
        raise ZapBadAnswer(f"ZAP's answer to {endpoint} {problem}")
    return json.loads(data)


class _TimeoutZAPv2(ZAPv2):  # type: ignore[misc]  # zapv2 ships no type information
    """`ZAPv2` whose transport has a timeout and a size cap, and raises ZAP's HTTP error answers.

    ZAPv2's generated methods all go through `_request_api`; this override does what the
    original does (zapv2/__init__.py: a fresh `requests.Session`, the key in `X-ZAP-API-Key`,
    the call sent as a proxy request through `proxies`) and adds what it lacks: a timeout, an
    answer read in chunks up to `max_answer_bytes` (the original read it whole, however large),
    and a decoder that refuses deep nesting. An HTTP 4xx/5xx with ZAP's `{"code", "message"}`
    body becomes a `ZapApiError` with ZAP's own message; without this, the client would return
    the code string as if it were the value asked for (which the driver still checks for, see
    `_digits`).
    """

    def __init__(
        self, *, proxies: dict[str, str], apikey: str, timeout_s: float, max_answer_bytes: int
    ) -> None:
        super().__init__(proxies=proxies, apikey=apikey)
        self._monitord_proxies = proxies
        self._monitord_key = apikey
        self._monitord_timeout = timeout_s
        self._monitord_max_answer = max_answer_bytes

    def _request_api(
        self, url: str, query: Any = None, method: str = "GET", body: Any = None
    ) -> _Answer:
        if not url.startswith("http://zap/"):
            raise ValueError("A non ZAP API url was specified " + url)
        endpoint = url.removeprefix("http://zap/JSON/").strip("/")
        # As long as the driver waits for the call (`ZapScanner._call`), then it gives up.
        deadline = time.monotonic() + self._monitord_timeout * 1.5 + 1.0
        with requests.Session() as session:
            # No compression asked for: a small answer cannot inflate while it is read.
            session.headers["Accept-Encoding"] = "identity"
            if self._monitord_key:
                session.headers["X-ZAP-API-Key"] = self._monitord_key
            with session.request(
                method,
                url,
                params=query,
                data=body,
                proxies=self._monitord_proxies,
                verify=False,
                timeout=self._monitord_timeout,
                stream=True,
            ) as response:
                answer = _Answer(
                    status=response.status_code,
                    content_type=response.headers.get("Content-Type"),
                    body=_read_capped(response, endpoint, self._monitord_max_answer, deadline),
                )
        if answer.status >= 400:
            try:
                payload = _decoded(answer.body, endpoint)
                code, message = str(payload["code"]), str(payload.get("message", ""))
            except (ValueError, KeyError, TypeError):
                raise ZapBadAnswer(
                    f"ZAP answered {endpoint} with HTTP {answer.status} and no error code"
                ) from None
            raise _api_error(code, endpoint, message, answer.status)
        return answer

    def _request(self, url: str, get: Any = None, method: str = "GET", body: Any = None) -> Any:
        # zapv2's generated methods take the first value of the JSON object this returns
        # (`next(iter(d.values()))`): `{}` would raise StopIteration inside a worker thread,
        # which asyncio cannot hand back and so never completes, and a list or a string would
        # raise AttributeError. Every view and action of ZAP answers one non-empty object.
        answer = self._request_api(url, get, method, body)
        endpoint = url.removeprefix("http://zap/JSON/").strip("/")
        where = self._monitord_proxies.get("http", "")
        try:
            value = _decoded(answer.body, endpoint)
        except ValueError:
            kind = answer.content_type or "no content type"
            raise ZapBadAnswer(
                f"the answer to {endpoint} from {where} is not JSON ({kind}, "
                f"{len(answer.body)} bytes): is it ZAP that listens there?"
            ) from None
        if not isinstance(value, dict) or not value:
            shown = shortened(json.dumps(value, ensure_ascii=False), 60)
            raise ZapBadAnswer(
                f"ZAP answered {endpoint} with {shown} where an object with a value was expected"
            )
        return value

    def _request_other(
        self, url: str, get: Any = None, method: str = "GET", body: Any = None
    ) -> str:
        # The OTHER endpoints (reports) answer text; monitord uses none, but they go through
        # the same capped transport.
        return self._request_api(url, get, method, body).body.decode("utf-8", "replace")


ClientFactory = Callable[[ZapSettings], Any]


def default_client(settings: ZapSettings) -> Any:
    """Build the zaproxy client for `settings`, as the driver uses it."""
    proxies = {"http": settings.url, "https": settings.url}
    return _TimeoutZAPv2(
        proxies=proxies,
        apikey=settings.api_key,
        timeout_s=settings.call_timeout_s,
        max_answer_bytes=settings.max_answer_bytes,
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and everything behind it: causes, contexts, urllib3's `.reason`, wrapped args."""
    found: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if any(current is seen for seen in found):
            continue
        found.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(getattr(current, "args", ()))
        todo.extend(e for e in linked if isinstance(e, BaseException))
    return found


def _transport_error(exc: BaseException, endpoint: str, settings: ZapSettings) -> ZapError:
    """Turn what `requests` raised into the `ZapError` it means."""
    where = settings.url
    causes = _causes(exc)
    # Refused first: urllib3's NewConnectionError is, for history's sake, a timeout class.
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ZapUnavailable(f"ZAP is not reachable at {where} (connection refused)")
    if any(isinstance(c, requests.Timeout | TimeoutError) for c in causes):
        return ZapTimeout(
            f"ZAP at {where} did not answer {endpoint} within {settings.call_timeout_s:g} s"
        )
    if any(isinstance(c, ConnectionResetError) for c in causes):
        # http.client.RemoteDisconnected is a ConnectionResetError: ZAP's API answers a bad
        # or missing key by closing the connection (API.java: BAD_API_KEY "Fail silently").
        return ZapAuthRejected(
            f"ZAP at {where} closed the connection without answering {endpoint}: the API key "
            "is probably wrong (or this address is not permitted in ZAP's API options)"
        )
    text = " ".join(str(c) for c in causes)
    if "Name or service not known" in text or "NameResolutionError" in text:
        return ZapUnavailable(f"ZAP's address {where} cannot be resolved")
    # Before OSError: requests' JSONDecodeError is a ValueError and, as every
    # RequestException, an OSError too; it means an answer that is not JSON, not no answer.
    if isinstance(exc, ValueError):
        return ZapBadAnswer(f"the answer to {endpoint} from {where} is not JSON")
    if isinstance(exc, requests.ConnectionError | OSError):
        return ZapUnavailable(f"ZAP is not reachable at {where} ({type(exc).__name__})")
    return ZapError(f"calling ZAP {endpoint} failed: {type(exc).__name__}")


def _no_stop_iteration(fn: Callable[[], Any], endpoint: str) -> Any:
    """Run `fn`, turning the StopIteration of an empty JSON object into `ZapBadAnswer`.

    A StopIteration cannot be set on an asyncio future: the call would never complete. The
    default client checks answers itself; this covers any other client factory.
    """
    try:
        return fn()
    except StopIteration:
        raise ZapBadAnswer(f"ZAP answered {endpoint} with an empty object") from None


def _digits(value: Any, endpoint: str, *, forgotten: bool = False) -> int:
    """Check that ZAP gave a number as a string, as it does for ids and percentages.

    With `validate_status_code` off, zaproxy hands back the first value of any JSON answer —
    for an error that is the code (`"does_not_exist"`), so a string of letters here is ZAP
    refusing the call.
    """
    # ASCII digits only, and few of them: str.isdigit() also takes "²", which int() refuses,
    # and int() refuses a string of over 4,300 digits; both stopped the scan with a traceback.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value):
        raise _coded(value, endpoint, forgotten=forgotten)
    shown = shortened(repr(value), 40)
    raise ZapBadAnswer(f"ZAP answered {endpoint} with {shown} where a number was expected")


def _ok(value: Any, endpoint: str) -> None:
    """Check an action's answer: ZAP says "OK" (`{"Result": "OK"}`)."""
    if value == "OK":
        return
    if isinstance(value, str) and re.fullmatch(r"[a-z_]+", value):
        raise _coded(value, endpoint)
    raise ZapBadAnswer(f"ZAP answered {endpoint} with {value!r} where OK was expected")


def _coded(code: str, endpoint: str, *, forgotten: bool = False) -> ZapApiError:
    if forgotten and code == "does_not_exist":
        return ZapScanForgotten(
            f"ZAP no longer knows the scan asked for by {endpoint} (does_not_exist): "
            "ZAP was probably restarted",
            code=code,
        )
    return _api_error(code, endpoint, None, None)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class _TimedOut(Exception):
    """Internal: the overall deadline passed or the active scan is stuck."""

    def __init__(self, reason: ZapError) -> None:
        super().__init__(str(reason))
        self.reason = reason


class ZapScanner:
    """Runs scans of services in one ZAP instance; every dependency is passed in.

    `clock` and `sleep` are injectable so that tests move through a four-hour deadline in
    milliseconds; `client_factory` builds the zaproxy client (tests may pass plain `ZAPv2`).
    """

    def __init__(
        self,
        settings: ZapSettings,
        *,
        clock: Clock = system_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        logger: Any = _logger,
        client_factory: ClientFactory = default_client,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._log = logger
        self._client = client_factory(settings)
        self._key_accepted = False
        """ZAP has answered a call with this key, so a closed connection later is not the key."""

    # ---- one call -------------------------------------------------------------------------

    async def _call(self, endpoint: str, fn: Callable[[], Any], *, forgotten: bool = False) -> Any:
        """Run one blocking client call in a worker thread, under the per-call timeout.

        `forgotten`: the call names a scan by id, so ZAP's `does_not_exist` means ZAP forgot
        the scan (it was restarted) and becomes `ZapScanForgotten`.
        """
        try:
            # The transport has its own socket timeout; this one (slightly longer) also covers
            # a call that makes several requests or a thread pool that is slow to start.
            value = await asyncio.wait_for(
                asyncio.to_thread(_no_stop_iteration, fn, endpoint),
                timeout=self.settings.call_timeout_s * 1.5 + 1.0,
            )
            self._key_accepted = True
            return value
        except ZapScanForgotten:
            self._key_accepted = True
            raise
        except ZapApiError as exc:
            self._key_accepted = True  # ZAP answered with one of its error codes
            if forgotten and exc.code == "does_not_exist":
                raise _coded(exc.code, endpoint, forgotten=True) from None
            raise
        except ZapError:
            raise
        except TimeoutError:
            raise ZapTimeout(
                f"ZAP at {self.settings.url} did not answer {endpoint} "
                f"within {self.settings.call_timeout_s:g} s"
            ) from None
        except (requests.RequestException, OSError, ValueError) as exc:
            error = _transport_error(exc, endpoint, self.settings)
            if isinstance(error, ZapAuthRejected) and self._key_accepted:
                # ZAP took this key before, so it did not refuse it now: it crashed, was
                # restarted or was cut off mid-call, and a later attempt may well succeed.
                error = ZapUnavailable(
                    f"ZAP at {self.settings.url} closed the connection without answering "
                    f"{endpoint}, after accepting the API key earlier: ZAP probably crashed "
                    "or was restarted"
                )
            raise error from None

    async def version(self) -> str:
        """Ask ZAP for its version: a cheap check that ZAP is up and the key is right."""
        value = await self._call("core/view/version", lambda: self._client.core.version)
        if not isinstance(value, str) or not value:
            raise ZapBadAnswer(f"ZAP answered core/view/version with {value!r}")
        return value

    # ---- reading alerts -------------------------------------------------------------------

    async def read_alerts(self, base_url: str) -> tuple[list[dict[str, Any]], int]:
        """Page through ZAP's alerts whose URL starts with `base_url`.

        Returns the distinct alerts and the count `numberOfAlerts` gave beforehand. ZAP pages
        from 1: `start=0` and `start=1` both begin at the first alert (AlertAPI's
        PaginationConstraintsChecker), so pages start at 1, 1+N, 1+2N — never 0, N, 2N, which
        would read the N-th alert twice.
        """
        expected = _digits(
            await self._call(
                "core/view/numberOfAlerts",
                lambda: self._client.core.number_of_alerts(baseurl=base_url),
            ),
            "core/view/numberOfAlerts",
        )
        size = self.settings.page_size
        start = 1
        seen: set[str] = set()
        alerts: list[dict[str, Any]] = []
        while True:
            page = await self._call(
                "core/view/alerts",
                functools.partial(
                    self._client.core.alerts, baseurl=base_url, start=start, count=size
                ),
            )
            if isinstance(page, str):
                raise _coded(page, "core/view/alerts")
            if not isinstance(page, list):
                raise ZapBadAnswer(f"ZAP answered core/view/alerts with {type(page).__name__}")
            fresh = 0
            for item in page:
                if not isinstance(item, dict):
                    raise ZapBadAnswer("ZAP answered core/view/alerts with a non-object alert")
                ident = str(item.get("id", len(alerts)))
                if ident not in seen:
                    seen.add(ident)
                    alerts.append(item)
                    fresh += 1
            # A short page is the last one; a page with nothing new means ZAP is repeating
            # itself, and going on would never end.
            if len(page) < size or fresh == 0:
                break
            start += size
        if len(alerts) != expected:
            self._log.warning(
                "ZAP listed {} alerts under {} but numberOfAlerts said {}",
                len(alerts),
                base_url,
                expected,
            )
        return alerts, expected

    # ---- the scan -------------------------------------------------------------------------

    async def scan(
        self,
        target_url: str,
        *,
        scan_key: str,
        service_id: str | None = None,
        bearer_token: str | None = None,
        on_progress: ProgressCallback | None = None,
        resume: ScanState | None = None,
    ) -> ScanOutcome:
        """Scan `target_url` and return its findings, reporting progress through `on_progress`.

        Returns a finished or timed-out outcome. Raises a `ZapError` when ZAP fails (after
        reporting a "failed" or, for a forgotten scan, "interrupted" state), and re-raises
        cancellation after stopping the scan in ZAP and reporting "interrupted". `resume` is a
        state from `reconcile` → "resumable": completed steps are skipped and the running
        ZAP scan is polled again. `bearer_token` is never logged nor put in the state.
        """
        run = _Run(self, target_url, scan_key, service_id, bearer_token, on_progress, resume)
        return await run.execute()

    async def stop(self, state: ScanState) -> None:
        """Stop in ZAP whatever `state` has running (spider, AJAX spider, active scan).

        Best effort: used on shutdown and after a deadline; errors are logged, not raised.
        """
        client = self._client
        if state.step is Step.SPIDER and state.spider_scan_id is not None:
            sid = state.spider_scan_id
            await self._quiet("spider/action/stop", lambda: client.spider.stop(scanid=sid))
        elif state.step is Step.AJAX_SPIDER:
            await self._quiet("ajaxSpider/action/stop", lambda: client.ajaxSpider.stop())
        elif state.step is Step.ACTIVE and state.active_scan_id is not None:
            aid = state.active_scan_id
            await self._quiet("ascan/action/stop", lambda: client.ascan.stop(aid))

    async def _quiet(self, endpoint: str, fn: Callable[[], Any]) -> None:
        try:
            await self._call(endpoint, fn)
        except ZapError as exc:
            self._log.warning("could not {} in ZAP: {}", endpoint, exc)

    async def reconcile(self, state: ScanState) -> Reconciliation:
        """Tell whether ZAP still knows a scan that the store says is running.

        ZAP forgets everything on restart and on a new session (scan ids restart at "0"), so
        both the session and the scan id are checked: the session name is monitord's own
        (`monitord-<scan_key>`), which a restarted ZAP does not have.
        """
        try:
            location = await self._call(
                "core/view/sessionLocation", lambda: self._client.core.session_location
            )
            if not state.session_name or not isinstance(location, str):
                return Reconciliation("interrupted", "the scan had no ZAP session yet")
            if state.session_name not in location:
                return Reconciliation(
                    "interrupted",
                    f"ZAP's session is {location!r}, not {state.session_name!r}: "
                    "ZAP was restarted or another session was started",
                )
            if state.step is Step.ACTIVE and state.active_scan_id is not None:
                aid = state.active_scan_id
                percent = _digits(
                    await self._call(
                        "ascan/view/status",
                        lambda: self._client.ascan.status(scanid=aid),
                        forgotten=True,
                    ),
                    "ascan/view/status",
                    forgotten=True,
                )
                return Reconciliation("resumable", f"ZAP's active scan {aid} is at {percent}%")
            if state.step is Step.SPIDER and state.spider_scan_id is not None:
                sid = state.spider_scan_id
                percent = _digits(
                    await self._call(
                        "spider/view/status",
                        lambda: self._client.spider.status(scanid=sid),
                        forgotten=True,
                    ),
                    "spider/view/status",
                    forgotten=True,
                )
                return Reconciliation("resumable", f"ZAP's spider {sid} is at {percent}%")
            return Reconciliation("resumable", f"ZAP still has session {state.session_name!r}")
        except ZapScanForgotten as exc:
            return Reconciliation("interrupted", str(exc), exc)
        except ZapError as exc:
            return Reconciliation("unknown", str(exc), exc)


class _Run:
    """One scan in progress: its state, its deadline and the steps that move it on."""

    def __init__(
        self,
        scanner: ZapScanner,
        target_url: str,
        scan_key: str,
        service_id: str | None,
        bearer_token: str | None,
        on_progress: ProgressCallback | None,
        resume: ScanState | None,
    ) -> None:
        self.s = scanner
        self.cfg = scanner.settings
        self.client = scanner._client
        self.target = target_url
        self.service_id = service_id
        self.token = bearer_token
        self.on_progress = on_progress
        now = scanner._clock()
        safe_key = re.sub(r"[^A-Za-z0-9_.-]", "_", scan_key)
        self.state = resume or ScanState(
            scan_key=scan_key,
            target_url=target_url,
            session_name=f"monitord-{safe_key}",
            context_name=f"monitord-{safe_key}",
            started_at=now,
            updated_at=now,
        )
        self.resuming = resume is not None
        started = self.state.started_at or now
        self.deadline = started + dt.timedelta(seconds=self.cfg.scan_deadline_s)
        self.scope = re.compile(scope_regex(target_url))
        self.rule_name = f"monitord-auth-{safe_key}"
        self.notes: list[str] = []

    # ---- state ----------------------------------------------------------------------------

    async def publish(self, **changes: Any) -> None:
        """Apply `changes` to the state and hand it to the caller if anything changed."""
        new = dataclasses.replace(self.state, **changes)
        if new == self.state:
            return
        self.state = dataclasses.replace(new, updated_at=self.s._clock())
        if self.on_progress is not None:
            await self.on_progress(self.state)

    async def finish_step(self, step: Step) -> None:
        await self.publish(steps_done=(*self.state.steps_done, step), percent=0)

    def check_deadline(self) -> None:
        if self.s._clock() >= self.deadline:
            raise _TimedOut(
                ZapDeadline(
                    f"scan passed its deadline of {self.cfg.scan_deadline_s:g} s "
                    f"during the {self.state.step.value} step and was stopped in ZAP"
                )
            )

    # ---- the whole run --------------------------------------------------------------------

    async def execute(self) -> ScanOutcome:
        handlers: dict[Step, Callable[[], Awaitable[None]]] = {
            Step.SESSION: self.step_session,
            Step.CONTEXT: self.step_context,
            Step.AUTH: self.step_auth,
            Step.SPIDER: self.step_spider,
            Step.AJAX_SPIDER: self.step_ajax,
            Step.PASSIVE: self.step_passive,
            Step.ACCESS: self.step_access,
            Step.ACTIVE: self.step_active,
        }
        log = self.s._log
        try:
            # Checked on every start, a resumed one too: the catalogue or DNS may have changed.
            for note in await check_target(
                self.target, self.cfg.denied_networks, self.cfg.call_timeout_s
            ):
                log.warning("ZAP scan {} of {}: {}", self.state.scan_key, self.target, note)
                self.notes.append(note)
            status: ScanStatus = "finished"
            reason: ZapError | None = None
            try:
                if self.resuming:
                    await self.check_session()
                for step in STEPS:
                    if step in self.state.steps_done or step not in handlers:
                        continue
                    await self.publish(step=step, percent=0)
                    self.check_deadline()
                    await handlers[step]()
                    await self.finish_step(step)
            except _TimedOut as timed_out:
                log.warning("ZAP scan {} of {}: {}", self.state.scan_key, self.target, timed_out)
                await self.s.stop(self.state)
                status, reason = "timed_out", timed_out.reason
            # Outside the inner try so that a failure while reading alerts is reported below.
            return await self.harvest(status, reason)
        except asyncio.CancelledError:
            # Shutdown: ZAP must not go on attacking the service unsupervised.
            await asyncio.shield(self.interrupt())
            raise
        except ZapError as exc:
            ended: ScanStatus = "interrupted" if isinstance(exc, ZapScanForgotten) else "failed"
            log.error("ZAP scan {} of {} {}: {}", self.state.scan_key, self.target, ended, exc)
            with contextlib.suppress(ZapError):
                await self.s.stop(self.state)
            await self.publish(status=ended, message=str(exc), retryable=exc.retryable)
            raise
        except Exception:
            # Not ZAP's fault but monitord's: ZAP must not go on attacking unsupervised; the
            # caller records the failure.
            with contextlib.suppress(Exception):
                await self.s.stop(self.state)
            raise
        finally:
            if self.token is not None:
                # The token must not stay in ZAP's replacer rules, which outlive the session.
                await asyncio.shield(self.remove_auth_rule())

    async def interrupt(self) -> None:
        await self.s.stop(self.state)
        with contextlib.suppress(Exception):
            await self.publish(
                status="interrupted",
                message="scan stopped in ZAP because monitord shut down",
                retryable=True,
            )

    async def harvest(self, status: ScanStatus, reason: ZapError | None) -> ScanOutcome:
        """Read the alerts found so far and turn them into findings."""
        await self.publish(step=Step.ALERTS, percent=0)
        alerts, expected = await self.read_alerts()
        grouping = group_alerts(
            alerts,
            service_id=self.service_id,
            in_scope=lambda u: bool(self.scope.fullmatch(u)),
            max_field_bytes=self.cfg.max_field_bytes,
        )
        message = str(reason) if reason is not None else ("; ".join(self.notes) or None)
        await self.publish(
            step=Step.DONE,
            steps_done=(*self.state.steps_done, Step.ALERTS),
            status=status,
            percent=100 if status == "finished" else self.state.percent,
            message=message,
            retryable=None if reason is None else reason.retryable,
        )
        self.s._log.info(
            "ZAP scan {} of {} {}: {} alerts, {} findings",
            self.state.scan_key,
            self.target,
            status,
            len(alerts),
            len(grouping.findings),
        )
        return ScanOutcome(
            state=self.state,
            findings=grouping.findings,
            alerts_read=len(alerts),
            alerts_expected=expected,
            false_positives_dropped=grouping.false_positives_dropped,
            reason=reason,
        )

    async def read_alerts(self) -> tuple[list[dict[str, Any]], int]:
        """Read the alerts, trying again after a passing failure: they are the scan's result.

        ZAP's session is checked before and after: a ZAP restarted meanwhile has a new, empty
        session, whose "no alerts" would have marked every finding of the service fixed.
        """
        tries = 3
        for attempt in range(1, tries + 1):
            await self.check_session()
            try:
                alerts, expected = await self.s.read_alerts(self.target)
            except ZapError as exc:
                if not exc.retryable or attempt == tries:
                    raise
                self.s._log.warning(
                    "ZAP scan {}: reading alerts failed ({}); trying again",
                    self.state.scan_key,
                    exc,
                )
                await self.s._sleep(self.cfg.poll_interval_s)
                continue
            await self.check_session()
            return alerts, expected
        raise AssertionError("unreachable")  # the last try returns or raises

    async def check_session(self) -> None:
        verdict = await self.s.reconcile(self.state)
        if verdict.verdict == "interrupted":
            raise ZapScanForgotten(
                f"ZAP no longer has this scan ({self.state.step.value} step): {verdict.reason}",
                code="does_not_exist",
            )
        if verdict.error is not None:
            raise verdict.error

    # ---- steps ----------------------------------------------------------------------------

    async def step_session(self) -> None:
        # A new session per scan: ZAP grows in memory over long runs, and a fresh session
        # keeps one service's alerts apart from the next one's.
        name = self.state.session_name
        value = await self.s._call(
            "core/action/newSession",
            lambda: self.client.core.new_session(name=name, overwrite=True),
        )
        _ok(value, "core/action/newSession")

    async def step_context(self) -> None:
        name = self.state.context_name
        cid = _digits(
            await self.s._call(
                "context/action/newContext", lambda: self.client.context.new_context(name)
            ),
            "context/action/newContext",
        )
        regex = scope_regex(self.target)
        _ok(
            await self.s._call(
                "context/action/includeInContext",
                lambda: self.client.context.include_in_context(name, regex),
            ),
            "context/action/includeInContext",
        )
        await self.publish(context_id=str(cid))

    async def step_auth(self) -> None:
        if self.token is None:
            return
        token = self.token
        await self.remove_auth_rule()
        # REQ_HEADER sets (or replaces) the header on every request ZAP sends; `url` limits
        # the rule to the service so the token never goes to another host.
        value = await self.s._call(
            "replacer/action/addRule",
            lambda: self.client.replacer.add_rule(
                description=self.rule_name,
                enabled="true",
                matchtype="REQ_HEADER",
                matchregex="false",
                matchstring="Authorization",
                replacement=f"Bearer {token}",
                url=scope_regex(self.target),
            ),
        )
        _ok(value, "replacer/action/addRule")

    async def remove_auth_rule(self) -> None:
        name = self.rule_name
        try:
            await self.s._call(
                "replacer/action/removeRule", lambda: self.client.replacer.remove_rule(name)
            )
        except ZapError as exc:
            # does_not_exist is the normal answer when there is no rule yet.
            if not (isinstance(exc, ZapApiError) and exc.code == "does_not_exist"):
                self.s._log.warning("could not remove the auth rule from ZAP: {}", exc)

    async def step_spider(self) -> None:
        client, cfg = self.client, self.cfg
        if self.state.spider_scan_id is None:
            depth, minutes = cfg.spider_max_depth, cfg.spider_minutes
            _ok(
                await self.s._call(
                    "spider/action/setOptionMaxDepth",
                    lambda: client.spider.set_option_max_depth(depth),
                ),
                "spider/action/setOptionMaxDepth",
            )
            _ok(
                await self.s._call(
                    "spider/action/setOptionMaxDuration",
                    lambda: client.spider.set_option_max_duration(minutes),
                ),
                "spider/action/setOptionMaxDuration",
            )
            name, target = self.state.context_name, self.target
            children = cfg.spider_max_children or None
            sid = _digits(
                await self.s._call(
                    "spider/action/scan",
                    lambda: client.spider.scan(
                        url=target, maxchildren=children, contextname=name, subtreeonly="true"
                    ),
                ),
                "spider/action/scan",
            )
            await self.publish(spider_scan_id=str(sid))
        sid_text = self.state.spider_scan_id
        assert sid_text is not None
        # ZAP bounds the spider by setOptionMaxDuration; this bound (with a minute's grace)
        # covers a spider that ignores it.
        bound = self.s._clock() + dt.timedelta(minutes=cfg.spider_minutes + 1)
        while True:
            percent = _digits(
                await self.s._call(
                    "spider/view/status",
                    lambda: client.spider.status(scanid=sid_text),
                    forgotten=True,
                ),
                "spider/view/status",
                forgotten=True,
            )
            await self.publish(percent=min(percent, 100))
            if percent >= 100:
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(f"spider stopped after {cfg.spider_minutes} min")
                await self.s.stop(self.state)
                return
            await self.s._sleep(cfg.poll_interval_s)

    async def step_ajax(self) -> None:
        if not self.cfg.ajax_spider:
            return
        client, cfg = self.client, self.cfg
        minutes, target, name = cfg.ajax_spider_minutes, self.target, self.state.context_name
        _ok(
            await self.s._call(
                "ajaxSpider/action/setOptionMaxDuration",
                lambda: client.ajaxSpider.set_option_max_duration(minutes),
            ),
            "ajaxSpider/action/setOptionMaxDuration",
        )
        _ok(
            await self.s._call(
                "ajaxSpider/action/scan",
                lambda: client.ajaxSpider.scan(url=target, contextname=name, subtreeonly="true"),
            ),
            "ajaxSpider/action/scan",
        )
        bound = self.s._clock() + dt.timedelta(minutes=minutes + 1)
        while True:
            status = await self.s._call("ajaxSpider/view/status", lambda: client.ajaxSpider.status)
            if not isinstance(status, str):
                raise ZapBadAnswer(f"ZAP answered ajaxSpider/view/status with {status!r}")
            if status.lower() != "running":
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(f"AJAX spider stopped after {minutes} min")
                await self.s.stop(self.state)
                return
            await self.s._sleep(cfg.poll_interval_s)

    async def step_passive(self) -> None:
        # Passive alerts are raised from the queue of recorded messages; reading alerts
        # before it drains would miss them.
        client, cfg = self.client, self.cfg
        bound = self.s._clock() + dt.timedelta(seconds=cfg.passive_deadline_s)
        while True:
            left = _digits(
                await self.s._call(
                    "pscan/view/recordsToScan", lambda: client.pscan.records_to_scan
                ),
                "pscan/view/recordsToScan",
            )
            if left == 0:
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(
                    f"passive scanner still had {left} records after {cfg.passive_deadline_s:g} s"
                )
                self.s._log.warning("ZAP scan {}: {}", self.state.scan_key, self.notes[-1])
                return
            await self.s._sleep(cfg.poll_interval_s)

    async def step_access(self) -> None:
        # The active scan refuses a URL that is not in the sites tree (url_not_found); the
        # spider may have recorded only children, so ZAP is asked to fetch the URL itself.
        target = self.target
        value = await self.s._call(
            "core/action/accessUrl",
            # ZAP's default, said out loud: a redirect is for the spider, in the context, to follow.
            lambda: self.client.core.access_url(target, followredirects="false"),
        )
        if isinstance(value, str):
            raise _coded(value, "core/action/accessUrl")

    async def step_active(self) -> None:
        client, cfg = self.client, self.cfg
        if self.state.active_scan_id is None:
            target, cid, policy = self.target, self.state.context_id, cfg.scan_policy
            try:
                aid = _digits(
                    await self.s._call(
                        "ascan/action/scan",
                        lambda: client.ascan.scan(
                            url=target, recurse="true", scanpolicyname=policy, contextid=cid
                        ),
                    ),
                    "ascan/action/scan",
                )
            except ZapApiError as exc:
                # ActiveScanAPI: an unknown scanPolicyName is does_not_exist; that is a
                # configuration mistake a retry will not mend.
                if policy and exc.code == "does_not_exist":
                    raise ZapApiError(
                        f"ZAP has no scan policy named {policy!r} (zap.scan_policy)",
                        code=exc.code,
                        http_status=exc.http_status,
                        retryable=False,
                    ) from None
                raise
            await self.publish(active_scan_id=str(aid))
        aid_text = self.state.active_scan_id
        assert aid_text is not None
        last, same = -1, 0
        while True:
            percent = _digits(
                await self.s._call(
                    "ascan/view/status",
                    lambda: client.ascan.status(scanid=aid_text),
                    forgotten=True,
                ),
                "ascan/view/status",
                forgotten=True,
            )
            await self.publish(percent=min(percent, 100))
            if percent >= 100:
                return
            same = same + 1 if percent == last else 1
            last = percent
            if same >= cfg.stuck_polls:
                raise _TimedOut(
                    ZapScanStuck(
                        f"active scan {aid_text} stayed at {percent}% for {same} polls "
                        f"({same * cfg.poll_interval_s:g} s) and was stopped in ZAP"
                    )
                )
            self.check_deadline()
            await self.s._sleep(cfg.poll_interval_s)


def state_json(state: ScanState) -> str:
    """The state as a JSON string, for a store column of type TEXT."""
    return json.dumps(state.to_dict(), ensure_ascii=False, sort_keys=True)
