"""Following log files across restarts and logrotate, never reading a line twice or skipping one.

A cursor remembers, per configured path, the identity of the file it read (device and inode),
how far it got (the byte after the last complete line), and the first bytes of the file, to tell
a truncated-and-rewritten file from the one it read. Each call reads what is new:

- the same file, grown: from the offset to the last complete line (a half-written last line
  waits for the next call);
- the file was renamed away (logrotate's default `create`): the rest of the old file, found by
  its inode among the path's rotated siblings, then the new file from the start;
- the file was copied and truncated (`copytruncate`): the rest of the copy (the sibling whose
  start matches), then the truncated file from the start.

The caller stores the returned cursor in the same transaction as what it made of the lines, so
a crash replays the same lines rather than losing or doubling them.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG

HEAD_BYTES = 128
MAX_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class Cursor:
    """Where reading a path stopped."""

    path: str
    device: int = 0
    inode: int = 0
    offset: int = 0
    head: bytes = b""
    """The file's first bytes as last seen (up to HEAD_BYTES)."""


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from one file, and the cursor after them."""

    source: str
    data: bytes
    cursor: Cursor


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def _read_from(path: Path, offset: int, limit: int = MAX_CHUNK) -> tuple[bytes, int]:
    """Complete lines from offset; returns (data, the offset after the last newline)."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(limit)
    end = data.rfind(b"\n")
    if end < 0:
        if len(data) < limit:
            return b"", offset  # a line still being written: read it whole next time
        # A whole read without a newline is no log line (analysis rejects lines over
        # MAX_LINE): hand it on as one, so that reading moves past it instead of stopping here.
        return data + b"\n", offset + len(data)
    return data[: end + 1], offset + end + 1


def _siblings(path: Path) -> list[Path]:
    """Rotated copies of path (path.1, path-20261129, …), newest first; compressed ones skipped."""
    found = [p for p in path.parent.glob(path.name + "*") if p != path and p.suffix != ".gz"]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _same_start(head: bytes, path: Path) -> bool:
    return bool(head) and _head(path)[: len(head)] == head


def read_new(path: str | Path, cursor: Cursor | None) -> Iterator[Chunk]:
    """Yield what is new in path since cursor, oldest first; the last chunk's cursor is the one
    to store. Yields nothing when the path does not exist or nothing complete was added."""
    file = Path(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        return
    if not S_ISREG(stat.st_mode):
        # A folder fails on open; a named pipe or a device would block the job on its read.
        raise OSError(errno.EINVAL, "not a regular file", str(file))
    current = cursor or Cursor(path=str(file))
    same_file = (stat.st_dev, stat.st_ino) == (current.device, current.inode)
    if cursor is not None and current.offset > 0:
        if same_file and stat.st_size >= current.offset and _same_start(current.head, file):
            pass  # the same file, grown (or not): read on from the offset below
        else:
            # Rotated: finish the file we were reading before starting the new one.
            for old in _siblings(file):
                old_stat = old.stat()
                renamed = (old_stat.st_dev, old_stat.st_ino) == (current.device, current.inode)
                copied = not renamed and _same_start(current.head, old)
                if (renamed or copied) and old_stat.st_size > current.offset:
                    # In reads of MAX_CHUNK (a daemon back from a long stop may find a large
                    # tail); each keeps the old cursor, which is stored only after them all.
                    offset = current.offset
                    while offset < old_stat.st_size:
                        data, offset = _read_from(old, offset)
                        if not data:  # its last line ended with the file
                            with old.open("rb") as handle:
                                handle.seek(offset)
                                data = handle.read() + b"\n"
                            offset = old_stat.st_size
                        yield Chunk(str(old), data, current)
                    break
            current = Cursor(path=str(file))
    offset = current.offset if current.device else 0
    while True:
        data, end = _read_from(file, offset)
        if not data:
            if offset != current.offset or not current.device:
                yield Chunk(str(file), b"", _cursor_for(file, stat, offset))
            return
        offset = end
        yield Chunk(str(file), data, _cursor_for(file, stat, offset))
        if offset >= stat.st_size:
            return  # what was there when reading began is read (a read ends at a newline)


def _cursor_for(file: Path, stat: os.stat_result, offset: int) -> Cursor:
    return Cursor(
        path=str(file), device=stat.st_dev, inode=stat.st_ino, offset=offset, head=_head(file)
    )
