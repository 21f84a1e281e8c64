"""Text columns as codes into values: the nginx fast path's working form of a text column.

`encode` dictionary-encodes byte ranges of the block without copying them, so a result computed
once per distinct value reaches the rows by codes (`Text.map`). Codes are composed freely and
tidied once, by `Text.array`, into the dictionary arrays of the schema (`schema.TEXT`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitord.accesslog.nginx_words import Array


@dataclass
class Text:
    """A text column as codes into values (-1 is null). Values may repeat or go unused: the
    fast path composes codes freely and tidies up once, in `array` (the flags say what needs
    tidying)."""

    values: pa.Array  # string
    codes: Array
    distinct: bool = False  # no two values are equal
    used: bool = True  # every value has a row

    @staticmethod
    def of(col: pa.Array) -> Text:
        """Encode a plain string column."""
        enc = pc.dictionary_encode(col)
        return Text(enc.dictionary, _indices(enc), distinct=True)

    def __len__(self) -> int:
        return len(self.codes)

    def map(self, other: Text) -> Text:
        """This column, which has a row per value of `other`, with the rows of `other`."""
        return Text(
            self.values, lookup(self.codes, other.codes), self.distinct, self.used and other.used
        )

    def select(self, rows: Array) -> Text:
        """The rows at `rows`."""
        return Text(self.values, self.codes[rows], self.distinct, used=False)

    def array(self) -> pa.DictionaryArray:
        """A dictionary array whose values are distinct and all used (so a consumer may count
        the dictionary or group by code)."""
        codes, values = self.codes, self.values
        if not self.distinct:
            enc = pc.dictionary_encode(values)
            codes, values = lookup(_indices(enc), codes), enc.dictionary
        if not self.used:
            used = np.bincount(codes + 1, minlength=len(values) + 1)[1:] > 0
            if not used.all():
                codes = lookup(np.cumsum(used, dtype=np.int32) - 1, codes)
                values = values.filter(pa.array(used))
        nulls = codes < 0
        indices = pa.array(codes.astype(np.int32, copy=False), mask=nulls if nulls.any() else None)
        if values.type != pa.string():
            values = values.cast(pa.string())
        return pa.DictionaryArray.from_arrays(indices, values)


def _indices(enc: pa.DictionaryArray) -> Array:
    # Dictionary indices as numpy, -1 where null.
    idx = enc.indices
    if idx.null_count:
        idx = pc.fill_null(idx, -1)
    out: Array = idx.to_numpy().astype(np.int32, copy=False)
    return out


def lookup(table: Array, codes: Array) -> Array:
    """table[codes], with -1 (null) mapping to -1."""
    return np.append(table.astype(np.int32, copy=False), np.int32(-1))[codes]


def concat(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The rows of `a`, then those of `b` (the same columns, each a `Text` or an Arrow array)."""
    out: dict[str, Any] = {}
    for k, x in a.items():
        y = b[k]
        if isinstance(x, Text):
            shifted = np.where(y.codes >= 0, y.codes + len(x.values), -1)
            values = pa.concat_arrays([x.values, y.values])
            out[k] = Text(values, np.concatenate([x.codes, shifted]), used=x.used and y.used)
        else:
            out[k] = pa.concat_arrays([x, y.cast(x.type)])
    return out


_EVEN_BITS = b"\x55" * 4096  # validity of every other slot, grown on demand


def encode(
    buf: pa.Buffer,
    start: Array,
    end: Array,
    valid: Array | None = None,
) -> Text:
    """Dictionary-encode the byte ranges [start, end) of `buf` without copying them (only
    where `valid`, if given: the other rows are null).

    The ranges become the even slots of a string array over `buf` whose offsets are
    start0, end0, start1, end1, ...; the odd slots (the bytes between two ranges) are null, so
    the hash kernel skips them. Ranges must be in order and not overlap (fields of consecutive
    lines are), and cut valid UTF-8 at ASCII bytes (quotes, spaces, '/'), so they are valid
    UTF-8 themselves.
    """
    if valid is not None and not valid.all():
        # Few rows as a rule (an unusual $request_time, an X-Forwarded-For that is not "-").
        rows = np.flatnonzero(valid)
        some = (
            encode(buf, start[rows], end[rows])
            if len(rows)
            else Text(pa.nulls(0, pa.string()), rows)
        )
        codes = np.full(len(start), -1, np.int32)
        codes[rows] = some.codes
        return Text(some.values, codes, distinct=True)
    spread = _spread(buf, start, end)
    enc = pc.dictionary_encode(spread)
    codes = np.frombuffer(enc.indices.buffers()[1], np.int32, 2 * len(start))[0::2]
    return Text(enc.dictionary, np.ascontiguousarray(codes), distinct=True)


def _spread(buf: pa.Buffer, start: Array, end: Array) -> pa.Array:
    # A string array over `buf` (no copy) whose offsets are start0, end0, start1, end1, ...: the
    # ranges are its even slots, the bytes between two ranges its odd slots, which are null.
    global _EVEN_BITS
    n = len(start)
    offsets = np.empty(2 * n + 1, np.int32)
    offsets[0 : 2 * n : 2] = start
    offsets[1 : 2 * n : 2] = end
    offsets[2 * n] = end[-1] if n else 0
    size = (2 * n + 7) // 8
    if len(_EVEN_BITS) < size:
        _EVEN_BITS = b"\x55" * size
    bits = pa.py_buffer(_EVEN_BITS)
    return pa.Array.from_buffers(pa.string(), 2 * n, [bits, pa.py_buffer(offsets), buf], n)
