"""Statistics per log source, service and hour, kept as mergeable partial aggregates.

Each block adds small grouped tables (distinct addresses and users, status classes, client
kinds, a latency histogram, path counts) to the hours still open. An hour closes once the log has
moved `lateness_hours` past it: its partials are merged into one row and dropped, so memory holds
only the open hours however long the log is. Latency percentiles come from a histogram with 5 %
wide bins (exact to within 2.5 %), which merges across blocks and runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.findings import iso
from monitord.accesslog.schema import CLIENT_KINDS

KEYS = ["source", "service", "hour"]
_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
_MIN_MS = 0.1
BINS = 400  # 0.1 ms * 1.05**400 ≈ 30 hours: every plausible latency has a bin
TOP_PATHS = 10


COUNTS = ("n", "s2xx", "s3xx", "s4xx", "s5xx", "sother", *(f"c_{k}" for k in CLIENT_KINDS))
"""Per-row indicator columns, summed per group: one group-by gives every count at once."""


@dataclass
class _Partials:
    people: list[pa.Table] = field(default_factory=list)
    latency: list[pa.Table] = field(default_factory=list)
    paths: list[pa.Table] = field(default_factory=list)

    def lists(self) -> dict[str, list[pa.Table]]:
        return {"people": self.people, "latency": self.latency, "paths": self.paths}


_EXTRA = {"people": ["ip", "user"], "latency": ["bin"], "paths": ["path"]}


def _latency_bins(ms: pa.Array) -> pa.Array:
    values = ms.to_numpy(zero_copy_only=False)
    missing = np.isnan(values)
    with np.errstate(divide="ignore", invalid="ignore"):
        bins = np.floor(np.log(np.maximum(values, _MIN_MS) / _MIN_MS) / _LOG_RATIO)
    bins[missing] = 0  # masked below; NaN would not cast to an integer
    return pa.array(np.clip(bins, 0, BINS - 1).astype(np.int32), mask=missing)


def _indicators(table: pa.Table) -> dict[str, pa.Array]:
    status = table.column("status").to_numpy(zero_copy_only=False)
    klass = np.where(np.isnan(status.astype(np.float64)), 0, status // 100)
    client = pc.fill_null(table.column("client"), "desktop")
    out: dict[str, pa.Array] = {"n": pa.array(np.ones(len(klass), dtype=np.int32))}
    for k in (2, 3, 4, 5):
        out[f"s{k}xx"] = pa.array((klass == k).astype(np.int32))
    out["sother"] = pa.array(((klass < 2) | (klass > 5)).astype(np.int32))
    for kind in CLIENT_KINDS:
        out[f"c_{kind}"] = pc.cast(pc.equal(client, kind), pa.int32())
    return out


class StatsAccumulator:
    """Per source, service and hour: requests, distinct users and IPs, status classes,
    latency p50/p95/p99, client kinds, top paths."""

    def __init__(self, lateness_hours: int = 1) -> None:
        self.lateness_hours = lateness_hours
        self._open: _Partials = _Partials()
        self._max_hour: int | None = None
        self._min_open: int | None = None
        self._closed: list[dict[str, Any]] = []

    def add(self, table: pa.Table) -> None:
        """Add a parsed block."""
        if table.num_rows == 0:
            return
        hour = pc.multiply(pc.divide(table.column("ts"), 3600), 3600)
        keys = {
            "source": table.column("source"),
            "service": pc.fill_null(table.column("service"), "-"),
            "hour": hour,
        }
        people = pa.table({**keys, "ip": table.column("ip"), "user": table.column("user"),
                           **_indicators(table)})  # fmt: skip
        p = self._open
        p.people.append(
            people.group_by([*KEYS, "ip", "user"]).aggregate([(c, "sum") for c in COUNTS])
            .rename_columns([*KEYS, "ip", "user", *COUNTS])
        )  # fmt: skip
        bins = _latency_bins(table.column("duration_ms").combine_chunks())
        if bins.null_count < len(bins):
            lat = pa.table({**keys, "bin": bins}).filter(pc.is_valid(bins))
            p.latency.append(lat.group_by([*KEYS, "bin"]).aggregate([([], "count_all")]))
        paths = pa.table({**keys, "path": table.column("path")})
        p.paths.append(paths.group_by([*KEYS, "path"]).aggregate([([], "count_all")]))
        lo, hi = pc.min_max(hour).values()
        if self._max_hour is None or hi.as_py() > self._max_hour:
            self._max_hour = hi.as_py()
        if self._min_open is None or lo.as_py() < self._min_open:
            self._min_open = lo.as_py()
        self._compact()
        cutoff = self._max_hour - 3600 * self.lateness_hours
        if self._min_open is not None and self._min_open < cutoff:
            self._close_before(cutoff)

    def _compact(self, force: bool = False) -> None:
        # Many small partials cost more than one merged table: fold them every few blocks.
        p = self._open
        if len(p.people) < (2 if force else 8):
            return
        for name, tables in p.lists().items():
            if len(tables) > 1:
                setattr(p, name, [_merge(name, pa.concat_tables(tables))])

    def _close_before(self, hour: int | None) -> None:
        """Finish every hour before `hour` (all hours when None)."""
        p = self._open
        if not p.people:
            return
        done: dict[str, pa.Table] = {}
        for name, tables in p.lists().items():
            if not tables:
                done[name] = _empty(name)
                continue
            t = pa.concat_tables(tables)
            if hour is None:
                done[name], rest = t, []
            else:
                old = pc.less(t.column("hour"), hour)
                done[name], rest = t.filter(old), [t.filter(pc.invert(old))]
            setattr(p, name, rest)
        remaining = [t for t in p.people if t.num_rows]
        self._min_open = pc.min(remaining[0].column("hour")).as_py() if remaining else None
        if done["people"].num_rows:
            self._closed += _finish(done["people"], done["latency"], done["paths"])

    def take_closed(self) -> list[dict[str, Any]]:
        """The rows of hours that will not change any more (follow mode stores and drops them)."""
        out, self._closed = self._closed, []
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Close every hour and return all rows not taken yet, sorted."""
        self._close_before(None)
        out = self.take_closed()
        out.sort(key=lambda r: (r["hour"], r["source"], r["service"]))
        return out

    def to_state(self) -> dict[str, Any]:
        """The open hours as JSON-able partials, for follow mode to keep between runs."""
        self._compact(force=True)
        p = self._open
        return {
            "max_hour": self._max_hour,
            "min_open": self._min_open,
            **{name: [t.to_pylist() for t in tables] for name, tables in p.lists().items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], lateness_hours: int = 1) -> StatsAccumulator:
        """Rebuild an accumulator from `to_state`'s output."""
        acc = cls(lateness_hours)
        acc._max_hour = state.get("max_hour")
        acc._min_open = state.get("min_open")
        p = acc._open
        for name in ("people", "latency", "paths"):
            tables = [
                pa.Table.from_pylist(rows).cast(_schema(name, rows[0]))
                for rows in state.get(name, [])
                if rows
            ]
            setattr(p, name, tables)
        return acc


def _schema(name: str, example: dict[str, Any]) -> pa.Schema:
    types = {"hour": pa.int64(), "bin": pa.int32(), "count_all": pa.int64()}
    types.update(dict.fromkeys(COUNTS, pa.int64()))
    return pa.schema([(k, types.get(k, pa.string())) for k in example])


def _empty(name: str) -> pa.Table:
    cols = [*KEYS, *_EXTRA[name], *(COUNTS if name == "people" else ["count_all"])]
    return pa.Table.from_pylist([], schema=_schema(name, dict.fromkeys(cols)))


def _merge(name: str, t: pa.Table) -> pa.Table:
    extra = _EXTRA[name]
    sums = COUNTS if name == "people" else ("count_all",)
    merged = t.group_by([*KEYS, *extra]).aggregate([(c, "sum") for c in sums])
    return merged.rename_columns([*KEYS, *extra, *sums])


def _finish(people: pa.Table, latency: pa.Table, paths: pa.Table) -> list[dict[str, Any]]:
    aggs: list[Any] = [(c, "sum") for c in COUNTS]
    aggs += [("ip", "count_distinct"), ("user", "count_distinct")]
    per = people.group_by(KEYS).aggregate(aggs)
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for r in per.to_pylist():
        status = {f"{k}xx": r[f"s{k}xx_sum"] for k in (2, 3, 4, 5) if r[f"s{k}xx_sum"]}
        if r["sother_sum"]:
            status["other"] = r["sother_sum"]
        rows[(r["source"], r["service"], r["hour"])] = {
            "source": r["source"],
            "service": r["service"],
            "hour": iso(r["hour"]),
            "requests": r["n_sum"],
            "users": r["user_count_distinct"],
            "ips": r["ip_count_distinct"],
            "status": status,
            "latency_ms": {"p50": None, "p95": None, "p99": None},
            "clients": {k: r[f"c_{k}_sum"] for k in CLIENT_KINDS},
            "top_paths": [],
        }

    def row(key: tuple[str, str, int]) -> dict[str, Any]:
        return rows[key]

    for key, marks in _percentiles(latency).items():
        row(key)["latency_ms"] = marks
    for r in _top_paths(paths).to_pylist():
        row((r["source"], r["service"], r["hour"]))["top_paths"].append([r["path"], r["n"]])
    return list(rows.values())


def _group_starts(t: pa.Table) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """For a table sorted by KEYS: True where a new (source, service, hour) starts."""
    n = t.num_rows
    start = np.zeros(n, dtype=bool)
    if n:
        start[0] = True
    for k in KEYS:
        col = t.column(k).combine_chunks()
        same = pc.fill_null(pc.equal(col.slice(1), col.slice(0, n - 1)), False)
        start[1:] |= ~same.to_numpy(zero_copy_only=False)
    return start


def _percentiles(latency: pa.Table) -> dict[tuple[str, str, int], dict[str, float | None]]:
    """p50/p95/p99 per group from the merged histogram, with one searchsorted per mark."""
    lat = latency.group_by([*KEYS, "bin"]).aggregate([("count_all", "sum")])
    lat = lat.sort_by([(k, "ascending") for k in (*KEYS, "bin")])
    if lat.num_rows == 0:
        return {}
    starts = np.flatnonzero(_group_starts(lat))
    counts = lat.column("count_all_sum").to_numpy().astype(np.float64)
    bins = lat.column("bin").to_numpy()
    cum = np.cumsum(counts)
    before = np.concatenate(([0.0], cum))[starts]
    ends = np.concatenate((starts[1:], [len(counts)])) - 1
    totals = cum[ends] - before
    marks: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        idx = np.searchsorted(cum, before + q * totals - 1e-9, side="left")
        marks[name] = np.round(_MIN_MS * _RATIO ** (bins[np.minimum(idx, ends)] + 0.5), 1)
    keys = lat.select(KEYS).take(pa.array(starts)).to_pylist()
    return {
        (k["source"], k["service"], k["hour"]): {name: float(v[i]) for name, v in marks.items()}
        for i, k in enumerate(keys)
    }


def _top_paths(paths: pa.Table) -> pa.Table:
    """The TOP_PATHS most requested paths of each group, most requested first."""
    pt = paths.group_by([*KEYS, "path"]).aggregate([("count_all", "sum")])
    # Ties broken by path, so the same data always gives the same list.
    order = [
        *((k, "ascending") for k in KEYS),
        ("count_all_sum", "descending"),
        ("path", "ascending"),
    ]
    pt = pt.sort_by(order)
    if pt.num_rows == 0:
        return pt.rename_columns([*KEYS, "path", "n"])
    starts = _group_starts(pt)
    group_start = np.maximum.accumulate(np.where(starts, np.arange(pt.num_rows), 0))
    rank = np.arange(pt.num_rows) - group_start
    return pt.filter(pa.array(rank < TOP_PATHS)).rename_columns([*KEYS, "path", "n"])
