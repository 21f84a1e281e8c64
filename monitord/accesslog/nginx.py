r"""The nginx `combined` reader (`parse`): a fast path over the block's bytes, two ways.

nginx writes `"` inside a field as `\x22`, so in a line of the usual shape every field sits at a
known place relative to the quotes, and each field is a byte range of the block. The fast path
reads those ranges, not one string per line:

* in C (`_nginxscan.c`, built when monitord is installed): one pass over the block without the
  interpreter lock, which numbers each distinct text value as it goes and copies the distinct
  values into one buffer, laid out as an Arrow string array, so that here each field's values
  are an array at once. Analysis runs the scan (`scan`) on a worker while it makes the columns
  of the block before (`finish`) and adds them up (`analysis.PARSE_AHEAD`). About 0.25 µs a
  line.
* in numpy (`_fast`), where the C scan is not built (no C compiler at install): one pass finds
  all quotes of the block; the small fields are read as words at known offsets (`nginx_words`);
  the text fields are dictionary-encoded straight from their ranges, and everything costly per
  value (the time, splitting the request, unescaping, the service pattern) is done once per
  distinct value and mapped back by codes (`nginx_codes`). About 0.9 µs a line, parsed inline:
  its short kernels need the interpreter lock between them, and a second thread only contended
  for it.

Both give the text columns as dictionary arrays (`schema.TEXT`) and are thread-safe. Lines of
another shape (a leading `host:port `, a request cut short, `escape=json` quotes, bytes that are
not UTF-8, too few fields, a bad time, ...) take the exact path (`nginx_exact`), the reference
both are tested against. Both undo nginx's `\xXX` escapes in request targets themselves (nginx
writes them for '"', '\' and bytes outside printable ASCII: UTF-8 paths, quoted words in user
agents); the C scan leaves the exact path only targets that unescape to bytes that are not
UTF-8 or to a newline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog import forwarded, nginx_exact
from monitord.accesslog.nginx_codes import Text, concat, encode
from monitord.accesslog.nginx_words import (
    TIME_WIDTH,
    ZEROS,
    Array,
    all_digits,
    body_bytes,
    field,
    request_time,
    times,
    window,
)
from monitord.accesslog.schema import (
    DEFAULT_SERVICE_PATTERN,
    client_kinds,
    conform,
    service_from_path,
    unescape_column,
)


def _load_scan() -> Callable[..., tuple[int, bytes, bytes]] | None:
    try:
        from monitord.accesslog._nginxscan import scan
    except ImportError:  # not built (no C compiler when monitord was installed): numpy reads
        return None
    return scan


_scan = _load_scan()
NATIVE = _scan is not None
"""Whether the C scan was built (and so whether nginx blocks are worth parsing ahead)."""
_TEXT_COLUMNS = ("source", "ip", "user", "service", "method", "path", "client", "xff")


def parse(
    lines: pa.Array,
    service_pattern: str = DEFAULT_SERVICE_PATTERN,
    trusted_proxies: tuple[str, ...] = (),
) -> nginx_exact.Parsed:
    """Parse binary lines of nginx `combined` into the common schema.

    Rows of the lines the fast path takes come first (in input order), then those of the exact
    path; text columns are dictionary arrays. The result equals `nginx_exact.parse_exact`'s up
    to row order. `trusted_proxies`: the CIDRs whose X-Forwarded-For names the client
    (`forwarded`; none by default: the client is $remote_addr).
    """
    return finish(scan(lines), service_pattern, trusted_proxies)


@dataclass
class Native:
    """What the C scan wrote for a block's lines (see `_nginxscan.scan`): `taken` lines of the
    usual shape, `ok` per line, the numbers of the taken lines, each text field's codes, and the
    distinct values of every field, one after the other, as an Arrow string array's bytes
    (`values`) and offsets (`value_offsets`), `counts` per field."""

    taken: int
    ok: Array
    ts: Array
    status: Array
    nbytes: Array
    ms: Array
    codes: Array
    counts: Array
    values: bytes
    value_offsets: bytes


@dataclass
class Scanned:
    """A block's lines after the C scan (`scan`), before `finish` makes them columns; `native`
    is None where the scan is not built or the lines hold no byte (`finish` then reads them
    with numpy)."""

    lines: pa.Array
    native: Native | None = None


def scan(lines: pa.Array) -> Scanned:
    """The C scan of the lines, where it is built: the part of `parse` that holds no interpreter
    lock, so a worker thread can run it beside the main thread's work."""
    lines = nginx_exact.binary(lines)
    if _scan is None or len(lines) == 0:
        return Scanned(lines)
    return Scanned(lines, _scan_native(lines))


def finish(
    scanned: Scanned,
    service_pattern: str = DEFAULT_SERVICE_PATTERN,
    trusted_proxies: tuple[str, ...] = (),
) -> nginx_exact.Parsed:
    """The columns of scanned lines (the rest of `parse`)."""
    lines = scanned.lines
    if len(lines) == 0:
        return nginx_exact.Parsed(conform({}, 0), [])
    if scanned.native is not None:
        columns, slow = _native_columns(lines, scanned.native, service_pattern)
    else:
        columns, slow = _fast(lines, service_pattern)
    rejected: list[str] = []
    if len(slow):
        exact, rejected = nginx_exact.exact(lines.take(pa.array(slow)), service_pattern)
        columns = concat(columns, _as_text_columns(exact)) if columns else _as_text_columns(exact)
    n = len(columns["ts"]) if columns else 0
    if n == 0:
        return nginx_exact.Parsed(conform({}, 0), rejected)
    columns["ip"] = _clients(columns["ip"], columns.pop("xff"), trusted_proxies)
    out = {k: v.array() if isinstance(v, Text) else v for k, v in columns.items()}
    return nginx_exact.Parsed(conform(out, n), rejected)


def _clients(addr: Text, xff: Text, trusted_proxies: tuple[str, ...]) -> Text:
    """The client of each row (`forwarded.clients`): $remote_addr, or behind a trusted proxy
    the address its X-Forwarded-For vouches for."""
    if not trusted_proxies:
        return addr
    codes, values = forwarded.clients(
        (addr.codes, addr.values), (xff.codes, xff.values), trusted_proxies
    )
    return Text(values, codes, used=False)


def _as_text_columns(columns: dict[str, pa.Array]) -> dict[str, Any]:
    # The exact path's plain strings as codes, and its line text as bytes, like the fast path's.
    out: dict[str, Any] = dict(columns)
    for k in _TEXT_COLUMNS:
        out[k] = Text.of(columns[k])
    out["line"] = columns["line"].cast(pa.binary())
    return out


# -- the fast path in C ---------------------------------------------------------------------------

# The text fields the C scan numbers, in its order.
_SCANNED = ("ip", "user", "method", "path", "service", "agent", "xff")


def _scan_native(lines: pa.Array) -> Native | None:
    """The C scan (`_nginxscan.c`) of the lines: one pass without the interpreter lock that
    numbers each distinct text value as it goes (None for lines without a byte)."""
    n = len(lines)
    _, offsets_buf, buf = lines.buffers()
    if buf is None:
        return None
    offsets = np.frombuffer(offsets_buf, np.int32, n + 1, lines.offset * 4)
    ok = np.empty(n, np.uint8)
    ts, nbytes, ms = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64)
    status = np.empty(n, np.int32)
    codes = np.empty((len(_SCANNED), n), np.int32)
    counts = np.empty(len(_SCANNED), np.int32)
    assert _scan is not None
    taken, values, value_offsets = _scan(buf, offsets, ok, ts, status, nbytes, ms, codes, counts)
    return Native(taken, ok, ts, status, nbytes, ms, codes, counts, values, value_offsets)


def _native_columns(
    lines: pa.Array, native: Native, service_pattern: str
) -> tuple[dict[str, Any], Array]:
    """Columns of the lines of the usual shape, and the indices of the other lines, from the C
    scan's outputs: each field's distinct values are an Arrow array over the scan's buffer."""
    n, m = len(lines), native.taken
    ts, nbytes, ms = native.ts[:m], native.nbytes[:m], native.ms[:m]
    taken = native.ok.view(bool)
    slow = np.flatnonzero(~taken)
    if m == 0:
        return {}, slow
    data, offsets = pa.py_buffer(native.values), pa.py_buffer(native.value_offsets)
    text: dict[str, Text] = {}
    first = 0
    for f, name in enumerate(_SCANNED):
        count = int(native.counts[f])
        field_offsets = offsets.slice(4 * first, 4 * (count + 1))
        distinct = pa.Array.from_buffers(pa.string(), count, [None, field_offsets, data])
        text[name] = Text(distinct, native.codes[f, :m], distinct=True)
        first += count
    path = text["path"]
    service = text["service"]
    if service_pattern != DEFAULT_SERVICE_PATTERN:
        service = Text(service_from_path(path.values, service_pattern), path.codes)
    agent = text["agent"]
    missing_bytes, missing_ms = nbytes < 0, np.isnan(ms)
    columns: dict[str, Any] = {
        "ts": pa.array(ts),
        "source": Text(pa.array(["nginx"]), np.zeros(m, np.int32), distinct=True),
        "ip": text["ip"],
        "user": text["user"],
        "service": service,
        "method": text["method"],
        "path": path,
        "status": pa.array(native.status[:m]),
        "bytes": pa.array(nbytes, mask=missing_bytes if missing_bytes.any() else None),
        "duration_ms": pa.array(ms, mask=missing_ms if missing_ms.any() else None),
        "client": Text(client_kinds(unescape_column(agent.values)), agent.codes),
        "line": lines if m == n else lines.take(pa.array(np.flatnonzero(taken))),
        "xff": text["xff"],
    }
    return columns, slow


# -- the fast path in numpy, where the C scan is not built ---------------------------------------


_scratch = threading.local()


def _is_quote(block: Array) -> Array:
    # block == '"' into a buffer kept per thread: a fresh 4 MiB array costs page faults.
    buf = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < len(block):
        buf = _scratch.buf = np.empty(max(len(block), 1 << 22), dtype=bool)
    out: Array = np.equal(block, 34, out=buf[: len(block)])
    return out


def _is_ws(raw: Array) -> Array:
    # RE2's \s: \t \n \f \r and space (not \v).
    out: Array = (raw == 32) | (((raw - np.uint8(9)) < 5) & (raw != 11))
    return out


def _fast(lines: pa.Array, service_pattern: str) -> tuple[dict[str, Any], Array]:
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
    tw = window(raw, q[0] - (TIME_WIDTH + 3), 32)
    ok = (nq >= 6) & (q[0] - (TIME_WIDTH + 3) >= starts)
    ok &= ((tw[:, 0] & np.uint64(0xFF)) == ord("[")) & (field(tw[:, 3], 3, 2) == 0x205D)
    ts, good = times(tw)
    ok &= good
    # After the request: " ddd " and $body_bytes_sent, then a space and the referer's quote.
    ok &= q[2] - q[1] >= 8
    sw = window(raw, q[1], 16)
    w = (sw[:, 0] >> np.uint64(8)) | (sw[:, 1] << np.uint64(56))  # from the byte after the quote
    ok &= (w & np.uint64(0xFF000000FF)) == 0x2000000020
    ok &= all_digits((w & np.uint64(0xFFFFFF00)) | np.uint64(ZEROS & ~0xFFFFFF00))
    status = (field(w, 1) * 100 + field(w, 2) * 10 + field(w, 3) - 5328).astype(np.int32)
    nbytes, dash, good = body_bytes(sw, q[2] - q[1] - 7)
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
    rw = window(raw, np.where(has_rt, q[6] - 8, 0), 8)
    millis, plain_rt = request_time(rw[:, 0], q[6] - q[5] - 7, has_rt)
    odd_rt = encode(buf, q[5] + 1, np.where(has_rt, q[6], ends), valid=~plain_rt)
    # X-Forwarded-For as written (to the end of the line when unclosed), for `_clients`.
    has_xff = nq > 6
    xff_start = np.where(has_xff, q[6] + 1, ends)
    xff = encode(buf, xff_start, np.where(has_xff & (nq > 7), q[7], ends), valid=has_xff)
    # A byte order mark (a file's first line may start with one) is no part of the address.
    bom = ends - starts >= 3
    for i, c in enumerate(b"\xef\xbb\xbf"):
        bom &= raw.take(starts + i, mode="clip") == c
    head = encode(buf, starts + 3 * bom, q[0] - (TIME_WIDTH + 3))
    request = encode(buf, q[0] + 1, q[1])
    ua = encode(buf, q[4] + 1, q[5])

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
    ip = Text(addr_of, head.codes, distinct=simple_heads, used=head.used)
    user = Text(user_of, head.codes, used=head.used)
    if simple_heads:
        user = Text(pa.nulls(0, pa.string()), np.full(len(keep), -1, np.int32), distinct=True)
    method, path, service = _requests(request.values, service_pattern)
    clients = client_kinds(unescape_column(ua.values))
    m = len(keep)
    columns: dict[str, Any] = {
        "ts": pa.array(ts),
        "source": Text(pa.array(["nginx"]), np.zeros(m, np.int32), distinct=True),
        "ip": ip,
        "user": user,
        "service": service.map(request),
        "method": method.map(request),
        "path": path.map(request),
        "status": pa.array(status),
        "bytes": pa.array(nbytes.astype(np.int64), mask=dash if dash.any() else None),
        "duration_ms": pa.array(duration, mask=missing),
        "client": Text(clients, ua.codes, used=ua.used),
        "line": lines if m == n else lines.take(pa.array(keep)),
        "xff": xff,
    }
    return columns, slow


def _quotes_per_line(quotes: Array, offsets: Array) -> tuple[Array, list[Array]]:
    # How many quotes each line has, and the positions of its first 8 (clipped where fewer).
    first = np.searchsorted(quotes, offsets)
    return np.diff(first), [quotes.take(first[:-1] + k, mode="clip") for k in range(8)]


def _utf8(lines: pa.Array, raw: Array, offsets: Array) -> Array:
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


def _value_bounds(
    values: pa.Array,
) -> tuple[pa.Buffer, Array, Array, Array]:
    # The data buffer of a string array, as bytes, with each value's [start, end).
    _, offsets_buf, data = values.buffers()
    n = len(values)
    offsets = np.frombuffer(offsets_buf, np.int32, n + 1, values.offset * 4).astype(np.int64)
    if data is None or data.size == 0:
        data = pa.py_buffer(b"\0")  # all values are empty: a byte to point at
    return data, np.frombuffer(data, np.uint8), offsets[:-1], offsets[1:]


def _heads(values: pa.Array) -> tuple[pa.Array, pa.Array, Array, bool]:
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
        got = pc.extract_regex(values.filter(pa.array(other)), nginx_exact.HEAD_PATTERN)
        mask = pa.array(other)
        addr = pc.replace_with_mask(addr, mask, pc.struct_field(got, "addr"))
        name = nginx_exact.null_if(pc.utf8_rtrim(pc.struct_field(got, "user"), " "), "-", "")
        user = pc.replace_with_mask(user, mask, name)
        ok[other] = got.is_valid().to_numpy(zero_copy_only=False)
    return addr, user, ok, bool(simple.all())


def _next_at(positions: Array, at: Array, none: int) -> Array:
    # The first of the sorted `positions` at or after each `at` (`none` if there is none).
    return np.append(positions, none)[np.searchsorted(positions, at)]


def _requests(values: pa.Array, service_pattern: str) -> tuple[Text, Text, Text]:
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
    # Every bound stays within its value, so the ranges of `encode` are in order.
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
        longer = encode(data, starts, np.where(ok, method_end, starts), valid=ok & (length > 8))
        shifted = np.where(longer.codes >= 0, longer.codes + len(method.values), method.codes)
        method = Text(pa.concat_arrays([method.values, longer.values]), shifted, distinct=True)
    path = encode(data, target, path_end, valid=ok & ~escaped)
    if escaped.any():
        # Rare: the exact path's unescape and query strip on the whole target.
        where = np.flatnonzero(escaped)
        targets = encode(data, target[where], target_end[where])
        unescaped = unescape_column(targets.values.take(pa.array(targets.codes)))
        stripped = pc.replace_substring_regex(unescaped, r"[?#].*$", "")
        codes = path.codes.copy()
        codes[where] = len(path.values) + np.arange(len(where))
        path = Text(pa.concat_arrays([path.values, stripped]), codes)
    if service_pattern == DEFAULT_SERVICE_PATTERN:
        service = _default_services(path.values).map(path)
    else:
        service = Text(service_from_path(path.values, service_pattern), path.codes, used=path.used)
    return method, path, service


def _methods(
    first: Array,
    length: Array,
    ok: Array,
) -> Text:
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
    return Text(pa.array(names, pa.string()), renumber[codes], distinct=True)


_SVC = b"/svc/"


def _default_services(paths: pa.Array) -> Text:
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
    return encode(data, begin, np.maximum(end, begin), valid=ok & (end > begin))


def _durations(values: pa.Array) -> pa.Array:
    # duration_ms of distinct `$request_time` pieces (" 0.019", " -", "\n", ...).
    rt = pc.struct_field(pc.extract_regex(values, nginx_exact.RT_PATTERN), [0])
    return pc.multiply(pc.cast(nginx_exact.null_if(rt, "-", ""), pa.float64()), 1000.0)
