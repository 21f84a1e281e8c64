"""Where lines come from: files (plain or gzip), directories of them, and standard input.

Every source is read as binary blocks that end at a line boundary, so a reader never sees half a
line. A damaged gzip stream ends its source with a message instead of an exception: the lines
read before the damage count, and the damage is reported like a rejected line.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

BLOCK_SIZE = 2 << 20  # ~9,000 nginx lines: large enough to amortise, small enough for RSS
GZIP_MAGIC = b"\x1f\x8b"

InputItem = str | Path | BinaryIO | io.TextIOBase
"""A path (`-` for standard input), a directory, or an open stream (binary or text)."""


@dataclass
class Block:
    """Complete lines from one source, and a message when the source ended damaged."""

    source: str
    data: bytes
    damage: str | None = None


def _rotation_key(path: Path) -> tuple[int, float, str]:
    # access.log.3.gz is older than access.log.1, which is older than access.log.
    match = re.search(r"\.(\d+)(?:\.gz)?$", path.name)
    return (-int(match[1]) if match else 0, path.stat().st_mtime, path.name)


def expand(items: Iterable[InputItem]) -> Iterator[tuple[str, BinaryIO]]:
    """Open every input as a binary stream named for reports, oldest rotated file first."""
    for item in items:
        if isinstance(item, io.TextIOBase):
            yield getattr(item, "name", "<stream>"), item.buffer  # type: ignore[attr-defined]
        elif not isinstance(item, str | Path):
            yield getattr(item, "name", "<stream>"), item
        elif str(item) == "-":
            yield "<stdin>", sys.stdin.buffer
        elif Path(item).is_dir():
            files = [p for p in Path(item).rglob("*") if p.is_file() and not p.name.startswith(".")]
            for path in sorted(files, key=lambda p: (str(p.parent), *_rotation_key(p))):
                yield str(path), _open(path)
        else:
            yield str(item), _open(Path(item))


def _open(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def _read(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes; in small steps, so that damage loses only the last step's bytes."""
    read1 = getattr(stream, "read1", None)
    if read1 is None:
        return stream.read(size)
    parts: list[bytes] = []
    got = 0
    while got < size:
        try:
            part = read1(min(size - got, 1 << 16))
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            if parts:
                raise _Damaged(b"".join(parts), exc) from exc
            raise
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _Damaged(Exception):
    def __init__(self, data: bytes, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.data = data
        self.cause = cause


def blocks(name: str, stream: BinaryIO, size: int = BLOCK_SIZE) -> Iterator[Block]:
    """Read a stream as blocks of complete lines; the last line may lack its newline."""
    carry = b""
    damage: str | None = None
    while True:
        try:
            chunk = _read(stream, size)
        except _Damaged as exc:
            damage = f"{name}: damaged or truncated compressed data ({exc.cause})"
            chunk = exc.data
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            damage = f"{name}: damaged or truncated compressed data ({exc})"
            chunk = b""
        if not chunk:
            break
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut >= 0:
            carry = data[cut + 1 :]
            yield Block(name, data[: cut + 1])
        else:
            carry = data
        if damage:
            break
    if damage:
        # The partial last line of a truncated stream is not trustworthy: report, do not parse.
        yield Block(
            name, b"", damage + (f"; partial line dropped: {carry[:200]!r}" if carry else "")
        )
    elif carry:
        yield Block(name, carry + b"\n")


def detect(data: bytes) -> str:
    """Guess the format of a block: `json` when its first line is an object, else `nginx`."""
    for line in data.split(b"\n", 20)[:20]:
        stripped = line.strip()
        if stripped:
            return "json" if stripped.startswith(b"{") else "nginx"
    return "nginx"
