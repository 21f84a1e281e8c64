"""Plain text for people: tables that line up with Chinese text (wide characters count twice),
values cut short for messages, and text every store holds."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from monitord.errors import UsageError
from monitord.redact import one_line
from monitord.types import MAX_LONG_TEXT, TEXT_CONTROLS

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""Characters no store holds: NUL (not in a PostgreSQL text) and lone UTF-16 surrogates (JSON's
"\\ud800" escape or a Java string's half pair, which UTF-8 cannot encode)."""


def storable(text: str) -> str:
    """text with U+FFFD in place of each UNSTORABLE character."""
    return UNSTORABLE.sub("\ufffd", text)


def written_text(
    label: str, text: str, limit: int = MAX_LONG_TEXT, *, one_line_only: bool = False
) -> str:
    """What a person typed (a note, a notification's part, a name), stripped and storable (a
    non-UTF-8 argument's undecodable bytes kept as U+FFFD); UsageError naming `label` when it
    is over `limit` characters or holds a control character (any, for a name kept on one line;
    tabs and line ends may stand in a note). The API checks the same."""
    text = text.strip()
    if len(text) > limit:
        raise UsageError(f"{label}: {len(text):,} characters, at most {limit:,}")
    if one_line_only:
        controlled = any(unicodedata.category(ch) == "Cc" for ch in text)
    else:
        controlled = re.search(f"[{TEXT_CONTROLS}]", text) is not None
    if controlled:
        # An escape sequence would rewrite the terminal of whoever reads it back.
        plain = "a plain name" if one_line_only else "plain text"
        raise UsageError(f"{label}: holds a control character; write {plain}")
    return storable(text)


def shortened(text: str, limit: int) -> str:
    """text, cut to `limit` characters ending in "..." when longer: a value quoted in a message
    must not flood a log or a listing."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def display_width(text: str) -> int:
    """How many terminal columns text takes: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _fit(text: str, width: int) -> str:
    if display_width(text) <= width:
        return text + " " * (width - display_width(text))
    out = ""
    for ch in text:
        if display_width(out + ch) > width - 1:
            break
        out += ch
    return out + "…" + " " * (width - display_width(out) - 1)


_whole_cells = [False]


def show_whole_cells(whole: bool) -> None:
    """Whether format_table shows every cell whole (no cap on a column's width): the command
    line sets it when stdout is not a terminal (a script or a file gets every character) or
    when `--wide` asks for it."""
    _whole_cells[0] = whole


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], max_width: int = 40) -> str:
    """Render rows under headers, each column as wide as its widest cell, capped at max_width
    display cells (unless show_whole_cells said otherwise). The cap is per column: the table is
    not fitted to the terminal's width.

    Each cell is shown on one line, its control characters escaped (redact.one_line): a cell
    holds what a service provider wrote, and a newline in it would forge a row.
    """
    rows = [[one_line(cell) for cell in row] for row in rows]
    cap = 1 << 30 if _whole_cells[0] else max_width
    widths = [
        min(cap, max([display_width(h)] + [display_width(r[i]) for r in rows]))
        for i, h in enumerate(headers)
    ]
    lines = ["  ".join(_fit(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(_fit(cell, w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    return "\n".join(lines)


def _int_or_text(text: str) -> int | str:
    # Python refuses to turn more than 4,300 digits into an int; such a number is kept as its
    # text, so that the one field holding it is reported instead of the whole page failing.
    try:
        return int(text)
    except ValueError:
        return text


def _finite_or_text(text: str) -> float | str:
    # NaN, Infinity and 1e400 cannot be stored as JSON by PostgreSQL; their text is kept instead.
    number = float(text)
    return number if math.isfinite(number) else text


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(data: str | bytes, *, constants: bool = True) -> Any:
    """Parse a JSON document (a catalogue page, a probed answer); numbers no store can hold are
    kept as their text. NaN, Infinity and -Infinity are kept as their text too, or, with
    `constants` false, refused as browsers' JSON.parse refuses them.

    Raises ValueError with a short reason when the data is not JSON monitord can read (nested
    too deeply among them: a reason, never a crash).
    """
    try:
        return json.loads(
            data,
            parse_int=_int_or_text,
            parse_float=_finite_or_text,
            parse_constant=str if constants else _refuse_constant,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
