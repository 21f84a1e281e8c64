"""Files a person names: reading one (a --file, the config) without reading past a limit, and
telling whether one could be written, making nothing."""

from __future__ import annotations

import os
import tempfile
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


def write_problem(path: Path) -> str | None:
    """Why this user could not write the file at path (making it and its folders if missing),
    or None; nothing is made. Raises OSError when a folder on the way cannot be searched."""
    if path.is_dir():
        return "cannot write it (it is a folder)"
    if path.exists():
        return None if os.access(path, os.W_OK) else "cannot write it (permission denied)"
    if path.is_symlink():
        return _dangling_link_problem(path)
    link = missing_link(path.parent)
    if link is not None:
        return f"cannot make its folder ({link} is {missing_target(link)})"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot make its folder ({folder} is a file)"
    return _make_problem(folder)


def _dangling_link_problem(link: Path) -> str | None:
    """Why no file can be made through `link`, a symbolic link whose target does not exist, or
    None. Opening it makes the target, but never the target's folder: the link's own folder is
    what the daemon makes."""
    target = Path(os.path.realpath(link))
    if target.is_symlink():  # realpath stops where the links go round in a circle
        return "cannot write it (it is a symbolic link that leads back to itself)"
    if not target.parent.exists():
        return (
            "cannot write it (it is a symbolic link to a file in a folder that does not "
            f"exist: {os.readlink(link)})"
        )
    if not target.parent.is_dir():
        return f"cannot write it (it is a symbolic link into {target.parent}, which is a file)"
    return _make_problem(target.parent)


def _make_problem(folder: Path) -> str | None:
    """Why no file can be made in folder, or None. A file is made and dropped rather than
    os.access asked: root passes os.access on /proc, where no file can be made. On Linux the
    file has no name (O_TMPFILE), so nothing ever appears in the folder."""
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        return f"cannot write in {folder} ({(exc.strerror or str(exc)).lower()})"
    return None


def missing_link(folder: Path) -> Path | None:
    """The symbolic link on the way to `folder` whose target does not exist (a mount not there),
    or None: no folder can be made through it."""
    while not folder.exists():
        if folder.is_symlink():
            return folder
        folder = folder.parent
    return None


def missing_target(link: Path) -> str:
    """What the dangling symbolic link at `link` is, for a message."""
    return f"a symbolic link to a folder that does not exist ({os.readlink(link)})"
