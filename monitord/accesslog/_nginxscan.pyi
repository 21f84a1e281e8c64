"""Types of the C scan (`_nginxscan.c`); see its `scan` docstring."""

from typing import Any

Buffer = Any  # anything with the buffer protocol (collections.abc.Buffer is Python 3.12+)

def scan(
    data: Buffer,
    offsets: Buffer,
    ok: Buffer,
    ts: Buffer,
    status: Buffer,
    nbytes: Buffer,
    ms: Buffer,
    codes: Buffer,
    counts: Buffer,
    /,
) -> tuple[int, bytes, bytes]: ...
def line_offsets(data: Buffer, /) -> bytes: ...
