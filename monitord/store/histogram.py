"""Latency histograms that merge exactly: an hour's successful probe latencies as counts per
bucket, so that a quarter's p50/p95/p99 per service come from the sum of its hours' buckets,
within one bucket of the truth (percentiles of hours cannot be combined).

The buckets are log-spaced, each 8 % wider than the one before, from 1 ms to 120 s, and one
more for anything slower. They are fixed forever: a roll-up written years ago must still mean
the same, so BOUNDS_MS is never changed, only (if ever) extended past its last finite bound.
A histogram is a JSON object {bucket index as a string: count}, as `ProbeRollup.latency_buckets`
stores it.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from bisect import bisect_left
from collections.abc import Mapping

import numpy as np

FACTOR = 1.08
"""Each bucket's upper bound is this many times the previous one's: a percentile read from a
histogram is at most 8 % above the exact one."""

BOUNDS_MS: tuple[float, ...] = (
    *(round(FACTOR**i, 3) for i in range(153)),  # 1 ms ... 120,340 ms
    math.inf,
)
"""The buckets' upper bounds in milliseconds (inclusive); bucket i holds the latencies in
(BOUNDS_MS[i-1], BOUNDS_MS[i]], bucket 0 everything up to 1 ms, the last one everything over
120 s."""


def bucket_of(ms: float) -> int:
    """The index of the bucket a latency of `ms` milliseconds falls in."""
    if math.isnan(ms):
        raise ValueError("a latency of NaN has no bucket")
    return bisect_left(BOUNDS_MS, ms)


def add(buckets: dict[str, int], ms: float) -> None:
    """Count one latency of `ms` milliseconds into `buckets`."""
    key = str(bucket_of(ms))
    buckets[key] = buckets.get(key, 0) + 1


def merge(into: dict[str, int], other: Mapping[str, int]) -> None:
    """Add every count of `other` into `into` (merging is exact: the order does not matter)."""
    for key, count in other.items():
        into[key] = into.get(key, 0) + int(count)


def total(buckets: Mapping[str, int]) -> int:
    """How many latencies `buckets` holds."""
    return sum(int(count) for count in buckets.values())


def percentile(buckets: Mapping[str, int], q: float) -> float | None:
    """The `q` quantile (0 ≤ q ≤ 1, e.g. 0.95) of the latencies in `buckets`, as the upper bound
    of the bucket it falls in (math.inf past 120 s); None when `buckets` is empty.

    The rank is the one the raw percentiles use (the value at index round(q × (n − 1)) of the
    sorted latencies), so the exact percentile always lies in the bucket returned.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile must be between 0 and 1, not {q}")
    counts = sorted((int(key), int(count)) for key, count in buckets.items() if int(count) > 0)
    n = sum(count for _, count in counts)
    if n == 0:
        return None
    rank = min(n - 1, max(0, round(q * (n - 1))))
    seen = 0
    for index, count in counts:
        seen += count
        if seen > rank:
            return BOUNDS_MS[min(index, len(BOUNDS_MS) - 1)]
    return BOUNDS_MS[-1]  # not reached: seen ends at n, which is more than rank


_NUMBERS_ONLY = str.maketrans('{}":,', "     ")
_SPACE = re.compile(r"\s*")


def sum_stored(texts: str) -> dict[str, int]:
    """The sum of histograms as stored (JSON text, as `ProbeRollup.latency_buckets` holds them),
    given one after another separated by whitespace: a quarter of one service's hours.

    Reading thousands of hours for thousands of services one JSON object at a time took longer
    than the whole quarterly report may; so the texts, which hold nothing but bucket indexes and
    counts, are read as one run of numbers and summed in numpy. Anything else in them (not what
    monitord writes) is read the slow way, one object at a time, with the same result.
    """
    numbers = _numbers(texts.translate(_NUMBERS_ONLY))
    if numbers is None:
        return _sum_objects(texts)
    sums = np.bincount(numbers[0::2], weights=numbers[1::2])
    return {str(index): int(count) for index, count in enumerate(sums) if count}


def _sum_objects(texts: str) -> dict[str, int]:
    """`sum_stored` one JSON object at a time."""
    total: dict[str, int] = {}
    decoder = json.JSONDecoder()
    position = _SPACE.match(texts, 0).end()  # type: ignore[union-attr]  # \s* always matches
    while position < len(texts):
        histogram, position = decoder.raw_decode(texts, position)
        merge(total, histogram)
        position = _SPACE.match(texts, position).end()  # type: ignore[union-attr]
    return {key: count for key, count in total.items() if count}


def _numbers(text: str) -> np.ndarray[tuple[int], np.dtype[np.int64]] | None:
    """The whitespace-separated non-negative whole numbers in `text`, in pairs; None when it
    holds anything else."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns when it stops at what is not a number
        try:
            numbers = np.fromstring(text, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    if len(numbers) % 2 or (len(numbers) and int(numbers.min()) < 0):
        return None
    return numbers
