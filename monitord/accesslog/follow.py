"""Following log files across restarts and logrotate, never reading a line twice or skipping one.

A cursor remembers, per configured path, the identity of the file it read (device and inode),
how far it got (the byte after the last complete line), and the first bytes of the file, to tell
a truncated-and-rewritten file from the one it read. Each call reads what is new:

- the same file, grown: from the offset to the last complete line (a half-written last line
  waits for the next call);
- the file was renamed away (logrotate's default `create`): the rest of the old file, found by
  its inode among the path's rotated siblings, then the new file from the start;
- the file was copied and truncated (`copytruncate`): the rest of the copy (the sibling whose
  start matches), then the truncated file from the start;
- the rotated file was compressed (logrotate's `compress` without `delaycompress`): the rest
  of the `.gz` sibling whose start matches, read through gzip;
- the path is a symlink pointed at another file: the rest of the file it pointed at, found by
  its inode in the folder of the link, of its new target or of its old one (the cursor keeps
  the path the link resolved to: cronolog-style dated folders, `d1/access.log` then
  `d2/access.log`).

After the rest of the file read before come the rotated siblings written after it, oldest
first: the files of rotations that happened between two reads (the daemon was stopped over
two nights of logrotate), each read whole.

A file read while empty has no first bytes to recognise: a rotated copy that was not beside it
when the cursor was taken, written since, is its copy (a sibling that was there, written to
late by a server that had not reopened its log, is not). Lines written to a file after the
cursor left it for the next one are not read. When the file read before is not found, a
warning says from which byte its lines are lost.

The caller stores the returned cursor in the same transaction as what it made of the lines, so
a crash replays the same lines rather than losing or doubling them.
"""

from __future__ import annotations

import errno
import glob
import gzip
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

from loguru import logger

from monitord.accesslog.sources import GZIP_MAGIC

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
    mtime_ns: int = 0
    """The file's modification time as last seen: a rotated copy written after it holds lines
    not read yet (0: not known)."""
    siblings: frozenset[tuple[int, int]] = frozenset()
    """The (device, inode) of the rotated siblings beside the file when it was read while
    empty (offset 0): none of them is its copy."""
    target: str = ""
    """The path resolved to the file (a symlink's target) when it was read: a link pointed at a
    file in another folder leaves the rest of this one to read ("": not known)."""


@dataclass(frozen=True)
class Chunk:
    """Complete lines read from one file, and the cursor after them."""

    source: str
    data: bytes
    cursor: Cursor
    lost_from: int | None = None
    """Set on a chunk without data when the file read before was rotated away and is not
    found: the byte of it from which lines are lost."""


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


def _siblings(path: Path, compressed: bool = False) -> list[Path]:
    """Rotated copies of path (path.1, path-20261129, …), newest first: the plain ones, or with
    `compressed` the gzipped ones (path.1.gz)."""
    found = [
        p
        for p in path.parent.glob(glob.escape(path.name) + "*")
        if p != path and (p.suffix == ".gz") == compressed and p.is_file()
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _same_start(head: bytes, path: Path) -> bool:
    return bool(head) and _head(path)[: len(head)] == head


def _same_start_compressed(head: bytes, path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as handle:
            return bool(head) and handle.read(len(head)) == head
    except (OSError, EOFError, zlib.error):
        return False  # not gzip, or damaged: not the file we read


def _written_after(path: Path, cursor: Cursor) -> bool:
    """Whether path was written after the cursor's file was last seen (an empty file leaves
    no first bytes to recognise its copy by; gzip keeps the time of the file it compressed)."""
    return bool(cursor.mtime_ns) and path.stat().st_mtime_ns > cursor.mtime_ns


def _identity(path: Path) -> tuple[int, int]:
    found = path.stat()
    return found.st_dev, found.st_ino


def _is_the_file(path: Path, cursor: Cursor) -> bool:
    return _identity(path) == (cursor.device, cursor.inode)


def _all_siblings(file: Path) -> list[Path]:
    """Every rotated copy of file, plain and gzipped."""
    return [*_siblings(file), *_siblings(file, compressed=True)]


def _copied_since(path: Path, cursor: Cursor) -> bool:
    """Whether path is the copy of a file read while empty: written after the cursor was taken,
    and not one of the siblings already there (one of them written to late by a server that
    had not reopened its log yet holds lines of an older file, not of this one)."""
    return _written_after(path, cursor) and _identity(path) not in cursor.siblings


def _rotated_away(file: Path, stat: os.stat_result, cursor: Cursor) -> bool:
    """Whether the file the cursor read is no longer the one at `file`."""
    if (stat.st_dev, stat.st_ino) != (cursor.device, cursor.inode) or stat.st_size < cursor.offset:
        return True
    if cursor.offset:
        return not _same_start(cursor.head, file)
    # Nothing was read from it (it was empty): copied and truncated if a copy came since.
    return any(_copied_since(p, cursor) for p in _all_siblings(file))


def _find_rotated(file: Path, cursor: Cursor) -> Path | None:
    """The file the cursor read, now under another name: a rotated sibling with its inode or
    its first bytes (plain or gzipped), or a file with its inode in the folder of the path, of
    the file the path links to, or of the file it linked to when read (a symlink pointed
    elsewhere)."""
    for old in _siblings(file):
        if _is_the_file(old, cursor):
            return old
    for old in _siblings(file):
        if cursor.offset and _same_start(cursor.head, old):
            return old  # copied, then truncated
        if not cursor.offset and _copied_since(old, cursor):
            return old
    # Not the path itself: a file created after the old one was removed may get its inode.
    itself = {file, file.resolve()}
    folders = [file.parent, file.resolve().parent]
    if cursor.target:
        folders.append(Path(cursor.target).parent)
    for folder in dict.fromkeys(folders):
        if not folder.is_dir():
            continue  # the old target's folder was removed with it
        for old in folder.iterdir():
            if old not in itself and old.is_file() and _is_the_file(old, cursor):
                return old
    for old in _siblings(file, compressed=True):
        if cursor.offset and _same_start_compressed(cursor.head, old):
            return old
        if not cursor.offset and _copied_since(old, cursor):
            return old
    return None


def _rotated_after(file: Path, old: Path, stat: os.stat_result) -> list[Path]:
    """The rotated siblings of file written after `old`, oldest first: the files of rotations
    between two reads, which nobody read (not the file at the path itself, `stat`)."""
    since = old.stat().st_mtime_ns
    later = [
        p
        for p in _all_siblings(file)
        if p != old and p.stat().st_mtime_ns > since and _identity(p) != (stat.st_dev, stat.st_ino)
    ]
    return sorted(later, key=lambda p: p.stat().st_mtime_ns)


def _open_any(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]


def _rest(old: Path, offset: int) -> Iterator[bytes]:
    """The complete lines of `old` (plain or gzipped) after `offset`, in reads of MAX_CHUNK; its
    last line is taken without its newline (the file is no longer written)."""
    carry = b""
    try:
        with _open_any(old) as handle:
            handle.seek(offset)
            while block := handle.read(MAX_CHUNK - len(carry)):
                data = carry + block
                end = data.rfind(b"\n") + 1
                if end:
                    carry = data[end:]
                    yield data[:end]
                elif len(data) < MAX_CHUNK:
                    carry = data  # a long line: read on
                else:  # a whole read without a newline: on past it (see `_read_from`)
                    carry = b""
                    yield data + b"\n"
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        logger.warning("rotated access log {}: damaged ({}); the lines after it are lost", old, exc)
    if carry:
        yield carry + b"\n"


def read_new(path: str | Path, cursor: Cursor | None) -> Iterator[Chunk]:
    """Yield what is new in path since cursor, oldest first; the last chunk's cursor is the one
    to store. Yields nothing when the path does not exist or nothing complete was added.

    When the file read before was rotated away and is not found, a warning says from which byte
    its lines are lost."""
    file = Path(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        return
    if not S_ISREG(stat.st_mode):
        # A folder fails on open; a named pipe or a device would block the job on its read.
        raise OSError(errno.EINVAL, "not a regular file", str(file))
    current = cursor or Cursor(path=str(file))
    # A cursor at offset 0 read an empty file: rotated, it holds lines all the same.
    if cursor is not None and cursor.device and _rotated_away(file, stat, cursor):
        # Finish the file we were reading before starting the new one. Each chunk keeps the
        # old cursor, which is stored only after them all.
        old = _find_rotated(file, cursor)
        if old is None:
            logger.warning(
                "access log {}: the file read up to byte {} was rotated away and is not found "
                "(not beside it, plain or .gz): any lines written to it after that byte are lost",
                file,
                cursor.offset,
            )
            yield Chunk(str(file), b"", cursor, lost_from=cursor.offset)
        else:
            for data in _rest(old, cursor.offset):
                yield Chunk(str(old), data, cursor)
            for between in _rotated_after(file, old, stat):
                for data in _rest(between, 0):
                    yield Chunk(str(between), data, cursor)
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
    # Only a file read while empty needs its siblings known (see `_copied_since`).
    siblings = frozenset(_identity(p) for p in _all_siblings(file)) if not offset else frozenset()
    return Cursor(
        path=str(file),
        device=stat.st_dev,
        inode=stat.st_ino,
        offset=offset,
        head=_head(file),
        mtime_ns=stat.st_mtime_ns,
        siblings=siblings,
        target=str(file.resolve()),
    )
