"""Statistics per log source, service and hour: requests, distinct users and IPs, status classes,
latency percentiles, client kinds, top paths, and the operations of vendor staff accounts.

Everything per row is done with numpy on integers; strings are touched only per distinct value,
by Arrow, and only a closing row's top paths become Python strings.

* Each row of a block gets a dense group number for its (source, service, hour). Every open
  group owns a slot: a row of two numpy arrays holding its counts (requests, status classes,
  client kinds) and its latency histogram, which a block adds to with bincounts.
* IPs, users and paths are kept as parts: the (slot, dictionary code) of each row of one block
  and one hour, and the block's dictionary they index. Parts are merged when their hours close
  (or when an hour gathers many): the dictionaries of all the closing hours are encoded
  together once, after which distinct counts and path totals of every closing group are one
  sort of integers, and the top paths of all of them one more.

An hour closes once the log has moved `lateness_hours` past it: its rows are made together and
its slots and parts dropped, so memory holds only the open hours however long the log is.
Latency percentiles come from a histogram with 5 % wide bins (exact to within 2.5 %), which
merges across blocks and runs. Vendor operations (lines with a `vendor`, 8.3 c) are few: they are
counted in dicts per open group, by vendor and "account action", so that the quarterly audit
lists a quarter's operations by the hour they happened.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.findings import iso
from monitord.accesslog.schema import CLIENT_KINDS, codes

_RATIO = 1.05
_LOG_RATIO = math.log(_RATIO)
_MIN_MS = 0.1
BINS = 400  # 0.1 ms * 1.05**400 ≈ 30 hours: every plausible latency has a bin
TOP_PATHS = 10
STATE_VERSION = 2
"""Layout of `to_state`; a state of another version restores nothing (the hours start empty)."""

EDGE = "nginx"
"""The format of the edge log: it sees every request, the audit log only the portal's."""
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "other")
VENDOR_COLUMNS = ("vendor", "user", "action")
"""What a vendor operation is counted by: the vendor, the account and the action."""
TEXT_COLUMNS = ("ip", "user", "path")
"""Text columns kept as parts; a null path is a path, a null IP or user is not counted."""
# The columns of a slot's counts: requests, the status classes, the client kinds.
_STATUS = 1
_CLIENT = _STATUS + len(STATUS_CLASSES)
_WIDTH = _CLIENT + len(CLIENT_KINDS)
# A status (clipped to 0..600; null counts as 0) as an index into STATUS_CLASSES: a lookup is
# cheaper than dividing by 100.
_CLASS_OF_STATUS = np.full(601, len(STATUS_CLASSES) - 1, dtype=np.intp)
for _k in range(4):
    _CLASS_OF_STATUS[200 + 100 * _k : 300 + 100 * _k] = _k
# Integer keys spanning more than this many values per row are made dense by sorting instead
# of through a lookup table of that size.
_TABLE_PER_ROW = 16
_LEVELS = 32  # levels of path counts in `_top_paths`: 0..15, then 16.. by powers of two
_MAX_PARTS = 16  # an hour's parts of one column are merged into one beyond this many

VendorOps = dict[str, dict[str, int]]
"""Per vendor, operations per "account action" (as the vendor_activity rule's breakdown)."""
Key = tuple[str | None, str, int]
"""(source, service, hour as epoch seconds) of a statistics row."""
Ints = np.ndarray[Any, np.dtype[np.intp]]
Counts = np.ndarray[Any, np.dtype[np.int64]]
Small = np.ndarray[Any, np.dtype[np.int32]]


@dataclass
class _Part:
    """(slot, value) pairs of one text column, with how many rows each had.

    `values` holds distinct strings (a block's dictionary, or several merged); `code` is one
    more than the index into it, 0 standing for null. Without `count` the pairs are a block's
    rows as they came (each counts once, and a pair may repeat); with it they are distinct.
    """

    values: pa.Array
    slot: Small
    code: Small
    count: Counts | None = None

    def nbytes(self) -> int:
        counted = 0 if self.count is None else self.count.nbytes
        return int(self.values.nbytes) + self.slot.nbytes + self.code.nbytes + counted


class StatsAccumulator:
    """Per source, service and hour: requests, distinct users and IPs, status classes,
    latency p50/p95/p99, client kinds, top paths."""

    def __init__(self, lateness_hours: int = 1) -> None:
        self.lateness_hours = lateness_hours
        self._slots: dict[Key, int] = {}  # open groups
        self._counts: Counts = np.zeros((0, _WIDTH), np.int64)
        self._latency: Counts = np.zeros((0, BINS), np.int64)
        self._free: list[int] = []  # slots no open group uses
        self._parts: dict[int, dict[str, list[_Part]]] = {}  # hour → column → parts
        self._max_hour: int | None = None
        self._min_open: int | None = None
        self._closed: list[dict[str, Any]] = []
        self._vendors: dict[int, VendorOps] = {}  # open slot → its vendor operations

    def add(self, table: pa.Table, watermark: float | None = None) -> None:
        """Add a parsed block (text columns as `schema.TEXT` dictionaries or plain strings,
        whose dictionaries hold distinct values, as every reader's do).

        Hours close once the log is `lateness_hours` past them. When several logs are read side
        by side, `watermark` is the time all of them have reached: no hour closes after it, or
        the log that is behind would find its hours already closed.
        """
        ts = table.column("ts")
        if ts.null_count:
            table = table.filter(pc.is_valid(ts))  # a row without a time belongs to no hour
            ts = table.column("ts")
        if table.num_rows == 0:
            return
        hours = ts.to_numpy() // 3600
        keys, gid = _block_groups(table, hours)
        slots = np.array([self._slot(k) for k in keys], dtype=np.intp)
        self._add_rows(self._counts, slots, _counts(table, gid, len(keys)))
        latency = _latency(table, gid, len(keys))
        if latency is not None:
            first_bin, hist = latency
            used = self._latency[:, first_bin : first_bin + hist.shape[1]]  # a view
            self._add_rows(used, slots, hist)
        lo, hi = int(hours.min()), int(hours.max())
        row_slot = slots.astype(np.int32)[gid]
        self._add_vendor_operations(table, row_slot)
        # The rows of each hour of the block (a block mostly spans one or two). Only the hours
        # present: one line of year 9999 among those of today spans 70 million hours.
        in_hour = [(lo, None)] if lo == hi else [(int(h), hours == h) for h in np.unique(hours)]
        for name in TEXT_COLUMNS:
            col = table.column(name)
            if name != "path" and col.null_count == len(col):
                continue
            code, values = _codes(col)
            row_slots = row_slot
            keep = None
            if name != "path":  # a null IP or user is not counted
                keep = code > 0
                if keep.all():
                    keep = None
                else:
                    code, row_slots = code[keep], row_slot[keep]
            for h, mine in in_hour:
                part = _Part(values, row_slots, code)
                if mine is not None:
                    mine = mine if keep is None else mine[keep]
                    part = _Part(values, row_slots[mine], code[mine])
                if len(part.slot):
                    self._add_part(h * 3600, name, part)
        lo, hi = lo * 3600, hi * 3600

        if self._max_hour is None or hi > self._max_hour:
            self._max_hour = hi
        if self._min_open is None or lo < self._min_open:
            self._min_open = lo
        newest = self._max_hour
        if watermark is not None:
            if not math.isfinite(watermark):
                return  # some log has not been read at all yet
            newest = min(newest, int(watermark) // 3600 * 3600)
        cutoff = newest - 3600 * self.lateness_hours
        if self._min_open < cutoff:
            self._close_before(cutoff)

    def _add_vendor_operations(self, table: pa.Table, row_slot: Small) -> None:
        """Count the block's vendor staff operations per open group, vendor, account and
        action."""
        vendor = table.column("vendor")
        if vendor.null_count == len(vendor):
            return
        picked = np.flatnonzero(pc.is_valid(vendor).to_numpy())
        rows = table.take(pa.array(picked))
        texts = {name: pc.cast(rows.column(name), pa.string()) for name in VENDOR_COLUMNS}
        grouped = pa.table({"slot": row_slot[picked], **texts}).group_by(
            ["slot", *VENDOR_COLUMNS], use_threads=False
        )
        counted = grouped.aggregate([([], "count_all")]).to_pylist()
        for row in counted:
            ops = self._vendors.setdefault(row["slot"], {}).setdefault(row["vendor"], {})
            key = f"{row['user']} {row['action']}"
            ops[key] = ops.get(key, 0) + row["count_all"]

    def _slot(self, key: Key) -> int:
        slot = self._slots.get(key)
        if slot is None:
            if not self._free:
                self._grow()
            slot = self._slots[key] = self._free.pop()
        return slot

    def _grow(self) -> None:
        # Doubling keeps the copies rare; the arrays stay as large as the most groups ever open.
        old = len(self._counts)
        new = max(64, 2 * old)
        self._counts = np.concatenate([self._counts, np.zeros((new - old, _WIDTH), np.int64)])
        self._latency = np.concatenate([self._latency, np.zeros((new - old, BINS), np.int64)])
        self._free += range(new - 1, old - 1, -1)

    @staticmethod
    def _add_rows(into: Counts, slots: Ints, rows: Counts) -> None:
        if len(set(slots.tolist())) == len(slots):
            into[slots] += rows
        else:  # two block groups name one open group (null service and "-"): add both
            np.add.at(into, slots, rows)

    def _add_part(self, hour: int, name: str, part: _Part) -> None:
        parts = self._parts.setdefault(hour, {}).setdefault(name, [])
        parts.append(part)
        if len(parts) > _MAX_PARTS:  # a busy hour: keep one merged part, not one per block
            parts[:] = [_merge(parts, len(self._counts))]

    def _close_before(self, hour: int | None) -> None:
        """Finish every hour before `hour` (all hours when None)."""
        keys = sorted(
            (k for k in self._slots if hour is None or k[2] < hour),
            key=lambda k: (k[2], k[0] or "", k[1]),
        )
        if not keys:
            return
        slots = np.array([self._slots.pop(k) for k in keys], dtype=np.intp)
        parts: dict[str, list[_Part]] = {name: [] for name in TEXT_COLUMNS}
        for h in sorted({k[2] for k in keys}):
            for name, more in self._parts.pop(h, {}).items():
                parts[name] += more
        size = len(self._counts)
        ips = _distinct_per_slot(parts["ip"], size)[slots].tolist()
        users = _distinct_per_slot(parts["user"], size)[slots].tolist()
        top = _top_paths(parts["path"], size)
        counts = self._counts[slots]
        marks = _percentiles(self._latency[slots])
        self._counts[slots] = 0
        self._latency[slots] = 0
        slot_list = slots.tolist()
        self._free += slot_list
        self._min_open = min((k[2] for k in self._slots), default=None)
        names = {h: iso(h) for h in {k[2] for k in keys}}
        status = [
            {name: x for name, x in zip(STATUS_CLASSES, c, strict=True) if x}
            for c in counts[:, _STATUS:_CLIENT].tolist()
        ]
        clients = [dict(zip(CLIENT_KINDS, c, strict=True)) for c in counts[:, _CLIENT:].tolist()]
        none: list[list[Any]] = []
        closing = [
            {
                "source": source,
                "service": service,
                "hour": names[h],
                "requests": n,
                "users": n_users,
                "ips": n_ips,
                "status": st,
                "latency_ms": mark,
                "clients": cl,
                "top_paths": top.get(slot, none) if top else [],
            }
            for (source, service, h), slot, n, n_ips, n_users, mark, st, cl in zip(
                keys,
                slot_list,
                counts[:, 0].tolist(),
                ips,
                users,
                marks,
                status,
                clients,
                strict=True,
            )
        ]
        # Only a row with vendor operations has "vendors" (most rows have none).
        for row, slot in zip(closing, slot_list, strict=True):
            ops = self._vendors.pop(slot, None)
            if ops:
                row["vendors"] = ops
        self._closed += closing

    def take_closed(self) -> list[dict[str, Any]]:
        """The rows of hours that will not change any more (follow mode stores and drops them)."""
        out, self._closed = self._closed, []
        return out

    def finish(self) -> list[dict[str, Any]]:
        """Close every hour and return all rows not taken yet, sorted."""
        self._close_before(None)
        out = self.take_closed()
        out.sort(key=lambda r: (r["hour"], r["source"] or "", r["service"]))
        return out

    def first_open_hour(self) -> int | None:
        """The first hour still open (epoch seconds), None when none is: every hour before it
        is closed."""
        return self._min_open

    def open_groups(self) -> int:
        """How many (source, service, hour) groups are open."""
        return len(self._slots)

    def nbytes(self) -> int:
        """Bytes the open hours hold in arrays (slots and parts)."""
        held = self._counts.nbytes + self._latency.nbytes
        for columns in self._parts.values():
            for parts in columns.values():
                held += sum(p.nbytes() for p in parts)
        return held

    def to_state(self) -> dict[str, Any]:
        """The open hours as JSON-able values, for follow mode to keep between runs."""
        texts = {name: self._texts(name) for name in TEXT_COLUMNS}
        groups = []
        for (source, service, hour), slot in self._slots.items():
            latency = self._latency[slot]
            bins = np.flatnonzero(latency)
            paths = texts["path"].get(slot, ([], []))
            groups.append(
                {
                    "source": source,
                    "service": service,
                    "hour": hour,
                    "counts": self._counts[slot].tolist(),
                    "latency": [bins.tolist(), latency[bins].tolist()],
                    "ips": texts["ip"].get(slot, ([], []))[0],
                    "users": texts["user"].get(slot, ([], []))[0],
                    "paths": [list(paths[0]), list(paths[1])],
                    "vendors": self._vendors.get(slot, {}),
                }
            )
        return {
            "version": STATE_VERSION,
            "max_hour": self._max_hour,
            "min_open": self._min_open,
            "groups": groups,
        }

    def _texts(self, name: str) -> dict[int, tuple[list[Any], list[int]]]:
        """Per open slot, its distinct values of a text column and their counts."""
        parts = [p for columns in self._parts.values() for p in columns.get(name, [])]
        if not parts:
            return {}
        part = _merge(parts, len(self._counts))
        assert part.count is not None
        out: dict[int, tuple[list[Any], list[int]]] = {}
        texts = part.values.take(_nullable(part.code)).to_pylist()
        for slot, text, n in zip(part.slot.tolist(), texts, part.count.tolist(), strict=True):
            values, counts = out.setdefault(slot, ([], []))
            values.append(text)
            counts.append(n)
        return out

    @classmethod
    def from_state(cls, state: dict[str, Any], lateness_hours: int = 1) -> StatsAccumulator:
        """Rebuild an accumulator from `to_state`'s output; any other state gives an empty one
        (an older layout, or damage, loses the open hours rather than stopping follow mode)."""
        acc = cls(lateness_hours)
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            return acc
        try:
            acc._restore(state)
        except (KeyError, TypeError, ValueError, IndexError, pa.ArrowException):
            return cls(lateness_hours)
        return acc

    def _restore(self, state: dict[str, Any]) -> None:
        # Per hour and column: the texts of every group, one part.
        texts: dict[tuple[int, str], tuple[list[int], list[Any], list[int]]] = {}
        for raw in state["groups"]:
            hour = int(raw["hour"])
            slot = self._slot((raw["source"], str(raw["service"]), hour))
            self._counts[slot] = raw["counts"]
            bins, counts = raw["latency"]
            self._latency[slot, bins] = counts
            if raw.get("vendors"):  # a state saved before vendors were counted has none
                self._vendors[slot] = {
                    str(v): {str(k): int(n) for k, n in ops.items()}
                    for v, ops in raw["vendors"].items()
                }
            columns = {
                "ip": (raw["ips"], [1] * len(raw["ips"])),
                "user": (raw["users"], [1] * len(raw["users"])),
                "path": (raw["paths"][0], raw["paths"][1]),
            }
            for name, (values, ns) in columns.items():
                slots, all_values, all_ns = texts.setdefault((hour, name), ([], [], []))
                slots += [slot] * len(values)
                all_values += values
                all_ns += [int(n) for n in ns]
        for (hour, name), (slots, values, ns) in texts.items():
            if not values:
                continue
            enc = pc.dictionary_encode(pa.array(values, pa.string()))
            part = _Part(
                enc.dictionary,
                np.array(slots, dtype=np.int32),
                (_indices(enc.indices) + 1).astype(np.int32),
                np.array(ns, dtype=np.int64),
            )
            self._add_part(hour, name, part)
        self._max_hour = state["max_hour"]
        self._min_open = state["min_open"]


def _indices(indices: pa.Array) -> Ints:
    """Arrow indices as numpy, -1 where null."""
    if indices.null_count:
        indices = pc.fill_null(indices, -1)
    out: Ints = indices.to_numpy().astype(np.intp)
    return out


def _nullable(code: Small) -> pa.Array:
    """Codes (0 for null, else one more than the index) as Arrow indices, null where 0 (so
    `take` gives null)."""
    missing = code == 0
    return pa.array(code - 1, mask=missing if missing.any() else None)


def _codes(col: pa.ChunkedArray) -> tuple[Small, pa.Array]:
    """A text column as codes one more than the index into its dictionary (0 for null), and
    the dictionary."""
    code, values = codes(col)
    return code + np.int32(1), values


def _dense(values: Ints, size: int) -> tuple[Ints, Ints]:
    """The distinct values (all in [0, size)), ascending, and each row's index among them."""
    if size <= _TABLE_PER_ROW * len(values) + 4096:
        rank = np.zeros(size, np.intp)
        rank[values] = 1
        distinct = np.flatnonzero(rank)
        rank[distinct] = np.arange(len(distinct))
        return distinct, rank[values]
    distinct, inverse = np.unique(values, return_inverse=True)
    return distinct, inverse


def _block_groups(table: pa.Table, hours: Ints) -> tuple[list[Key], Ints]:
    """The (source, service, hour) groups of a block, and each row's group number."""
    src, src_values = codes(table.column("source"))
    svc, svc_values = codes(table.column("service"))
    first = int(hours.min())
    span = int(hours.max()) - first + 1
    n_src, n_svc = len(src_values) + 1, len(svc_values) + 1  # code -1 (null) is shifted to 0
    key = ((src.astype(np.intp) + 1) * n_svc + (svc + 1)) * span + (hours - first)
    distinct, gid = _dense(key, n_src * n_svc * span)
    sources: list[str | None] = [None, *src_values.to_pylist()]
    services = ["-", *("-" if v is None else v for v in svc_values.to_pylist())]
    rest, offset = np.divmod(distinct, span)
    s, v = np.divmod(rest, n_svc)
    keys = [
        (sources[a], services[b], (first + h) * 3600)
        for a, b, h in zip(s.tolist(), v.tolist(), offset.tolist(), strict=True)
    ]
    return keys, gid


def _counts(table: pa.Table, gid: Ints, n: int) -> Counts:
    """Per group: requests, status classes and client kinds, as the columns of `_WIDTH`."""
    status = table.column("status")
    if status.null_count:
        status = pc.fill_null(status, 0)
    klass = _CLASS_OF_STATUS[np.clip(status.to_numpy(), 0, len(_CLASS_OF_STATUS) - 1)]
    client, names = codes(table.column("client"))
    kinds = len(CLIENT_KINDS) + 1
    # Each distinct client value's kind (the last kind for none of them); the last entry is for
    # null (code -1), which counts as desktop.
    kind_of = np.array(
        [CLIENT_KINDS.index(v) if v in CLIENT_KINDS else kinds - 1 for v in names.to_pylist()]
        + [0],
        dtype=np.intp,
    )
    # One bincount over (group, status class, client kind) gives both kinds of counts.
    classes = len(STATUS_CLASSES)
    key = (gid * classes + klass) * kinds + kind_of[client]
    both = np.bincount(key, minlength=n * classes * kinds).reshape(n, classes, kinds)
    out = np.empty((n, _WIDTH), np.int64)
    out[:, _STATUS:_CLIENT] = both.sum(axis=2)
    out[:, 0] = out[:, _STATUS:_CLIENT].sum(axis=1)  # every row has exactly one status class
    out[:, _CLIENT:] = both.sum(axis=1)[:, : kinds - 1]
    return out


def _latency(table: pa.Table, gid: Ints, n: int) -> tuple[int, Counts] | None:
    """Per group, the latency histogram over the bins from the first one used: (first bin,
    histograms), or None when no row has a duration."""
    ms = table.column("duration_ms").to_numpy()  # a null is NaN
    valid = ~np.isnan(ms)
    if not valid.any():
        return None
    if not valid.all():
        ms, gid = ms[valid], gid[valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        bins = np.floor(np.log(np.maximum(ms, _MIN_MS) / _MIN_MS) / _LOG_RATIO)
    bins = np.clip(bins, 0, BINS - 1).astype(np.intp)
    # A block's latencies use a few dozen of the 400 bins: count only those.
    lo, hi = int(bins.min()), int(bins.max())
    width = hi - lo + 1
    hist = np.bincount(gid * width + (bins - lo), minlength=n * width).reshape(n, width)
    return lo, hist


def _merge(parts: list[_Part], size: int) -> _Part:
    """Parts (of slots below `size`) as one over one dictionary of distinct values, with the
    distinct (slot, value) pairs ordered by slot then code, and how many rows each had."""
    # Encoding the dictionaries together gives each string one code across the parts; the parts
    # of one block (one per hour it spans) share its dictionary, which is encoded once.
    dictionaries: dict[int, pa.Array] = {}
    for p in parts:
        dictionaries.setdefault(id(p.values), p.values)
    if len(dictionaries) == 1:
        values = parts[0].values
        code = _concat([p.code for p in parts])
    else:
        joined = list(dictionaries.values())
        enc = pc.dictionary_encode(pa.concat_arrays(joined))
        values = enc.dictionary
        # Per dictionary, its codes' new codes (0, null, stays 0; a null value becomes 0).
        shifted = np.append(np.int32(-1), _indices(enc.indices).astype(np.int32)) + np.int32(1)
        lookup: dict[int, Small] = {}
        at = 0
        for ident, d in dictionaries.items():
            table = shifted[at : at + len(d) + 1].copy()
            table[0] = 0
            lookup[ident] = table
            at += len(d)
        code = _concat([lookup[id(p.values)][p.code] for p in parts])
    slot = _concat([p.slot for p in parts])
    n = len(values) + 1
    key = slot.astype(np.int64) * n + code
    if size * n < 2**31:  # sorting 32-bit integers is about twice as fast
        key = key.astype(np.int32)
    if all(p.count is None for p in parts):
        key = np.sort(key)
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        count: Counts = np.diff(np.append(starts, len(key)))
    else:
        weight = _concat(
            [np.ones(len(p.slot), np.int64) if p.count is None else p.count for p in parts]
        )
        order = np.argsort(key)
        key = key[order]
        starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        count = np.add.reduceat(weight[order], starts)
    distinct_slot, distinct_code = np.divmod(key[starts], n)
    return _Part(
        values,
        distinct_slot.astype(np.int32),
        distinct_code.astype(np.int32),
        count.astype(np.int64),
    )


def _concat(arrays: list[Any]) -> Any:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _distinct_per_slot(parts: list[_Part], size: int) -> Ints:
    """How many distinct values each slot has (an array over all `size` slots)."""
    if not parts:
        return np.zeros(size, np.intp)
    return np.bincount(_merge(parts, size).slot, minlength=size)


def _top_paths(parts: list[_Part], size: int) -> dict[int, list[list[Any]]]:
    """Per slot, its TOP_PATHS most requested paths as [path, requests], most requested first;
    ties by path (a null path last), as the sort of strings in Arrow orders them."""
    if not parts:
        return {}
    p = _merge(parts, size)
    assert p.count is not None
    # Only paths about as requested as the tenth of their slot can be in its list: a histogram
    # of each slot's counts (exact up to 15, then by powers of two) gives that level without
    # sorting, and only the paths at or above it are sorted with their text. `p` is ordered by
    # slot: `local` numbers its slots from 0.
    exponent = np.frexp(p.count.astype(np.float64))[1]
    level = np.where(p.count < 16, p.count, np.minimum(exponent + 11, _LEVELS - 1))
    new = np.concatenate(([True], p.slot[1:] != p.slot[:-1]))
    local = np.cumsum(new) - 1
    hist = np.bincount(local * _LEVELS + level, minlength=int(local[-1] + 1) * _LEVELS)
    up_to = np.cumsum(hist.reshape(-1, _LEVELS), axis=1)
    at_least = up_to[:, -1:] - up_to + hist.reshape(-1, _LEVELS)  # paths at each level or above
    floor = (at_least >= TOP_PATHS).sum(axis=1) - 1  # -1 (all) for a slot of fewer paths
    chosen = np.flatnonzero(level >= floor[local])
    slot, count = p.slot[chosen], p.count[chosen]
    text = p.values.take(_nullable(p.code[chosen]))
    by_text = np.empty(len(chosen), np.intp)
    by_text[pc.array_sort_indices(text, null_placement="at_end").to_numpy()] = np.arange(
        len(chosen)
    )
    order = np.lexsort((by_text, -count, slot))
    slot = slot[order]
    starts = np.flatnonzero(np.concatenate(([True], slot[1:] != slot[:-1])))
    rank = np.arange(len(slot)) - np.repeat(starts, np.diff(np.append(starts, len(slot))))
    kept = rank < TOP_PATHS
    keep = order[kept]
    slot = slot[kept]
    pairs = list(map(list, zip(text.take(keep).to_pylist(), count[keep].tolist(), strict=True)))
    bounds = [0, *(np.flatnonzero(slot[1:] != slot[:-1]) + 1).tolist(), len(slot)]
    return {
        s: pairs[a:b]
        for s, a, b in zip(slot[bounds[:-1]].tolist(), bounds, bounds[1:], strict=False)
    }


def _percentiles(hist: Counts) -> list[dict[str, float | None]]:
    """p50/p95/p99 of each row of histograms (None for a row without durations)."""
    # Only the bins some row uses matter (a few dozen of the 400).
    used = np.flatnonzero(hist.any(axis=0))
    if len(used):
        hist = hist[:, used[0] : used[-1] + 1]
    cum = np.cumsum(hist, axis=1).astype(np.float64)
    totals = cum[:, -1]
    marks: dict[str, list[float]] = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        # The first bin whose running count reaches q of the total (searchsorted, side left).
        idx = (cum < (q * totals - 1e-9)[:, None]).sum(axis=1)
        bins = idx + (used[0] if len(used) else 0)
        marks[name] = np.round(_MIN_MS * _RATIO ** (bins + 0.5), 1).tolist()
    return [
        {"p50": a, "p95": b, "p99": c} if total else {"p50": None, "p95": None, "p99": None}
        for total, a, b, c in zip(totals.tolist(), *marks.values(), strict=True)
    ]


def merge_rows(stored: dict[str, Any], late: dict[str, Any]) -> dict[str, Any]:
    """One row for an hour that closed twice: `late` holds lines that came after the hour had
    closed (more than `lateness_hours` out of order), to be added to the `stored` row.

    Counts add up exactly (requests, status classes, client kinds, path requests). Distinct
    users and IPs take the larger part's, a lower bound: who the late lines came from is not
    kept. Latency percentiles are those of the part with more requests.
    """
    merged = dict(stored)
    merged["requests"] = stored["requests"] + late["requests"]
    for key in ("status", "clients"):
        both = dict(stored.get(key) or {})
        for name, n in (late.get(key) or {}).items():
            both[name] = both.get(name, 0) + n
        merged[key] = both
    for key in ("users", "ips"):
        merged[key] = max(stored.get(key) or 0, late.get(key) or 0)
    if late["requests"] > stored["requests"]:
        merged["latency_ms"] = late.get("latency_ms")
    paths: dict[str | None, int] = {}
    for path, n in [*(stored.get("top_paths") or []), *(late.get("top_paths") or [])]:
        paths[path] = paths.get(path, 0) + n
    # Most requested first, ties by path with a missing path last, as the closing rows order.
    ranked = sorted(paths.items(), key=lambda pn: (-pn[1], pn[0] is None, pn[0] or ""))
    merged["top_paths"] = [[p, n] for p, n in ranked[:TOP_PATHS]]
    if stored.get("vendors") or late.get("vendors"):
        merged["vendors"] = add_vendor_operations(
            stored.get("vendors") or {}, late.get("vendors") or {}
        )
    return merged


def add_vendor_operations(total: VendorOps, more: VendorOps) -> VendorOps:
    """The vendor operations of two rows (or hours) added up."""
    out = {vendor: dict(ops) for vendor, ops in total.items()}
    for vendor, ops in more.items():
        mine = out.setdefault(vendor, {})
        for key, n in ops.items():
            mine[key] = mine.get(key, 0) + int(n)
    return out


_Row = TypeVar("_Row")


def counted_rows(
    rows: Iterable[_Row], view: Callable[[_Row], tuple[str, Hashable, str | None]]
) -> list[_Row]:
    """The rows whose requests count, one view of each service's hour; `view` gives a row's
    service, hour and log format.

    The edge log (nginx) and the portal's audit log (json) see the same requests: counted in
    both, every request would count twice. So per service and hour the edge logs' rows count
    (several edge servers each serve different requests: they add up), and the audit logs'
    rows only where no edge log has that hour. A row stored without its format predates this
    rule and counts as an edge log's.
    """
    by_hour: dict[tuple[str, Hashable], list[tuple[str, _Row]]] = defaultdict(list)
    for row in rows:
        service, hour, fmt = view(row)
        by_hour[(service, hour)].append((fmt or EDGE, row))
    counted: list[_Row] = []
    for group in by_hour.values():
        edge = [row for fmt, row in group if fmt == EDGE]
        counted += edge or [row for _fmt, row in group]
    return counted
