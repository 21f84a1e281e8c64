"""Following a log across restarts and logrotate: no line read twice, none skipped."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from monitord.accesslog.follow import Cursor, read_new


class Follower:
    """Reads a path the way the daemon's job does: all that is new, then stores the cursor."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cursor: Cursor | None = None
        self.lines: list[str] = []

    def poll(self) -> None:
        for chunk in read_new(self.path, self.cursor):
            self.lines += chunk.data.decode().splitlines()
            self.cursor = chunk.cursor


def write(path: Path, *lines: str, partial: str = "") -> None:
    with path.open("a") as handle:
        handle.write("".join(f"{line}\n" for line in lines) + partial)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "access.log"


def test_growing_file_and_a_half_written_line(log: Path) -> None:
    follower = Follower(log)
    follower.poll()  # no file yet: nothing, no error
    write(log, "1", "2", partial="3-half")
    follower.poll()
    assert follower.lines == ["1", "2"]
    write(log, "", "4")  # completes line 3
    follower.poll()
    follower.poll()
    assert follower.lines == ["1", "2", "3-half", "4"]


def test_a_restart_resumes_from_the_stored_cursor(log: Path) -> None:
    first = Follower(log)
    write(log, "a", "b")
    first.poll()
    write(log, "c")
    second = Follower(log)  # a new process with the stored cursor
    second.cursor = first.cursor
    second.poll()
    assert first.lines + second.lines == ["a", "b", "c"]


def test_rename_rotation_reads_the_rest_of_the_old_file_then_the_new(log: Path) -> None:
    follower = Follower(log)
    write(log, "1", "2")
    follower.poll()
    write(log, "3")  # written after our last read, before logrotate renamed the file
    log.rename(log.with_name("access.log.1"))
    write(log, "4", "5")
    follower.poll()
    write(log, "6")
    follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5", "6"]


def test_a_large_tail_of_the_rotated_file_is_read_in_pieces(log: Path) -> None:
    # A daemon back from a long stop finds much of the old file unread: read in reads of
    # MAX_CHUNK, not at once, and every line still once.
    from monitord.accesslog.follow import MAX_CHUNK

    follower = Follower(log)
    write(log, "first")
    follower.poll()
    many = [f"{i:099d}" for i in range(MAX_CHUNK // 100 + 500)]
    write(log, *many, partial="last-without-newline")
    log.rename(log.with_name("access.log.1"))
    write(log, "new")
    sizes = [len(c.data) for c in read_new(log, follower.cursor)]
    follower.poll()
    assert follower.lines == ["first", *many, "last-without-newline", "new"]
    assert len(sizes) >= 3 and max(sizes) <= MAX_CHUNK + 1


def test_copytruncate_reads_the_rest_from_the_copy(log: Path) -> None:
    follower = Follower(log)
    write(log, "first line of the day", "2")
    follower.poll()
    write(log, "3")
    shutil.copyfile(log, log.with_name("access.log.1"))
    os.truncate(log, 0)
    write(log, "4")
    follower.poll()
    assert follower.lines == ["first line of the day", "2", "3", "4"]


def test_truncated_and_regrown_past_the_old_offset_is_still_seen_as_new(log: Path) -> None:
    follower = Follower(log)
    write(log, "old-1", "old-2")
    follower.poll()
    shutil.copyfile(log, log.with_name("access.log.1"))
    os.truncate(log, 0)
    write(log, "new-1 is a longer line", "new-2 is a longer line too")
    follower.poll()
    assert follower.lines == [
        "old-1",
        "old-2",
        "new-1 is a longer line",
        "new-2 is a longer line too",
    ]


def test_a_line_longer_than_a_read_does_not_stop_reading(log: Path) -> None:
    # Junk of more than one read (MAX_CHUNK) without a newline: reading moves past it and on
    # to the lines after it, instead of waiting for its end for ever.
    from monitord.accesslog.follow import MAX_CHUNK

    write(log, "a")
    with log.open("ab") as handle:
        handle.write(b"x" * (MAX_CHUNK + 10) + b"\n")
    write(log, "b", "c")
    seen: list[bytes] = []
    cursor = None
    for chunk in read_new(log, None):
        seen += chunk.data.splitlines()
        cursor = chunk.cursor
    assert cursor is not None and cursor.offset == log.stat().st_size
    assert seen[0] == b"a" and seen[-2:] == [b"b", b"c"]
    assert sum(len(line) for line in seen[1:-2]) == MAX_CHUNK + 10
