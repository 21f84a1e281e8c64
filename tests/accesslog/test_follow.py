"""Following a log across restarts and logrotate: no line read twice, none skipped."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from monitord.accesslog.follow import Cursor, read_new
from tests.conftest import logged


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


def test_rename_rotation_of_a_file_read_while_empty_reads_the_old_file(log: Path) -> None:
    # A cursor at offset 0 skipped the rotation check: the 5 lines of the old file were lost.
    follower = Follower(log)
    log.write_text("")
    follower.poll()
    write(log, "1", "2", "3", "4", "5")
    log.rename(log.with_name("access.log.1"))
    write(log, "6", "7", "8")
    follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5", "6", "7", "8"]


def test_copytruncate_of_a_file_read_while_empty_reads_the_copy(log: Path) -> None:
    follower = Follower(log)
    log.write_text("")
    an_hour_ago = log.stat().st_mtime_ns - 3600 * 10**9
    os.utime(log, ns=(an_hour_ago, an_hour_ago))  # created empty at the last rotation
    follower.poll()
    write(log, "1", "2", "3", "4", "5")
    shutil.copyfile(log, log.with_name("access.log.1"))
    os.truncate(log, 0)
    write(log, "6", "7", "8")
    follower.poll()
    follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5", "6", "7", "8"]


def test_a_rotated_file_compressed_at_once_is_read_through_gzip(log: Path) -> None:
    # logrotate's `compress` without `delaycompress`: the old file is only there as .1.gz.
    follower = Follower(log)
    write(log, "1", "2", "3", "4", "5")
    follower.poll()
    write(log, "6", "7", "8", "9")
    with gzip.open(log.with_name("access.log.1.gz"), "wb") as packed:
        packed.write(log.read_bytes())
    log.unlink()
    write(log, "10")
    follower.poll()
    assert follower.lines == [str(n) for n in range(1, 11)]


def test_a_symlink_pointed_at_the_next_file_finishes_the_one_it_pointed_at(
    tmp_path: Path,
) -> None:
    current, day1, day2 = tmp_path / "current.log", tmp_path / "day1.log", tmp_path / "day2.log"
    write(day1, "1", "2")
    current.symlink_to(day1)
    follower = Follower(current)
    follower.poll()
    write(day1, "3", "4")
    write(day2, "5")
    current.unlink()
    current.symlink_to(day2)
    follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5"]


def test_a_symlink_pointed_at_a_file_in_another_folder_finishes_the_one_it_pointed_at(
    tmp_path: Path,
) -> None:
    # cronolog-style dated folders: the link moved from d1/access.log to d2/access.log. Only
    # the link's folder and the new target's were searched: the rest of d1/access.log, still
    # there, was called lost.
    current, day1, day2 = tmp_path / "current.log", tmp_path / "d1", tmp_path / "d2"
    day1.mkdir()
    day2.mkdir()
    write(day1 / "access.log", "1", "2")
    current.symlink_to("d1/access.log")
    follower = Follower(current)
    follower.poll()
    write(day1 / "access.log", "3", "4")
    write(day2 / "access.log", "5")
    current.unlink()
    current.symlink_to("d2/access.log")
    with logged("WARNING") as warnings:
        follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5"] and warnings == []


def test_a_rotated_file_that_is_gone_is_a_warning_naming_the_lost_bytes(log: Path) -> None:
    follower = Follower(log)
    write(log, "1", "2")
    follower.poll()
    write(log, "3")
    log.unlink()  # rotated and removed before the next read
    write(log, "4")
    with logged("WARNING") as warnings:
        follower.poll()
    assert follower.lines == ["1", "2", "4"]
    assert warnings == [
        f"access log {log}: the file read up to byte 4 was rotated away and is not found (not "
        "beside it, plain or .gz): any lines written to it after that byte are lost\n"
    ]


def _age(path: Path, seconds: int) -> None:
    """Set path's modification time `seconds` back, as if written then."""
    then = path.stat().st_mtime_ns - seconds * 10**9
    os.utime(path, ns=(then, then))


def test_two_daily_rotations_between_reads_read_the_day_in_between(log: Path) -> None:
    # dateext, compress, delaycompress over two nights while the daemon was stopped: the file
    # of the day in between, never at the path when a read happened, was skipped whole.
    follower = Follower(log)
    write(log, "1", "2")
    follower.poll()
    write(log, "3")
    first, second = log.with_name("access.log-20261205"), log.with_name("access.log-20261206")
    log.rename(first)
    _age(first, 7200)
    write(log, "4", "5")
    log.rename(second)
    _age(second, 3600)
    with first.open("rb") as plain, gzip.open(f"{first}.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    os.utime(f"{first}.gz", ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns))
    first.unlink()  # gzip keeps the time of the file it compressed
    write(log, "6")
    follower.poll()
    assert follower.lines == ["1", "2", "3", "4", "5", "6"]


def test_two_copytruncates_between_reads_read_the_newer_copy_too(log: Path) -> None:
    follower = Follower(log)
    write(log, "first line of the day", "2")
    follower.poll()
    write(log, "3")
    shutil.copyfile(log, log.with_name("access.log.1"))
    os.truncate(log, 0)
    write(log, "4")
    log.with_name("access.log.1").rename(log.with_name("access.log.2"))
    _age(log.with_name("access.log.2"), 3600)
    shutil.copyfile(log, log.with_name("access.log.1"))
    os.truncate(log, 0)
    write(log, "5")
    follower.poll()
    assert follower.lines == ["first line of the day", "2", "3", "4", "5"]


def test_late_lines_in_the_old_file_do_not_make_it_read_again(log: Path) -> None:
    # logrotate `create`: a pass saw the new file empty; the server, not yet told to reopen its
    # log, wrote on to the renamed one. That file was taken for a copy of the empty one and
    # read again from its first byte: every line of it counted twice.
    follower = Follower(log)
    write(log, *(f"old-{n}" for n in range(100)))
    follower.poll()
    log.rename(log.with_name("access.log.1"))
    log.write_text("")
    _age(log, 60)
    follower.poll()
    write(log.with_name("access.log.1"), "late-1", "late-2")
    write(log, "new-1", "new-2")
    follower.poll()
    follower.poll()
    assert follower.lines == [*(f"old-{n}" for n in range(100)), "new-1", "new-2"]
