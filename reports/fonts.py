"""The CJK font the report is drawn in: the configured one, else the first usable system font.

reportlab embeds TrueType outlines only: Noto CJK's .ttc and .otf files (PostScript outlines)
fail with "postscript outlines are not supported", so they are skipped when searching, and named
as the reason when configured. Without any usable font the report is refused with one line:
drawing Chinese in a font without it gives boxes, and a silent fallback hides that.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

from monitord.errors import ReportError

STAND_INS = {"\u2212": "-", "\u2011": "-", "\u2010": "-", "\u00a0": " ", "\u2009": " "}
"""Signs a font may lack, and the plain form that means the same (minus, hyphens, spaces)."""

SYSTEM_FONTS: tuple[str, ...] = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansSC-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansCJKsc-Regular.ttf",
    "/usr/share/fonts/truetype/noto-cjk/NotoSansCJKsc-Regular.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
)
"""Where Debian and Ubuntu put CJK fonts, the preferred first (fonts-wqy-zenhei)."""

NO_FONT = (
    "no CJK font reportlab can embed: install fonts-wqy-zenhei or set report.font = "
    '"/path/to/a-cjk-font.ttf" in the config'
)
PROBE_TEXT = "苏州市数据局季度报告第页共"
"""Characters every page carries: a font without them is no Chinese font."""


@dataclass(frozen=True)
class CjkFont:
    """A font registered with reportlab under `name`, and the characters it can draw."""

    path: Path
    name: str
    codepoints: frozenset[int]

    def can_draw(self, char: str) -> bool:
        """Whether the font has a glyph for `char` that reportlab can lay out left to right.

        Right-to-left scripts (Arabic, Hebrew) would be drawn with their letters unjoined and in
        reverse order: reportlab does no shaping. They count as not drawable.
        """
        code = ord(char)
        if char in "\n\t ":
            return True
        if unicodedata.bidirectional(char) in ("R", "AL", "RLE", "RLO", "RLI"):
            return False
        return code in self.codepoints

    def drawable(self, text: str) -> str:
        """`text` with every character the font cannot draw written as its code point [U+0F56],
        so a name in any script shows as something a reader can look up, never as boxes."""
        if all(self.can_draw(c) for c in text):
            return text
        return "".join(self._stand_in(c) for c in text)

    def _stand_in(self, char: str) -> str:
        if self.can_draw(char):
            return char
        near = STAND_INS.get(char)
        if near is not None and all(self.can_draw(c) for c in near):
            return near  # the same sign in a form the font has (a formula's minus)
        return f"[U+{ord(char):04X}]"

    def first_drawable(self, *choices: str) -> str:
        """The first of `choices` the font draws whole (e.g. ✓ or else √); the last otherwise."""
        for choice in choices:
            if all(self.can_draw(c) for c in choice):
                return choice
        return choices[-1]


def _load(path: Path) -> CjkFont:
    """Register the font at `path` with reportlab; raise ReportError saying why it cannot be."""
    if not path.is_file():
        raise ReportError(f"report.font {str(path)!r}: no such file")
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    name = f"MonitordCJK-{digest}"
    try:
        font = TTFont(name, str(path), subfontIndex=0)
    except (TTFError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ReportError(
            f"report.font {str(path)!r}: reportlab cannot embed it: {reason}"
        ) from None
    codepoints = frozenset(font.face.charToGlyph)
    missing = [c for c in PROBE_TEXT if ord(c) not in codepoints]
    if missing:
        raise ReportError(
            f"report.font {str(path)!r}: has no Chinese glyphs (missing {''.join(missing)})"
        )
    pdfmetrics.registerFont(font)
    return CjkFont(path=path, name=name, codepoints=codepoints)


@lru_cache(maxsize=8)
def _load_cached(path: str) -> CjkFont:
    return _load(Path(path))


def find_font(configured: str | None, candidates: Sequence[str] = SYSTEM_FONTS) -> CjkFont:
    """The configured font (an error when unusable: never a silent fallback), else the first
    usable font of `candidates`; ReportError (NO_FONT) when none is usable."""
    if configured is not None:
        return _load_cached(str(Path(configured).expanduser()))
    for candidate in candidates:
        if not Path(candidate).is_file():
            continue
        try:
            return _load_cached(candidate)
        except ReportError:
            continue  # e.g. Noto CJK's .ttc: PostScript outlines reportlab cannot embed
    raise ReportError(NO_FONT)
