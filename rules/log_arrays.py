"""Array helpers the log rules share: numbering keys, sums per group, and codes into strings.

Rules work on integer arrays (row numbers, dictionary codes, time buckets) rather than Python
objects, so a block costs a few numpy passes; these are the passes more than one module needs.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

Ints: TypeAlias = np.ndarray[Any, np.dtype[np.int64]]
"""Row numbers, codes, times or counts."""
Mask: TypeAlias = np.ndarray[Any, np.dtype[np.bool_]]
"""Which rows (or groups) something holds for."""


def filled(arr: pa.Array, value: Any) -> np.ndarray[Any, Any]:
    """An Arrow array as numpy, missing values replaced (most arrays have none: no copy)."""
    if arr.null_count:
        arr = pc.fill_null(arr, value)
    out: np.ndarray[Any, Any] = arr.to_numpy(zero_copy_only=False)
    return out


def factorize(keys: Ints, domain: int) -> tuple[Ints, Ints]:
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


def group_min(groups: Ints, k: int, values: Ints) -> Ints:
    """The least value of each of `k` groups (`groups` numbers each value's group)."""
    out = np.full(k, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(out, groups, values)
    return out


def group_max(groups: Ints, k: int, values: Ints) -> Ints:
    """The greatest value of each of `k` groups (`groups` numbers each value's group)."""
    out = np.full(k, np.iinfo(np.int64).min, np.int64)
    np.maximum.at(out, groups, values)
    return out


def group_sum(groups: Ints, k: int, values: Ints | None) -> Ints:
    """The total of each of `k` groups; without values, each member counts one."""
    return np.bincount(groups, weights=values, minlength=k).astype(np.int64, copy=False)


def merge_strings(values: pa.Array, strings: pa.Array) -> tuple[Ints, Ints, pa.Array]:
    """One vocabulary for two: (new codes of `values`, new codes of `strings`, -1 for null;
    the vocabulary)."""
    enc = pc.dictionary_encode(pa.concat_arrays([values, strings]))
    codes = filled(enc.indices, -1).astype(np.int64)
    return codes[: len(values)], codes[len(values) :], enc.dictionary


def compact(
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


def strings_at(values: pa.Array, codes: Ints) -> pa.Array:
    """The strings that codes into `values` stand for (null for -1)."""
    return values.take(pa.array(codes, mask=codes < 0))
