"""The log rule engine: parsed access-log blocks in, findings out.

The rules are data (`rules/logs.toml`, format described at its top). For each block the engine
tests every condition once per distinct value of a column (text columns arrive as dictionary
codes, see `monitord.accesslog.schema.codes`) and spreads the answer over the rows by code, so a
block's cost is a few numpy passes over integer arrays per rule. Rows are then grouped by
subject code and time bucket (`row` rules count every line; `window` rules count in sliding
windows: buckets of half a window, each window two adjacent buckets). Strings are touched only
for the few subjects that fire and for the entries that stay open at the end of the block.
Where a condition needs a value no log carries, a function in `DERIVED` computes it (the one
place behaviour needs code).

Across blocks the engine keeps, per rule, subject column and log source, the window buckets
still open (one entry per subject, distinct value and bucket), plus the findings and, for rate
rules, each subject's long-run totals; `to_state`/`restore` carry them across follow-mode runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog import schema
from monitord.accesslog.findings import MAX_EVIDENCE, LogFinding
from monitord.types import SEVERITIES, Severity
from rules.workdays import WorkCalendar

RULES_FILE = Path(__file__).with_name("logs.toml")
KINDS = ("row", "window")
MEASURES = ("count", "distinct", "ratio")
OPS = (
    "==", "!=", "in", "not_in", "<", "<=", ">", ">=", "matches", "not_matches", "null", "not_null",
)  # fmt: skip
LATE_BUCKETS = 2  # half-windows kept open behind the newest line, for slightly unordered logs
PEERS_MIN = 20  # fewer subjects than this are no crowd to compare with
STATE_VERSION = 2  # layout of the windows in `to_state`; another version restores no windows

SENSITIVE = (
    r"(?i)(^|/)(\.env|\.git|\.svn|\.hg|\.DS_Store|\.htaccess|\.aws|wp-admin|wp-login\.php|"
    r"phpmyadmin|pma|xmlrpc\.php|actuator|server-status|web\.config|config\.php|"
    r"backup|dump|database)(\b|/|$)|\.(sql|bak|old|swp|tar\.gz|zip|7z|rar)$"
)
STATIC = r"(?i)\.(js|mjs|css|png|jpe?g|gif|svg|ico|webp|woff2?|ttf|eot|map|txt)$"

Ints: TypeAlias = np.ndarray[Any, np.dtype[np.int64]]
Mask: TypeAlias = np.ndarray[Any, np.dtype[np.bool_]]
Coded: TypeAlias = tuple[schema.Codes, pa.Array]
"""A column as codes into its distinct values (-1 for null): tests run once per value."""
Column: TypeAlias = pa.Array | Coded | Mask
"""What a condition tests: one value per row (Arrow; or numpy booleans, never missing), or codes
into distinct values."""


class RuleError(ValueError):
    """A rule file that does not describe valid rules; the message names the rule and key."""


# -- blocks as rules read them --------------------------------------------------------------------


class Block:
    """The rows of one log source in a parsed block, each column converted once when first read.

    `ts` is the time of each row as numpy int64; `rows` marks the rows rules may look at (all
    but those without a time). A dictionary column is taken to hold each value once in its
    dictionary, as Arrow's `dictionary_encode` makes it.
    """

    def __init__(self, table: pa.Table, calendar: WorkCalendar) -> None:
        self.table = table
        self.calendar = calendar
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
        values = self.table.column("line").take(pa.array(rows)).to_pylist()
        return [v.rstrip("\r\n") for v in schema.texts(v for v in values if v is not None)]


def _array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


def _filled(arr: pa.Array, value: Any) -> np.ndarray[Any, Any]:
    """An Arrow array as numpy, missing values replaced (most arrays have none: no copy)."""
    if arr.null_count:
        arr = pc.fill_null(arr, value)
    out: np.ndarray[Any, Any] = arr.to_numpy(zero_copy_only=False)
    return out


def _factorize(keys: Ints, domain: int) -> tuple[Ints, Ints]:
    """Group numbers for int64 keys in [0, domain): (the group of each key, each group's key).

    A small domain is counted directly (a pass over it, no hashing); a large one is hashed.
    """
    if domain <= 8 * len(keys) + (1 << 16):
        seen = np.zeros(domain, np.bool_)
        seen[keys] = True
        uniq = np.flatnonzero(seen)
        number = np.empty(domain, np.int64)
        number[uniq] = np.arange(len(uniq))
        return number[keys], uniq
    enc = pc.dictionary_encode(pa.array(keys, pa.int64()))
    return enc.indices.to_numpy().astype(np.int64), enc.dictionary.to_numpy()


def _minimum(groups: Ints, k: int, values: Ints) -> Ints:
    out = np.full(k, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, groups, values)
    return out


def _maximum(groups: Ints, k: int, values: Ints) -> Ints:
    out = np.full(k, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(out, groups, values)
    return out


def _sum(groups: Ints, k: int, values: Ints | None) -> Ints:
    # Without values, each member counts one.
    return np.bincount(groups, weights=values, minlength=k).astype(np.int64, copy=False)


# -- derived columns ------------------------------------------------------------------------------


def _working_time(blk: Block, within: Mask) -> Mask:
    # The calendar is Python: ask it once per distinct minute of the rows still in question.
    rows = np.flatnonzero(within)
    out = np.zeros(blk.n, np.bool_)
    if len(rows):
        minute = blk.ts[rows] // 60
        low = int(minute.min())
        which, minutes = _factorize(minute - low, int(minute.max()) - low + 1)
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
    which, pairs = _factorize(pair, (len(roles) + 1) * width)
    role_names = ["none", *roles.to_pylist()]
    target_names = ["none", *targets.to_pylist()]
    names = [f"{role_names[p // width]}>{target_names[p % width]}" for p in pairs.tolist()]
    codes = np.full(blk.n, -1, np.int32)
    codes[rows] = which
    return codes, pa.array(names, pa.string())


def _network(blk: Block, _within: Mask) -> Coded:
    # Without a GeoIP database, "places far apart" is approximated by networks: an IPv4 /16 or
    # the first three groups of an IPv6 address. A person moves between two or three at most.
    codes, ips = blk.coded("ip")
    network = pc.struct_field(pc.extract_regex(ips, r"^(?P<n>\d+\.\d+)\."), [0])
    if network.null_count:  # not IPv4: rare enough to be matched on their own
        v6 = pc.struct_field(
            pc.extract_regex(ips, r"^(?P<n>[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f]*)"), [0]
        )
        network = pc.coalesce(network, v6, ips)
    networks = pc.dictionary_encode(network)
    of_ip = np.append(_filled(networks.indices, -1), -1).astype(np.int32)
    return of_ip[codes], networks.dictionary


def _path_matches(blk: Block, within: Mask, pattern: str) -> Mask:
    # Only the paths of rows still in question are matched; a missing path matches nothing.
    codes, paths = blk.coded("path")
    used = np.zeros(len(paths) + 1, np.bool_)
    used[codes[within]] = True
    which = np.flatnonzero(used[:-1])
    asked = paths if len(which) == len(paths) else paths.take(pa.array(which))
    hit = np.zeros(len(paths) + 1, np.bool_)  # the last entry answers for code -1
    hit[which] = _filled(pc.match_substring_regex(asked, pattern), False)
    return hit[codes]


def _sensitive(blk: Block, within: Mask) -> Mask:
    return _path_matches(blk, within, SENSITIVE)


def _static(blk: Block, within: Mask) -> Mask:
    return _path_matches(blk, within, STATIC)


def _error(blk: Block, _within: Mask) -> Mask:
    status, valid = blk.numbers("status")
    return (status >= 500) & valid


DERIVED: dict[str, Callable[[Block, Mask], Column]] = {
    "working_time": _working_time,
    "grant": _grant,
    "network": _network,
    "sensitive_path": _sensitive,
    "static_path": _static,
    "error": _error,
}
"""Columns no log carries, computed from a block. `within` marks the rows still in question
(earlier conditions held): a derived value need only be right there, so a costly one (the
calendar) is computed for few rows."""


DERIVED_NEEDS: dict[str, tuple[str, ...]] = {
    "working_time": ("ts",),
    "grant": ("role", "target_role"),
    "network": ("ip",),
    "sensitive_path": ("path",),
    "static_path": ("path",),
    "error": ("status",),
}


# -- rules as data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One test on a column, or a group: `any_of` (one must hold) or `all_of` (all must)."""

    field: str = ""
    op: str = "=="
    value: Any = None
    any_of: tuple[Condition, ...] = ()
    all_of: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Threshold:
    """When a subject's measure in a window (or its count of rows) makes a finding."""

    min_count: int = 1
    min_distinct: int = 0
    min_rate: float = 0.0
    max_per_distinct: float | None = None
    peers_quantile: float | None = None
    peers_factor: float = 1.0
    baseline_factor: float | None = None
    baseline_min_lines: int = 1000


@dataclass(frozen=True)
class LogRule:
    """One entry of `rules/logs.toml`."""

    name: str
    clause: str
    severity: Severity
    sources: tuple[str, ...]
    subject: tuple[str, ...]
    kind: str
    where: tuple[Condition, ...]
    threshold: Threshold
    summary: str
    window: int = 0
    measure: str = "count"
    distinct: str | None = None
    numerator: tuple[Condition, ...] = ()
    breakdown: tuple[str, ...] = ()

    @property
    def columns(self) -> list[str]:
        """The block columns this rule reads, so it filters narrow tables, not whole blocks."""
        names: set[str] = {"ts", "row", *self.subject, *self.breakdown}
        if self.distinct:
            names.add(self.distinct)

        def walk(conditions: Iterable[Condition]) -> None:
            for c in conditions:
                walk(c.any_of)
                walk(c.all_of)
                if c.field:
                    names.add(c.field)

        walk(self.where)
        walk(self.numerator)
        for name in list(names):
            if name in DERIVED:
                names.discard(name)
                names.update(DERIVED_NEEDS[name])
        return sorted(names)


_COLUMNS = {
    "ts", "source", "ip", "user", "service", "method", "path", "status", "bytes", "duration_ms",
    "client", "level", "role", "company", "vendor", "action", "target_user", "target_role",
}  # fmt: skip


def _condition(raw: Mapping[str, Any], where: str) -> Condition:
    if "any" in raw:
        return Condition(any_of=tuple(_condition(c, where) for c in raw["any"]))
    if "all" in raw:
        return Condition(all_of=tuple(_condition(c, where) for c in raw["all"]))
    name, op = raw.get("field"), raw.get("op", "==")
    if name not in _COLUMNS and name not in DERIVED:
        raise RuleError(f"{where}: field {name!r} is neither a log column nor derived")
    if op not in OPS:
        raise RuleError(f"{where}: op {op!r} is not one of {', '.join(OPS)}")
    unknown = set(raw) - {"field", "op", "value"}
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    return Condition(field=name, op=op, value=raw.get("value"))


def parse_rules(data: Mapping[str, Any], origin: str = "logs.toml") -> list[LogRule]:
    """Validate the `[[rule]]` tables of a rule file; errors name the rule and key."""
    out: list[LogRule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("rule", [])):
        name = raw.get("name") or f"#{i + 1}"
        where = f"{origin}: rule {name}"
        for key in ("name", "clause", "severity", "sources", "subject", "kind", "summary"):
            if key not in raw:
                raise RuleError(f"{where}: missing {key}")
        if name in seen:
            raise RuleError(f"{where}: name used twice")
        seen.add(name)
        if raw["severity"] not in SEVERITIES:
            raise RuleError(f"{where}: severity {raw['severity']!r} not in {SEVERITIES}")
        if raw["kind"] not in KINDS:
            raise RuleError(f"{where}: kind {raw['kind']!r} not in {KINDS}")
        measure = raw.get("measure", "count")
        if measure not in MEASURES:
            raise RuleError(f"{where}: measure {measure!r} not in {MEASURES}")
        if raw["kind"] == "window" and int(raw.get("window", 0)) < 2:
            raise RuleError(f"{where}: a window rule needs window = seconds (>= 2)")
        if measure == "distinct" and not raw.get("distinct"):
            raise RuleError(f"{where}: measure distinct needs distinct = <field>")
        if measure == "ratio" and not raw.get("numerator"):
            raise RuleError(f"{where}: measure ratio needs numerator = [conditions]")
        try:
            threshold = Threshold(**raw.get("threshold", {}))
        except TypeError as exc:
            raise RuleError(f"{where}: threshold: {exc}") from None
        if threshold.max_per_distinct is not None and measure != "distinct":
            raise RuleError(f"{where}: threshold max_per_distinct needs measure distinct")
        subject = raw["subject"]
        out.append(
            LogRule(
                name=name,
                clause=raw["clause"],
                severity=raw["severity"],
                sources=tuple(raw["sources"]),
                subject=tuple([subject] if isinstance(subject, str) else subject),
                kind=raw["kind"],
                where=tuple(_condition(c, where) for c in raw.get("where", [])),
                threshold=threshold,
                summary=raw["summary"],
                window=int(raw.get("window", 0)),
                measure=measure,
                distinct=raw.get("distinct"),
                numerator=tuple(_condition(c, where) for c in raw.get("numerator", [])),
                breakdown=tuple(raw.get("breakdown", ())),
            )
        )
    return out


def load_rules(path: Path = RULES_FILE) -> list[LogRule]:
    """Read and validate a rule file."""
    with path.open("rb") as fh:
        return parse_rules(tomllib.load(fh), path.name)


# -- evaluation -----------------------------------------------------------------------------------


def _column(blk: Block, name: str, within: Mask) -> Column:
    if name in DERIVED:
        return DERIVED[name](blk, within)
    return blk.column(name)


def _keyed(blk: Block, name: str, within: Mask) -> Coded:
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
    else:
        fn = {
            "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal,
        }[op]  # fmt: skip
        scalar = value if isinstance(value, bool) else pa.scalar(value, values.type)
        result = fn(values, scalar)
    # A missing value never satisfies a test (but `not_in` of a missing value is true:
    # a grant by someone with no role is outside the allowed pairs).
    mask: Mask = _filled(result, op == "not_in")
    return mask


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
        answers: Mask = np.append(_test(c.op, c.value, values), c.op == "not_in")
        return answers[codes]
    if isinstance(col, np.ndarray):
        if c.op in ("null", "not_null"):
            return np.full(blk.n, c.op == "not_null")
        if c.op in ("==", "!=") and isinstance(c.value, bool):
            same: Mask = col == c.value
            return same if c.op == "==" else ~same
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
        # As in `_test`: a missing value is in nothing, so it is `not_in` everything.
        return hit & valid if c.op == "in" else ~(hit & valid)
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


def _merge_strings(values: pa.Array, strings: pa.Array) -> tuple[Ints, Ints, pa.Array]:
    """One vocabulary for two: (new codes of `values`, new codes of `strings`, -1 for null;
    the vocabulary)."""
    enc = pc.dictionary_encode(pa.concat_arrays([values, strings]))
    codes = _filled(enc.indices, -1).astype(np.int64)
    return codes[: len(values)], codes[len(values) :], enc.dictionary


def _compact(
    codes: np.ndarray[Any, np.dtype[np.integer[Any]]], values: pa.Array
) -> tuple[Ints, pa.Array]:
    """Codes (-1: null) renumbered over the values they use, and those values, when they use
    few of them (a rule's rows out of a whole block): it keeps groupings and merges small."""
    used = np.zeros(len(values) + 1, np.bool_)
    used[codes] = True  # -1 marks the extra last slot
    kept = np.flatnonzero(used[:-1])
    if 2 * len(kept) > len(values):
        return codes.astype(np.int64), values
    renumber = np.full(len(values) + 1, -1, np.int64)
    renumber[kept] = np.arange(len(kept))
    return renumber[codes], values.take(pa.array(kept))


def _strings(values: pa.Array, codes: Ints) -> pa.Array:
    return values.take(pa.array(codes, mask=codes < 0))


@dataclass
class _Window:
    """Open window buckets of one rule, subject column and source: one entry per subject,
    distinct value (distinct measures only) and bucket, with its lines (`n`), numerator lines,
    first and last time; and per subject the long-run totals [lines, numerator lines] of the
    buckets that closed, for baseline rules.

    Entries name subjects and values by codes into `subjects` and `values` (-1: no value), so
    each string is kept, and merged with the next block's, once.
    """

    half: int
    subjects: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    values: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))
    subject: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    value: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    bucket: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    n: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    num: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    first: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    last: Ints = field(default_factory=lambda: np.zeros(0, np.int64))
    baseline: dict[str, list[int]] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "half": self.half,
            "subjects": self.subjects.to_pylist(),
            "values": self.values.to_pylist(),
            **{k: getattr(self, k).tolist() for k in _ENTRY_FIELDS},
            "baseline": self.baseline,
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> _Window:
        """Back from `to_state`."""
        return cls(
            half=int(raw["half"]),
            subjects=pa.array(raw["subjects"], pa.string()),
            values=pa.array(raw["values"], pa.string()),
            **{k: np.array(raw[k], np.int64).reshape(-1) for k in _ENTRY_FIELDS},
            baseline={k: [int(x) for x in v] for k, v in raw.get("baseline", {}).items()},
        )


_ENTRY_FIELDS = ("subject", "value", "bucket", "n", "num", "first", "last")


@dataclass
class _Groups:
    """Window entries grouped: each group's subject code, bucket and sums."""

    subject: Ints
    bucket: Ints
    n: Ints
    num: Ints
    first: Ints
    last: Ints

    def take(self, which: Mask | Ints) -> _Groups:
        """Some of the groups."""
        return _Groups(*(getattr(self, f)[which] for f in _GROUP_FIELDS))

    def concat(self, other: _Groups) -> _Groups:
        """These groups and others."""
        return _Groups(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _GROUP_FIELDS)
        )


_GROUP_FIELDS = ("subject", "bucket", "n", "num", "first", "last")
_DENSE_BUCKETS = 1024


class LogRuleEngine:
    """Evaluates log rules over parsed blocks, keeping only what windows and findings need.

    Feed blocks in (roughly) time order per source with `feed`; read `findings()` at any time.
    """

    def __init__(self, rules: Sequence[LogRule], calendar: WorkCalendar | None = None) -> None:
        self.rules = list(rules)
        self.calendar = calendar or WorkCalendar()
        self._findings: dict[tuple[str, str, str], LogFinding] = {}
        self._windows: dict[tuple[str, str, str], _Window] = {}
        # Findings with open window buckets, per (rule, subject column, source): those whose
        # counts settle when that window state moves on.
        self._open: dict[tuple[str, str, str], set[tuple[str, str, str]]] = {}

    @classmethod
    def load(cls, path: Path = RULES_FILE, calendar: WorkCalendar | None = None) -> LogRuleEngine:
        """An engine with the rules of a rule file (the shipped `rules/logs.toml` by default)."""
        return cls(load_rules(path), calendar)

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, block: pa.Table) -> None:
        """Evaluate every rule on a parsed block (columns of monitord.accesslog.schema).

        Text columns may be dictionary-encoded or plain strings; `line` string or binary.
        """
        if block.num_rows == 0:
            return
        codes, sources = schema.codes(block.column("source"))
        count = np.bincount(codes + 1, minlength=len(sources) + 1)
        present = np.flatnonzero(count[1:])
        for i in present:
            source = sources[int(i)].as_py()
            if not any(source in rule.sources for rule in self.rules):
                continue
            part = block
            if count[i + 1] != block.num_rows:
                part = block.filter(pa.array(codes == i))
            blk = Block(part, self.calendar)
            for rule in self.rules:
                if source in rule.sources:
                    self._feed_rule(rule, source, blk)

    def _feed_rule(self, rule: LogRule, source: str, blk: Block) -> None:
        chosen = select(rule.where, blk, blk.rows)
        # A window state without new lines would evaluate to what it did last time: skip it.
        if not chosen.any():
            return
        for subject in rule.subject:
            if rule.kind == "row":
                self._feed_rows(rule, subject, source, blk, chosen)
            else:
                self._feed_window(rule, subject, source, blk, chosen)

    def _finding(
        self, rule: LogRule, subject_kind: str, subject: str, first: int, last: int
    ) -> LogFinding:
        key = (rule.name, subject_kind, subject)
        found = self._findings.get(key)
        if found is None:
            found = LogFinding(
                rule=rule.name,
                clause=rule.clause,
                severity=rule.severity,
                subject_kind=subject_kind,
                subject=subject,
                first_seen=first,
                last_seen=last,
                service_id=subject if subject_kind == "service" else None,
            )
            self._findings[key] = found
        found.seen(first, last)
        return found

    def _summarise(self, rule: LogRule, f: LogFinding, measure: Any) -> None:
        # The summary quotes the worst window seen, not merely the latest.
        peak = max(f.facts.get("peak", measure), measure)
        f.facts["peak"] = peak
        shown = f"{peak:.0%}" if isinstance(peak, float) else str(peak)
        f.summary = rule.summary.format(
            subject=f.subject, count=f.count, measure=shown, window_min=rule.window // 60
        )

    # -- row rules --------------------------------------------------------------------------------

    def _feed_rows(
        self, rule: LogRule, subject: str, source: str, blk: Block, chosen: Mask
    ) -> None:
        codes, values = _keyed(blk, subject, chosen)
        rows = np.flatnonzero(chosen & (codes >= 0))
        if len(rows) == 0:
            return
        sub = codes[rows].astype(np.int64)
        k = len(values)
        count = np.bincount(sub, minlength=k)
        first = _minimum(sub, k, blk.ts[rows])
        last = _maximum(sub, k, blk.ts[rows])
        for code in np.flatnonzero((count > 0) & (count >= rule.threshold.min_count)).tolist():
            name = str(values[code].as_py())
            f = self._finding(rule, subject, name, int(first[code]), int(last[code]))
            f.add_settled(source, int(count[code]))
            if len(f.evidence) < MAX_EVIDENCE:
                f.add_evidence(blk.lines(rows[sub == code][:MAX_EVIDENCE]))
            self._summarise(rule, f, f.count)
        if rule.breakdown:
            self._breakdown(rule, subject, blk, chosen, rows)

    def _breakdown(self, rule: LogRule, subject: str, blk: Block, chosen: Mask, rows: Ints) -> None:
        # The audit wants who did what, not only a total (8.3 c: every vendor account).
        columns = [_keyed(blk, name, chosen) for name in (subject, *rule.breakdown)]
        combo = np.zeros(len(rows), np.int64)
        k = 1
        for codes, values in columns:
            combo, _ = _factorize(
                combo * (len(values) + 1) + codes[rows] + 1, k * (len(values) + 1)
            )
            k = int(combo.max()) + 1
        count = np.bincount(combo, minlength=k)
        example = rows[_minimum(combo, k, np.arange(len(rows), dtype=np.int64))]
        texts = [
            _strings(values, codes[example].astype(np.int64)).to_pylist()
            for codes, values in columns
        ]
        for i in range(k):
            found = self._findings.get((rule.name, subject, str(texts[0][i])))
            if found is None:
                continue
            table = found.facts.setdefault("breakdown", {})
            key = " ".join(str(t[i]) for t in texts[1:])
            table[key] = table.get(key, 0) + int(count[i])

    # -- window rules -----------------------------------------------------------------------------

    def _feed_window(
        self, rule: LogRule, subject: str, source: str, blk: Block, chosen: Mask
    ) -> None:
        codes, subjects = _keyed(blk, subject, chosen)
        rows = np.flatnonzero(chosen & (codes >= 0))
        if len(rows) == 0:
            return
        key = (rule.name, subject, source)
        half = max(1, rule.window // 2)
        st = self._windows.get(key)
        if st is None or st.half != half:
            st = self._windows[key] = _Window(half)
        batch = _batch(rule, blk, chosen, rows, (codes, subjects), st)
        if _may_fire(rule, batch):
            self._evaluate(rule, subject, source, st, blk, batch)
        self._close(rule, subject, source, st, batch)

    def _evaluate(
        self, rule: LogRule, subject: str, source: str, st: _Window, blk: Block, b: _Batch
    ) -> None:
        th, c = rule.threshold, b.cells
        nb, ns = len(b.bucket_of), len(b.subjects)
        # Each (subject, bucket) cell belongs to two windows: the one it starts (numbered like
        # the bucket) and the one it ends (numbered like the bucket before).
        window_key = np.concatenate([c.subject * nb + c.bucket, c.subject * nb + b.prev[c.bucket]])
        number, keys = _factorize(window_key, ns * nb)
        k = len(keys)
        n = _sum(number, k, np.concatenate([c.n, c.n]))
        num = _sum(number, k, np.concatenate([c.num, c.num]))
        if rule.measure == "ratio":
            events, measure = num, num / n
        elif rule.measure == "distinct":
            # A window holds at most the values of its two cells together; only if that bound
            # reaches the floors are the values told apart.
            events = n
            bound = _sum(number, k, np.concatenate([b.cell_distinct, b.cell_distinct]))
            maybe = _floors(th, events, bound.astype(np.float64))
            if not maybe.any():
                return
            # Peers are compared on every window; without peers only the candidates count.
            among = np.unique(keys[maybe] // nb) if th.peers_quantile is None else None
            measure = _distinct_per_window(b, keys, among)
        else:
            events, measure = n, n.astype(np.float64)
        ok = _floors(th, events, measure)
        if not ok.any():
            return
        if th.peers_quantile is not None:
            # Peers are the subjects below the fixed floors: a crowd of floods must not make a
            # flood look normal, and a subject is never its own peer.
            peers = measure[~ok]
            if len(peers) >= PEERS_MIN:
                ok &= measure > th.peers_factor * float(np.quantile(peers, th.peers_quantile))
        fired = np.flatnonzero(ok)
        fired_subject, start = keys[fired] // nb, b.bucket_of[keys[fired] % nb]
        order = np.lexsort((start, fired_subject))
        fired, fired_subject, start = fired[order], fired_subject[order], start[order]
        first = _minimum(number, k, np.concatenate([c.first, c.first]))
        last = _maximum(number, k, np.concatenate([c.last, c.last]))
        # A finding counts the lines of its open buckets (numerator lines for a ratio).
        counted = c.num if rule.measure == "ratio" else c.n
        mine = np.isin(c.subject, fired_subject)
        per_bucket = dict(
            zip(
                zip(c.subject[mine].tolist(), b.bucket_of[c.bucket[mine]].tolist(), strict=True),
                counted[mine].tolist(),
                strict=True,
            )
        )
        names = _strings(b.subjects, fired_subject).to_pylist()
        for i, code, w, name in zip(
            fired.tolist(), fired_subject.tolist(), start.tolist(), names, strict=True
        ):
            lines, hits = int(n[i]), int(num[i])
            if th.baseline_factor is not None and not _above_baseline(th, st, name, lines, hits):
                continue
            f = self._finding(rule, subject, str(name), int(first[i]), int(last[i]))
            self._open.setdefault((rule.name, subject, source), set()).add(f.key)
            for bucket_no in (w, w + 1):
                f.open_counts[f"{source}:{bucket_no}"] = per_bucket.get((code, bucket_no), 0)
            value: Any = lines
            if rule.measure == "ratio":
                value = round(hits / lines, 3)
            elif rule.measure == "distinct":
                value = int(measure[i])
            if len(f.evidence) < MAX_EVIDENCE:
                ts = b.row_ts
                pick = (b.row_subject == code) & (ts >= w * st.half) & (ts < (w + 2) * st.half)
                if rule.measure == "ratio":
                    pick &= b.row_hit
                f.add_evidence(blk.lines(b.rows[np.flatnonzero(pick)[:MAX_EVIDENCE]]))
            self._summarise(rule, f, value)

    def _close(self, rule: LogRule, subject: str, source: str, st: _Window, b: _Batch) -> None:
        """Keep the entries of buckets still open; fold the closed ones into the baselines and
        settle the findings' counts of closed buckets."""
        e = b.entries
        bucket = b.bucket_of[e.bucket]
        keep_from = int(bucket.max()) - 1 - LATE_BUCKETS
        keep = np.ones(len(bucket), np.bool_)
        if int(bucket.min()) < keep_from:
            gone = bucket < keep_from
            keep = ~gone
            if rule.threshold.baseline_factor is not None:
                ns = len(b.subjects)
                lines = _sum(e.subject[gone], ns, e.n[gone])
                hits = _sum(e.subject[gone], ns, e.num[gone])
                whose = np.flatnonzero(lines)
                names = _strings(b.subjects, whose).to_pylist()
                for name, a, h in zip(
                    names, lines[whose].tolist(), hits[whose].tolist(), strict=True
                ):
                    acc = st.baseline.setdefault(str(name), [0, 0])
                    acc[0] += a
                    acc[1] += h
            self._settle((rule.name, subject, source), source, keep_from)
        st.subject, st.subjects = _compact(e.subject[keep], b.subjects)
        st.value, st.values = np.zeros(0, np.int64), pa.array([], pa.string())
        if rule.measure == "distinct":
            st.value, st.values = _compact(b.entry_value[keep], b.values)
        st.bucket, st.n, st.num = bucket[keep], e.n[keep], e.num[keep]
        st.first, st.last = e.first[keep], e.last[keep]

    def _settle(self, key: tuple[str, str, str], source: str, keep_from: int) -> None:
        prefix = f"{source}:"
        waiting = self._open.get(key, set())
        for fkey in list(waiting):
            f = self._findings.get(fkey)
            still_open = False
            if f is not None:
                for bucket in [k for k in f.open_counts if k.startswith(prefix)]:
                    if int(bucket[len(prefix) :]) < keep_from:
                        f.settle(bucket)
                    else:
                        still_open = True
            if not still_open:
                waiting.discard(fkey)

    # -- results and state ------------------------------------------------------------------------

    def findings(self) -> list[LogFinding]:
        """Every finding so far, most severe first, then by rule and subject."""
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return sorted(self._findings.values(), key=lambda f: (rank[f.severity], f.rule, f.subject))

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: open window buckets, baselines and findings (for follow mode)."""
        windows = {"|".join(key): st.to_state() for key, st in self._windows.items()}
        return {
            "version": STATE_VERSION,
            "windows": windows,
            "findings": [f.to_state() for f in self._findings.values()],
        }

    def forget_findings(self, ended_before: int) -> int:
        """Drop findings whose behaviour last showed before `ended_before` (epoch seconds).

        Follow mode stores every finding in the store as it goes, so one that has been quiet
        for a while need not ride in the state for ever; if it starts again, a fresh finding
        with the same key updates the stored one. Returns how many were dropped.
        """
        old = [key for key, f in self._findings.items() if f.last_seen < ended_before]
        for key in old:
            del self._findings[key]
        return len(old)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take back what `to_state` gave (rules and calendar come from the constructor).

        Windows saved in another layout (`STATE_VERSION`) are not read: they start empty, and
        the findings are kept.
        """
        self._findings = {}
        self._open = {}
        for raw in state.get("findings", []):
            f = LogFinding.from_state(raw)
            self._findings[f.key] = f
            for bucket in f.open_counts:
                source = bucket.rpartition(":")[0]
                self._open.setdefault((f.rule, f.subject_kind, source), set()).add(f.key)
        self._windows = {}
        if state.get("version") != STATE_VERSION:
            return
        by_name = {r.name: r for r in self.rules}
        for key, raw in state.get("windows", {}).items():
            rule_name, subject, source = key.split("|")
            rule = by_name.get(rule_name)
            if rule is None or rule.kind != "window":
                continue  # a rule removed from the file: its windows go with it
            self._windows[(rule_name, subject, source)] = _Window.from_state(raw)


def _floors(th: Threshold, events: Ints, measure: np.ndarray[Any, Any]) -> Mask:
    """Which windows reach the fixed floors (necessary for every rule)."""
    ok: Mask = events >= th.min_count
    if th.min_distinct:
        ok &= measure >= th.min_distinct
    if th.max_per_distinct is not None:
        # A ceiling on lines per distinct value; `measure` may be an upper bound of the
        # distinct values, and the test stays necessary with it.
        ok &= events <= th.max_per_distinct * measure
    if th.min_rate:
        ok &= measure >= th.min_rate
    return ok


def _distinct_per_window(
    b: _Batch, windows: Ints, among: Ints | None
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """How many distinct values each window (key subject * buckets + number) holds; only the
    windows of the subjects `among` when given (the others count 0)."""
    nb, nv = len(b.bucket_of), len(b.values) + 1
    # (subject, value, window) triples, each once: a value's entry in a bucket belongs to the
    # window the bucket starts and the one it ends.
    e, valued = b.entries, b.entry_value >= 0
    if among is not None:
        asked = np.zeros(len(b.subjects), np.bool_)
        asked[among] = True
        valued &= asked[e.subject]
    pair = e.subject[valued] * nv + b.entry_value[valued] + 1
    bucket = e.bucket[valued]
    triple_key = np.concatenate([pair * nb + bucket, pair * nb + b.prev[bucket]])
    _, triples = _factorize(triple_key, len(b.subjects) * nv * nb)
    window = triples // nb // nv * nb + triples % nb
    order = np.argsort(windows)
    at = order[np.searchsorted(windows, window, sorter=order)]
    return np.bincount(at, minlength=len(windows)).astype(np.float64)


def _above_baseline(th: Threshold, st: _Window, name: str, lines: int, hits: int) -> bool:
    own = st.baseline.get(str(name))
    if own is None or own[0] < th.baseline_min_lines:
        # Too little history of its own: compare with every subject's history.
        totals = [sum(v[i] for v in st.baseline.values()) for i in (0, 1)]
        own = totals if totals[0] else [lines, 0]
    rate = own[1] / own[0] if own[0] else 0.0
    return hits / lines > (th.baseline_factor or 1.0) * rate


@dataclass
class _Batch:
    """A window rule's entries after a block: the block's rows and the entries still open from
    earlier blocks, grouped per (subject, distinct value, bucket) and per (subject, bucket).

    Subjects and values are codes into `subjects` and `values`; buckets are numbered densely,
    `bucket_of` giving each number's bucket and `prev` the number of the bucket before it.
    `rows`, `row_subject`, `row_ts` and `row_hit` (numerator) describe the block's rows.
    """

    subjects: pa.Array
    values: pa.Array
    bucket_of: Ints
    prev: Ints
    entries: _Groups
    entry_value: Ints
    cells: _Groups
    cell_distinct: Ints
    rows: Ints
    row_subject: Ints
    row_ts: Ints
    row_hit: Mask


def _batch(
    rule: LogRule, blk: Block, chosen: Mask, rows: Ints, subject: Coded, st: _Window
) -> _Batch:
    every = len(rows) == blk.n  # then the rows' values are the columns themselves
    ts = blk.ts if every else blk.ts[rows]
    sub, subjects = _compact(subject[0] if every else subject[0][rows], subject[1])
    distinct = rule.measure == "distinct" and rule.distinct is not None
    value, values = np.zeros(0, np.int64), pa.array([], pa.string())
    if distinct:
        value_codes, value_names = _keyed(blk, str(rule.distinct), chosen)
        value, values = _compact(value_codes[rows], value_names)
    hit = np.zeros(len(rows), np.bool_)
    if rule.measure == "ratio":
        hit = select(rule.numerator, blk, chosen)[rows]
    entry_sub, bucket = sub, ts // st.half
    n: Ints | None = None  # one line per row: counted without weights
    num, first, last = hit.astype(np.int64), ts, ts
    if len(st.bucket):
        recode, old, subjects = _merge_strings(subjects, st.subjects)
        sub = recode[sub]
        entry_sub = np.concatenate([sub, old[st.subject]])
        if distinct:
            old_value = np.full(len(st.bucket), -1, np.int64)
            if len(st.value) == len(st.bucket):  # else the rule measured no values before
                old_value = st.value
            recode, old, values = _merge_strings(values, st.values)
            value = np.concatenate([np.append(recode, -1)[value], np.append(old, -1)[old_value]])
        bucket = np.concatenate([bucket, st.bucket])
        n = np.concatenate([np.ones(len(rows), np.int64), st.n])
        num = np.concatenate([num, st.num])
        first = np.concatenate([first, st.first])
        last = np.concatenate([last, st.last])

    # Number the buckets, and the ones before them (the windows they end): by offset from the
    # one before the oldest when they span few numbers, else only those present.
    low, span = int(bucket.min()) - 1, int(bucket.max()) - int(bucket.min()) + 2
    if span <= _DENSE_BUCKETS:
        offsets = np.arange(span, dtype=np.int64)
        number = bucket - low
    else:
        which, seen = _factorize(bucket - low, span)
        offsets = np.union1d(seen, seen - 1)
        number = np.searchsorted(offsets, seen)[which]
    prev = np.searchsorted(offsets, offsets - 1)  # right wherever offsets - 1 is present
    nb, ns, nv = len(offsets), len(subjects), len(values) + 1

    # Cells: one per (subject, bucket).
    group, keys = _factorize(entry_sub * nb + number, ns * nb)
    k = len(keys)
    cell_subject = keys // nb
    cells = _Groups(
        subject=cell_subject,
        bucket=keys - cell_subject * nb,
        n=_sum(group, k, n),
        num=_sum(group, k, num) if rule.measure == "ratio" else np.zeros(k, np.int64),
        first=_minimum(group, k, first),
        last=_maximum(group, k, last),
    )
    entries, entry_value, cell_distinct = cells, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if distinct:
        # Entries: one per (subject, value, bucket). Most cells hold a single value (an account
        # seen from one network in a quarter hour): such a cell is its own entry, and only the
        # rest are grouped by value.
        low_value, high_value = _minimum(group, k, value), _maximum(group, k, value)
        single = low_value == high_value
        entries, entry_value = cells.take(single), low_value[single]
        cell_distinct = (low_value >= 0).astype(np.int64)
        mixed = ~single[group]
        if mixed.any():
            part, pairs = _factorize(group[mixed] * nv + value[mixed] + 1, k * nv)
            j = len(pairs)
            cell = pairs // nv
            more = _Groups(
                subject=cells.subject[cell],
                bucket=cells.bucket[cell],
                n=_sum(part, j, n[mixed] if n is not None else None),
                num=_sum(part, j, num[mixed]),
                first=_minimum(part, j, first[mixed]),
                last=_maximum(part, j, last[mixed]),
            )
            more_value = pairs - cell * nv - 1
            entries, entry_value = entries.concat(more), np.concatenate([entry_value, more_value])
            cell_distinct[~single] = 0
            cell_distinct += np.bincount(cell[more_value >= 0], minlength=k)
    return _Batch(
        subjects=subjects,
        values=values,
        bucket_of=offsets + low,
        prev=prev,
        entries=entries,
        entry_value=entry_value,
        cells=cells,
        cell_distinct=cell_distinct,
        rows=rows,
        row_subject=sub,
        row_ts=ts,
        row_hit=hit,
    )


def _may_fire(rule: LogRule, b: _Batch) -> bool:
    # A window is two buckets: if twice the fullest bucket is below a fixed floor, no window
    # reaches it (peers and baselines only add conditions), and windows need not be built.
    th, cells = rule.threshold, b.cells
    events = cells.num if rule.measure == "ratio" else cells.n
    if 2 * int(events.max()) < th.min_count:
        return False
    if rule.measure == "ratio":
        return True
    most = b.cell_distinct.max() if rule.measure == "distinct" else cells.n.max()
    return 2 * int(most) >= th.min_distinct
