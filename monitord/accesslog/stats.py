"""Statistics per log source, service and hour, kept as mergeable partial aggregates.

Each block adds small grouped tables (distinct addresses and users, status classes, client
kinds, a latency histogram, path counts) to the hours still open. An hour closes once the log has
moved `lateness_hours` past it: its partials are merged into one row and dropped, so memory holds
only the open hours however long the log is. Latency percentiles come from a histogram with 5 %
wide bins (exact to within 2.5 %), which merges across blocks and runs.
"""

from __future__ import annotations

import math
from collections import defaultdict
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


@dataclass
class _Partials:
    distinct: list[pa.Table] = field(default_factory=list)
    counts: list[pa.Table] = field(default_factory=list)
    latency: list[pa.Table] = field(default_factory=list)
    paths: list[pa.Table] = field(default_factory=list)


def _latency_bins(ms: pa.Array) -> pa.Array:
    values = ms.to_numpy(zero_copy_only=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        bins = np.floor(np.log(np.maximum(values, _MIN_MS) / _MIN_MS) / _LOG_RATIO)
    return pa.array(np.clip(bins, 0, BINS - 1).astype(np.int32), mask=np.isnan(values))


def _bin_value(b: int) -> float:
    # The geometric middle of the bin.
    return float(_MIN_MS * _RATIO ** (b + 0.5))


class StatsAccumulator:
    """Per source, service and hour: requests, distinct users and IPs, status classes,
    latency p50/p95/p99, client kinds, top paths."""

    def __init__(self, lateness_hours: int = 1) -> None:
        self.lateness_hours = lateness_hours
        self._open: _Partials = _Partials()
        self._max_hour: int | None = None
        self._closed: list[dict[str, Any]] = []

    def add(self, table: pa.Table) -> None:
        """Add a parsed block."""
        if table.num_rows == 0:
            return
        hour = pc.multiply(pc.divide(table.column("ts"), 3600), 3600)
        service = pc.fill_null(table.column("service"), "-")
        status_class = pc.binary_join_element_wise(
            pc.cast(pc.divide(table.column("status"), 100), pa.string()), "xx", ""
        )
        t = pa.table(
            {
                "source": table.column("source"),
                "service": service,
                "hour": hour,
                "ip": table.column("ip"),
                "user": table.column("user"),
                "status": status_class,
                "client": table.column("client"),
                "bin": _latency_bins(table.column("duration_ms").combine_chunks()),
                "path": table.column("path"),
            }
        )
        p = self._open
        p.distinct.append(t.group_by([*KEYS, "ip", "user"]).aggregate([]))
        p.counts.append(
            t.group_by([*KEYS, "status", "client"]).aggregate([([], "count_all")])
        )
        lat = t.filter(pc.is_valid(t.column("bin")))
        p.latency.append(lat.group_by([*KEYS, "bin"]).aggregate([([], "count_all")]))
        p.paths.append(t.group_by([*KEYS, "path"]).aggregate([([], "count_all")]))
        top = pc.max(hour).as_py()
        if top is not None and (self._max_hour is None or top > self._max_hour):
            self._max_hour = top
        self._compact()
        if self._max_hour is not None:
            self._close_before(self._max_hour - 3600 * self.lateness_hours)

    def _compact(self, force: bool = False) -> None:
        # Many small partials cost more than one merged table: fold them every few blocks.
        p = self._open
        if len(p.counts) < (2 if force else 8):
            return
        p.distinct = [pa.concat_tables(p.distinct).group_by([*KEYS, "ip", "user"]).aggregate([])]
        for name, extra in (("counts", ["status", "client"]), ("latency", ["bin"]), ("paths", ["path"])):
            tables: list[pa.Table] = getattr(p, name)
            merged = pa.concat_tables(tables).group_by([*KEYS, *extra])
            merged_t = merged.aggregate([("count_all", "sum")]).rename_columns(
                [*KEYS, *extra, "count_all"]
            )
            setattr(p, name, [merged_t])

    def _close_before(self, hour: int | None) -> None:
        """Finish every hour before `hour` (all hours when None)."""
        p = self._open
        if not p.counts:
            return

        def split(tables: list[pa.Table]) -> tuple[pa.Table, list[pa.Table]]:
            t = pa.concat_tables(tables)
            if hour is None:
                return t, []
            done = pc.less(t.column("hour"), hour)
            return t.filter(done), [t.filter(pc.invert(done))]

        distinct, p.distinct = split(p.distinct)
        counts, p.counts = split(p.counts)
        latency, p.latency = split(p.latency)
        paths, p.paths = split(p.paths)
        if counts.num_rows:
            self._closed += _finish(distinct, counts, latency, paths)

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
            "distinct": [t.to_pylist() for t in p.distinct],
            "counts": [t.to_pylist() for t in p.counts],
            "latency": [t.to_pylist() for t in p.latency],
            "paths": [t.to_pylist() for t in p.paths],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], lateness_hours: int = 1) -> StatsAccumulator:
        """Rebuild an accumulator from `to_state`'s output."""
        acc = cls(lateness_hours)
        acc._max_hour = state.get("max_hour")
        p = acc._open
        for name in ("distinct", "counts", "latency", "paths"):
            tables = [
                pa.Table.from_pylist(rows).cast(_schema(name, rows[0]))
                for rows in state.get(name, [])
                if rows
            ]
            setattr(p, name, tables)
        return acc


def _schema(name: str, example: dict[str, Any]) -> pa.Schema:
    types = {"hour": pa.int64(), "bin": pa.int32(), "count_all": pa.int64()}
    return pa.schema([(k, types.get(k, pa.string())) for k in example])


def _finish(
    distinct: pa.Table, counts: pa.Table, latency: pa.Table, paths: pa.Table
) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}

    def row(key: tuple[str, str, int]) -> dict[str, Any]:
        if key not in rows:
            rows[key] = {
                "source": key[0],
                "service": key[1],
                "hour": iso(key[2]),
                "requests": 0,
                "users": 0,
                "ips": 0,
                "status": {},
                "latency_ms": {"p50": None, "p95": None, "p99": None},
                "clients": dict.fromkeys(CLIENT_KINDS, 0),
                "top_paths": [],
            }
        return rows[key]

    c = counts.group_by([*KEYS, "status", "client"]).aggregate([("count_all", "sum")])
    for r in c.to_pylist():
        out = row((r["source"], r["service"], r["hour"]))
        n = r["count_all_sum"]
        out["requests"] += n
        out["status"][r["status"] or "other"] = out["status"].get(r["status"] or "other", 0) + n
        out["clients"][r["client"]] = out["clients"].get(r["client"], 0) + n
    d = distinct.group_by(KEYS).aggregate([("ip", "count_distinct"), ("user", "count_distinct")])
    for r in d.to_pylist():
        out = row((r["source"], r["service"], r["hour"]))
        out["ips"] = r["ip_count_distinct"]
        out["users"] = r["user_count_distinct"]
    hist: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    lat = latency.group_by([*KEYS, "bin"]).aggregate([("count_all", "sum")])
    for r in lat.to_pylist():
        hist[(r["source"], r["service"], r["hour"])].append((r["bin"], r["count_all_sum"]))
    for key, pairs in hist.items():
        pairs.sort()
        total = sum(n for _, n in pairs)
        marks = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
        seen = 0
        result: dict[str, float | None] = {}
        for b, n in pairs:
            seen += n
            for name, q in list(marks.items()):
                if seen >= q * total:
                    result[name] = round(_bin_value(b), 1)
                    del marks[name]
        row(key)["latency_ms"] = result
    pt = paths.group_by([*KEYS, "path"]).aggregate([("count_all", "sum")])
    pt = pt.sort_by([("count_all_sum", "descending")])
    for r in pt.to_pylist():
        out = row((r["source"], r["service"], r["hour"]))
        if len(out["top_paths"]) < TOP_PATHS:
            out["top_paths"].append([r["path"], r["count_all_sum"]])
    return list(rows.values())
