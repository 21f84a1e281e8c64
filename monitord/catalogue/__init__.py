"""Catalogue sync: read the portal's whole service catalogue, validate it, apply it atomically.

The contract is spec/catalogue-api.md. A sync either reads a whole, valid catalogue and applies
it in one transaction, or changes nothing and records a failed sync run with its reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
from loguru import logger
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.config import PortalSettings
from monitord.errors import SyncError
from monitord.store import Store
from monitord.store.findings import resolve_findings, upsert_finding
from monitord.store.models import Service, ServiceEvent, SyncRun
from monitord.textable import UNSTORABLE, shortened, storable
from monitord.timeutil import SHANGHAI, Clock, parse_time
from monitord.types import PROBE_METHODS, FindingDraft, Severity, is_http_status
from monitord.workcalendar import WorkCalendar

ENUMS: dict[str, tuple[str, ...]] = {
    "type": ("government", "public", "market", "other"),
    "permission": ("view", "handle", "key"),
    "source": ("province", "district", "bureau", "association"),
    "access_method": ("https", "sdk", "http"),
    "status": ("pending", "approved", "online", "suspended", "offline"),
}

# Appendix A (备案表) fields a filing must have, with the names people know them by.
APPENDIX_A: dict[str, str] = {
    "name": "服务名称",
    "type": "服务类型",
    "permission": "业务权限",
    "provider": "服务提供单位",
    "coverage": "覆盖区域",
    "access_method": "接入方式",
    "max_concurrency": "支持并发数",
    "url": "正式地址",
    "manual_url": "操作手册",
    "planned_release": "计划发布时间",
    "flowchart_url": "业务流程图",
    "security_plan_url": "安全保障方案",
    "developer": "开发单位",
    "description": "功能描述",
    "faq_url": "常见问题",
    "review": "审核意见",
}

TEXT_FIELDS = (
    "name",
    "provider",
    "developer",
    "url",
    "manual_url",
    "flowchart_url",
    "security_plan_url",
    "faq_url",
    "emergency_plan_url",
    "description",
    "planned_release",
)
OBJECT_FIELDS = ("probe", "return_codes", "review", "suspension", "offline_notice")

RULE_FILING = "appendix_a_incomplete"
RULE_UNKNOWN_VALUE = "catalogue_unknown_value"
RULE_PLAIN_HTTP = "plain_http_access"
RULE_SHORT_NOTICE = "offline_notice_short"
CATALOGUE_RULES = (RULE_FILING, RULE_UNKNOWN_VALUE, RULE_PLAIN_HTTP, RULE_SHORT_NOTICE)
NOTICE_WORKING_DAYS = 10
"""Clause 7.2.4: a take-down is reported ten working days ahead (the Chinese working days after
the filing day and before the take-down day)."""
NOTICE_TIMES = {
    "suspension": ("filed_at", "from", "planned_resume"),
    "offline_notice": ("filed_at", "planned_offline"),
}
"""The times inside the lifecycle notices (spec/catalogue-api.md)."""


@dataclass(frozen=True)
class ServiceRecord:
    """One validated catalogue record: the columns to store, the raw record, and its problems."""

    id: str
    columns: dict[str, Any]
    raw: dict[str, Any]
    filing_problems: list[str]
    unknown_values: list[str]
    fingerprint: str


@dataclass(frozen=True)
class Catalogue:
    """A whole catalogue as read from the portal or a file."""

    records: list[ServiceRecord]
    etag: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync did, as recorded in its sync run."""

    outcome: str
    reason: str | None = None
    services_seen: int = 0
    added: int = 0
    changed: int = 0
    gone: int = 0
    events: int = 0
    event_lines: tuple[str, ...] = ()
    """Readable lines for the lifecycle events other than "added", for the log."""


def _show(value: Any) -> str:
    """A value as it appears in a message: its repr, cut short so one field cannot flood a log."""
    return shortened(repr(value), 80)


def _int_or_text(text: str) -> int | str:
    # Python refuses to turn more than 4,300 digits into an int; such a number is kept as its
    # text, so that the one field holding it is reported instead of the whole page failing.
    try:
        return int(text)
    except ValueError:
        return text


def _finite_or_text(text: str) -> float | str:
    # NaN, Infinity and 1e400 cannot be stored as JSON by PostgreSQL; their text is kept instead.
    number = float(text)
    return number if math.isfinite(number) else text


def load_json(data: str | bytes) -> Any:
    """Parse a catalogue document; numbers no store can hold are kept as their text.

    Raises ValueError with a short reason when the data is not JSON monitord can read.
    """
    try:
        return json.loads(
            data, parse_int=_int_or_text, parse_float=_finite_or_text, parse_constant=str
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


ID_LENGTH = 200
"""The longest service id the store holds (services.id)."""
SHORT_LENGTH = 40
"""The longest enum value or planned_release the store holds (their columns are String(40))."""
MAX_CONCURRENCY = 2**31 - 1
"""The largest max_concurrency the store holds (a 32-bit INTEGER column on PostgreSQL)."""


MIB = 1024 * 1024

RECORD_DEPTH = 20
"""How deeply a record's values may nest; the contract's deepest (probe.expect_codes.ok) is 3."""


def _clean(value: Any, path: str, problems: list[str], depth: int = 0) -> Any:
    """value with every NUL character and lone surrogate replaced by U+FFFD, each place named.

    A value nested deeper than RECORD_DEPTH is kept as its JSON text, so that neither this walk
    nor the store's JSON writer runs out of stack.
    """
    if isinstance(value, str):
        if UNSTORABLE.search(value) is None:
            return value
        problems.append(
            f"{path}: holds a NUL character or a lone surrogate, not text; kept with U+FFFD instead"
        )
        return storable(value)
    if isinstance(value, list | dict) and depth >= RECORD_DEPTH:
        problems.append(f"{path}: nested more than {RECORD_DEPTH} levels deep; kept as JSON text")
        return json.dumps(value)
    if isinstance(value, list):
        items = []
        for index, item in enumerate(value):
            items.append(_clean(item, f"{path}[{index}]", problems, depth + 1))
        return items
    if isinstance(value, dict):
        cleaned: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{_show(key)} (a field name)" if path else _show(key)
            name = _clean(key, where, problems)
            cleaned[name] = _clean(item, f"{path}.{name}" if path else name, problems, depth + 1)
        return cleaned
    return value


def _json_bytes(value: Any) -> int:
    """How many bytes a value takes as JSON text in UTF-8, as the store keeps it."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return len(text.encode("utf-8", "surrogatepass"))


def _size(count: int) -> str:
    return f"{count / MIB:.1f} MiB" if count >= MIB else f"{math.ceil(count / 1024)} KiB"


def _without_oversized(
    raw: dict[str, Any], max_field_kb: int, problems: list[str]
) -> tuple[dict[str, Any], set[str]]:
    """raw without the fields larger than max_field_kb KiB, each named in a problem with its
    size; and their names. Neither its column nor the stored record keeps such a field (a 50 MB
    description was stored twice), and the rest of the record is kept."""
    limit = max_field_kb * 1024
    kept: dict[str, Any] = {}
    dropped: set[str] = set()
    for name, value in raw.items():
        # Numbers are short (load_json keeps an overlong one as its text), so is null; a field
        # name counts too.
        size = len(name) + (_json_bytes(value) if isinstance(value, str | list | dict) else 0)
        if size <= limit:
            kept[name] = value
            continue
        dropped.add(name)
        shown = name if name.isidentifier() and len(name) <= 40 else _show(name)
        problems.append(
            f"{shown}: {_size(size)}, more than the {max_field_kb} KiB a field may hold "
            "(portal.max_field_kb); not stored"
        )
    return kept, dropped


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


def validate_record(raw: Any, where: str, max_field_kb: int) -> ServiceRecord:
    """Validate one SERVICE object; problems of the filing are collected, never fatal. A field
    larger than max_field_kb KiB is one of them, and is not kept.

    Raises SyncError only when the record cannot be tracked at all (not an object, no id).
    """
    if not isinstance(raw, dict):
        raise SyncError(f"{where}: expected a service object, got {type(raw).__name__}")
    service_id = raw.get("id")
    if not isinstance(service_id, str) or not service_id.strip():
        raise SyncError(f"{where}: a service has no usable id ({_show(service_id)})")
    if UNSTORABLE.search(service_id) or len(service_id.strip()) > ID_LENGTH:
        raise SyncError(
            f"{where}: service id {_show(service_id)} is not usable: it holds a NUL character or "
            f"a lone surrogate, or is longer than {ID_LENGTH} characters"
        )
    problems: list[str] = []
    raw, oversized = _without_oversized(raw, max_field_kb, problems)
    raw = _clean(raw, "", problems)
    unknown: list[str] = []
    columns: dict[str, Any] = {}

    for name in TEXT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name}: expected text, got {_show(value)}")
            value = None
        if name == "planned_release" and value is not None and len(value) > SHORT_LENGTH:
            problems.append(f"{name}: expected a date, got {_show(value)}")
            value = None
        columns[name] = value
    for name in OBJECT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{name}: expected an object, got {_show(value)}")
            value = None
        columns[name] = value
    for name, allowed in ENUMS.items():
        value = raw.get(name)
        if value is None:
            columns[name] = None
            continue
        if not isinstance(value, str) or len(value) > SHORT_LENGTH:
            problems.append(f"{name}: expected one of {', '.join(allowed)}, got {_show(value)}")
            columns[name] = None
            continue
        if value not in allowed:
            unknown.append(f"{name}={value}")
        columns[name] = value
    coverage = raw.get("coverage")
    if coverage is not None and not (
        isinstance(coverage, list) and all(isinstance(c, str) for c in coverage)
    ):
        problems.append(f"coverage: expected a list of district names, got {_show(coverage)}")
        coverage = None
    columns["coverage"] = coverage or []
    contacts = raw.get("contacts")
    if contacts is not None and not (
        isinstance(contacts, list) and all(isinstance(c, dict) for c in contacts)
    ):
        problems.append(f"contacts: expected a list of objects, got {_show(contacts)}")
        contacts = None
    columns["contacts"] = contacts or []
    concurrency = raw.get("max_concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency <= 0
    ):
        problems.append(f"max_concurrency: expected a positive integer, got {_show(concurrency)}")
        concurrency = None
    elif concurrency is not None and concurrency > MAX_CONCURRENCY:
        problems.append(
            f"max_concurrency: {_show(concurrency)} is beyond the {MAX_CONCURRENCY} monitord stores"
        )
        concurrency = None
    columns["max_concurrency"] = concurrency
    updated_at = raw.get("updated_at")
    columns["updated_at"] = None
    if isinstance(updated_at, str):
        try:
            columns["updated_at"] = parse_time(updated_at)
        except ValueError:
            problems.append(f"updated_at: expected an ISO 8601 time, got {_show(updated_at)}")
        except OverflowError:
            problems.append(f"updated_at: {_show(updated_at)} is outside years 1-9999 in UTC")
    elif updated_at is not None:
        problems.append(f"updated_at: expected an ISO 8601 time, got {_show(updated_at)}")
    if raw.get("status") is None and "status" not in oversized:
        problems.append("status: missing (lifecycle state)")
    probe = raw.get("probe")
    if isinstance(probe, dict):
        problems += _probe_problems(probe)
    for notice, keys in NOTICE_TIMES.items():
        filed = raw.get(notice)
        for key in keys if isinstance(filed, dict) else ():
            if filed.get(key) is not None and _notice_time(filed, key) is None:
                got = _show(filed.get(key))
                problems.append(f"{notice}.{key}: expected an ISO 8601 time, got {got}")

    for name, label in APPENDIX_A.items():
        value = raw.get(name)
        if name in oversized:
            continue  # reported as too large: "missing" would be wrong
        if name == "review":
            opinion = value.get("opinion") if isinstance(value, dict) else None
            if _blank(opinion):
                problems.append(f"review: missing ({label})")
        elif _blank(value):
            problems.append(f"{name}: missing ({label})")
    if columns["status"] == "suspended" and not raw.get("suspension"):
        problems.append("suspension: status is suspended but no suspension was filed (7.2.2)")

    canonical = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    return ServiceRecord(
        id=service_id.strip(),
        columns=columns,
        raw=raw,
        filing_problems=sorted(set(problems)),
        unknown_values=unknown,
        fingerprint=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def collect_records(
    services: list[Any], where: str, into: dict[str, ServiceRecord], max_field_kb: int
) -> list[str]:
    """Validate a page of records into `into`, keyed by id; returns warnings.

    An id seen twice with the same content is a harmless repeat (a page boundary that moved).
    With different content the catalogue changed while it was read, and the sync fails.
    """
    warnings: list[str] = []
    for index, raw in enumerate(services):
        record = validate_record(raw, f"{where}, services[{index}]", max_field_kb)
        seen = into.get(record.id)
        if seen is not None:
            if seen.fingerprint != record.fingerprint:
                raise SyncError(
                    f"{where}: service {record.id} appears twice with different content; the "
                    "catalogue changed while it was read"
                )
            warnings.append(f"{where}: service {record.id} listed twice")
            continue
        into[record.id] = record
    return warnings


def read_catalogue_file(path: str | Path, max_field_kb: int) -> Catalogue:
    """Read a catalogue file: a JSON object with a `services` list, as the portal serves it;
    a field larger than max_field_kb KiB is a filing problem and is not kept."""
    file = Path(path)
    try:
        document = load_json(file.read_bytes())
    except OSError as exc:
        raise SyncError(f"{file}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise SyncError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise SyncError(f"{file}: expected a JSON object with a 'services' list")
    records: dict[str, ServiceRecord] = {}
    warnings = collect_records(document["services"], str(file), records, max_field_kb)
    return Catalogue(records=list(records.values()), warnings=warnings)


Sleep = Callable[[float], Awaitable[None]]


class _Retryable(Exception):
    """A page request failed in a way that may pass (timeout, 5xx, cut-off body, HTML)."""


READ_CHUNK = 64 * 1024


async def _bounded_body(response: aiohttp.ClientResponse, max_mb: float, where: str) -> bytes:
    """The body of a page, read in pieces and never more than max_mb MiB of it (decompressed).

    Raises SyncError as soon as the page proves larger (by its Content-Length, or by what came):
    an endless or hostile answer costs no more memory than the limit, and no retry, since the
    same page would come again.
    """
    limit = int(max_mb * MIB)
    too_large = SyncError(
        f"{where} is larger than {max_mb:g} MiB (portal.max_page_mb) and was read no further; "
        "lower portal.page_size, or raise portal.max_page_mb if the portal's records are that big"
    )
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > limit:
            raise too_large
    return bytes(body)


async def _get_page(
    session: aiohttp.ClientSession,
    settings: PortalSettings,
    headers: dict[str, str],
    page: int,
) -> tuple[int, dict[str, Any] | None, str | None]:
    url = f"{settings.url}/api/v1/services"
    params = {"page": str(page), "page_size": str(settings.page_size)}
    timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
    where = f"page {page}"
    try:
        async with session.get(url, params=params, headers=headers, timeout=timeout) as response:
            if response.status == 304:
                return 304, None, response.headers.get("ETag")
            if response.status in (401, 403):
                raise SyncError(f"{where}: the portal refused the token (HTTP {response.status})")
            if response.status == 429 or response.status >= 500:
                raise _Retryable(f"{where}: the portal answered HTTP {response.status}")
            if response.status != 200:
                raise SyncError(f"{where}: the portal answered HTTP {response.status}")
            body = await _bounded_body(response, settings.max_page_mb, where)
            content_type = response.headers.get("Content-Type", "")
            etag = response.headers.get("ETag")
    except TimeoutError:
        raise _Retryable(
            f"{where}: no answer within {settings.timeout_seconds:g} s (timeout)"
        ) from None
    except aiohttp.ClientPayloadError:
        raise _Retryable(f"{where}: the connection closed before the whole page was read") from None
    except aiohttp.ClientError as exc:
        raise _Retryable(f"{where}: cannot reach the portal ({exc.__class__.__name__})") from None
    try:
        document = load_json(body)
    except ValueError as exc:
        start = body[:40].decode("utf-8", "replace").strip()
        raise _Retryable(
            f"{where}: expected JSON, got {content_type or 'no content type'} starting {start!r}"
            f" ({exc})"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise _Retryable(f"{where}: expected an object with a 'services' list")
    return 200, document, etag


async def fetch_catalogue(
    session: aiohttp.ClientSession,
    settings: PortalSettings,
    token: SecretStr | None,
    etag: str | None,
    sleep: Sleep = asyncio.sleep,
) -> Catalogue | None:
    """Read every page of the portal's catalogue; None when the portal says nothing changed.

    Each page is retried with exponential backoff on timeouts, 5xx, cut-off bodies and non-JSON
    answers. Raises SyncError with the reason when the whole catalogue cannot be read.
    """
    headers = {"Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"
    records: dict[str, ServiceRecord] = {}
    warnings: list[str] = []
    first_etag: str | None = None
    announced_total: int | None = None
    page = 1
    pages_read = 0
    while True:
        page_headers = dict(headers)
        if page == 1 and etag:
            page_headers["If-None-Match"] = etag
        for attempt in range(settings.retries + 1):
            try:
                status, document, page_etag = await _get_page(session, settings, page_headers, page)
                break
            except _Retryable as exc:
                if attempt == settings.retries:
                    tries = settings.retries + 1
                    raise SyncError(f"{exc} (after {tries} tries)") from None
                delay = settings.backoff_seconds * 2**attempt
                logger.warning("catalogue {}; retrying in {:.1f} s", exc, delay)
                await sleep(delay)
        if status == 304:
            if page != 1:
                raise SyncError(f"page {page}: HTTP 304 for a page other than the first")
            return None
        assert document is not None
        if page == 1:
            first_etag = page_etag
            total = document.get("total")
            if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
                announced_total = total
            else:
                # Without a count, a portal whose 'next' stops early would pass as whole.
                warnings.append(
                    f"page 1: 'total' is {_show(total)}, not a count of services: whether the "
                    "whole catalogue was read is not checked"
                )
        answered = document.get("page")
        if isinstance(answered, int) and answered != page:
            # A portal that ignores the page asked for serves the same records under ever later
            # 'next' pages: without this, 10,000 requests before the sync gives up.
            raise SyncError(f"page {page}: the portal answered page {_show(answered)} instead")
        pages_read += 1
        warnings += collect_records(
            document["services"], f"page {page}", records, settings.max_field_kb
        )
        next_page = document.get("next")
        if next_page is None:
            break
        if not isinstance(next_page, int) or next_page <= page:
            raise SyncError(
                f"page {page}: 'next' is {_show(next_page)}, expected a later page or null"
            )
        if pages_read > 10_000:
            raise SyncError("more than 10,000 pages: the portal's paging does not end")
        page = next_page
    if announced_total is not None and announced_total != len(records):
        raise SyncError(
            f"read {len(records)} services but the portal announced {announced_total}; "
            "the catalogue was not read whole"
        )
    return Catalogue(records=list(records.values()), etag=first_etag, warnings=warnings)


def _probe_problems(probe: dict[str, Any]) -> list[str]:
    """What is malformed in a record's `probe` (spec/catalogue-api.md). The probes read it
    leniently and probe the default instead; this makes the filing mistake visible."""
    expected: list[tuple[str, str]] = []
    path, method, keyword = probe.get("path"), probe.get("method"), probe.get("keyword")
    if path is not None and not (isinstance(path, str) and path.strip()):
        expected.append(("path", "a path such as /health"))
    if method is not None and not (isinstance(method, str) and method.upper() in PROBE_METHODS):
        expected.append(("method", "one of " + ", ".join(sorted(PROBE_METHODS))))
    statuses = probe.get("expect_status")
    if statuses is not None and not (
        isinstance(statuses, list) and statuses and all(is_http_status(c) for c in statuses)
    ):
        expected.append(("expect_status", "a list of HTTP status codes such as [200]"))
    codes = probe.get("expect_codes")
    if codes is not None and not (
        isinstance(codes, dict)
        and isinstance(codes.get("field"), str)
        and codes["field"]
        and isinstance(codes.get("ok", []), list)
    ):
        expected.append(("expect_codes", 'an object such as {"field": "code", "ok": ["0"]}'))
    if keyword is not None and not (isinstance(keyword, str) and keyword):
        expected.append(("keyword", "a non-empty text"))
    if probe.get("mobile") is not None and not isinstance(probe.get("mobile"), bool):
        expected.append(("mobile", "true or false"))
    return [
        f"probe.{key}: expected {what}, got {_show(probe[key])}; the default is probed instead"
        for key, what in expected
    ]


def _notice_time(notice: dict[str, Any], key: str) -> dt.datetime | None:
    # A time inside a lifecycle notice; None when absent or not a time.
    value = notice.get(key)
    try:
        return parse_time(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None


def _notice_working_days(record: ServiceRecord, calendar: WorkCalendar) -> int | None:
    """The working days a take-down notice gave (7.2.4), up to 60 days' worth, when it gives
    both of its times."""
    notice = record.raw.get("offline_notice")
    if not isinstance(notice, dict):
        return None
    filed, planned = _notice_time(notice, "filed_at"), _notice_time(notice, "planned_offline")
    if filed is None or planned is None:
        return None
    first, last = filed.astimezone(SHANGHAI).date(), planned.astimezone(SHANGHAI).date()
    # Ten working days always fit in 60 days (the longest holiday is about a week): counting no
    # further keeps a notice for the year 9999 from walking the calendar day by day.
    return calendar.working_days_between(first, min(last, first + dt.timedelta(days=60)))


def _record_findings(
    session: Session, record: ServiceRecord, now: dt.datetime, calendar: WorkCalendar
) -> set[str]:
    """Upsert the catalogue findings of one record; returns the rules it raised."""
    drafts: list[FindingDraft] = []

    def found(rule: str, clause: str, severity: Severity, summary: str, **evidence: Any) -> None:
        drafts.append(
            FindingDraft(
                rule=rule,
                clause=clause,
                severity=severity,
                subject_kind="service",
                subject=record.id,
                service_id=record.id,
                summary=summary,
                evidence=evidence,
            )
        )

    notice_days = _notice_working_days(record, calendar)
    if notice_days is not None and notice_days < NOTICE_WORKING_DAYS:
        notice = record.raw["offline_notice"]
        found(
            RULE_SHORT_NOTICE,
            "7.2.4",
            "low",
            f"下线通知仅提前 {notice_days} 个工作日（应提前 {NOTICE_WORKING_DAYS} 个工作日）",
            filed_at=notice.get("filed_at"),
            planned_offline=notice.get("planned_offline"),
            working_days=notice_days,
        )
    if record.filing_problems:
        summary = f"备案信息不完整：{len(record.filing_problems)} 项问题"
        found(RULE_FILING, "6.2.2", "low", summary, problems=record.filing_problems)
    if record.unknown_values:
        summary = "目录中含未知取值：" + "，".join(record.unknown_values)
        found(RULE_UNKNOWN_VALUE, "6.2.2", "low", summary, unknown_values=record.unknown_values)
    url = record.columns.get("url") or ""
    if record.columns.get("access_method") == "http" or url.startswith("http://"):
        method = record.columns.get("access_method")
        found(
            RULE_PLAIN_HTTP,
            "6.3.2 b",
            "high",
            "服务接口未使用 HTTPS",
            access_method=method,
            url=url,
        )
    for draft in drafts:
        upsert_finding(session, draft, now)
    return {draft.rule for draft in drafts}


def _status_event(old: str | None, new: str) -> str:
    if new == "online":
        return "resumed" if old == "suspended" else "went_online"
    return {"suspended": "suspended", "offline": "went_offline", "approved": "approved"}.get(
        new, "status_changed"
    )


def _lifecycle_events(old: Service | None, record: ServiceRecord) -> list[dict[str, Any]]:
    """The service events that a record's arrival implies, compared with what the store held."""
    cols = record.columns
    events: list[dict[str, Any]] = []
    if old is None:
        events.append({"kind": "added", "to_status": cols["status"]})
        if cols["status"] not in ("pending", "approved"):
            events.append(
                {"kind": _status_event(None, cols["status"]), "to_status": cols["status"]}
            )
        return events
    if old.gone:
        events.append({"kind": "returned", "to_status": cols["status"]})
    if old.status != cols["status"]:
        events.append(
            {
                "kind": _status_event(old.status, cols["status"]),
                "from_status": old.status,
                "to_status": cols["status"],
            }
        )
    if cols["suspension"] and cols["suspension"] != old.suspension:
        events.append({"kind": "suspension_filed", "detail": cols["suspension"]})
    if cols["offline_notice"] and cols["offline_notice"] != old.offline_notice:
        events.append({"kind": "offline_notice_filed", "detail": cols["offline_notice"]})
    if cols["updated_at"] and old.updated_at and cols["updated_at"] != old.updated_at:
        events.append(
            {
                "kind": "updated",
                "detail": {
                    "from": old.updated_at.isoformat(),
                    "to": cols["updated_at"].isoformat(),
                },
            }
        )
    return events


def apply_catalogue(
    session: Session,
    catalogue: Catalogue,
    source: str,
    started_at: dt.datetime,
    now: dt.datetime,
    max_gone_fraction: float,
    calendar: WorkCalendar | None = None,
) -> SyncOutcome:
    """Apply a whole catalogue to the store inside the caller's transaction; `calendar` (the
    statutory one by default) counts a take-down notice's working days.

    Raises SyncError, before changing anything, when the catalogue would empty the store or mark
    more than max_gone_fraction of the known services gone.
    """
    calendar = calendar or WorkCalendar()
    existing = {s.id: s for s in session.scalars(select(Service))}
    present = {r.id for r in catalogue.records}
    active = [s for s in existing.values() if not s.gone]
    vanishing = [s for s in active if s.id not in present]
    if active and not catalogue.records:
        raise SyncError(
            f"the catalogue is empty but {len(active)} services are known; refusing it "
            "(the portal may be deploying)"
        )
    if len(vanishing) > max(1, max_gone_fraction * len(active)):
        raise SyncError(
            f"the catalogue would mark {len(vanishing)} of {len(active)} services gone, more "
            f"than the allowed share of {max_gone_fraction:.0%}; refusing it"
        )
    run = SyncRun(started_at=started_at, finished_at=now, source=source, outcome="ok")
    session.add(run)
    session.flush()
    added = changed = events = 0
    lines: list[str] = []
    raised: dict[str, set[str]] = {}
    for record in catalogue.records:
        old = existing.get(record.id)
        if record.columns["status"] is None:
            # A record without a usable status says nothing about the lifecycle: the stored
            # status stands (a glitch must not look like a suspension, then a go-live that
            # triggers scans); a new service waits as pending.
            status = old.status if old is not None else "pending"
            record = replace(record, columns={**record.columns, "status": status})
        new_events = _lifecycle_events(old, record)
        if old is None:
            old = Service(id=record.id, first_seen=now)
            session.add(old)
            added += 1
        elif old.fingerprint != record.fingerprint or old.gone:
            changed += 1
        for name, value in record.columns.items():
            setattr(old, name, value)
        old.raw = record.raw
        old.filing_problems = record.filing_problems
        old.unknown_values = record.unknown_values
        old.fingerprint = record.fingerprint
        old.gone = False
        old.gone_at = None
        old.last_seen = now
        for event in new_events:
            session.add(
                ServiceEvent(
                    service_id=record.id,
                    at=now,
                    kind=event["kind"],
                    from_status=event.get("from_status"),
                    to_status=event.get("to_status"),
                    detail=event.get("detail", {}),
                    sync_run_id=run.id,
                )
            )
            events += 1
            if event["kind"] != "added":
                lines.append(_event_line(record.id, record.columns["name"], event))
        raised[record.id] = _record_findings(session, record, now, calendar)
    for service in vanishing:
        service.gone = True
        service.gone_at = now
        session.add(
            ServiceEvent(
                service_id=service.id,
                at=now,
                kind="gone",
                from_status=service.status,
                to_status=None,
                detail={},
                sync_run_id=run.id,
            )
        )
        events += 1
        lines.append(_event_line(service.id, service.name, {"kind": "gone"}))
    session.flush()
    for rule in CATALOGUE_RULES:
        still = {service_id for service_id, rules in raised.items() if rule in rules}
        resolve_findings(session, [rule], "service", still, now)
    run.etag = catalogue.etag
    run.services_seen = len(catalogue.records)
    run.added = added
    run.changed = changed
    run.gone = len(vanishing)
    run.warnings = catalogue.warnings[:50]
    return SyncOutcome(
        outcome="ok",
        services_seen=len(catalogue.records),
        added=added,
        changed=changed,
        gone=len(vanishing),
        events=events,
        event_lines=tuple(lines),
    )


def _event_line(service_id: str, name: str | None, event: dict[str, Any]) -> str:
    move = ""
    if event.get("from_status") and event.get("to_status"):
        move = f" ({event['from_status']} → {event['to_status']})"
    return f"{service_id} {name or ''}: {event['kind']}{move}"


def last_etag(store: Store) -> str | None:
    """The ETag of the newest successful sync, to send back as If-None-Match."""
    with store.session() as session:
        run = session.scalars(
            select(SyncRun)
            .where(SyncRun.outcome.in_(("ok", "unchanged")))
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
        return run.etag if run else None


def _record_run(
    store: Store,
    source: str,
    started_at: dt.datetime,
    now: dt.datetime,
    outcome: str,
    reason: str | None = None,
    etag: str | None = None,
) -> None:
    with store.session() as session:
        session.add(
            SyncRun(
                started_at=started_at,
                finished_at=now,
                source=source,
                outcome=outcome,
                reason=reason,
                etag=etag,
            )
        )


async def sync_catalogue(
    store: Store,
    settings: PortalSettings,
    token: SecretStr | None,
    clock: Clock,
    *,
    session: aiohttp.ClientSession,
    file: str | Path | None = None,
    sleep: Sleep = asyncio.sleep,
    calendar: WorkCalendar | None = None,
) -> SyncOutcome:
    """Run one sync from the portal (or from a file) and record it; never raises SyncError.

    `session` is the caller's HTTP client (the App's): the sync opens none of its own.

    The outcome is "ok", "unchanged" (HTTP 304) or "failed" with its reason.
    """
    started_at = clock()
    source = str(file) if file is not None else f"{settings.url}/api/v1/services"
    etag = None
    try:
        if file is not None:
            catalogue: Catalogue | None = read_catalogue_file(file, settings.max_field_kb)
        else:
            etag = await asyncio.to_thread(last_etag, store)
            catalogue = await fetch_catalogue(session, settings, token, etag, sleep)
        if catalogue is None:
            await asyncio.to_thread(
                _record_run, store, source, started_at, clock(), "unchanged", None, etag
            )
            logger.info("catalogue unchanged (HTTP 304)")
            return SyncOutcome(outcome="unchanged")
        outcome = await asyncio.to_thread(
            _apply,
            store,
            catalogue,
            source,
            started_at,
            clock,
            settings.max_gone_fraction,
            calendar,
        )
    except SyncError as exc:
        reason = str(exc)
        await asyncio.to_thread(_record_run, store, source, started_at, clock(), "failed", reason)
        logger.error("catalogue sync failed: {}", reason)
        return SyncOutcome(outcome="failed", reason=reason)
    for line in outcome.event_lines[:50]:
        logger.info("service event: {}", line)
    logger.info(
        "catalogue synced: {} services, {} added, {} changed, {} gone, {} events",
        outcome.services_seen,
        outcome.added,
        outcome.changed,
        outcome.gone,
        outcome.events,
    )
    return outcome


def _apply(
    store: Store,
    catalogue: Catalogue,
    source: str,
    started_at: dt.datetime,
    clock: Clock,
    max_gone_fraction: float,
    calendar: WorkCalendar | None,
) -> SyncOutcome:
    with store.session() as session:
        return apply_catalogue(
            session, catalogue, source, started_at, clock(), max_gone_fraction, calendar
        )


def service_rows(store: Store, include_gone: bool = True) -> list[dict[str, Any]]:
    """Every service the store holds, as plain dicts (for the CLI and the API)."""
    with store.session() as session:
        services = session.scalars(select(Service).order_by(Service.id)).all()
        return [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "url": s.url,
                "type": s.type,
                "permission": s.permission,
                "source": s.source,
                "provider": s.provider,
                "coverage": s.coverage,
                "filing_problems": s.filing_problems,
                "unknown_values": s.unknown_values,
                "gone": s.gone,
                "gone_at": s.gone_at.isoformat() if s.gone_at else None,
                "updated_at": s.updated_at.isoformat() if s.updated_at else None,
                "last_seen": s.last_seen.isoformat(),
            }
            for s in services
            if include_gone or not s.gone
        ]


def sync_rows(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The newest sync runs first, as plain dicts."""
    with store.session() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)).all()
        return [
            {
                "id": r.id,
                "started_at": r.started_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "outcome": r.outcome,
                "reason": r.reason,
                "source": r.source,
                "services_seen": r.services_seen,
                "added": r.added,
                "changed": r.changed,
                "gone": r.gone,
                "warnings": r.warnings,
            }
            for r in runs
        ]
