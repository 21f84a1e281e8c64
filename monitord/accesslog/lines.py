"""Splitting a block of bytes into lines, in Arrow's multi-threaded CSV tokenizer.

The CSV reader with a delimiter that never occurs in a log line, no quoting and no escaping is
simply the fastest line splitter at hand (about 2 M lines/s on two cores, against ~0.3 M for
`bytes.split` plus `pa.array`). A line that does contain the delimiter byte (binary garbage) is
reported through the invalid-row handler and comes back as a rejected line.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.csv as pcsv

_DELIMITER = "\x01"  # nginx escapes control bytes and JSON forbids them raw: never in a good line


@dataclass
class Split:
    """The lines of a block, and the lines the tokenizer could not take."""

    lines: pa.Array
    garbage: list[str] = field(default_factory=list)


def split_lines(block: bytes) -> Split:
    """Split complete lines (the block ends at a newline or at the end of input) into an array."""
    garbage: list[str] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        garbage.append(row.text or "")
        return "skip"

    if not block.strip():
        return Split(pa.array([], pa.binary()))
    table = pcsv.read_csv(
        io.BytesIO(block),
        read_options=pcsv.ReadOptions(column_names=["line"], block_size=1 << 22),
        parse_options=pcsv.ParseOptions(
            delimiter=_DELIMITER,
            quote_char=False,
            escape_char=False,
            invalid_row_handler=on_invalid,
        ),
        convert_options=pcsv.ConvertOptions(
            column_types={"line": pa.binary()}, strings_can_be_null=False
        ),
    )
    return Split(table.column("line").combine_chunks(), garbage)


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
