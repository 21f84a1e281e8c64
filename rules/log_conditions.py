"""Which rows of a block meet a rule's conditions: the vectorised evaluator of the condition
language (`rules.conditions`, whose scalar `holds` each op here answers as for one value).

A `Block` holds the rows of one log source in a parsed block. Each condition is tested once
per distinct value of its column (text columns arrive as dictionary codes, see
`monitord.accesslog.schema.codes`) and the answer is spread over the rows by code, so a
condition costs a few numpy passes over integer arrays. Where a condition needs a value no log
carries, a function in `DERIVED` computes it (the one place behaviour needs code).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog import schema
from monitord.workcalendar import WorkCalendar
from rules.conditions import Condition
from rules.log_arrays import Ints, Mask, factorize, filled

SENSITIVE = (
    r"(?i)(^|/)(\.env|\.git|\.svn|\.hg|\.DS_Store|\.htaccess|\.aws|wp-admin|wp-login\.php|"
    r"phpmyadmin|pma|xmlrpc\.php|actuator|server-status|web\.config|config\.php|"
    r"backup|dump|database)(\b|/|$)|\.(sql|bak|old|swp|tar\.gz|zip|7z|rar)$"
)
STATIC = r"(?i)\.(js|mjs|css|png|jpe?g|gif|svg|ico|webp|woff2?|ttf|eot|map|txt)$"

Coded: TypeAlias = tuple[schema.Codes, pa.Array]
"""A column as codes into its distinct values (-1 for null): tests run once per value."""
Column: TypeAlias = pa.Array | Coded | Mask
"""What a condition tests: one value per row (Arrow; or numpy booleans, never missing), or codes
into distinct values."""


# -- blocks as rules read them --------------------------------------------------------------------


class Block:
    """The rows of one log source in a parsed block, each column converted once when first read.

    `ts` is the time of each row as numpy int64; `rows` marks the rows rules may look at (all
    but those without a time). A dictionary column is taken to hold each value once in its
    dictionary, as Arrow's `dictionary_encode` makes it. `calendar` and `login_paths` are the
    site's, for the derived columns.
    """

    def __init__(
        self,
        table: pa.Table,
        calendar: WorkCalendar,
        login_paths: Sequence[str] = schema.DEFAULT_LOGIN_PATHS,
    ) -> None:
        self.table = table
        self.calendar = calendar
        self.login_paths = pa.array(list(login_paths), pa.string())
        self.n = table.num_rows
        ts = _array(table.column("ts"))
        self.rows: Mask = np.ones(self.n, np.bool_)
        if ts.null_count:
            self.rows = ts.is_valid().to_numpy(zero_copy_only=False)
            ts = pc.fill_null(ts, 0)
        self.ts: Ints = ts.to_numpy().astype(np.int64, copy=False)
        self._columns: dict[str, Column] = {}
        self._numbers: dict[str, tuple[np.ndarray[Any, Any], Mask]] = {}

    def column(self, name: str) -> Column:
        """A column of the block: text as codes into its distinct values, the rest as is."""
        got = self._columns.get(name)
        if got is None:
            col = self.table.column(name)
            kind = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if pa.types.is_string(kind) or pa.types.is_large_string(kind):
                got = schema.codes(col)
            else:
                got = _array(col)
            self._columns[name] = got
        return got

    def coded(self, name: str) -> Coded:
        """A column as codes into its distinct values, whatever its type."""
        col = self.column(name)
        if isinstance(col, tuple):
            return col
        got = self._columns.get(f"{name}#codes")
        if not isinstance(got, tuple):
            self._columns[f"{name}#codes"] = got = schema.codes(col)
        return got

    def numbers(self, name: str) -> tuple[np.ndarray[Any, Any], Mask]:
        """A numeric column as numpy values (0 where missing) and where it is present."""
        got = self._numbers.get(name)
        if got is None:
            col = self.column(name)
            assert isinstance(col, pa.Array), f"{name} is not numeric"
            valid = np.ones(self.n, np.bool_)
            if col.null_count:
                valid = col.is_valid().to_numpy(zero_copy_only=False)
                col = pc.fill_null(col, 0)
            got = self._numbers[name] = (col.to_numpy(), valid)
        return got

    def lines(self, rows: Ints) -> list[str]:
        """The raw lines of some rows, as text for evidence."""
        return [text for text in self.line_texts(rows) if text is not None]

    def line_texts(self, rows: Ints) -> list[str | None]:
        """The raw line of each of some rows, as text for evidence (None: the row has none)."""
        values = self.table.column("line").take(pa.array(rows)).to_pylist()
        texts = iter(schema.texts(v for v in values if v is not None))
        return [None if v is None else next(texts).rstrip("\r\n") for v in values]

    def timed_lines(self, rows: Ints) -> list[tuple[int, str]]:
        """The raw lines of some rows, as text for evidence, each with its row's time."""
        times = self.ts[rows].tolist()
        return [
            (ts, text)
            for ts, text in zip(times, self.line_texts(rows), strict=True)
            if text is not None
        ]


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


# -- derived columns ------------------------------------------------------------------------------


def _working_time(blk: Block, within: Mask) -> Mask:
    # The calendar is Python: ask it once per distinct minute of the rows still in question.
    rows = np.flatnonzero(within)
    out = np.zeros(blk.n, np.bool_)
    if len(rows):
        minute = blk.ts[rows] // 60
        low = int(minute.min())
        which, minutes = factorize(minute - low, int(minute.max()) - low + 1)
        moments = ((minutes + low) * 60).tolist()
        out[rows] = np.array(blk.calendar.working_seconds(moments), np.bool_)[which]
    return out


def _grant(blk: Block, within: Mask) -> Coded:
    # "role>target_role" for the rows in question (grants are few); -1 elsewhere.
    rows = np.flatnonzero(within)
    role, roles = blk.coded("role")
    target, targets = blk.coded("target_role")
    width = len(targets) + 1
    pair = (role[rows].astype(np.int64) + 1) * width + target[rows] + 1
    which, pairs = factorize(pair, (len(roles) + 1) * width)
    role_names = ["none", *roles.to_pylist()]
    target_names = ["none", *targets.to_pylist()]
    names = [f"{role_names[p // width]}>{target_names[p % width]}" for p in pairs.tolist()]
    codes = np.full(blk.n, -1, np.int32)
    codes[rows] = which
    return codes, pa.array(names, pa.string())


def _network(blk: Block, _within: Mask) -> Coded:
    # Without a GeoIP database, "places far apart" is approximated by networks: an IPv4 /16 or
    # an IPv6 /48. A person moves between two or three at most.
    # An IPv4-mapped address (::ffff:1.2.3.4, how a dual-stack listener logs IPv4 clients) is
    # its IPv4 address, or every IPv4 client would share one network.
    codes, ips = blk.coded("ip")
    ipv4 = r"^(?i:::ffff:)?(?P<n>\d+\.\d+)\."
    network = pc.struct_field(pc.extract_regex(ips, ipv4), [0])
    if network.null_count:  # not IPv4: few distinct addresses, parsed one by one
        v6 = [
            _ipv6_network(ip) if net is None else net
            for ip, net in zip(ips.to_pylist(), network.to_pylist(), strict=True)
        ]
        network = pa.array(v6, pa.string())
    networks = pc.dictionary_encode(network)
    of_ip = np.append(filled(networks.indices, -1), -1).astype(np.int32)
    return of_ip[codes], networks.dictionary


def _ipv6_network(ip: str | None) -> str | None:
    # The /48 from the parsed address: "2001:db8::1" and "2001:db8:0:1::2" are one network,
    # however nginx compressed their zeros.
    if ip is None:
        return None
    try:
        return str(ipaddress.IPv6Network((ip, 48), strict=False))
    except ValueError:
        return ip


def _paths_where(blk: Block, within: Mask, test: Callable[[pa.Array], pa.Array]) -> Mask:
    # Only the paths of rows still in question are tested; a missing path passes no test.
    codes, paths = blk.coded("path")
    used = np.zeros(len(paths) + 1, np.bool_)
    used[codes[within]] = True
    which = np.flatnonzero(used[:-1])
    asked = paths if len(which) == len(paths) else paths.take(pa.array(which))
    hit = np.zeros(len(paths) + 1, np.bool_)  # the last entry answers for code -1
    hit[which] = filled(test(_as_served(asked)), False)
    return hit[codes]


_UNUSUAL_PATH = r"%|//|/\.\.?(?:/|$)"


def _as_served(paths: pa.Array) -> pa.Array:
    # The path as nginx and the application read it: /auth/%6Cogin, //auth/login and
    # /auth/./login all reach /auth/login, so a client may not choose one to pass unseen. Few
    # paths are written so; those are rewritten one by one.
    unusual = filled(pc.match_substring_regex(paths, _UNUSUAL_PATH), False)
    if not unusual.any():
        return paths
    served = paths.to_pylist()
    for i in np.flatnonzero(unusual):
        served[i] = served_path(served[i])
    return pa.array(served, pa.string())


def served_path(path: str) -> str:
    """`path` with its percent escapes decoded, its slashes merged and its "." and ".."
    segments resolved (RFC 3986 5.2.4), as nginx normalises a URI before matching it."""
    segments: list[str] = []
    parts = re.sub(r"/+", "/", unquote(path, errors="replace")).split("/")
    for k, segment in enumerate(parts):
        last = k == len(parts) - 1
        if segment == "..":
            if len(segments) > 1:
                segments.pop()
            if last:
                segments.append("")
        elif segment == ".":
            if last:
                segments.append("")
        else:
            segments.append(segment)
    return "/".join(segments)


def _sensitive(blk: Block, within: Mask) -> Mask:
    return _paths_where(blk, within, lambda paths: pc.match_substring_regex(paths, SENSITIVE))


def _static(blk: Block, within: Mask) -> Mask:
    return _paths_where(blk, within, lambda paths: pc.match_substring_regex(paths, STATIC))


def _login_path(blk: Block, within: Mask) -> Mask:
    return _paths_where(blk, within, lambda paths: pc.is_in(paths, value_set=blk.login_paths))


def _error(blk: Block, _within: Mask) -> Mask:
    status, valid = blk.numbers("status")
    return (status >= 500) & valid


DERIVED: dict[str, Callable[[Block, Mask], Column]] = {
    "working_time": _working_time,
    "grant": _grant,
    "network": _network,
    "sensitive_path": _sensitive,
    "static_path": _static,
    "login_path": _login_path,
    "error": _error,
}
"""Columns no log carries, computed from a block. `within` marks the rows still in question
(earlier conditions held): a derived value need only be right there, so a costly one (the
calendar) is computed for few rows. The fields are those `rules.log_rule_file.DERIVED_NEEDS`
lets rules name, with the log columns each is computed from."""


# -- evaluation -----------------------------------------------------------------------------------


def _column(blk: Block, name: str, within: Mask) -> Column:
    if name in DERIVED:
        return DERIVED[name](blk, within)
    return blk.column(name)


def keyed(blk: Block, name: str, within: Mask) -> Coded:
    """A column as codes into distinct strings: what subjects and distinct values are."""
    col = _column(blk, name, within)
    if isinstance(col, np.ndarray):
        col = pa.array(col)
    codes, values = col if isinstance(col, tuple) else schema.codes(col)
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    return codes, values


def _test(op: str, value: Any, values: pa.Array) -> Mask:
    if op in ("in", "not_in"):
        hit = pc.is_in(values, value_set=pa.array(value, values.type))
        result = hit if op == "in" else pc.invert(hit)
    elif op in ("matches", "not_matches"):
        hit = pc.match_substring_regex(values, value)
        result = hit if op == "matches" else pc.invert(hit)
    elif op == "startswith":
        result = pc.starts_with(values, value)
    elif op in ("empty", "nonempty"):
        hit = _empty(values)
        result = hit if op == "empty" else pc.invert(hit)
    else:
        fn = {
            "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal,
        }[op]  # fmt: skip
        scalar = value if isinstance(value, bool) else pa.scalar(value, values.type)
        result = fn(values, scalar)
    # A missing value never satisfies a test (rules.conditions: only `null`).
    mask: Mask = filled(result, False)
    return mask


def _empty(values: pa.Array) -> pa.Array:
    # What the scalar evaluator calls empty: "", 0 or false.
    if pa.types.is_boolean(values.type):
        return pc.invert(values)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pc.equal(values, "")
    return pc.equal(values, pa.scalar(0, values.type))


def _holds(c: Condition, blk: Block, within: Mask) -> Mask:
    if c.any_of:
        out = np.zeros(blk.n, np.bool_)
        for sub in c.any_of:
            out |= _holds(sub, blk, within)
        return out
    if c.all_of:
        return select(c.all_of, blk, within)
    col = _column(blk, c.field, within)
    if isinstance(col, tuple):
        # Test each distinct value once; code -1 (a missing value) picks the appended answer.
        codes, values = col
        if c.op in ("null", "not_null"):
            missing: Mask = codes < 0
            return missing if c.op == "null" else ~missing
        answers: Mask = np.append(_test(c.op, c.value, values), False)
        return answers[codes]
    if isinstance(col, np.ndarray):
        if c.op in ("null", "not_null"):
            return np.full(blk.n, c.op == "not_null")
        if c.op in ("==", "!=") and isinstance(c.value, bool):
            same: Mask = col == c.value
            return same if c.op == "==" else ~same
        if c.op in ("empty", "nonempty"):
            return ~col if c.op == "empty" else col.copy()
        col = pa.array(col)
    if c.op in ("null", "not_null"):
        valid: Mask = col.is_valid().to_numpy(zero_copy_only=False)
        return ~valid if c.op == "null" else valid
    if _plain_number(col.type, c):
        return _test_numbers(c, *blk.numbers(c.field))
    return _test(c.op, c.value, col)


_NUMPY_OPS: dict[str, Callable[[Any, Any], Mask]] = {
    "==": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
    ">": np.greater, ">=": np.greater_equal,
}  # fmt: skip


def _plain_number(kind: pa.DataType, c: Condition) -> bool:
    # numpy compares numbers with numbers as Arrow does; anything else goes to Arrow.
    values = c.value if c.op in ("in", "not_in") else [c.value]
    return (
        (pa.types.is_integer(kind) or pa.types.is_floating(kind))
        and c.op in (*_NUMPY_OPS, "in", "not_in")
        and isinstance(values, list)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


def _test_numbers(c: Condition, numbers: np.ndarray[Any, Any], valid: Mask) -> Mask:
    if c.op in ("in", "not_in"):
        hit = np.isin(numbers, c.value)
        # As in `_test`: a missing value satisfies neither.
        return (hit if c.op == "in" else ~hit) & valid
    return _NUMPY_OPS[c.op](numbers, c.value) & valid


def select(conditions: Sequence[Condition], blk: Block, within: Mask) -> Mask:
    """The rows of `within` meeting every condition. Each condition is asked only about the
    rows the earlier kept, so a costly derived column (working time) is computed for few rows."""
    mask = within.copy()
    for c in conditions:
        if not mask.any():
            break
        mask &= _holds(c, blk, mask)
    return mask
