r"""The exact path of the nginx `combined` reader, in Arrow: the reference and the fallback.

`parse_exact` reads every line this way; it is the reference the fast path (`nginx.parse`) is
tested against. The fast path also hands it the lines of another shape it cannot take (a leading
`host:port `, a request cut short, `escape=json` quotes, bytes that are not UTF-8, too few
fields, a bad time, ...), and reuses its patterns for the rare values it does not cut itself.

It splits at `"` and applies small RE2 patterns, because RE2's submatch extraction costs ~4.5 µs
for a whole combined line; lines the split cannot take go through the full pattern.
`$time_local` is parsed once per distinct second. Nothing is anchored at the end of the line:
extra trailing fields are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.forwarded import client_column
from monitord.accesslog.lines import as_text
from monitord.accesslog.schema import (
    DEFAULT_SERVICE_PATTERN,
    classify_clients,
    conform,
    in_range,
    service_from_path,
    unescape_column,
)

# The part before the request: a byte order mark (a file's first line may start with one),
# optional "host:port ", the address (never "-"), "-", the user and the time. The user is
# whatever the client sent as Basic credentials, spaces and "[" included (nginx escapes neither),
# so the time is the bracketed field right before the request's quote, not the first "[".
_BOM = r"\x{FEFF}?"
_PREFIX = r"^" + _BOM + r"(?:\S+:\d+ )?(?P<addr>[^\s\-]\S*) \S+ (?P<user>.*?)\[(?P<time>[^\]]+)\] "
_Q = r'(?:[^"\\]|\\.)*'  # a quoted field with backslash escapes allowed
PATTERN = (
    _PREFIX + r'"(?P<request>' + _Q + r')" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "' + _Q + r'" "(?P<ua>' + _Q + r')"'
    r'(?: (?P<rt>\d+(?:\.\d+)?|-)(?: "(?P<xff>' + _Q + r')")?)?)?'
)
# The split's prefix: no optional "host:port " (an optional group at the start makes RE2 four
# times slower); such lines fail here and take the full pattern.
PREFIX_PATTERN = r"^" + _BOM + r"(?P<addr>\S+) - (?P<user>.*)\[(?P<time>[^\]]+)\] $"
HEAD_PATTERN = r"^(?P<addr>\S+) - (?P<user>.*)$"
"""PREFIX_PATTERN without the time: the address and user of a line's head ("addr - user ")."""
STATUS_PATTERN = r"^ (?P<status>\d{3}) (?P<bytes>\d+|-)"
RT_PATTERN = r"^ (?P<rt>\d+(?:\.\d+)?)"
"""`$request_time` at the start of the piece after the user agent's closing quote."""
REQUEST_PATTERN = r"^(?P<method>[A-Z]{3,12}) (?P<target>\S+)"
MAX_SIZE_DIGITS = 18
"""The longest `$body_bytes_sent` read: every number of 18 digits fits a 64-bit integer."""
TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"
"""`$time_local` as `strptime` reads it."""
_DATE = r"^(?P<date>\s*(?P<day>\d{1,9})/[^:]*):"
_FIELDS = ("addr", "user", "time", "request", "status", "bytes", "ua", "rt", "xff")


@dataclass
class Parsed:
    """A parsed block: the rows that parsed, and the lines that did not."""

    table: pa.Table
    rejected: list[str] = field(default_factory=list)


def parse_exact(
    lines: pa.Array,
    service_pattern: str = DEFAULT_SERVICE_PATTERN,
    trusted_proxies: tuple[str, ...] = (),
) -> Parsed:
    """Parse every line with the exact path: the reference `nginx.parse` must agree with.
    `trusted_proxies`: the CIDRs whose X-Forwarded-For names the client (`forwarded`)."""
    lines = binary(lines)
    if len(lines) == 0:
        return Parsed(conform({}, 0), [])
    columns, rejected = exact(lines, service_pattern)
    columns["ip"] = client_column(columns["ip"], columns.pop("xff"), trusted_proxies)
    return Parsed(conform(columns, len(columns["ts"])), rejected)


def binary(lines: pa.Array) -> pa.Array:
    """The lines as a binary array with 32-bit offsets, the input of both paths: the fast path
    reads its offsets and bytes directly."""
    return lines if lines.type == pa.binary() else lines.cast(pa.binary())


def null_if(col: pa.Array, *values: str) -> pa.Array:
    """The string column with each of `values` (nginx's "-" for none, say) made null."""
    hit = pc.is_in(col, value_set=pa.array(values, pa.string()))
    return pc.if_else(pc.fill_null(hit, False), pa.scalar(None, pa.string()), col)


def strptime_times(text: pa.Array) -> pa.Array:
    """`$time_local` texts to epoch seconds as `strptime` reads them (null where it cannot),
    without its roll-over of a day the month lacks: 29/Feb/2026 and 31/Apr are no dates, not
    1 March and 1 May."""
    seconds = pc.strptime(text, format=TIME_FORMAT, unit="s", error_is_null=True)
    parts = pc.extract_regex(text, _DATE)
    date = pc.strptime(
        pc.struct_field(parts, "date"), format="%d/%b/%Y", unit="s", error_is_null=True
    )
    written = pc.cast(pc.struct_field(parts, "day"), pa.int64())
    real_day = pc.fill_null(pc.equal(pc.day(date), written), True)
    return pc.if_else(real_day, seconds, pa.scalar(None, seconds.type)).cast(pa.int64())


def _split_fields(text: pa.Array) -> tuple[dict[str, pa.Array], pa.Array]:
    """Fields of every line by splitting at quotes; also which lines that worked for."""
    parts = pc.split_pattern(text, '"', max_splits=8)
    counts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    starts = parts.offsets.to_numpy()[:-1]
    flat = parts.flatten()
    last = len(flat) - 1

    def piece(k: int) -> pa.Array:
        # Element k of every line's list (null where the line has fewer pieces).
        idx = np.minimum(starts + k, max(last, 0))
        return pc.take(flat, pa.array(idx, mask=counts <= k))

    prefix = pc.extract_regex(piece(0), PREFIX_PATTERN)
    status = pc.extract_regex(piece(2), STATUS_PATTERN)
    rt = pc.struct_field(pc.extract_regex(piece(6), RT_PATTERN), [0])
    fields = {
        "addr": pc.struct_field(prefix, "addr"),
        "user": pc.struct_field(prefix, "user"),
        "time": pc.struct_field(prefix, "time"),
        "request": piece(1),
        "status": pc.struct_field(status, "status"),
        "bytes": pc.struct_field(status, "bytes"),
        "ua": piece(5),
        "rt": rt,
        "xff": piece(7),
    }
    ok = pc.and_(pc.is_valid(prefix), pc.is_valid(status))
    if _contains(text, b'\\"'):
        ok = pc.and_(ok, pc.invert(pc.fill_null(pc.match_substring(text, '\\"'), True)))
    return fields, ok


def _contains(text: pa.Array, needle: bytes) -> bool:
    """Whether any value holds `needle`: one bytes search over the block instead of a kernel
    per value (Arrow's match_substring costs ~0.5 µs a line)."""
    data = text.buffers()[2]
    return data is not None and needle in data.to_pybytes()


def _regex_fields(text: pa.Array) -> dict[str, pa.Array]:
    got = pc.extract_regex(text, PATTERN)
    return {name: pc.struct_field(got, name) for name in _FIELDS}


def exact(lines: pa.Array, service_pattern: str) -> tuple[dict[str, pa.Array], list[str]]:
    """The exact path: plain columns of the lines that parse ("line" as text, "ip" the line's
    $remote_addr and "xff" its X-Forwarded-For, for `forwarded`), and the text of those that
    do not."""
    text = as_text(lines)
    fields, ok = _split_fields(text)
    if not pc.all(ok).as_py():
        # The few lines the split could not take: the full pattern, then append them.
        slow_text = pc.filter(text, pc.invert(ok))
        slow = _regex_fields(slow_text)
        text = pa.concat_arrays([pc.filter(text, ok), slow_text])
        fields = {
            k: pa.concat_arrays(
                [pc.filter(fields[k], ok).cast(pa.string()), slow[k].cast(pa.string())]
            )
            for k in _FIELDS
        }
    # $time_local: each distinct second once.
    times = pc.dictionary_encode(fields["time"])
    ts = pc.take(strptime_times(times.dictionary), times.indices)
    good = pc.and_(pc.fill_null(in_range(ts), False), pc.is_valid(fields["status"]))
    # A size of more than 18 digits is beyond a 64-bit integer: garbage, not a line.
    huge = pc.fill_null(pc.greater(pc.utf8_length(fields["bytes"]), MAX_SIZE_DIGITS), False)
    good = pc.and_(good, pc.invert(huge))
    rejected: list[str] = []
    if not pc.all(good).as_py():
        rejected = pc.filter(text, pc.invert(good)).to_pylist()
        fields = {k: pc.filter(v, good) for k, v in fields.items()}
        ts, text = pc.filter(ts, good), pc.filter(text, good)
    n = len(text)

    request = pc.extract_regex(fields["request"], REQUEST_PATTERN)
    target = unescape_column(pc.struct_field(request, "target"))
    has_query = _contains(target, b"?") or _contains(target, b"#")
    path = pc.replace_substring_regex(target, r"[?#].*$", "") if has_query else target
    ua = unescape_column(pc.fill_null(fields["ua"], "-"))
    rt = null_if(fields["rt"], "-", "")
    user = null_if(pc.utf8_rtrim(fields["user"], " "), "-", "")
    columns = {
        "ts": ts,
        "source": pc.fill_null(pa.nulls(n, pa.string()), "nginx"),
        "ip": fields["addr"],  # $remote_addr: `forwarded.clients` decides the client
        "xff": fields["xff"],
        "user": user,
        "service": service_from_path(path, service_pattern),
        "method": pc.struct_field(request, "method"),
        "path": path,
        "status": pc.cast(fields["status"], pa.int32()),
        "bytes": pc.cast(null_if(fields["bytes"], "-"), pa.int64()),
        "duration_ms": pc.multiply(pc.cast(rt, pa.float64()), 1000.0),
        "client": classify_clients(ua),
        "line": text,
    }
    return columns, rejected
