"""monitord.files: a file a person names is read no further than its limit."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from monitord.errors import InputTooLarge
from monitord.files import read_bounded


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b"x" * 1024)
    assert read_bounded(path, 1024, "the limit") == b"x" * 1024


def test_a_regular_file_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    with path.open("wb") as file:
        file.truncate((1 << 30) + 1)  # sparse: 1 GiB that was never written
    with pytest.raises(InputTooLarge) as refused:
        read_bounded(path, 1 << 20, "the catalogue file's limit")
    assert str(refused.value) == (
        f"{path}: larger than the catalogue file's limit (1 MiB): not read"
    )


def test_a_fifo_that_never_ends_is_read_up_to_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    stop = threading.Event()

    def endless_writer() -> None:  # as /dev/zero: more and more
        fifo = os.open(path, os.O_WRONLY)  # unbuffered: nothing left to flush at close
        try:
            while not stop.is_set():
                os.write(fifo, b"\0" * 65536)
        except BrokenPipeError:
            pass  # the reader stopped at its limit
        finally:
            os.close(fifo)

    writer = threading.Thread(target=endless_writer)
    writer.start()
    try:
        with pytest.raises(InputTooLarge):
            read_bounded(path, 1 << 20, "the limit")
    finally:
        stop.set()
        writer.join(timeout=10)
    assert not writer.is_alive()
