"""The text of an export a person saved: UTF-8, or what Excel writes on a Chinese Windows."""

from __future__ import annotations

from monitord.errors import UsageError

UTF8_THREE_BYTES = "\u0800"
"""The first character UTF-8 writes in three bytes. GB18030's two-byte characters often read as
valid two-byte UTF-8 (投 is CD B6, U+0376), so UTF-8 text before a bad byte proves nothing,
unless it holds a character of three bytes or more, as every Chinese character is."""


def exported_text(data: bytes, name: str) -> str:
    """The text of an exported file: UTF-8 (a byte order mark is allowed), else GB18030 — the
    encoding Excel's plain "CSV" uses on a Chinese Windows, which a UTF-8 reading refuses.

    A file that is not UTF-8 throughout is a UTF-8 file with a broken line when the text before
    its first bad byte holds a character UTF-8 writes in three bytes or more (any Chinese
    character): reading it as GB18030 would turn that text into other characters without an
    error. Otherwise it is read as GB18030. Raises UsageError naming the file and the line.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = exc.object[: exc.start]  # the codec's object: after a byte order mark
    line = good.count(b"\n") + 1
    before = good.decode("utf-8")
    if any(character >= UTF8_THREE_BYTES for character in before):
        raise UsageError(
            f"{name}: line {line}: not UTF-8 text, though the text before it is UTF-8 Chinese "
            "(save it as CSV UTF-8)"
        )
    try:
        return data.decode("gb18030")
    except UnicodeDecodeError:
        raise UsageError(
            f"{name}: line {line}: neither UTF-8 nor GB18030 text (save it as CSV UTF-8)"
        ) from None
