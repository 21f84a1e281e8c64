"""Latency histograms: a quarter's percentiles from merged hourly buckets are within one bucket
of the exact percentiles, however the hours are cut."""

from __future__ import annotations

import json
import math
import random

import pytest

from monitord.store import histogram
from monitord.store.histogram import BOUNDS_MS, add, bucket_of, merge, percentile


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def test_the_bounds_are_the_ones_stored_roll_ups_were_written_with() -> None:
    # Changing them would silently change every past quarter's percentiles.
    assert len(BOUNDS_MS) == 154
    assert BOUNDS_MS[0] == 1.0
    assert BOUNDS_MS[1] == 1.08
    assert BOUNDS_MS[100] == 2199.761
    assert BOUNDS_MS[-2] == 120_340.229
    assert BOUNDS_MS[-1] == math.inf
    assert list(BOUNDS_MS) == sorted(BOUNDS_MS)


def test_a_latency_falls_in_the_bucket_whose_bound_is_the_first_not_below_it() -> None:
    assert bucket_of(0.0) == 0
    assert bucket_of(1.0) == 0
    assert bucket_of(1.0001) == 1
    assert bucket_of(1.08) == 1
    assert bucket_of(500_000.0) == len(BOUNDS_MS) - 1
    with pytest.raises(ValueError, match="NaN"):
        bucket_of(math.nan)


@pytest.mark.parametrize("seed", range(5))
def test_a_quarters_percentiles_from_hourly_buckets_are_within_one_bucket(seed: int) -> None:
    rng = random.Random(seed)
    hours: list[list[float]] = []
    for _ in range(2_208):  # a quarter of hours, a probe a minute, some hours slow
        slow = rng.random() < 0.05
        hours.append(
            [rng.lognormvariate(5.5 if slow else 4.0, 0.6) for _ in range(rng.randint(0, 60))]
        )
    everything = [ms for hour in hours for ms in hour]
    quarter: dict[str, int] = {}
    for hour in hours:
        buckets: dict[str, int] = {}
        for ms in hour:
            add(buckets, ms)
        # Stored as JSON and read back, as a roll-up is.
        merge(quarter, json.loads(json.dumps(buckets)))
    assert histogram.total(quarter) == len(everything)
    for q in (0.0, 0.5, 0.95, 0.99, 1.0):
        truth = exact(everything, q)
        found = percentile(quarter, q)
        assert found is not None
        assert bucket_of(found) == bucket_of(truth), (q, truth, found)
        assert truth <= found <= truth * 1.08 or truth <= 1.0


def test_an_empty_histogram_has_no_percentile_and_a_bad_quantile_is_refused() -> None:
    assert percentile({}, 0.95) is None
    assert percentile({"12": 0}, 0.95) is None
    with pytest.raises(ValueError, match="between 0 and 1, not 95"):
        percentile({"12": 3}, 95)


def test_histograms_summed_from_their_stored_text_equal_the_merged_ones() -> None:
    rng = random.Random(3)
    hours: list[dict[str, int]] = []
    for _ in range(500):
        buckets: dict[str, int] = {}
        for _ in range(rng.randint(0, 60)):
            add(buckets, rng.lognormvariate(4.0, 1.5))
        hours.append(buckets)
    merged: dict[str, int] = {}
    for buckets in hours:
        merge(merged, buckets)
    texts = " ".join(json.dumps(b) for b in hours)  # as the database joins them
    assert histogram.sum_stored(texts) == merged
    compact = "\n".join(json.dumps(b, separators=(",", ":")) for b in hours)
    assert histogram.sum_stored(compact) == merged
    assert histogram.sum_stored("") == {}
    assert histogram.sum_stored("{} {}") == {}
    # Not what monitord writes: read one object at a time, to the same sums.
    odd = texts + ' {"12": 2.0}  {"13": -1, "14": 1} '
    expected = dict(merged)
    merge(expected, {"12": 2, "13": -1, "14": 1})
    assert histogram.sum_stored(odd) == {k: v for k, v in expected.items() if v}
