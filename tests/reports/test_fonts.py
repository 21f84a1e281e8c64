"""The report's CJK font: the configured one or a usable system font, else one clear line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

import reports
from monitord.config import parse_config
from monitord.errors import ReportError
from monitord.store import Store
from monitord.timeutil import UTC
from reports.fonts import NO_FONT, find_font

WQY = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
NOTO_CFF = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def needs(*paths: str) -> None:
    for path in paths:
        if not Path(path).is_file():
            pytest.skip(f"{path} is not installed (fonts-wqy-zenhei, fonts-noto-cjk, fonts-dejavu)")


def test_the_search_skips_fonts_reportlab_cannot_embed_and_takes_the_next() -> None:
    needs(WQY, NOTO_CFF)
    font = find_font(None, candidates=["/nonexistent/font.ttf", NOTO_CFF, WQY])
    assert str(font.path) == WQY
    assert font.can_draw("第") and not font.can_draw("😀")


def test_no_usable_font_is_one_line_saying_what_to_install_or_set() -> None:
    needs(NOTO_CFF, DEJAVU)
    with pytest.raises(ReportError) as raised:
        find_font(None, candidates=["/nonexistent/font.ttf", NOTO_CFF, DEJAVU])
    assert str(raised.value) == NO_FONT
    assert "install fonts-wqy-zenhei or set report.font" in NO_FONT


def test_a_configured_font_gone_since_the_config_was_loaded_is_one_line() -> None:
    # A missing file is refused at load (tests/config); one removed while the daemon ran is
    # still named when the quarter's report is drawn.
    with pytest.raises(ReportError) as raised:
        find_font("/nonexistent/cjk.ttf")
    assert str(raised.value) == "report.font '/nonexistent/cjk.ttf': no such file"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            NOTO_CFF,
            f"report.font '{NOTO_CFF}': reportlab cannot embed it: TTC file \"{NOTO_CFF}\": "
            "postscript outlines are not supported",
        ),
        (
            DEJAVU,
            f"report.font '{DEJAVU}': has no Chinese glyphs (missing 苏州市数据局季度报告第页共)",
        ),
    ],
)
def test_a_configured_font_that_cannot_be_used_is_an_error_never_a_fallback(
    sqlite_store: Store, path: str, message: str
) -> None:
    needs(path)
    settings = parse_config({"report": {"font": path}}, "test.toml", env={})
    with pytest.raises(ReportError) as raised, sqlite_store.session() as session:
        reports.render_quarterly(
            session,
            settings,
            "2026q3",
            verdicts=[],
            scores=[],
            availability={},
            now=dt.datetime(2026, 10, 2, tzinfo=UTC),
        )
    assert str(raised.value) == message
