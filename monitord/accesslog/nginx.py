r"""The nginx `combined` reader: a byte-level fast path in numpy, and the exact path in Arrow.

The fast path reads the block's bytes, not one string per line. nginx writes `"` inside a field
as `\x22`, so in a line of the usual shape every field sits at a known place relative to the
quotes: one numpy pass finds all quotes of the block, and each field becomes a byte range of it.
The fields are dictionary-encoded straight from those ranges (no copy of the block), and
everything costly per value (the time, splitting the request, unescaping, the service pattern,
the client kind of a user agent) is done once per distinct value and mapped back by codes.
Text columns come out as dictionary arrays (`schema.TEXT`). numpy and Arrow release the GIL, so
blocks parse in parallel on worker threads.

Lines of another shape (a leading `host:port `, a request cut short, `escape=json` quotes, bytes
that are not UTF-8, too few fields, a bad time, ...) take the exact path, the reference the fast
path is tested against (`parse_exact`). It splits at `"` and applies small RE2 patterns, because
RE2's submatch extraction costs ~4.5 µs for a whole combined line; lines the split cannot take
go through the full pattern. `$time_local` is parsed once per distinct second. Nothing is
anchored at the end of the line: extra trailing fields are ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.lines import as_text
from monitord.accesslog.schema import (
    DEFAULT_SERVICE_PATTERN,
    classify_clients,
    client_kinds,
    conform,
    service_from_path,
    unescape_column,
)

# The part before the request: optional "host:port ", the address (never "-"), "-", the user
# (which may hold spaces) and the time.
_PREFIX = r"^(?:\S+:\d+ )?(?P<addr>[^\s\-]\S*) \S+ (?P<user>[^\[]*)\[(?P<time>[^\]]+)\] "
_Q = r'(?:[^"\\]|\\.)*'  # a quoted field with backslash escapes allowed
PATTERN = (
    _PREFIX + r'"(?P<request>' + _Q + r')" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "' + _Q + r'" "(?P<ua>' + _Q + r')"'
    r'(?: (?P<rt>\d+(?:\.\d+)?|-)(?: "(?P<xff>' + _Q + r')")?)?)?'
)
# The split's prefix: no optional "host:port " (an optional group at the start makes RE2 four
# times slower); such lines fail here and take the full pattern.
PREFIX_PATTERN = r"^(?P<addr>\S+) - (?P<user>[^\[]*)\[(?P<time>[^\]]+)\] $"
HEAD_PATTERN = r"^(?P<addr>\S+) - (?P<user>[^\[]*)$"  # PREFIX_PATTERN without the time
STATUS_PATTERN = r"^ (?P<status>\d{3}) (?P<bytes>\d+|-)"
RT_PATTERN = r"^ (?P<rt>\d+(?:\.\d+)?)"
REQUEST_PATTERN = r"^(?P<method>[A-Z]{3,12}) (?P<target>\S+)"
XFF_PATTERN = r"^\s*(?P<ip>[0-9A-Fa-f.:]+)"
TIME_FORMAT = "%d/%b/%Y:%H:%M:%S %z"
_Array = np.ndarray[Any, Any]  # numpy's element types add little here: every value is an int
_FIELDS = ("addr", "user", "time", "request", "status", "bytes", "ua", "rt", "xff")
_TEXT_COLUMNS = ("source", "ip", "user", "service", "method", "path", "client")


@dataclass
class Parsed:
    """A parsed block: the rows that parsed, and the lines that did not."""

    table: pa.Table
    rejected: list[str] = field(default_factory=list)


def parse(lines: pa.Array, service_pattern: str = DEFAULT_SERVICE_PATTERN) -> Parsed:
    """Parse binary lines of nginx `combined` into the common schema.

    Rows of the lines the fast path takes come first (in input order), then those of the exact
    path; text columns are dictionary arrays. The result equals `parse_exact`'s up to row order.
    """
    lines = _binary(lines)
    if len(lines) == 0:
        return Parsed(conform({}, 0), [])
    columns, slow = _fast(lines, service_pattern)
    rejected: list[str] = []
    if len(slow):
        exact, rejected = _exact(lines.take(pa.array(slow)), service_pattern)
        columns = _concat(columns, _as_text_columns(exact)) if columns else _as_text_columns(exact)
    n = len(columns["ts"]) if columns else 0
    if n == 0:
        return Parsed(conform({}, 0), rejected)
    out = {k: v.array() if isinstance(v, _Text) else v for k, v in columns.items()}
    return Parsed(conform(out, n), rejected)


def parse_exact(lines: pa.Array, service_pattern: str = DEFAULT_SERVICE_PATTERN) -> Parsed:
    """Parse every line with the exact path: the reference `parse` must agree with."""
    lines = _binary(lines)
    if len(lines) == 0:
        return Parsed(conform({}, 0), [])
    columns, rejected = _exact(lines, service_pattern)
    return Parsed(conform(columns, len(columns["ts"])), rejected)


def _binary(lines: pa.Array) -> pa.Array:
    # The fast path reads the offsets and bytes of a binary array with 32-bit offsets.
    return lines if lines.type == pa.binary() else lines.cast(pa.binary())


# -- text columns as codes ----------------------------------------------------------------------


@dataclass
class _Text:
    """A text column as codes into values (-1 is null). Values may repeat or go unused: the
    fast path composes codes freely and tidies up once, in `array` (the flags say what needs
    tidying)."""

    values: pa.Array  # string
    codes: _Array
    distinct: bool = False  # no two values are equal
    used: bool = True  # every value has a row

    @staticmethod
    def of(col: pa.Array) -> _Text:
        """Encode a plain string column."""
        enc = pc.dictionary_encode(col)
        return _Text(enc.dictionary, _indices(enc), distinct=True)

    def __len__(self) -> int:
        return len(self.codes)

    def map(self, other: _Text) -> _Text:
        """This column, which has a row per value of `other`, with the rows of `other`."""
        return _Text(
            self.values, _lookup(self.codes, other.codes), self.distinct, self.used and other.used
        )

    def select(self, rows: _Array) -> _Text:
        """The rows at `rows`."""
        return _Text(self.values, self.codes[rows], self.distinct, used=False)

    def array(self) -> pa.DictionaryArray:
        """A dictionary array whose values are distinct and all used (so a consumer may count
        the dictionary or group by code)."""
        codes, values = self.codes, self.values
        if not self.distinct:
            enc = pc.dictionary_encode(values)
            codes, values = _lookup(_indices(enc), codes), enc.dictionary
        if not self.used:
            used = np.bincount(codes + 1, minlength=len(values) + 1)[1:] > 0
            if not used.all():
                codes = _lookup(np.cumsum(used, dtype=np.int32) - 1, codes)
                values = values.filter(pa.array(used))
        nulls = codes < 0
        indices = pa.array(codes.astype(np.int32, copy=False), mask=nulls if nulls.any() else None)
        if values.type != pa.string():
            values = values.cast(pa.string())
        return pa.DictionaryArray.from_arrays(indices, values)


def _indices(enc: pa.DictionaryArray) -> _Array:
    # Dictionary indices as numpy, -1 where null.
    idx = enc.indices
    if idx.null_count:
        idx = pc.fill_null(idx, -1)
    out: _Array = idx.to_numpy().astype(np.int32, copy=False)
    return out


def _lookup(table: _Array, codes: _Array) -> _Array:
    # table[codes], with -1 (null) mapping to -1.
    return np.append(table.astype(np.int32, copy=False), np.int32(-1))[codes]


def _concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The rows of `a`, then those of `b` (the same columns)."""
    out: dict[str, Any] = {}
    for k, x in a.items():
        y = b[k]
        if isinstance(x, _Text):
            shifted = np.where(y.codes >= 0, y.codes + len(x.values), -1)
            values = pa.concat_arrays([x.values, y.values])
            out[k] = _Text(values, np.concatenate([x.codes, shifted]), used=x.used and y.used)
        else:
            out[k] = pa.concat_arrays([x, y.cast(x.type)])
    return out


def _as_text_columns(columns: dict[str, pa.Array]) -> dict[str, Any]:
    # The exact path's plain strings as codes, and its line text as bytes, like the fast path's.
    out: dict[str, Any] = dict(columns)
    for k in _TEXT_COLUMNS:
        out[k] = _Text.of(columns[k])
    out["line"] = columns["line"].cast(pa.binary())
    return out


# -- the fast path --------------------------------------------------------------------------------

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_KEYS = np.array(sorted((ord(m[0]) << 16) | (ord(m[1]) << 8) | ord(m[2]) for m in _MONTHS))
_MONTH_OF_KEY = np.array(
    [_MONTHS.index(bytes([k >> 16, (k >> 8) & 255, k & 255]).decode()) + 1 for k in _MONTH_KEYS]
)
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_TIME_WIDTH = 26  # dd/Mon/yyyy:HH:MM:SS +zzzz
_ZEROS = 0x3030303030303030  # eight ASCII '0'
_scratch = threading.local()


def _is_quote(block: _Array) -> _Array:
    # block == '"' into a buffer kept per thread: a fresh 4 MiB array costs page faults.
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < len(block):
        buf = _scratch.buf = np.empty(max(len(block), 1 << 22), dtype=bool)
    out: _Array = np.equal(block, 34, out=buf[: len(block)])
    return out


def _is_ws(raw: _Array) -> _Array:
    # RE2's \s: \t \n \f \r and space (not \v).
    out: _Array = (raw == 32) | (((raw - np.uint8(9)) < 5) & (raw != 11))
    return out


def _all_digits(w: _Array) -> _Array:
    # Whether all 8 bytes of each word are ASCII digits: high nibble 3, and still 3 after +6.
    high = np.uint64(0xF0F0F0F0F0F0F0F0)
    nibbles = (w & high) | (((w + np.uint64(0x0606060606060606)) & high) >> np.uint64(4))
    out: _Array = nibbles == np.uint64(0x3333333333333333)
    return out


def _number(w: _Array) -> _Array:
    # The value of 8 ASCII digits, the first in the lowest byte: pairs, quads, then all eight.
    v = w - np.uint64(_ZEROS)
    v = (v * np.uint64(10) + (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v * np.uint64(100) + (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (v * np.uint64(10000) + (v >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


def _field(w: _Array, i: int, size: int = 1) -> _Array:
    # Bytes i to i + size - 1 of each word, as a little-endian number.
    return (w >> np.uint64(8 * i)) & np.uint64((1 << (8 * size)) - 1)


def _window(raw: _Array, pos: _Array, width: int) -> _Array:
    """The `width` bytes from each position, as rows of little-endian words (positions are
    clipped to the buffer)."""
    # A void item has alignment 1, so numpy copies it whole (a 2-D or an unaligned integer
    # view is 2 to 3 times slower to gather).
    rows = np.ndarray((len(raw) - width + 1,), np.dtype(f"V{width}"), raw, 0, (1,))
    out: _Array = rows[np.clip(pos, 0, len(rows) - 1)].view("<u8")
    return out.reshape(len(pos), width // 8)


def _fast(lines: pa.Array, service_pattern: str) -> tuple[dict[str, Any], _Array]:
    """Columns of the lines of the usual shape, and the indices of the other lines."""
    n = len(lines)
    _, offsets_buf, buf = lines.buffers()
    offsets = np.frombuffer(offsets_buf, np.int32, n + 1, lines.offset * 4).astype(np.int64)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if buf is None or buf.size < 64:  # shorter than any line of the usual shape
        return {}, np.arange(n)
    raw = np.frombuffer(buf, np.uint8)
    block = raw[lo:hi]
    quotes = np.flatnonzero(_is_quote(block))
    if lo:
        quotes += lo
    if len(quotes) == 0:
        return {}, np.arange(n)
    starts, ends = offsets[:-1], offsets[1:]

    # The quotes of each line: q[k] is its k-th. Most blocks have 8 on every line, which a
    # reshape shows without a search.
    q8 = quotes.reshape(n, 8) if len(quotes) == 8 * n else None
    if q8 is not None and (q8[:, 0] >= starts).all() and (q8[:, 7] < ends).all():
        nq, q = np.full(n, 8), [q8[:, k] for k in range(8)]
    else:
        nq, q = _quotes_per_line(quotes, offsets)

    # The small fields are read from windows of bytes at known offsets (one gather each; a
    # window reaching outside a line belongs to a line that fails a check below).
    # "[$time_local] " before the first quote: the time is parsed once per run of equal times.
    tw = _window(raw, q[0] - (_TIME_WIDTH + 3), 32)
    ok = (nq >= 6) & (q[0] - (_TIME_WIDTH + 3) >= starts)
    ok &= ((tw[:, 0] & np.uint64(0xFF)) == ord("[")) & (_field(tw[:, 3], 3, 2) == 0x205D)
    ts, good = _times(tw)
    ok &= good
    # After the request: " ddd " and $body_bytes_sent, then a space and the referer's quote.
    ok &= q[2] - q[1] >= 8
    sw = _window(raw, q[1], 16)
    w = (sw[:, 0] >> np.uint64(8)) | (sw[:, 1] << np.uint64(56))  # from the byte after the quote
    ok &= (w & np.uint64(0xFF000000FF)) == 0x2000000020
    ok &= _all_digits((w & np.uint64(0xFFFFFF00)) | np.uint64(_ZEROS & ~0xFFFFFF00))
    status = (_field(w, 1) * 100 + _field(w, 2) * 10 + _field(w, 3) - 5328).astype(np.int32)
    nbytes, dash, good = _body_bytes(sw, q[2] - q[1] - 7)
    ok &= good
    # A backslash before a quote is escape=json: the split would cut the field there.
    escaped = quotes[raw.take(quotes - 1, mode="clip") == ord("\\")]
    if len(escaped):
        ok[np.searchsorted(offsets, escaped, "right") - 1] = False
    # nginx escapes bytes above 126, so only other writers leave non-ASCII; the exact path
    # escapes what is not UTF-8 (and the line text must then differ from the bytes).
    if block.max() >= 0x80:
        ok &= _utf8(lines, raw, offsets)

    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        return {}, np.arange(n)
    if len(keep) < n:
        starts, ends, nq, q = starts[keep], ends[keep], nq[keep], [x[keep] for x in q]
        ts, status, nbytes, dash = ts[keep], status[keep], nbytes[keep], dash[keep]
    # $request_time as nginx writes it (" 0.019 ") is read in place; other pieces, as the split
    # at '"' cuts them (to the end of the line when there is no xff), per distinct value.
    has_rt = nq > 6
    rw = _window(raw, np.where(has_rt, q[6] - 8, 0), 8)
    millis, plain_rt = _request_time(rw[:, 0], q[6] - q[5] - 7, has_rt)
    odd_rt = _encode(buf, q[5] + 1, np.where(has_rt, q[6], ends), valid=~plain_rt)
    # X-Forwarded-For, unless it is "-".
    dash_xff = (nq > 7) & (q[7] - q[6] == 2) & (raw.take(q[6] + 1, mode="clip") == ord("-"))
    has_xff = has_rt & ~dash_xff
    xff_start = np.where(has_xff, q[6] + 1, ends)
    xff = _encode(buf, xff_start, np.where(has_xff & (nq > 7), q[7], ends), valid=has_xff)
    head = _encode(buf, starts, q[0] - (_TIME_WIDTH + 3))
    request = _encode(buf, q[0] + 1, q[1])
    ua = _encode(buf, q[4] + 1, q[5])

    # Per distinct head: a named user may still send a line to the exact path.
    addr_of, user_of, head_ok, simple_heads = _heads(head.values)
    good = head_ok[head.codes]
    slow = np.flatnonzero(~ok)
    if not good.all():
        rows = np.flatnonzero(good)
        slow = np.sort(np.concatenate([slow, keep[~good]]))
        keep, ts, status, nbytes, dash = (
            keep[rows],
            ts[rows],
            status[rows],
            nbytes[rows],
            dash[rows],
        )
        millis, plain_rt = millis[rows], plain_rt[rows]
        head, request = head.select(rows), request.select(rows)
        ua, odd_rt, xff = ua.select(rows), odd_rt.select(rows), xff.select(rows)
        if len(keep) == 0:
            return {}, slow

    duration = millis / 1000.0 * 1000.0  # as the exact path: seconds, then times 1000
    missing = None
    if not plain_rt.all():
        odd = _durations(odd_rt.values).to_numpy(zero_copy_only=False)  # NaN where null
        duration = np.where(plain_rt, duration, np.append(odd, np.nan)[odd_rt.codes])
        missing = np.isnan(duration)
    # Behind a load balancer the client is the first X-Forwarded-For address.
    ip = _Text(addr_of, head.codes, distinct=simple_heads, used=head.used)
    if len(xff.values):
        first = pc.struct_field(pc.extract_regex(xff.values, XFF_PATTERN), [0])
        use = _lookup(first.is_valid().to_numpy(zero_copy_only=False), xff.codes) > 0
        codes = np.where(use, xff.codes + len(addr_of), head.codes)
        ip = _Text(pa.concat_arrays([addr_of, first]), codes, used=False)
    user = _Text(user_of, head.codes, used=head.used)
    if simple_heads:
        user = _Text(pa.nulls(0, pa.string()), np.full(len(keep), -1, np.int32), distinct=True)
    method, path, service = _requests(request.values, service_pattern)
    clients = client_kinds(unescape_column(ua.values))
    m = len(keep)
    columns: dict[str, Any] = {
        "ts": pa.array(ts),
        "source": _Text(pa.array(["nginx"]), np.zeros(m, np.int32), distinct=True),
        "ip": ip,
        "user": user,
        "service": service.map(request),
        "method": method.map(request),
        "path": path.map(request),
        "status": pa.array(status),
        "bytes": pa.array(nbytes.astype(np.int64), mask=dash if dash.any() else None),
        "duration_ms": pa.array(duration, mask=missing),
        "client": _Text(clients, ua.codes, used=ua.used),
        "line": lines if m == n else lines.take(pa.array(keep)),
    }
    return columns, slow


def _quotes_per_line(quotes: _Array, offsets: _Array) -> tuple[_Array, list[_Array]]:
    # How many quotes each line has, and the positions of its first 8 (clipped where fewer).
    first = np.searchsorted(quotes, offsets)
    return np.diff(first), [quotes.take(first[:-1] + k, mode="clip") for k in range(8)]


def _body_bytes(window: _Array, length: _Array) -> tuple[_Array, _Array, _Array]:
    """$body_bytes_sent from the 16 bytes at the request's closing quote: (value, is '-', is
    up to 7 digits or '-'). Longer values (10 MB and more) are left to the exact path."""
    # The 8 bytes that end with the space after the value start at byte length - 1.
    at = (np.clip(length, 1, 7) - 1).astype(np.uint64) * np.uint64(8)
    w = (window[:, 0] >> at) | (window[:, 1] << (np.uint64(64) - at))  # a shift by 64 gives 0
    ok = (_field(w, 7) == ord(" ")) & (length >= 1) & (length <= 7)
    dash = (length == 1) & (_field(w, 6) == ord("-"))
    # Shift the digits to the top bytes and fill the bytes below with '0'.
    below = np.uint64(8) * (8 - np.clip(length, 1, 7)).astype(np.uint64)
    top = np.uint64(0xFFFFFFFFFFFFFFFF) << below
    v = ((w << np.uint64(8)) & top) | (np.uint64(_ZEROS) & ~top)
    ok &= dash | _all_digits(v)
    return _number(v), dash, ok


def _request_time(
    w: _Array,
    whole: _Array,
    present: _Array,
) -> tuple[_Array, _Array]:
    """$request_time in milliseconds from the 8 bytes that end with the space after it, when it
    reads " s.mmm " with 1 to 3 digits of seconds (nginx's format); and which lines did."""
    ok = present & (whole >= 1) & (whole <= 3) & ((w >> np.uint64(56)) == 0x20)
    ok &= _field(w, 3) == ord(".")
    whole = np.clip(whole, 1, 3).astype(np.uint64)
    ok &= ((w >> (np.uint64(8) * (np.uint64(2) - whole))) & np.uint64(0xFF)) == 0x20
    # Seconds (padded with '0' below) in bytes 2-4 and milliseconds in bytes 5-7.
    top = np.uint64(0xFFFFFF) & (np.uint64(0xFFFFFF) << (np.uint64(8) * (np.uint64(3) - whole)))
    seconds = (w & top) | (np.uint64(0x303030) & ~top)
    millis = (w >> np.uint64(32)) & np.uint64(0xFFFFFF)
    v = np.uint64(0x3030) | (seconds << np.uint64(16)) | (millis << np.uint64(40))
    ok &= _all_digits(v)
    return _number(v).astype(np.float64), ok


def _utf8(lines: pa.Array, raw: _Array, offsets: _Array) -> _Array:
    # Which lines are valid UTF-8: Arrow checks the block; only if that fails, the lines holding
    # a byte above 127 are decoded one by one.
    good = np.ones(len(lines), dtype=bool)
    try:
        lines.cast(pa.string())
        return good
    except pa.ArrowInvalid:
        pass
    lo, hi = int(offsets[0]), int(offsets[-1])
    high = np.flatnonzero(raw[lo:hi] >= 0x80) + lo
    for i in np.unique(np.searchsorted(offsets, high, "right") - 1):
        try:
            raw[offsets[i] : offsets[i + 1]].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            good[i] = False
    return good


_EVEN_BITS = b"\x55" * 4096  # validity of every other slot, grown on demand


def _encode(
    buf: pa.Buffer,
    start: _Array,
    end: _Array,
    valid: _Array | None = None,
) -> _Text:
    """Dictionary-encode the byte ranges [start, end) of `buf` without copying them (only
    where `valid`, if given: the other rows are null).

    The ranges become the even slots of a string array over `buf` whose offsets are
    start0, end0, start1, end1, ...; the odd slots (the bytes between two ranges) are null, so
    the hash kernel skips them. Ranges must be in order and not overlap (fields of consecutive
    lines are), and cut valid UTF-8 at ASCII bytes (quotes, spaces, '/'), so they are valid
    UTF-8 themselves.
    """
    global _EVEN_BITS
    if valid is not None and not valid.all():
        # Few rows as a rule (an unusual $request_time, an X-Forwarded-For that is not "-").
        rows = np.flatnonzero(valid)
        some = (
            _encode(buf, start[rows], end[rows])
            if len(rows)
            else _Text(pa.nulls(0, pa.string()), rows)
        )
        codes = np.full(len(start), -1, np.int32)
        codes[rows] = some.codes
        return _Text(some.values, codes, distinct=True)
    n = len(start)
    offsets = np.empty(2 * n + 1, np.int32)
    offsets[0 : 2 * n : 2] = start
    offsets[1 : 2 * n : 2] = end
    offsets[2 * n] = end[-1] if n else 0
    size = (2 * n + 7) // 8
    if len(_EVEN_BITS) < size:
        _EVEN_BITS = b"\x55" * size
    bits = pa.py_buffer(_EVEN_BITS)
    arr = pa.Array.from_buffers(pa.string(), 2 * n, [bits, pa.py_buffer(offsets), buf], n)
    enc = pc.dictionary_encode(arr)
    codes = np.frombuffer(enc.indices.buffers()[1], np.int32, 2 * n)[0::2]
    return _Text(enc.dictionary, np.ascontiguousarray(codes), distinct=True)


def _value_bounds(
    values: pa.Array,
) -> tuple[pa.Buffer, _Array, _Array, _Array]:
    # The data buffer of a string array, as bytes, with each value's [start, end).
    _, offsets_buf, data = values.buffers()
    n = len(values)
    offsets = np.frombuffer(offsets_buf, np.int32, n + 1, values.offset * 4).astype(np.int64)
    if data is None or data.size == 0:
        data = pa.py_buffer(b"\0")  # all values are empty: a byte to point at
    return data, np.frombuffer(data, np.uint8), offsets[:-1], offsets[1:]


_TIME_SEPARATORS = {2: "/", 6: "/", 11: ":", 14: ":", 17: ":", 20: " "}
_TIME_DIGITS = [0, 1, 7, 8, 9, 10, 12, 13, 15, 16, 18, 19, 22, 23, 24, 25]


def _time_checks() -> tuple[_Array, _Array, _Array]:
    # Per byte of the time: the lowest value allowed and how far above it (as uint8, so one
    # subtraction and compare checks a digit, a separator or the sign); and the weights that
    # turn its 16 digits into day, year, hour, minute, second, offset hours and minutes.
    # Over the whole 32-byte window: the time is bytes 1 to 26.
    low = np.zeros(32, np.uint8)
    span = np.full(32, 255, np.uint8)  # the month's letters are checked by key, "[" apart
    low[np.add(_TIME_DIGITS, 1)], span[np.add(_TIME_DIGITS, 1)] = ord("0"), 9
    for i, c in _TIME_SEPARATORS.items():
        low[i + 1], span[i + 1] = ord(c), 0
    low[22], span[22] = ord("+"), 2  # '+', ',' or '-': ',' is ruled out apart
    weights = np.zeros((len(_TIME_DIGITS), 7), np.float64)
    for col, (a, b) in enumerate(((0, 2), (2, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 16))):
        for i in range(a, b):
            weights[i, col] = 10.0 ** (b - 1 - i)
    return low, span, weights


_TIME_LOW, _TIME_SPAN, _TIME_WEIGHTS = _time_checks()


def _times(
    windows: _Array,
) -> tuple[_Array, _Array]:
    """Epoch seconds of `$time_local` in 32-byte windows ("[" and the 26 bytes of the time
    first), and which parsed. Consecutive lines mostly share their time: each run of equal
    times is parsed once.

    Times of the canonical form with a real date are computed in numpy; the rest (31/Feb,
    lower-case months, odd offsets, ...) go to `strptime`, as in the exact path, so both agree.
    """
    n = len(windows)
    changed = np.empty(n, dtype=bool)
    changed[0] = True
    # Bytes 0 to 26 of the window: three words and the low three bytes of the fourth.
    # (A reduction along a short axis costs more than a few whole-column operations.)
    np.not_equal(windows[1:, 0], windows[:-1, 0], out=changed[1:])
    changed[1:] |= windows[1:, 1] != windows[:-1, 1]
    changed[1:] |= windows[1:, 2] != windows[:-1, 2]
    changed[1:] |= ((windows[1:, 3] ^ windows[:-1, 3]) & np.uint64(0xFFFFFF)) != 0
    firsts = np.flatnonzero(changed)
    whole = windows[firsts]
    m = whole.view(np.uint8)[:, 1 : 1 + _TIME_WIDTH]
    bad = ((whole.view(np.uint8) - _TIME_LOW) > _TIME_SPAN).view(np.uint64)
    canonical = ((bad[:, 0] | bad[:, 1] | bad[:, 2] | bad[:, 3]) == 0) & (m[:, 21] != ord(","))
    v = m.astype(np.int32)
    key = (v[:, 3] << 16) | (v[:, 4] << 8) | v[:, 5]
    at = np.minimum(np.searchsorted(_MONTH_KEYS, key), len(_MONTH_KEYS) - 1)
    canonical &= _MONTH_KEYS[at] == key
    month = _MONTH_OF_KEY[at]
    # The digits' values in one product (exact: every value is below 2**53).
    fields = ((m[:, _TIME_DIGITS] - np.uint8(48)).astype(np.float64) @ _TIME_WEIGHTS).astype(
        np.int64
    )
    day, year, hour, minute, second, tz_hours, tz_minutes = fields.T
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _DAYS_IN_MONTH[month] + (leap & (month == 2))
    canonical &= (day >= 1) & (day <= month_days) & (year >= 1000)
    canonical &= (hour <= 23) & (minute <= 59) & (second <= 59)
    canonical &= (tz_hours <= 23) & (tz_minutes <= 59)
    offset = (44 - v[:, 21]) * (tz_hours * 3600 + tz_minutes * 60)  # '+' is 43, '-' is 45
    days = _days_from_civil(year, month, day)
    ts = days * 86400 + (hour * 3600 + minute * 60 + second - offset)
    ok = canonical
    if not canonical.all():
        ok = canonical.copy()
        other = np.flatnonzero(~canonical)
        text = pa.array([m[i].tobytes().decode("utf-8", "replace") for i in other], pa.string())
        parsed = pc.strptime(text, format=TIME_FORMAT, unit="s", error_is_null=True)
        # The exact path's pattern takes no ']' in the time.
        parsed_ok = pc.and_(pc.is_valid(parsed), pc.invert(pc.match_substring(text, "]")))
        ts[other] = pc.fill_null(parsed.cast(pa.int64()), 0).to_numpy()
        ok[other] = parsed_ok.to_numpy(zero_copy_only=False)
    if len(firsts) == n:
        return ts, ok
    run = np.cumsum(changed, dtype=np.int32) - 1
    return ts[run], ok[run]


def _days_from_civil(y: _Array, m: _Array, d: _Array) -> _Array:
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * np.where(m > 2, m - 3, m + 9) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    out: _Array = era * 146097 + doe - 719468
    return out


def _heads(values: pa.Array) -> tuple[pa.Array, pa.Array, _Array, bool]:
    """Address and user of distinct line heads ("addr - user "), which matched, and whether
    all were the usual "addr - - " (whose addresses are then distinct, the users all null).

    The usual heads are cut in numpy; others (named users) take the exact path's pattern.
    """
    _, raw, starts, ends = _value_bounds(values)
    d = len(values)
    low = np.flatnonzero(raw <= 32)  # whitespace and other control bytes: few
    ws = low[_is_ws(raw[low])]
    simple = (ends - starts >= 6) & (np.searchsorted(ws, ends) - np.searchsorted(ws, starts) == 3)
    for i, c in enumerate(b" - - "):
        simple &= raw.take(ends - 5 + i, mode="clip") == c
    addr = pc.utf8_slice_codeunits(values, 0, -5)
    user = pa.nulls(d, pa.string())
    ok = simple.copy()
    if not simple.all():
        other = ~simple
        got = pc.extract_regex(values.filter(pa.array(other)), HEAD_PATTERN)
        mask = pa.array(other)
        addr = pc.replace_with_mask(addr, mask, pc.struct_field(got, "addr"))
        name = _null_if(pc.utf8_rtrim(pc.struct_field(got, "user"), " "), "-", "")
        user = pc.replace_with_mask(user, mask, name)
        ok[other] = got.is_valid().to_numpy(zero_copy_only=False)
    return addr, user, ok, bool(simple.all())


def _next_at(positions: _Array, at: _Array, none: int) -> _Array:
    # The first of the sorted `positions` at or after each `at` (`none` if there is none).
    return np.append(positions, none)[np.searchsorted(positions, at)]


def _requests(values: pa.Array, service_pattern: str) -> tuple[_Text, _Text, _Text]:
    """Method, path and service of distinct request lines (codes per request).

    REQUEST_PATTERN in numpy: a method of 3 to 12 capitals, a space, then the target up to the
    next whitespace; the path is the target before '?' or '#'. A target holding an escape is
    unescaped first, as in the exact path.
    """
    data, raw, starts, ends = _value_bounds(values)
    size = len(raw)
    rows = np.arange(len(values))
    # The first non-capital of the first 13 bytes ends the method; it must be a space inside
    # the value. (argmin gives 0 when all 13 are capitals: no match either.)
    first = raw.take(starts[:, None] + np.arange(16), mode="clip")
    length = np.argmin((first[:, :13] >= ord("A")) & (first[:, :13] <= ord("Z")), axis=1)
    method_end = starts + length
    ok = (length >= 3) & (first[rows, length] == ord(" ")) & (method_end < ends)
    # One pass finds what ends the target (whitespace), the path ('?', '#') and escapes ('\').
    # Every bound stays within its value, so the ranges of `_encode` are in order.
    special = np.flatnonzero((raw <= 32) | (raw == 35) | (raw == 63) | (raw == 92))
    kind = raw[special]
    target = np.minimum(method_end + 1, ends)
    target_end = np.minimum(_next_at(special[_is_ws(kind)], target, size), ends)
    ok &= target_end > target
    query = special[(kind == ord("?")) | (kind == ord("#"))]
    path_end = np.minimum(_next_at(query, target, size), target_end)
    backslash = special[kind == ord("\\")]
    escaped = ok & (np.searchsorted(backslash, target) < np.searchsorted(backslash, target_end))

    method = _methods(first, length, ok)
    if (ok & (length > 8)).any():  # rare: methods of 9 to 12 letters as text
        longer = _encode(data, starts, np.where(ok, method_end, starts), valid=ok & (length > 8))
        shifted = np.where(longer.codes >= 0, longer.codes + len(method.values), method.codes)
        method = _Text(pa.concat_arrays([method.values, longer.values]), shifted, distinct=True)
    path = _encode(data, target, path_end, valid=ok & ~escaped)
    if escaped.any():
        # Rare: the exact path's unescape and query strip on the whole target.
        where = np.flatnonzero(escaped)
        targets = _encode(data, target[where], target_end[where])
        unescaped = unescape_column(targets.values.take(pa.array(targets.codes)))
        stripped = pc.replace_substring_regex(unescaped, r"[?#].*$", "")
        codes = path.codes.copy()
        codes[where] = len(path.values) + np.arange(len(where))
        path = _Text(pa.concat_arrays([path.values, stripped]), codes)
    if service_pattern == DEFAULT_SERVICE_PATTERN:
        service = _default_services(path.values).map(path)
    else:
        service = _Text(service_from_path(path.values, service_pattern), path.codes, used=path.used)
    return method, path, service


def _methods(
    first: _Array,
    length: _Array,
    ok: _Array,
) -> _Text:
    """Methods of up to 8 letters, from the first 16 bytes of each request: the letters as an
    integer, because hashing integers is several times cheaper than hashing text."""
    short = ok & (length <= 8)
    bits = np.uint64(8) * np.minimum(length, 8).astype(np.uint64)
    keys = first.view("<u8")[:, 0] & ((np.uint64(1) << bits) - np.uint64(1))  # 1 << 64 is 0
    enc = pc.dictionary_encode(pa.array(np.where(short, keys, 0)))  # 0: no method
    keys = enc.dictionary.to_numpy()
    codes = np.frombuffer(enc.indices.buffers()[1], np.int32, len(first))
    # Number the methods without the 0 key, which becomes null.
    renumber = np.cumsum(keys != 0, dtype=np.int32) - 1
    renumber[keys == 0] = -1
    names = [int(k).to_bytes(8, "little").rstrip(b"\0").decode() for k in keys if k]
    return _Text(pa.array(names, pa.string()), renumber[codes], distinct=True)


_SVC = b"/svc/"


def _default_services(paths: pa.Array) -> _Text:
    """DEFAULT_SERVICE_PATTERN in numpy (a service per path value): after "/svc/", up to the
    next '/', '?' or '#'. RE2 costs ~70 ns a distinct path; this is the pattern nearly every
    deployment keeps."""
    data, raw, starts, ends = _value_bounds(paths)
    ok = ends - starts > len(_SVC)
    for i, c in enumerate(_SVC):
        ok &= raw.take(starts + i, mode="clip") == c
    stops = np.flatnonzero((raw == ord("/")) | (raw == ord("?")) | (raw == ord("#")))
    begin = np.minimum(starts + len(_SVC), ends)
    end = np.minimum(_next_at(stops, begin, len(raw)), ends)
    return _encode(data, begin, np.maximum(end, begin), valid=ok & (end > begin))


def _durations(values: pa.Array) -> pa.Array:
    # duration_ms of distinct `$request_time` pieces (" 0.019", " -", "\n", ...).
    rt = pc.struct_field(pc.extract_regex(values, RT_PATTERN), [0])
    return pc.multiply(pc.cast(_null_if(rt, "-", ""), pa.float64()), 1000.0)


# -- the exact path -------------------------------------------------------------------------------


def _null_if(col: pa.Array, *values: str) -> pa.Array:
    hit = pc.is_in(col, value_set=pa.array(values, pa.string()))
    return pc.if_else(pc.fill_null(hit, False), pa.scalar(None, pa.string()), col)


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


def _exact(lines: pa.Array, service_pattern: str) -> tuple[dict[str, pa.Array], list[str]]:
    """The exact path: plain columns of the lines that parse ("line" as text), and the text of
    those that do not."""
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
    parsed_times = pc.strptime(times.dictionary, format=TIME_FORMAT, unit="s", error_is_null=True)
    ts = pc.take(parsed_times.cast(pa.int64()), times.indices)
    good = pc.and_(pc.is_valid(ts), pc.is_valid(fields["status"]))
    rejected: list[str] = []
    if not pc.all(good).as_py():
        rejected = pc.filter(text, pc.invert(good)).to_pylist()
        fields = {k: pc.filter(v, good) for k, v in fields.items()}
        ts, text = pc.filter(ts, good), pc.filter(text, good)
    n = len(text)

    # Behind a load balancer the client is the first X-Forwarded-For address.
    first_xff = pc.struct_field(pc.extract_regex(fields["xff"], XFF_PATTERN), [0])
    ip = pc.coalesce(first_xff, fields["addr"])
    request = pc.extract_regex(fields["request"], REQUEST_PATTERN)
    target = unescape_column(pc.struct_field(request, "target"))
    has_query = _contains(target, b"?") or _contains(target, b"#")
    path = pc.replace_substring_regex(target, r"[?#].*$", "") if has_query else target
    ua = unescape_column(pc.fill_null(fields["ua"], "-"))
    rt = _null_if(fields["rt"], "-", "")
    user = _null_if(pc.utf8_rtrim(fields["user"], " "), "-", "")
    columns = {
        "ts": ts,
        "source": pc.fill_null(pa.nulls(n, pa.string()), "nginx"),
        "ip": ip,
        "user": user,
        "service": service_from_path(path, service_pattern),
        "method": pc.struct_field(request, "method"),
        "path": path,
        "status": pc.cast(fields["status"], pa.int32()),
        "bytes": pc.cast(_null_if(fields["bytes"], "-"), pa.int64()),
        "duration_ms": pc.multiply(pc.cast(rt, pa.float64()), 1000.0),
        "client": classify_clients(ua),
        "line": text,
    }
    return columns, rejected
