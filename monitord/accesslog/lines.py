"""Splitting a block of bytes into an Arrow array of lines without a Python object per line.

The newline positions (found with memchr by the C scan's `line_offsets`, or by numpy where it is
not built) become the offsets of a binary array over the block's own buffer (zero copy): about
0.2 µs a line, against ~0.8 µs for Arrow's CSV tokenizer and ~3 µs for
`bytes.split` plus `pa.array`. Each value keeps its line ending (that is what makes it zero
copy); the readers ignore trailing bytes anyway, and `clean` strips it where text is shown.
Blank lines are dropped: they are no log lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_LINE = 1 << 20
"""The longest line analysed: 1 MiB (nginx's request line is at most 8 KiB by default, an audit
line a few KiB). A longer one is binary garbage or a runaway writer: it is counted, reported as
rejected and skipped, so that no line holds more than this in memory (a 60 MB file without a
newline took 3 GB before)."""


def overlong(source: str, head: bytes, size: int | None = None) -> str:
    """The rejected-line sample of a line longer than MAX_LINE (`size` when known)."""
    length = f"of {size:,} bytes" if size is not None else f"longer than {MAX_LINE:,} bytes"
    return f"{source}: a line {length} skipped: {head[:120]!r}"


def drop_overlong(lines: pa.Array, source: str) -> tuple[pa.Array, list[str]]:
    """The lines not longer than MAX_LINE, and a sample for each longer one."""
    offsets = np.frombuffer(lines.buffers()[1], np.int32, len(lines) + 1, lines.offset * 4)
    lengths = np.diff(offsets)
    if len(lengths) == 0 or lengths.max() <= MAX_LINE:
        return lines, []
    long = lengths > MAX_LINE
    samples = [
        overlong(source, lines[int(i)].as_py()[:120], int(lengths[i])) for i in np.flatnonzero(long)
    ]
    return lines.filter(pa.array(~long)), samples


def split_lines(block: bytes | bytearray) -> pa.Array:
    """Split a block of complete lines (the last may lack its newline) into a binary array."""
    if len(block) >= 2**31:
        raise ValueError("a block must be smaller than 2 GiB")
    if not block:
        return _EMPTY
    raw = np.frombuffer(block, dtype=np.uint8)
    if _line_offsets is not None:
        offsets = np.frombuffer(_line_offsets(block), dtype=np.int32)
        n = len(offsets) - 1
    else:  # numpy needs a mask the size of the block to find them
        tail = block[-1] != 0x0A
        newlines = np.flatnonzero(raw == 0x0A)
        count = len(newlines)
        n = count + tail
        offsets = np.empty(n + 1, dtype=np.int32)
        offsets[1 : count + 1] = newlines
        offsets[1 : count + 1] += 1
        offsets[0] = 0
        if tail:
            offsets[n] = len(block)
    lines = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(block)]
    )
    # A blank line ("\n", "\r\n", or a last "\r") is at most 2 bytes long: look closer only
    # when there is so short a line.
    lengths = np.diff(offsets)
    if lengths.min() > 2:
        return lines
    firsts = raw[offsets[:-1]]
    blank = (lengths == 1) & ((firsts == 0x0A) | (firsts == 0x0D))
    blank |= (
        (lengths == 2)
        & (firsts == 0x0D)
        & (raw[np.minimum(offsets[:-1] + 1, len(raw) - 1)] == 0x0A)
    )
    if blank.any():
        lines = pc.filter(lines, pa.array(~blank))
    return lines


def _load_line_offsets() -> Callable[[Any], bytes] | None:
    try:
        from monitord.accesslog._nginxscan import line_offsets
    except ImportError:  # not built (no C compiler when monitord was installed): numpy finds them
        return None
    return line_offsets


_line_offsets = _load_line_offsets()
_EMPTY = pa.nulls(0, pa.binary())  # not pa.array: that would import pandas (see prepare_process)


def clean(text: str) -> str:
    """A line as shown in samples and evidence: without its line ending."""
    return text.rstrip("\r\n")


def as_text(lines: pa.Array) -> pa.Array:
    """View binary lines as UTF-8 strings; lines that are not UTF-8 get their bad bytes escaped.

    nginx itself escapes every byte above 126, so raw non-UTF-8 comes only from other writers;
    escaping it nginx-style lets the one unescape path (UTF-8, then GB18030) handle it.
    """
    try:
        return lines.cast(pa.string())
    except (pa.ArrowInvalid, UnicodeDecodeError):
        fixed = []
        for raw in lines.to_pylist():
            try:
                fixed.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                fixed.append("".join(chr(b) if b < 0x80 else f"\\x{b:02X}" for b in raw))
        return pa.array(fixed, pa.string())
