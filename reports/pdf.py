"""The PDF's machinery (reportlab platypus): A4 pages in the CJK font, a header with the data's
time range and a footer "第 n 页 / 共 N 页" on every page, headings that feed the contents page
and the PDF's outline, and tables whose text is always drawable.

Every piece of text goes through `Writer.text`: control characters escaped, characters the font
lacks written as [U+XXXX], XML special characters escaped for reportlab's paragraph markup.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    BaseDocTemplate,
    Flowable,
    Frame,
    Image,
    PageTemplate,
    Paragraph,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus.tableofcontents import TableOfContents

from monitord.redact import one_line
from reports.fonts import CjkFont

PAGE_WIDTH, PAGE_HEIGHT = A4
MARGIN = 18 * mm
BODY_WIDTH = PAGE_WIDTH - 2 * MARGIN
GRID = colors.HexColor("#b0b7bf")
HEAD = colors.HexColor("#e8edf2")
ALARM = colors.HexColor("#c0392b")
LIGHTS = {
    "green": ("#1e8449", "绿"),
    "amber": ("#d68910", "黄"),
    "red": ("#c0392b", "红"),
    "pending": ("#2e86c1", "蓝"),
    "none": ("#7f8c8d", "灰"),
}
"""A traffic light's colour and its word, so that a page printed in grey still says it."""
CELL_SIZE = 7.5
"""The font size of every table cell."""
PLAIN_PADDING = 3
"""A plain table's padding on each side of a cell, in points (half the usual)."""


@dataclass(frozen=True)
class Styles:
    """The paragraph styles of the report, all in the CJK font with CJK line breaking."""

    title: ParagraphStyle
    subtitle: ParagraphStyle
    h1: ParagraphStyle
    h2: ParagraphStyle
    body: ParagraphStyle
    note: ParagraphStyle
    cell: ParagraphStyle
    head: ParagraphStyle
    toc: list[ParagraphStyle]


def make_styles(font: CjkFont) -> Styles:
    """The report's styles in `font`."""

    def style(name: str, size: float, **extra: Any) -> ParagraphStyle:
        return ParagraphStyle(
            name,
            fontName=font.name,
            fontSize=size,
            leading=size * 1.45,
            wordWrap="CJK",
            **extra,
        )

    return Styles(
        title=style("title", 24, alignment=TA_CENTER, spaceAfter=8 * mm),
        subtitle=style("subtitle", 13, alignment=TA_CENTER, spaceAfter=4 * mm),
        # A heading is never left alone at the foot of a page.
        h1=style("h1", 15, spaceBefore=4 * mm, spaceAfter=3 * mm, keepWithNext=1),
        h2=style("h2", 11.5, spaceBefore=3 * mm, spaceAfter=2 * mm, keepWithNext=1),
        body=style("body", 9.5, spaceAfter=1.5 * mm),
        note=style(
            "note",
            8,
            textColor=colors.HexColor("#555555"),
            spaceBefore=1.5 * mm,
            spaceAfter=1.5 * mm,
        ),
        cell=style("cell", CELL_SIZE),
        head=style("head", CELL_SIZE),
        toc=[style("toc1", 11, leftIndent=0), style("toc2", 9.5, leftIndent=8 * mm)],
    )


class Heading(Paragraph):  # type: ignore[misc]  # reportlab has no type hints
    """A heading that enters the contents page and the PDF's outline at `level` (0 or 1)."""

    def __init__(self, text: str, style: ParagraphStyle, level: int, key: str) -> None:
        super().__init__(text, style)
        self.level = level
        self.key = key
        self.plain = text


class Writer:
    """Turns the report's text and tables into flowables in one font and one set of styles."""

    def __init__(self, font: CjkFont) -> None:
        self.font = font
        self.styles = make_styles(font)
        self._headings = 0
        self.yes = font.first_drawable("✓", "√")
        self.no = font.first_drawable("✗", "×")
        self.ellipsis = font.first_drawable("…", "...")

    def text(self, value: object) -> str:
        """`value` as text the font draws, escaped for paragraph markup."""
        return escape(self.font.drawable(one_line(str(value))))

    def fitted(self, value: object, width: float) -> str:
        """`value` as one line the font draws, cut to end in … where it would cross the edge of
        a plain table's cell `width` wide (a fraction of the body's width).

        The cut is by the width the text takes on the page, not by its characters: a Chinese
        character is about twice as wide as a Latin one.
        """
        text = self.font.drawable(one_line(str(value)))
        room = width * BODY_WIDTH - 2 * PLAIN_PADDING
        if self._width(text) <= room:
            return text
        room -= self._width(self.ellipsis)
        kept = 0.0
        for end, char in enumerate(text):
            kept += self._width(char)
            if kept > room:
                return text[:end] + self.ellipsis
        return text  # not reached: the whole text was wider than the room

    def _width(self, text: str) -> float:
        """How wide `text` is drawn in a table cell, in points."""
        return float(stringWidth(text, self.font.name, CELL_SIZE))

    def para(self, value: object, style: ParagraphStyle | None = None) -> Paragraph:
        """A paragraph of plain text (no markup of its own)."""
        return Paragraph(self.text(value), style or self.styles.body)

    def markup(self, markup: str, style: ParagraphStyle | None = None) -> Paragraph:
        """A paragraph of the report's own markup; any text put in it must come from `text`."""
        return Paragraph(markup, style or self.styles.body)

    def heading(self, value: str, level: int = 0) -> Heading:
        """A numbered section's or subsection's heading."""
        self._headings += 1
        style = self.styles.h1 if level == 0 else self.styles.h2
        return Heading(self.text(value), style, level, f"h{self._headings}")

    def light(self, light: str) -> Paragraph:
        """A traffic light: a coloured dot and its word."""
        colour, word = LIGHTS[light]
        return Paragraph(f'<font color="{colour}">●</font> {word}', self.styles.cell)

    def table(
        self,
        header: Sequence[str],
        rows: Sequence[Sequence[object]],
        widths: Sequence[float],
        *,
        empty: str = "（无）",
        plain: bool = False,
        red: str | None = None,
    ) -> Flowable:
        """A table with a repeated header row; `empty` when there is no row.

        Widths are fractions of the body's width. Plain cells (one line, no wrapping) draw much
        faster: for long tables of short values, in narrow columns (half the usual padding, so
        that a 3-character header such as R16 fits 4.5 % of the width); those equal to `red`
        are drawn in red.
        """
        if not rows:
            return self.para(empty, self.styles.note)
        cells: list[list[object]] = [[Paragraph(self.text(h), self.styles.head) for h in header]]
        for row in rows:
            if plain:
                cells.append([self.font.drawable(one_line(str(v))) for v in row])
            else:
                cells.append(
                    [
                        v if isinstance(v, Flowable) else Paragraph(self.text(v), self.styles.cell)
                        for v in row
                    ]
                )
        table = Table(cells, colWidths=[w * BODY_WIDTH for w in widths], repeatRows=1)
        marked = [
            ("TEXTCOLOR", (x, y), (x, y), ALARM)
            for y, row in enumerate(cells)
            for x, cell in enumerate(row)
            if red is not None and cell == red
        ]
        narrow = [
            ("LEFTPADDING", (0, 0), (-1, -1), PLAIN_PADDING),
            ("RIGHTPADDING", (0, 0), (-1, -1), PLAIN_PADDING),
        ]
        table.setStyle(
            TableStyle(
                [
                    *marked,
                    ("FONTNAME", (0, 0), (-1, -1), self.font.name),
                    ("FONTSIZE", (0, 0), (-1, -1), CELL_SIZE),
                    ("LEADING", (0, 0), (-1, -1), 9.5),
                    ("GRID", (0, 0), (-1, -1), 0.4, GRID),
                    ("BACKGROUND", (0, 0), (-1, 0), HEAD),
                    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                    *(narrow if plain else []),
                ]
            )
        )
        return table

    def image(self, png: bytes, height_ratio: float) -> Image:
        """A chart as wide as the body."""
        return Image(io.BytesIO(png), width=BODY_WIDTH, height=BODY_WIDTH * height_ratio)

    def gap(self, height_mm: float = 3) -> Spacer:
        """Vertical space."""
        return Spacer(1, height_mm * mm)

    def contents(self) -> TableOfContents:
        """The contents page's table, filled from the headings when the document is built."""
        toc = TableOfContents(
            tableStyle=TableStyle(
                [
                    ("FONTNAME", (0, 0), (-1, -1), self.font.name),  # else Helvetica enters
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ]
            )
        )
        toc.levelStyles = self.styles.toc
        toc.dotsMinLevel = 0
        return toc


def _canvas_class(font: CjkFont, header_left: str, header_right: str) -> type[Canvas]:
    """A canvas that draws the header and "第 n 页 / 共 N 页" on every page once it knows N."""

    class NumberedCanvas(Canvas):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._pages: list[dict[str, Any]] = []

        def showPage(self) -> None:
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._pages)
            for number, state in enumerate(self._pages, start=1):
                self.__dict__.update(state)
                self._decorate(number, total)
                super().showPage()
            super().save()

        def _decorate(self, number: int, total: int) -> None:
            self.saveState()
            self.setFont(font.name, 7.5)
            self.setFillColor(colors.HexColor("#555555"))
            top = PAGE_HEIGHT - MARGIN + 6 * mm
            self.drawString(MARGIN, top, header_left)
            self.drawRightString(PAGE_WIDTH - MARGIN, top, header_right)
            self.setStrokeColor(GRID)
            self.setLineWidth(0.4)
            self.line(MARGIN, top - 1.5 * mm, PAGE_WIDTH - MARGIN, top - 1.5 * mm)
            self.setFont(font.name, 8)
            self.drawCentredString(
                PAGE_WIDTH / 2, MARGIN - 8 * mm, f"第 {number} 页 / 共 {total} 页"
            )
            self.restoreState()

    return NumberedCanvas


class _Document(BaseDocTemplate):  # type: ignore[misc]
    """A4 pages; every Heading enters the contents page and the outline."""

    def __init__(self, buffer: io.BytesIO, title: str, author: str, font: CjkFont) -> None:
        super().__init__(
            buffer,
            pagesize=A4,
            leftMargin=MARGIN,
            rightMargin=MARGIN,
            topMargin=MARGIN,
            bottomMargin=MARGIN,
            title=title,
            author=author,
            creator="monitord",
            # Every page starts in the CJK font: no other font enters the PDF, not even unused.
            initialFontName=font.name,
        )
        frame = Frame(MARGIN, MARGIN, BODY_WIDTH, PAGE_HEIGHT - 2 * MARGIN, id="body")
        self.addPageTemplates([PageTemplate(id="page", frames=[frame])])

    def afterFlowable(self, flowable: Flowable) -> None:
        if isinstance(flowable, Heading):
            self.canv.bookmarkPage(flowable.key)
            self.canv.addOutlineEntry(flowable.plain, flowable.key, level=flowable.level)
            self.notify("TOCEntry", (flowable.level, flowable.plain, self.page, flowable.key))


def build(
    story: list[Flowable], *, font: CjkFont, title: str, author: str, header: tuple[str, str]
) -> tuple[bytes, int]:
    """Lay out `story` (twice or more: the contents page needs the page numbers) and return
    the PDF and its number of pages. `header` is the text on the left and right of every page.
    """
    buffer = io.BytesIO()
    document = _Document(buffer, title=title, author=author, font=font)
    document.multiBuild(story, canvasmaker=_canvas_class(font, *header))
    return buffer.getvalue(), document.page
