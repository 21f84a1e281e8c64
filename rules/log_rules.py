"""The log rule engine: parsed access-log blocks in, findings out.

The rules are data (`rules/logs.toml`, format described at its top). The engine filters the
lines a rule cares about, groups them by subject, and either counts every line (`row` rules) or
counts them in sliding windows (`window` rules: buckets of half a window, each window two
adjacent buckets). All of it is Arrow group-bys over the columns of a block; Python touches only
the few subjects that fire. Where a condition needs a value no log carries, a function in
`DERIVED` computes it (the one place behaviour needs code).

Across blocks the engine keeps, per rule, subject column and log source, the partial aggregates
of the window buckets still open, plus the findings and, for rate rules, each subject's
long-run totals; `to_state`/`from_state` carry them across follow-mode runs.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

SENSITIVE = (
    r"(?i)(^|/)(\.env|\.git|\.svn|\.hg|\.DS_Store|\.htaccess|\.aws|wp-admin|wp-login\.php|"
    r"phpmyadmin|pma|xmlrpc\.php|actuator|server-status|web\.config|config\.php|"
    r"backup|dump|database)(\b|/|$)|\.(sql|bak|old|swp|tar\.gz|zip|7z|rar)$"
)
STATIC = r"(?i)\.(js|mjs|css|png|jpe?g|gif|svg|ico|webp|woff2?|ttf|eot|map|txt)$"


class RuleError(ValueError):
    """A rule file that does not describe valid rules; the message names the rule and key."""


# -- derived columns ------------------------------------------------------------------------------


@dataclass
class Context:
    """What derived columns may need besides the block itself."""

    calendar: WorkCalendar


def _working_time(t: pa.Table, ctx: Context) -> pa.Array:
    return pa.array(ctx.calendar.working_seconds(t.column("ts").to_pylist()), pa.bool_())


def _grant(t: pa.Table, _ctx: Context) -> pa.Array:
    role = pc.fill_null(t.column("role"), "none")
    target = pc.fill_null(t.column("target_role"), "none")
    return pc.binary_join_element_wise(role, target, ">")


def _network(t: pa.Table, _ctx: Context) -> pa.Array:
    # Without a GeoIP database, "places far apart" is approximated by networks: an IPv4 /16 or
    # the first three groups of an IPv6 address. A person moves between two or three at most.
    ip = t.column("ip")
    v4 = pc.struct_field(pc.extract_regex(ip, r"^(?P<n>\d+\.\d+)\."), [0])
    v6 = pc.struct_field(
        pc.extract_regex(ip, r"^(?P<n>[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f]*)"), [0]
    )
    return pc.coalesce(v4, v6, ip)


def _sensitive(t: pa.Table, _ctx: Context) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(t.column("path"), SENSITIVE), False)


def _static(t: pa.Table, _ctx: Context) -> pa.Array:
    return pc.fill_null(pc.match_substring_regex(t.column("path"), STATIC), False)


def _error(t: pa.Table, _ctx: Context) -> pa.Array:
    return pc.fill_null(pc.greater_equal(t.column("status"), 500), False)


DERIVED: dict[str, Callable[[pa.Table, Context], pa.Array]] = {
    "working_time": _working_time,
    "grant": _grant,
    "network": _network,
    "sensitive_path": _sensitive,
    "static_path": _static,
    "error": _error,
}


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


def _column(t: pa.Table, name: str, ctx: Context) -> pa.Array:
    if name in DERIVED:
        return DERIVED[name](t, ctx)
    col = t.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _mask(c: Condition, t: pa.Table, ctx: Context) -> pa.Array:
    if c.any_of or c.all_of:
        parts = [_mask(s, t, ctx) for s in (c.any_of or c.all_of)]
        combine = pc.or_ if c.any_of else pc.and_
        out = parts[0]
        for p in parts[1:]:
            out = combine(out, p)
        return out
    col = _column(t, c.field, ctx)
    op, value = c.op, c.value
    if op == "null":
        return pc.is_null(col)
    if op == "not_null":
        return pc.is_valid(col)
    if op in ("in", "not_in"):
        hit = pc.is_in(col, value_set=pa.array(value, col.type))
        result = hit if op == "in" else pc.invert(hit)
    elif op in ("matches", "not_matches"):
        hit = pc.match_substring_regex(col, value)
        result = hit if op == "matches" else pc.invert(hit)
    else:
        fn = {
            "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
            ">": pc.greater, ">=": pc.greater_equal,
        }[op]  # fmt: skip
        result = fn(col, pa.scalar(value, col.type) if not isinstance(value, bool) else value)
    # A missing value never satisfies a test (but `not_in` of a missing value is true:
    # a grant by someone with no role is outside the allowed pairs).
    return pc.fill_null(result, op == "not_in")


def select(conditions: Sequence[Condition], t: pa.Table, ctx: Context) -> pa.Table:
    """The rows meeting every condition; each condition sees only the rows the earlier kept,
    so a costly derived column (working time) is computed for few rows."""
    for c in conditions:
        if t.num_rows == 0:
            break
        t = t.filter(_mask(c, t, ctx))
    return t


@dataclass
class _WindowState:
    """Open window buckets of one rule, subject column and source: a few partial tables of
    (subject[, distinct value], bucket) → n, num, first, last, merged now and then."""

    parts: list[pa.Table] = field(default_factory=list)
    oldest: int | None = None
    baseline: dict[str, list[int]] = field(default_factory=dict)

    def table(self) -> pa.Table | None:
        if len(self.parts) > 1:
            self.parts = [pa.concat_tables(self.parts)]
        return self.parts[0] if self.parts else None


_AGG_SCHEMA = {"n": pa.int64(), "num": pa.int64(), "first": pa.int64(), "last": pa.int64(),
               "bucket": pa.int64()}  # fmt: skip
_MERGE_EVERY = 6


class LogRuleEngine:
    """Evaluates log rules over parsed blocks, keeping only what windows and findings need.

    Feed blocks in (roughly) time order per source with `feed`; read `findings()` at any time.
    """

    def __init__(self, rules: Sequence[LogRule], calendar: WorkCalendar | None = None) -> None:
        self.rules = list(rules)
        self.ctx = Context(calendar or WorkCalendar())
        self._findings: dict[tuple[str, str, str], LogFinding] = {}
        self._windows: dict[tuple[str, str, str], _WindowState] = {}
        self._lines: pa.Array = pa.array([], pa.string())

    @classmethod
    def load(cls, path: Path = RULES_FILE, calendar: WorkCalendar | None = None) -> LogRuleEngine:
        """An engine with the rules of a rule file (the shipped `rules/logs.toml` by default)."""
        return cls(load_rules(path), calendar)

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, block: pa.Table) -> None:
        """Evaluate every rule on a parsed block (columns of monitord.accesslog.schema)."""
        if block.num_rows == 0:
            return
        # Rules carry a row number instead of the raw line; evidence is fetched by number.
        self._lines = block.column("line").combine_chunks()
        work = block.drop_columns(["line"]).append_column(
            "row", pa.array(np.arange(block.num_rows, dtype=np.int64))
        )
        sources = pc.unique(work.column("source")).to_pylist()
        for source in sources:
            part = work if len(sources) == 1 else work.filter(pc.equal(work["source"], source))
            for rule in self.rules:
                if source in rule.sources:
                    self._feed_rule(rule, source, part.select(rule.columns))
        self._lines = pa.array([], pa.string())

    def _feed_rule(self, rule: LogRule, source: str, block: pa.Table) -> None:
        rows = select(rule.where, block, self.ctx)
        if rows.num_rows == 0 and rule.kind == "row":
            return
        for subject in rule.subject:
            sub = rows
            if rows.num_rows and rows.column(subject).null_count:
                sub = rows.filter(pc.is_valid(rows.column(subject)))
            if rule.kind == "row":
                if sub.num_rows:
                    self._feed_rows(rule, subject, sub)
            else:
                self._feed_window(rule, subject, source, sub)

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

    def _feed_rows(self, rule: LogRule, subject: str, rows: pa.Table) -> None:
        groups = rows.group_by(subject).aggregate([([], "count_all"), ("ts", "min"), ("ts", "max")])
        for g in groups.to_pylist():
            if g["count_all"] < rule.threshold.min_count:
                continue
            f = self._finding(rule, subject, str(g[subject]), g["ts_min"], g["ts_max"])
            f.settled += g["count_all"]
            self._evidence(f, rows, subject, g[subject])
            self._summarise(rule, f, f.count)
        if rule.breakdown:
            # The audit wants who did what, not only a total (8.3 c: every vendor account).
            per = rows.group_by([subject, *rule.breakdown]).aggregate([([], "count_all")])
            for r in per.to_pylist():
                found = self._findings.get((rule.name, subject, str(r[subject])))
                if found is None:
                    continue
                table = found.facts.setdefault("breakdown", {})
                key = " ".join(str(r[k]) for k in rule.breakdown)
                table[key] = table.get(key, 0) + r["count_all"]

    def _evidence(
        self,
        f: LogFinding,
        rows: pa.Table,
        subject: str,
        value: Any,
        span: tuple[int, int] | None = None,
    ) -> None:
        if len(f.evidence) >= MAX_EVIDENCE or rows.num_rows == 0:
            return
        mask = pc.equal(rows.column(subject), pa.scalar(value, rows.schema.field(subject).type))
        if span is not None:
            ts = rows.column("ts")
            mask = pc.and_(mask, pc.and_(pc.greater_equal(ts, span[0]), pc.less(ts, span[1])))
        picked = rows.filter(mask).column("row").slice(0, MAX_EVIDENCE)
        f.add_evidence([v.rstrip("\r\n") for v in pc.take(self._lines, picked).to_pylist()])

    def _summarise(self, rule: LogRule, f: LogFinding, measure: Any) -> None:
        # The summary quotes the worst window seen, not merely the latest.
        peak = max(f.facts.get("peak", measure), measure)
        f.facts["peak"] = peak
        shown = f"{peak:.0%}" if isinstance(peak, float) else str(peak)
        f.summary = rule.summary.format(
            subject=f.subject, count=f.count, measure=shown, window_min=rule.window // 60
        )

    def _keys(self, rule: LogRule, subject: str) -> list[str]:
        distinct = [rule.distinct] if rule.measure == "distinct" and rule.distinct else []
        return [subject, *distinct]

    def _feed_window(self, rule: LogRule, subject: str, source: str, rows: pa.Table) -> None:
        state = self._windows.setdefault((rule.name, subject, source), _WindowState())
        half = max(1, rule.window // 2)
        keys = self._keys(rule, subject)
        if rows.num_rows:
            if rule.measure == "ratio":
                num = pc.cast(_mask(Condition(all_of=rule.numerator), rows, self.ctx), pa.int64())
            else:
                num = pa.array(np.zeros(rows.num_rows, dtype=np.int64))
            cols: dict[str, Any] = {k: _column(rows, k, self.ctx) for k in keys}
            bucket = pc.divide(rows.column("ts"), half)
            cols["bucket"] = bucket
            cols["ts"] = rows.column("ts")
            cols["num"] = num
            part = (
                pa.table(cols)
                .group_by([*keys, "bucket"])
                .aggregate([([], "count_all"), ("num", "sum"), ("ts", "min"), ("ts", "max")])
                .rename_columns([*keys, "bucket", "n", "num", "first", "last"])
            )
            if state.parts:
                part = part.cast(state.parts[0].schema)
            state.parts.append(part)
            low = pc.min(bucket).as_py()
            state.oldest = low if state.oldest is None else min(state.oldest, low)
            if len(state.parts) >= _MERGE_EVERY:
                state.parts = [self._merged(state, keys)]
        b = state.table()
        if b is None or b.num_rows == 0:
            return
        self._evaluate(rule, subject, source, b, state, rows, half)
        self._prune(rule, subject, source, state, keys)

    @staticmethod
    def _merged(state: _WindowState, keys: list[str]) -> pa.Table:
        t = pa.concat_tables(state.parts)
        return (
            t.group_by([*keys, "bucket"])
            .aggregate([("n", "sum"), ("num", "sum"), ("first", "min"), ("last", "max")])
            .rename_columns([*keys, "bucket", "n", "num", "first", "last"])
        )

    def _evaluate(
        self,
        rule: LogRule,
        subject: str,
        source: str,
        b: pa.Table,
        state: _WindowState,
        rows: pa.Table,
        half: int,
    ) -> None:
        value_col = [rule.distinct] if rule.measure == "distinct" and rule.distinct else []
        # Each bucket belongs to two windows: the one it starts and the one it ends.
        both = pa.concat_tables(
            [
                b.append_column("w", b.column("bucket")),
                b.append_column("w", pc.subtract(b.column("bucket"), 1)),
            ]
        )
        aggs: list[Any] = [("n", "sum"), ("num", "sum"), ("first", "min"), ("last", "max")]
        if value_col:
            aggs.append((value_col[0], "count_distinct"))
        win = both.group_by([subject, "w"]).aggregate(aggs)
        n = win.column("n_sum")
        th = rule.threshold
        if rule.measure == "ratio":
            events = win.column("num_sum")
            measure = pc.divide(pc.cast(events, pa.float64()), pc.cast(n, pa.float64()))
        elif rule.measure == "distinct":
            events = n
            measure = pc.cast(win.column(f"{value_col[0]}_count_distinct"), pa.float64())
        else:
            events = n
            measure = pc.cast(n, pa.float64())
        ok = pc.greater_equal(events, th.min_count)
        if th.min_distinct:
            ok = pc.and_(ok, pc.greater_equal(measure, float(th.min_distinct)))
        if th.min_rate:
            ok = pc.and_(ok, pc.greater_equal(measure, th.min_rate))
        if not pc.any(ok).as_py():
            return
        if th.peers_quantile is not None:
            # Peers are the subjects below the fixed floors: a crowd of floods must not make a
            # flood look normal, and a subject is never its own peer.
            peers = pc.filter(measure, pc.invert(ok))
            if len(peers) >= PEERS_MIN:
                q = pc.quantile(peers, q=th.peers_quantile).to_pylist()[0]
                ok = pc.and_(ok, pc.greater(measure, th.peers_factor * q))
        fired = win.filter(ok).to_pylist()
        if th.baseline_factor is not None:
            fired = [r for r in fired if self._above_baseline(rule, state, r, subject)]
        if not fired:
            return
        count_col = "num" if rule.measure == "ratio" else "n"
        fired_keys = pa.array(sorted({r[subject] for r in fired}), b.schema.field(subject).type)
        per_bucket = b.filter(pc.is_in(b.column(subject), value_set=fired_keys))
        per_bucket = per_bucket.group_by([subject, "bucket"]).aggregate([(count_col, "sum")])
        counts_of = {
            (r[subject], r["bucket"]): r[f"{count_col}_sum"] for r in per_bucket.to_pylist()
        }
        ev_rows = rows
        if rule.measure == "ratio" and rows.num_rows:
            ev_rows = rows.filter(_mask(Condition(all_of=rule.numerator), rows, self.ctx))
        for r in fired:
            f = self._finding(rule, subject, str(r[subject]), r["first_min"], r["last_max"])
            for bucket in (r["w"], r["w"] + 1):
                f.open_counts[f"{source}:{bucket}"] = counts_of.get((r[subject], bucket), 0)
            if rule.measure == "ratio":
                value: Any = round(r["num_sum"] / r["n_sum"], 3)
            elif value_col:
                value = r[f"{value_col[0]}_count_distinct"]
            else:
                value = r["n_sum"]
            self._evidence(f, ev_rows, subject, r[subject], (r["w"] * half, (r["w"] + 2) * half))
            self._summarise(rule, f, value)

    def _above_baseline(
        self, rule: LogRule, state: _WindowState, r: dict[str, Any], subject: str
    ) -> bool:
        th = rule.threshold
        own = state.baseline.get(str(r[subject]))
        if own is None or own[0] < th.baseline_min_lines:
            # Too little history of its own: compare with every subject's history.
            totals = [sum(v[i] for v in state.baseline.values()) for i in (0, 1)]
            own = totals if totals[0] else [int(r["n_sum"]), 0]
        rate = own[1] / own[0] if own[0] else 0.0
        return bool(r["num_sum"] / r["n_sum"] > (th.baseline_factor or 1.0) * rate)

    def _prune(
        self, rule: LogRule, subject: str, source: str, state: _WindowState, keys: list[str]
    ) -> None:
        b = state.table()
        if b is None or state.oldest is None:
            return
        newest = pc.max(b.column("bucket")).as_py()
        keep_from = newest - 1 - LATE_BUCKETS
        if state.oldest >= keep_from:
            return
        b = self._merged(state, keys)
        old = pc.less(b.column("bucket"), keep_from)
        gone = b.filter(old)
        kept = b.filter(pc.invert(old))
        state.parts = [kept]
        state.oldest = pc.min(kept.column("bucket")).as_py() if kept.num_rows else None
        if rule.threshold.baseline_factor is not None:
            totals = gone.group_by(subject).aggregate([("n", "sum"), ("num", "sum")])
            for r in totals.to_pylist():
                acc = state.baseline.setdefault(str(r[subject]), [0, 0])
                acc[0] += r["n_sum"]
                acc[1] += r["num_sum"]
        prefix = f"{source}:"
        for f in self._findings.values():
            if f.rule != rule.name or f.subject_kind != subject:
                continue
            for key in [k for k in f.open_counts if k.startswith(prefix)]:
                if int(key[len(prefix) :]) < keep_from:
                    f.settle(key)

    # -- results and state ------------------------------------------------------------------------

    def findings(self) -> list[LogFinding]:
        """Every finding so far, most severe first, then by rule and subject."""
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        return sorted(self._findings.values(), key=lambda f: (rank[f.severity], f.rule, f.subject))

    def to_state(self) -> dict[str, Any]:
        """JSON-able state: open window buckets, baselines and findings (for follow mode)."""
        windows = {}
        for (rule, subject, source), st in self._windows.items():
            b = st.table()
            windows[f"{rule}|{subject}|{source}"] = {
                "buckets": b.to_pylist() if b is not None else [],
                "oldest": st.oldest,
                "baseline": st.baseline,
            }
        return {"windows": windows, "findings": [f.to_state() for f in self._findings.values()]}

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
        """Take back what `to_state` gave (rules and calendar come from the constructor)."""
        self._findings = {}
        for raw in state.get("findings", []):
            f = LogFinding.from_state(raw)
            self._findings[f.key] = f
        self._windows = {}
        by_name = {r.name: r for r in self.rules}
        for key, raw in state.get("windows", {}).items():
            rule_name, subject, source = key.split("|")
            rule = by_name.get(rule_name)
            if rule is None:
                continue  # a rule removed from the file: its windows go with it
            st = _WindowState(
                oldest=raw.get("oldest"),
                baseline={k: list(v) for k, v in raw.get("baseline", {}).items()},
            )
            if raw.get("buckets"):
                schema = pa.schema(
                    [(k, pa.string()) for k in self._keys(rule, subject)]
                    + [(k, _AGG_SCHEMA[k]) for k in ("bucket", "n", "num", "first", "last")]
                )
                st.parts = [pa.Table.from_pylist(raw["buckets"], schema=schema)]
            self._windows[(rule_name, subject, source)] = st


def findings_of(
    blocks: Iterable[pa.Table], engine: LogRuleEngine | None = None
) -> list[LogFinding]:
    """Run an engine (the shipped rules by default) over parsed blocks and return its findings."""
    eng = engine or LogRuleEngine.load()
    for block in blocks:
        eng.feed(block)
    return eng.findings()
