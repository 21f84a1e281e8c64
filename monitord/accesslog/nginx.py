"""The nginx `combined` reader, vectorised with Arrow's RE2.

One RE2 pass extracts every field of a block; `$time_local` is parsed once per distinct second
(dictionary encoding, then `strptime` on the dictionary only). The pattern is anchored at the
start only: a leading `host:port ` is allowed and trailing extra fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.lines import as_text
from monitord.accesslog.schema import (
    DEFAULT_SERVICE_PATTERN,
    classify_clients,
    conform,
    service_from_path,
    unescape_column,
)

# A quoted nginx field: anything but a quote, with backslash escapes (`\"`, `\x22`) allowed.
# Written so that at every character only one branch can continue (RE2's fast one-pass
# matcher); the request line is split by a second, small pattern.
_Q = r'(?:[^"\\]|\\.)*'
_BODY = (
    r'(?P<addr>\S+) \S+ (?P<user>[^\[]*)\[(?P<time>[^\]]+)\] "(?P<request>' + _Q + r')" '
    r"(?P<status>\d{3}) (?P<bytes>\d+|-)"
    r'(?: "' + _Q + r'" "(?P<ua>' + _Q + r')"'
    r'(?: (?P<rt>\d+(?:\.\d+)?|-)(?: "(?P<xff>' + _Q + r')")?)?)?'
)
PATTERN = "^" + _BODY
# Some log formats put "host:port " first; tried only on the lines the main pattern missed.
PREFIXED_PATTERN = r"^\S+:\d+ " + _BODY
REQUEST_PATTERN = r"^(?P<method>[A-Z]{3,12}) (?P<target>\S+)"
TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"


@dataclass
class Parsed:
    """A parsed block: the rows that parsed, and the lines that did not."""

    table: pa.Table
    rejected: list[str] = field(default_factory=list)


def _nulls_for_dash(col: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(col, "-"), pa.scalar(None, pa.string()), col)


def _patch(fields: pa.Array, missed: pa.Array, retry: pa.Array) -> pa.Array:
    """Put the retried rows back in their places (rows still missing stay null)."""
    positions = pc.indices_nonzero(missed).to_pylist()
    values = fields.to_pylist()
    for pos, value in zip(positions, retry.to_pylist(), strict=True):
        values[pos] = value
    return pa.array(values, fields.type)


def parse(lines: pa.Array, service_pattern: str = DEFAULT_SERVICE_PATTERN) -> Parsed:
    """Parse binary lines of nginx `combined` into the common schema."""
    text = as_text(lines)
    fields = pc.extract_regex(text, PATTERN)
    if fields.null_count:
        missed = pc.is_null(fields)
        retry = pc.extract_regex(pc.filter(text, missed), PREFIXED_PATTERN)
        fields = _patch(fields, missed, retry)
    # $time_local: each distinct second once.
    times = pc.dictionary_encode(pc.struct_field(fields, "time"))
    parsed_times = pc.strptime(times.dictionary, format=TIME_FORMAT, unit="s", error_is_null=True)
    ts = pc.take(parsed_times.cast(pa.int64()), times.indices)
    ok = pc.is_valid(ts)
    rejected: list[str] = []
    if not pc.all(ok).as_py():
        rejected = pc.filter(text, pc.invert(ok)).to_pylist()
        fields = pc.filter(fields, ok)
        ts = pc.filter(ts, ok)
        text = pc.filter(text, ok)
    n = len(text)
    if n == 0:
        return Parsed(conform({}, 0), rejected)

    addr = pc.struct_field(fields, "addr")
    xff = pc.struct_field(fields, "xff")
    # Behind a load balancer the client is the first X-Forwarded-For address.
    first_xff = pc.struct_field(pc.extract_regex(xff, r"^\s*(?P<ip>[0-9A-Fa-f.:]+)"), [0])
    ip = pc.coalesce(first_xff, addr)

    request = pc.extract_regex(pc.struct_field(fields, "request"), REQUEST_PATTERN)
    target = unescape_column(pc.struct_field(request, "target"))
    path = pc.replace_substring_regex(target, r"[?#].*$", "")
    method = pc.struct_field(request, "method")
    ua = unescape_column(pc.fill_null(pc.struct_field(fields, "ua"), "-"))
    bytes_ = pc.cast(_nulls_for_dash(pc.struct_field(fields, "bytes")), pa.int64())
    rt = _nulls_for_dash(pc.struct_field(fields, "rt"))
    rt = pc.if_else(pc.equal(rt, ""), pa.scalar(None, pa.string()), rt)
    duration = pc.multiply(pc.cast(rt, pa.float64()), 1000.0)
    user = _nulls_for_dash(pc.utf8_rtrim(pc.struct_field(fields, "user"), " "))
    user = _nulls_for_dash(pc.if_else(pc.equal(user, ""), "-", user))
    table = conform(
        {
            "ts": ts,
            "source": pc.fill_null(pa.nulls(n, pa.string()), "nginx"),
            "ip": ip,
            "user": user,
            "service": service_from_path(path, service_pattern),
            "method": method,
            "path": path,
            "status": pc.cast(pc.struct_field(fields, "status"), pa.int32()),
            "bytes": bytes_,
            "duration_ms": duration,
            "client": classify_clients(ua),
            "line": text,
        },
        n,
    )
    return Parsed(table, rejected)
