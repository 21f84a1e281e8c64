"""Sliding windows of a window rule: the rows grouped by subject and time bucket.

A window rule counts a subject's lines in sliding windows: buckets of half a window, each
window two adjacent buckets. `build_batch` groups a block's rows with the buckets still open
from earlier blocks (a `Window`: one entry per subject, distinct value and bucket), by subject
code and bucket, so that a window's measure is a sum over two cells; `floors`,
`distinct_per_window` and `above_baseline` tell which windows reach a rule's threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from rules.log_arrays import (
    Ints,
    Mask,
    compact,
    factorize,
    group_max,
    group_min,
    group_sum,
    merge_strings,
)
from rules.log_conditions import Block, Coded, keyed, select
from rules.log_rule_file import LogRule, Threshold


@dataclass
class Window:
    """Open window buckets of one rule, subject column and source: one entry per subject,
    distinct value (distinct measures only) and bucket, with its lines (`n`), numerator lines,
    first and last time; and per subject the long-run totals [lines, numerator lines] of the
    buckets that closed, for baseline rules.

    Entries name subjects and values by codes into `subjects` and `values` (-1: no value), so
    each string is kept, and merged with the next block's, once.

    `samples` keeps, by (subject, bucket), the first few lines (with their times) of the open
    buckets of subjects near the rule's floors (`near_floors`): a window that fires in a later
    block or follow-mode pass quotes its first lines though they were read before.
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
    samples: dict[tuple[str, int], list[tuple[int, str]]] = field(default_factory=dict)

    def sampled(self, subject: str, bucket: int) -> list[tuple[int, str]]:
        """The lines kept of `subject` in the window that starts at `bucket` (it and the next)."""
        return self.samples.get((subject, bucket), []) + self.samples.get((subject, bucket + 1), [])

    def keep_sample(
        self, subject: str, bucket: int, lines: list[tuple[int, str]], most: int
    ) -> None:
        """Add `lines` to the sample of `subject` in `bucket`, keeping its `most` earliest."""
        kept = self.samples.get((subject, bucket), [])
        self.samples[(subject, bucket)] = earliest(kept + lines, most)

    def forget_samples(self, before: int) -> None:
        """Drop the samples of the buckets before `before`: they closed."""
        self.samples = {key: lines for key, lines in self.samples.items() if key[1] >= before}

    def to_state(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "half": self.half,
            "subjects": self.subjects.to_pylist(),
            "values": self.values.to_pylist(),
            **{k: getattr(self, k).tolist() for k in _ENTRY_FIELDS},
            "baseline": self.baseline,
            "samples": [[s, b, lines] for (s, b), lines in self.samples.items()],
        }

    @classmethod
    def from_state(cls, raw: Mapping[str, Any]) -> Window:
        """Back from `to_state` (a state saved before samples were kept has none)."""
        return cls(
            half=int(raw["half"]),
            subjects=pa.array(raw["subjects"], pa.string()),
            values=pa.array(raw["values"], pa.string()),
            **{k: np.array(raw[k], np.int64).reshape(-1) for k in _ENTRY_FIELDS},
            baseline={k: [int(x) for x in v] for k, v in raw.get("baseline", {}).items()},
            samples={
                (str(s), int(b)): [(int(t), str(line)) for t, line in lines]
                for s, b, lines in raw.get("samples", [])
            },
        )


def earliest(lines: list[tuple[int, str]], most: int) -> list[tuple[int, str]]:
    """The `most` earliest of some lines with their times, earliest first (lines of the same
    second in the order given)."""
    return sorted(lines, key=lambda line: line[0])[:most]


_ENTRY_FIELDS = ("subject", "value", "bucket", "n", "num", "first", "last")


@dataclass
class Groups:
    """Window entries grouped: each group's subject code, bucket and sums."""

    subject: Ints
    bucket: Ints
    n: Ints
    num: Ints
    first: Ints
    last: Ints

    def take(self, which: Mask | Ints) -> Groups:
        """Some of the groups."""
        return Groups(*(getattr(self, f)[which] for f in _GROUP_FIELDS))

    def concat(self, other: Groups) -> Groups:
        """These groups and others."""
        return Groups(
            *(np.concatenate([getattr(self, f), getattr(other, f)]) for f in _GROUP_FIELDS)
        )


_GROUP_FIELDS = ("subject", "bucket", "n", "num", "first", "last")
_DENSE_BUCKETS = 1024


@dataclass
class Batch:
    """A window rule's entries after a block: the block's rows and the entries still open from
    earlier blocks, grouped per (subject, distinct value, bucket) and per (subject, bucket).

    Subjects and values are codes into `subjects` and `values`; buckets are numbered densely,
    `bucket_of` giving each number's bucket and `prev` the number of the bucket before it.
    `rows`, `row_subject`, `row_ts`, `row_hit` (numerator) and `row_cell` (the cell it falls
    in) describe the block's rows.
    """

    subjects: pa.Array
    values: pa.Array
    bucket_of: Ints
    prev: Ints
    entries: Groups
    entry_value: Ints
    cells: Groups
    cell_distinct: Ints
    rows: Ints
    row_subject: Ints
    row_ts: Ints
    row_hit: Mask
    row_cell: Ints


def build_batch(
    rule: LogRule, blk: Block, chosen: Mask, rows: Ints, subject: Coded, st: Window
) -> Batch:
    """The block's `rows` (those `chosen` with a subject; `subject` their codes) grouped with
    the entries `st` holds from earlier blocks."""
    every = len(rows) == blk.n  # then the rows' values are the columns themselves
    ts = blk.ts if every else blk.ts[rows]
    sub, subjects = compact(subject[0] if every else subject[0][rows], subject[1])
    distinct = rule.measure == "distinct" and rule.distinct is not None
    value, values = np.zeros(0, np.int64), pa.array([], pa.string())
    if distinct:
        value_codes, value_names = keyed(blk, str(rule.distinct), chosen)
        value, values = compact(value_codes[rows], value_names)
    hit = np.zeros(len(rows), np.bool_)
    if rule.measure == "ratio":
        hit = select(rule.numerator, blk, chosen)[rows]
    entry_sub, bucket = sub, ts // st.half
    n: Ints | None = None  # one line per row: counted without weights
    num, first, last = hit.astype(np.int64), ts, ts
    if len(st.bucket):
        recode, old, subjects = merge_strings(subjects, st.subjects)
        sub = recode[sub]
        entry_sub = np.concatenate([sub, old[st.subject]])
        if distinct:
            old_value = np.full(len(st.bucket), -1, np.int64)
            if len(st.value) == len(st.bucket):  # else the rule measured no values before
                old_value = st.value
            recode, old, values = merge_strings(values, st.values)
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
        which, seen = factorize(bucket - low, span)
        offsets = np.union1d(seen, seen - 1)
        number = np.searchsorted(offsets, seen)[which]
    prev = np.searchsorted(offsets, offsets - 1)  # right wherever offsets - 1 is present
    nb, ns, nv = len(offsets), len(subjects), len(values) + 1

    # Cells: one per (subject, bucket).
    group, keys = factorize(entry_sub * nb + number, ns * nb)
    k = len(keys)
    cell_subject = keys // nb
    cells = Groups(
        subject=cell_subject,
        bucket=keys - cell_subject * nb,
        n=group_sum(group, k, n),
        num=group_sum(group, k, num) if rule.measure == "ratio" else np.zeros(k, np.int64),
        first=group_min(group, k, first),
        last=group_max(group, k, last),
    )
    entries, entry_value, cell_distinct = cells, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if distinct:
        # Entries: one per (subject, value, bucket). Most cells hold a single value (an account
        # seen from one network in a quarter hour): such a cell is its own entry, and only the
        # rest are grouped by value.
        low_value, high_value = group_min(group, k, value), group_max(group, k, value)
        single = low_value == high_value
        entries, entry_value = cells.take(single), low_value[single]
        cell_distinct = (low_value >= 0).astype(np.int64)
        mixed = ~single[group]
        if mixed.any():
            part, pairs = factorize(group[mixed] * nv + value[mixed] + 1, k * nv)
            j = len(pairs)
            cell = pairs // nv
            more = Groups(
                subject=cells.subject[cell],
                bucket=cells.bucket[cell],
                n=group_sum(part, j, n[mixed] if n is not None else None),
                num=group_sum(part, j, num[mixed]),
                first=group_min(part, j, first[mixed]),
                last=group_max(part, j, last[mixed]),
            )
            more_value = pairs - cell * nv - 1
            entries, entry_value = entries.concat(more), np.concatenate([entry_value, more_value])
            cell_distinct[~single] = 0
            cell_distinct += np.bincount(cell[more_value >= 0], minlength=k)
    return Batch(
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
        row_cell=group[: len(rows)],
    )


def may_fire(rule: LogRule, b: Batch) -> bool:
    """Whether any window of the batch may reach the rule's fixed floors."""
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


NEAR = 4
"""A cell holding 1/NEAR of what a window needs to reach a fixed floor is near it."""


def near_floors(rule: LogRule, b: Batch) -> Mask:
    """Which cells (a subject's lines in one bucket, half a window) are near the rule's fixed
    floors: those whose lines may well begin a window that fires, kept for its evidence.

    A cell is near with a quarter of each floor, and never with a single line or value: that
    is what every subject of a busy log shows, and keeping the lines of them all would cost
    time and memory for windows that almost never fire.
    """
    th, cells = rule.threshold, b.cells
    events = cells.num if rule.measure == "ratio" else cells.n
    near: Mask = events >= _near(th.min_count)
    if th.min_distinct and rule.measure != "ratio":
        most = b.cell_distinct if rule.measure == "distinct" else cells.n
        near &= most >= _near(th.min_distinct)
    return near


def _near(floor: int) -> int:
    return max(2, -(-floor // NEAR))


def floors(th: Threshold, events: Ints, measure: np.ndarray[Any, Any]) -> Mask:
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


def distinct_per_window(
    b: Batch, windows: Ints, among: Ints | None
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
    _, triples = factorize(triple_key, len(b.subjects) * nv * nb)
    window = triples // nb // nv * nb + triples % nb
    order = np.argsort(windows)
    at = order[np.searchsorted(windows, window, sorter=order)]
    return np.bincount(at, minlength=len(windows)).astype(np.float64)


def above_baseline(th: Threshold, st: Window, name: str, lines: int, hits: int) -> bool:
    """Whether a window's rate (`hits` of its `lines`) exceeds the baseline factor times the
    subject's long-run rate."""
    own = st.baseline.get(str(name))
    if own is None or own[0] < th.baseline_min_lines:
        # Too little history of its own: compare with every subject's history.
        totals = [sum(v[i] for v in st.baseline.values()) for i in (0, 1)]
        own = totals if totals[0] else [lines, 0]
    rate = own[1] / own[0] if own[0] else 0.0
    return hits / lines > (th.baseline_factor or 1.0) * rate
