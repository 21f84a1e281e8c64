"""The text of an export a person saved: UTF-8, or what Excel writes on a Chinese Windows."""

from __future__ import annotations

from monitord.errors import UsageError


def exported_text(data: bytes, name: str) -> str:
    """The text of an exported file: UTF-8 (a byte order mark is allowed), else GB18030 — the
    encoding Excel's plain "CSV" uses on a Chinese Windows, which a UTF-8 reading refuses.

    GB18030 is tried only when everything before the first byte UTF-8 refuses is ASCII: a file
    whose earlier lines are UTF-8 Chinese is a UTF-8 file with a broken line, and reading it
    as GB18030 would turn those lines into other characters without an error. Raises
    UsageError naming the file and the line.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        first_bad = exc.start
    line = data[:first_bad].count(b"\n") + 1
    if not data[:first_bad].isascii():
        raise UsageError(f"{name}: line {line}: not UTF-8 text, as the lines before it are")
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise UsageError(
            f"{name}: line {line}: neither UTF-8 nor GB18030 text (save it as CSV UTF-8)"
        ) from None
