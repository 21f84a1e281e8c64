"""The columnar shape every reader produces, and the small vectorised helpers they share.

Both readers turn a block of lines into one `pyarrow.Table` with the columns of `SCHEMA`, so the
statistics and the rules never know which log a row came from (they can ask `source`). Times are
UTC epoch seconds; a field the log does not have is null.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.textable import storable

TEXT = pa.dictionary(pa.int32(), pa.string())
"""The type of text columns (ip, user, path, ...): a block repeats each value many times, so
codes into a small dictionary let statistics and rules group by integers and test a condition
once per distinct value. Consumers accept plain strings too (see `codes`)."""

_TEXT_COLUMNS = (
    "source", "ip", "user", "service", "method", "path", "client", "level", "role", "company",
    "vendor", "action", "target_user", "target_role",
)  # fmt: skip
SCHEMA = pa.schema(
    [
        ("ts", pa.int64()),
        *((name, TEXT) for name in _TEXT_COLUMNS[:6]),
        ("status", pa.int32()),
        ("bytes", pa.int64()),
        ("duration_ms", pa.float64()),
        *((name, TEXT) for name in _TEXT_COLUMNS[6:]),
        ("line", pa.binary()),
    ]
)
"""Columns of a parsed block. Times are UTC epoch seconds; `client` is desktop|phone|wechat|
alipay; `line` is the raw bytes of the line (evidence is decoded from it)."""

Codes = np.ndarray[Any, np.dtype[np.int32]]

EARLIEST = 0
"""The earliest time a log line may carry: 1970-01-01T00:00:00Z (epoch seconds)."""
LATEST = 253_402_300_799
"""The latest: 9999-12-31T23:59:59Z. A line whose time, converted to UTC, falls outside
[EARLIEST, LATEST] is a rejected line: no access log reaches back before 1970, and a time past
year 9999 (31/Dec/9999 at -0800 is in year 10000 in UTC) cannot be shown or stored as a date."""


def in_range(ts: pa.Array) -> pa.Array:
    """Whether each time (UTC epoch seconds) is within [EARLIEST, LATEST]; null stays null."""
    return pc.and_(pc.greater_equal(ts, EARLIEST), pc.less_equal(ts, LATEST))


def codes(col: pa.Array | pa.ChunkedArray) -> tuple[Codes, pa.Array]:
    """A column as (codes, values): int32 codes into `values`, -1 where the value is null (a
    null row, or a row whose dictionary entry is null).

    Works on dictionary columns (no copy of the values) and on plain ones (encoded here).
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if not pa.types.is_dictionary(col.type):
        col = pc.dictionary_encode(col)
    indices, values = col.indices, col.dictionary
    if not indices.null_count:
        out = indices.to_numpy().astype(np.int32, copy=False)
    else:
        # Read the buffers directly: Arrow's fill_null costs ~40 us a block per column.
        validity, data = indices.buffers()[:2]
        start, n = indices.offset, len(indices)
        raw = np.frombuffer(data, dtype=np.int32, count=start + n)[start:]
        valid = np.unpackbits(
            np.frombuffer(validity, dtype=np.uint8), count=start + n, bitorder="little"
        )[start:]
        out = np.where(valid.view(bool), raw, np.int32(-1)).astype(np.int32, copy=False)
    if values.null_count:
        remap = np.arange(len(values) + 1, dtype=np.int32)
        remap[:-1][values.is_null().to_numpy(zero_copy_only=False)] = -1
        remap[-1] = -1  # code -1 stays -1
        out = remap[out]
    return out, values


CLIENT_KINDS = ("desktop", "phone", "wechat", "alipay")

# Order matters: WeChat and Alipay run inside phones, so they are tested first.
_CLIENT_PATTERNS = (
    ("wechat", "MicroMessenger"),
    ("alipay", "AlipayClient|AliApp"),
    ("phone", "Mobile|Android|iPhone|iPad|HarmonyOS|Windows Phone"),
)

DEFAULT_SERVICE_PATTERN = r"^/svc/(?P<service>[^/?#]+)"
"""How an edge path names its catalogue service; the audit log names it in `service_id`."""
DEFAULT_LOGIN_PATHS = ("/auth/login",)
"""The portal's login paths (without the query), where a 401 is a failed login."""


_CLIENT_RES = tuple((kind, re.compile(pattern)) for kind, pattern in _CLIENT_PATTERNS)
_FEW_AGENTS = 64


def client_kinds(agents: pa.Array) -> pa.Array:
    """The client kind of each user agent (a missing one is a desktop browser)."""
    if len(agents) <= _FEW_AGENTS:
        # A block has a handful of distinct agents as a rule: Python's re takes a few µs for
        # them, against ~0.1 ms of Arrow kernel calls.
        kinds = [
            next((kind for kind, rx in _CLIENT_RES if agent and rx.search(agent)), "desktop")
            for agent in agents.to_pylist()
        ]
        return pa.array(kinds, pa.string())
    out = pa.array(["desktop"] * len(agents), pa.string())
    for kind, pattern in reversed(_CLIENT_PATTERNS):
        hit = pc.fill_null(pc.match_substring_regex(agents, pattern), False)
        out = pc.if_else(hit, kind, out)
    return out


def classify_clients(ua: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Map user agents to client kinds, looking at each distinct user agent once."""
    encoded = pc.dictionary_encode(ua)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    out = pc.take(client_kinds(encoded.dictionary), encoded.indices)
    return pc.fill_null(out, "desktop")


_ESCAPE = re.compile(rb'\\x([0-9A-Fa-f]{2})|\\(["\\])')


def unescape(text: str) -> str:
    r"""Undo nginx's `\xXX` (and JSON-style `\"`, `\\`) escapes, then decode the bytes.

    UTF-8 first; a portal behind an old gateway may still send GB18030, and anything else is
    kept with replacement characters rather than dropped.
    """
    raw = _ESCAPE.sub(lambda m: bytes.fromhex(m[1].decode()) if m[1] else m[2], text.encode())
    for encoding in ("utf-8", "gb18030"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("utf-8", errors="replace")


def unescape_column(col: pa.Array) -> pa.Array:
    """Unescape only the values that contain an escape; the rest pass through untouched."""
    data = col.buffers()[2]
    if data is None or b"\\" not in data.to_pybytes():
        return col
    mask = pc.fill_null(pc.match_substring(col, "\\"), False)
    values = col.to_pylist()
    for i in pc.indices_nonzero(mask).to_pylist():
        values[i] = unescape(values[i])
    return pa.array(values, pa.string())


def service_from_path(path: pa.Array, pattern: str) -> pa.Array:
    """The service id named by each path, via one RE2 pattern with a `service` group."""
    return pc.struct_field(pc.extract_regex(path, pattern), [0])


def conform(columns: dict[str, pa.Array], n: int) -> pa.Table:
    """Build a table of `SCHEMA` from the columns given; missing ones are null. Text holds no
    NUL (`storable_column`): each reader's values reach the store as they are."""
    arrays = []
    for f in SCHEMA:
        arr = columns.get(f.name)
        if arr is None:
            arr = pa.nulls(n, f.type)
        elif arr.type != f.type:
            arr = pc.cast(arr, f.type)
        if f.type == TEXT:
            arr = storable_column(arr)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def storable_column(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A TEXT column with U+FFFD for each NUL, as `monitord.textable.storable` keeps text: a
    PostgreSQL text holds no NUL, and an account or service with one ("\\u0000" in the audit
    log, an unescaped `\\x00` in the edge log) failed every pass of its log. Arrow's UTF-8 holds
    no lone surrogate, storable's other case."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if not pc.any(pc.match_substring(col.dictionary, "\x00")).as_py():
        return col
    fixed = pc.replace_substring(col.dictionary, "\x00", "\ufffd")
    # Encoded again: "a\x00" and "a\ufffd" are one value now, and must be one code.
    return pc.dictionary_encode(pc.take(fixed, col.indices))


def texts(values: Iterable[bytes | str]) -> list[str]:
    """Raw lines as text for samples and evidence, never failing on bad bytes, and storable
    (`monitord.textable.storable`: a NUL byte in a line reaches a finding's evidence)."""
    return [
        storable(v if isinstance(v, str) else v.decode("utf-8", errors="replace")) for v in values
    ]
