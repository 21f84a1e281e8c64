"""Reading a file a person names (a --file, the config) without reading past a limit."""

from __future__ import annotations

from pathlib import Path

from monitord.errors import InputTooLarge


def read_bounded(path: Path, max_bytes: int, limit: str) -> bytes:
    """The whole of the file at path, reading no more than max_bytes + 1 bytes of it.

    A regular file over max_bytes is refused before it is read; a FIFO or a device, which tells
    no size beforehand (/dev/zero has no end), is read up to the limit and refused past it.
    `limit` names what sets max_bytes, for the message.
    Raises InputTooLarge naming path and limit, and OSError as open and read do.
    """
    too_large = InputTooLarge(
        f"{path}: larger than {limit} ({max_bytes / (1 << 20):g} MiB): not read"
    )
    with path.open("rb") as file:
        if path.is_file() and path.stat().st_size > max_bytes:
            raise too_large
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise too_large
    return data
