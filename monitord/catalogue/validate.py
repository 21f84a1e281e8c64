"""A catalogue record read and checked against Appendix A: every value kept that a store can
hold, every problem named (a filing problem is a finding, never a rejected service)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitord.config import UPTIME_TARGET_PERCENT, http_url
from monitord.errors import SyncError, UsageError
from monitord.files import read_bounded
from monitord.textable import UNSTORABLE, load_json, shortened, storable
from monitord.timeutil import TimeOutOfRange, parse_time
from monitord.types import PROBE_METHODS, is_http_status, is_probe_path

ENUMS: dict[str, tuple[str, ...]] = {
    "type": ("government", "public", "market", "other"),
    "permission": ("view", "handle", "key"),
    "source": ("province", "district", "bureau", "association"),
    "access_method": ("https", "sdk", "http"),
    "status": ("pending", "approved", "online", "suspended", "offline"),
}

# Appendix A (备案表) fields a filing must have, labelled as Table A.1 names them.
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
    "security_plan_url": "网络安全保障方案",
    "developer": "开发单位",
    "description": "功能描述和特色亮点",
    "faq_url": "常见问答知识库",
    "review": "审核意见",
}

REVIEW_FIELDS: dict[str, str] = {"signed_by": "签字", "signed_at": "签字时间"}
"""What a review (审核意见) must carry besides its opinion: who signed it, and when."""

COVERAGE_AREAS = (
    "张家港市",
    "常熟市",
    "太仓市",
    "昆山市",
    "吴江区",
    "吴中区",
    "相城区",
    "姑苏区",
    "苏州工业园区",
    "虎丘区",
)
"""Suzhou's 10 county-level cities and districts, the coverage a filing names (Table A.1, 覆盖区域;
spec/catalogue-api.md); "all" is every one of them. 虎丘区 is also known as 苏州高新区."""
COVERS_ALL = "all"

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


def show_value(value: Any) -> str:
    """A value as it appears in a message: its repr, cut short so one field cannot flood a log."""
    return shortened(repr(value), 80)


ID_LENGTH = 200
"""The longest service id the store holds (services.id)."""
SHORT_LENGTH = 40
"""The longest enum value or planned_release the store holds (their columns are String(40))."""
MAX_CONCURRENCY = 2**31 - 1
"""The largest max_concurrency the store holds (a 32-bit INTEGER column on PostgreSQL)."""


MIB = 1024 * 1024
MAX_CATALOGUE_FILE_MB = 64
"""The largest catalogue file `sync --file` reads: a city's few thousand services take a few MiB."""

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
            where = f"{path}.{show_value(key)} (a field name)" if path else show_value(key)
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
        shown = name if name.isidentifier() and len(name) <= 40 else show_value(name)
        problems.append(
            f"{shown}: {_size(size)}, more than the {max_field_kb} KiB a field may hold "
            "(portal.max_field_kb); not stored"
        )
    return kept, dropped


def _probe_url(url: str, problems: list[str]) -> str | None:
    """The service's production address as monitord probes it, or None (with its problem) when
    it is not an http(s) URL: "{base}/svc" or a bare host would be probed into a name error and
    page the on-call staff for an outage that is a filing mistake."""
    address = url.strip()
    try:
        http_url(address)
    except ValueError as exc:
        problems.append(f"url: expected {exc}, got {show_value(url)}; not probed until it is one")
        return None
    # "HTTP://…" is plain HTTP all the same: stored as "http://…" so every check of the scheme
    # (the plain-HTTP finding, the rules, the status page) sees it.
    scheme, rest = address.split(":", 1)
    return scheme.lower() + ":" + rest


def _blank(value: Any) -> bool:
    """Whether a filed value says nothing: none, only whitespace (U+3000 too), or an empty list
    or object, or a list of such values ([""] for a coverage is no district)."""
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return all(_blank(item) for item in value)
    return value is None or (isinstance(value, dict) and not value)


def _missing(name: str, label: str, value: Any) -> str:
    """The filing problem of a blank Appendix A field."""
    return f"{name}: {'missing' if value is None else 'blank'} ({label})"


def _is_date(value: str | None) -> bool:
    """Whether a planned release is a date (2026-03-01), or a time (its date)."""
    if value is None or len(value) > SHORT_LENGTH:
        return False
    try:
        dt.date.fromisoformat(value.strip())
    except ValueError:
        try:
            parse_time(value.strip())
        except (ValueError, OverflowError):
            return False
    return True


def _coverage_problems(coverage: list[str]) -> list[str]:
    """The coverage entries that name none of Suzhou's county-level cities and districts."""
    return [
        f"coverage: {show_value(area)} is not one of {', '.join(COVERAGE_AREAS)} "
        f"(or {COVERS_ALL!r} for all of them)"
        for area in coverage
        if area not in (*COVERAGE_AREAS, COVERS_ALL)
    ]


def _review_problems(review: Any, label: str) -> list[str]:
    """What a review (审核意见) lacks: its opinion, who signed it and when (a time)."""
    if not isinstance(review, dict):
        return [_missing("review", label, None)]
    problems = []
    if _blank(review.get("opinion")):
        problems.append(_missing("review", label, review.get("opinion")))
    for key, what in REVIEW_FIELDS.items():
        if _blank(review.get(key)):
            problems.append(_missing(f"review.{key}", f"{label}{what}", review.get(key)))
    signed_at = review.get("signed_at")
    if not _blank(signed_at) and notice_time(review, "signed_at") is None:
        problems.append(f"review.signed_at: expected an ISO 8601 time, got {show_value(signed_at)}")
    return problems


def validate_record(raw: Any, where: str, max_field_kb: int) -> ServiceRecord:
    """Validate one SERVICE object; problems of the filing are collected, never fatal. A field
    larger than max_field_kb KiB is one of them, and is not kept.

    Raises SyncError only when the record cannot be tracked at all (not an object, no id).
    """
    if not isinstance(raw, dict):
        raise SyncError(f"{where}: expected a service object, got {type(raw).__name__}")
    service_id = raw.get("id")
    if not isinstance(service_id, str) or not service_id.strip():
        raise SyncError(f"{where}: a service has no usable id ({show_value(service_id)})")
    if UNSTORABLE.search(service_id) or len(service_id.strip()) > ID_LENGTH:
        raise SyncError(
            f"{where}: service id {show_value(service_id)} is not usable: it holds a NUL "
            f"character or a lone surrogate, or is longer than {ID_LENGTH} characters"
        )
    problems: list[str] = []
    raw, oversized = _without_oversized(raw, max_field_kb, problems)
    raw = _clean(raw, "", problems)
    unknown: list[str] = []
    columns: dict[str, Any] = {}

    for name in TEXT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name}: expected text, got {show_value(value)}")
            value = None
        if name == "planned_release" and not _blank(value) and not _is_date(value):
            problems.append(f"{name}: expected a date such as 2026-03-01, got {show_value(value)}")
            value = None
        columns[name] = value
    # A blank address is no address: reported as missing below, never probed.
    columns["url"] = None if _blank(columns["url"]) else _probe_url(columns["url"], problems)
    for name in OBJECT_FIELDS:
        value = raw.get(name)
        if value is not None and not isinstance(value, dict):
            problems.append(f"{name}: expected an object, got {show_value(value)}")
            value = None
        columns[name] = value
    for name, allowed in ENUMS.items():
        value = raw.get(name)
        if value is None:
            columns[name] = None
            continue
        if not isinstance(value, str) or len(value) > SHORT_LENGTH:
            problems.append(
                f"{name}: expected one of {', '.join(allowed)}, got {show_value(value)}"
            )
            columns[name] = None
            continue
        if value not in allowed and value.strip().lower() in allowed:
            value = value.strip().lower()  # "Online" is online: the values have one spelling
        if value not in allowed:
            unknown.append(f"{name}={value}")
        columns[name] = value
    coverage = raw.get("coverage")
    if coverage is not None and not (
        isinstance(coverage, list) and all(isinstance(c, str) for c in coverage)
    ):
        problems.append(f"coverage: expected a list of district names, got {show_value(coverage)}")
        coverage = None
    elif coverage is not None and not _blank(coverage):
        problems += _coverage_problems(coverage)
    columns["coverage"] = coverage or []
    contacts = raw.get("contacts")
    if contacts is not None and not (
        isinstance(contacts, list) and all(isinstance(c, dict) for c in contacts)
    ):
        problems.append(f"contacts: expected a list of objects, got {show_value(contacts)}")
        contacts = None
    columns["contacts"] = contacts or []
    concurrency = raw.get("max_concurrency")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency <= 0
    ):
        problems.append(
            f"max_concurrency: expected a positive integer, got {show_value(concurrency)}"
        )
        concurrency = None
    elif concurrency is not None and concurrency > MAX_CONCURRENCY:
        problems.append(
            f"max_concurrency: {show_value(concurrency)} is beyond the {MAX_CONCURRENCY} "
            "monitord stores"
        )
        concurrency = None
    columns["max_concurrency"] = concurrency
    updated_at = raw.get("updated_at")
    columns["updated_at"] = None
    if isinstance(updated_at, str):
        try:
            columns["updated_at"] = parse_time(updated_at)
        except TimeOutOfRange:
            problems.append(f"updated_at: {show_value(updated_at)} is outside years 1-9999 in UTC")
        except ValueError:
            problems.append(f"updated_at: expected an ISO 8601 time, got {show_value(updated_at)}")
    elif updated_at is not None:
        problems.append(f"updated_at: expected an ISO 8601 time, got {show_value(updated_at)}")
    elif "updated_at" not in oversized:
        # Without it an update of the service is not seen, nor scanned (8.3 b).
        problems.append("updated_at: missing (the time of the record's last change)")
    if raw.get("status") is None and "status" not in oversized:
        problems.append("status: missing (lifecycle state)")
    probe = raw.get("probe")
    if isinstance(probe, dict):
        problems += _probe_problems(probe)
    raw = _without_bad_uptime_target(raw, problems)
    for notice, keys in NOTICE_TIMES.items():
        filed = raw.get(notice)
        for key in keys if isinstance(filed, dict) else ():
            if filed.get(key) is not None and notice_time(filed, key) is None:
                got = show_value(filed.get(key))
                problems.append(f"{notice}.{key}: expected an ISO 8601 time, got {got}")

    for name, label in APPENDIX_A.items():
        value = raw.get(name)
        if name in oversized:
            continue  # reported as too large: "missing" would be wrong
        if name == "review":
            problems += _review_problems(value, label)
        elif _blank(value):
            problems.append(_missing(name, label, value))
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
    services: list[Any],
    where: str,
    into: dict[str, ServiceRecord],
    max_field_kb: int,
    *,
    from_file: bool = False,
) -> list[str]:
    """Validate a page of records into `into`, keyed by id; returns warnings.

    An id seen twice with the same content is a harmless repeat (a page boundary that moved).
    With different content the catalogue changed while it was read (or a file lists two
    services under one id), and the sync fails.
    """
    why = (
        "the file lists two services under one id"
        if from_file
        else "the catalogue changed while it was read"
    )
    warnings: list[str] = []
    for index, raw in enumerate(services):
        record = validate_record(raw, f"{where}, services[{index}]", max_field_kb)
        seen = into.get(record.id)
        if seen is not None:
            if seen.fingerprint != record.fingerprint:
                raise SyncError(
                    f"{where}: service {record.id} appears twice with different content; {why}"
                )
            warnings.append(f"{where}: service {record.id} listed twice")
            continue
        into[record.id] = record
    return warnings


def read_catalogue_file(path: str | Path, max_field_kb: int) -> Catalogue:
    """Read a catalogue file: a JSON object with a `services` list, as the portal serves it;
    a field larger than max_field_kb KiB is a filing problem and is not kept.

    Raises UsageError for a file that cannot be read (InputTooLarge, unread, for one over
    MAX_CATALOGUE_FILE_MB); SyncError for one that is not a catalogue."""
    file = Path(path)
    limit = "the catalogue file's limit"
    try:
        document = load_json(read_bounded(file, MAX_CATALOGUE_FILE_MB * MIB, limit))
    except OSError as exc:
        # A mistyped path is the command's mistake, not a failed sync: nothing is recorded.
        raise UsageError(f"--file {file}: cannot be read ({exc.strerror})") from None
    except ValueError as exc:
        raise SyncError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise SyncError(f"{file}: expected a JSON object with a 'services' list")
    # A page saved from the portal looks like a catalogue file: taken for the whole, it would
    # mark every service of the other pages gone.
    following = document.get("next")
    if following is not None:
        raise SyncError(
            f"{file}: 'next' is {show_value(following)}: the file is one page of the catalogue, "
            "not the whole of it; put every page's services in one file's 'services' list"
        )
    records: dict[str, ServiceRecord] = {}
    warnings = collect_records(
        document["services"], str(file), records, max_field_kb, from_file=True
    )
    if "total" in document:
        total, said = announced_total(document["total"], str(file))
        warnings += said
        if total is not None and total != len(records):
            raise SyncError(
                f"{file}: holds {len(records)} services but its 'total' is {total}: the "
                "catalogue in it is not whole"
            )
    return Catalogue(records=list(records.values()), warnings=warnings)


def announced_total(total: Any, where: str) -> tuple[int | None, list[str]]:
    """The count of services a catalogue's 'total' announces, or None and a warning saying so
    when it is not a count (then whether the whole catalogue was read cannot be checked)."""
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total, []
    # Without a count, a portal whose 'next' stops early would pass as whole.
    return None, [
        f"{where}: 'total' is {show_value(total)}, not a count of services: whether the whole "
        "catalogue was read is not checked"
    ]


def _probe_problems(probe: dict[str, Any]) -> list[str]:
    """What is malformed in a record's `probe` (spec/catalogue-api.md). The probes read it
    leniently and probe the default instead; this makes the filing mistake visible."""
    expected: list[tuple[str, str]] = []
    path, method, keyword = probe.get("path"), probe.get("method"), probe.get("keyword")
    if path is not None and not is_probe_path(path):
        expected.append(("path", "a path on the service's own host, such as /health"))
    if method is not None and not (isinstance(method, str) and method.upper() in PROBE_METHODS):
        expected.append(("method", "one of " + ", ".join(sorted(PROBE_METHODS))))
    elif isinstance(method, str) and method.upper() == "HEAD" and probe.get("expect_codes"):
        # A HEAD answer has no body, so no business code: the probes would find none.
        expected.append(("method", "a method whose answer has a body, with expect_codes"))
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
        f"probe.{key}: expected {what}, got {show_value(probe[key])}; the default is probed instead"
        for key, what in expected
    ]


def _without_bad_uptime_target(raw: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The record without its filed uptime target (slo.uptime_percent) when that is not a
    number within UPTIME_TARGET_PERCENT, which is then a filing problem naming it: the service
    is judged against the [compliance] default instead."""
    slo = raw.get("slo")
    if not isinstance(slo, dict) or slo.get("uptime_percent") is None:
        return raw
    target = slo["uptime_percent"]
    low, high = UPTIME_TARGET_PERCENT
    if isinstance(target, int | float) and not isinstance(target, bool) and low <= target <= high:
        return raw
    problems.append(
        f"slo.uptime_percent: expected a percentage from {low:g} to {high:g}, got "
        f"{show_value(target)}; the [compliance] uptime_percent is used instead"
    )
    kept = {key: value for key, value in slo.items() if key != "uptime_percent"}
    return {**raw, "slo": kept}


def notice_time(notice: dict[str, Any], key: str) -> dt.datetime | None:
    # A time inside a lifecycle notice; None when absent or not a time.
    value = notice.get(key)
    try:
        return parse_time(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None
