"""The report's charts, drawn by matplotlib (Agg, no display) in the report's CJK font, as PNG.

Each chart is drawn on its own Figure (never pyplot's global state), so charts drawn at the
same time in two threads cannot mix. Labels are the report's own words and numbers, never
catalogue text: a glyph missing from the font would be drawn as a box.
"""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

from matplotlib import font_manager
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from reports.fonts import CjkFont

WIDTH_IN, HEIGHT_IN, DPI = 6.4, 2.8, 150
COLOUR = "#2f6f9f"
WARN = "#c0392b"


def _figure() -> tuple[Figure, Axes]:
    figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), layout="constrained")
    return figure, figure.add_subplot()


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _style(axes: Axes, font: CjkFont, title: str, xlabel: str, ylabel: str) -> None:
    props = font_manager.FontProperties(fname=str(font.path))
    axes.set_title(title, fontproperties=props, fontsize=11)
    axes.set_xlabel(xlabel, fontproperties=props, fontsize=9)
    axes.set_ylabel(ylabel, fontproperties=props, fontsize=9)
    for label in [*axes.get_xticklabels(), *axes.get_yticklabels()]:
        label.set_fontproperties(props)
        label.set_fontsize(8)
    axes.spines[["top", "right"]].set_visible(False)


def _empty(axes: Axes, font: CjkFont, text: str) -> None:
    props = font_manager.FontProperties(fname=str(font.path))
    axes.text(0.5, 0.5, text, ha="center", va="center", fontproperties=props, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])


def uptime_by_tier(tiers: list[str], uptimes: list[float | None], font: CjkFont) -> bytes:
    """A bar per tier: its availability in percent, the value written on the bar; a tier not
    probed in the quarter (None, or NaN as pandas holds it) has no bar."""
    figure, axes = _figure()
    known = [
        (t, u * 100)
        for t, u in zip(tiers, uptimes, strict=True)
        if u is not None and not math.isnan(u)
    ]
    if not known:
        _empty(axes, font, "本季度无探测数据")
    else:
        names, values = zip(*known, strict=True)
        bars = axes.bar(names, values, color=COLOUR, width=0.55)
        # The bars differ in the last digits: start the axis near the lowest, and say so.
        low = max(0.0, math.floor(min(values) - 0.5))
        axes.set_ylim(low, 100.2)
        for bar, value in zip(bars, values, strict=True):
            axes.annotate(
                f"{value:.2f}%",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
    _style(
        axes,
        font,
        "各层级服务可用率",
        "服务来源层级（6.1）",
        f"可用率 %（纵轴自 {0 if not known else low:g} 起）",
    )
    return _png(figure)


def p95_distribution(p95s: list[float], target_ms: float, font: CjkFont) -> bytes:
    """How many services had each quarter p95 latency (log-spaced bins), the target marked."""
    figure, axes = _figure()
    finite = [p for p in p95s if math.isfinite(p) and p > 0]
    if not finite:
        _empty(axes, font, "本季度无成功探测的时延数据")
    else:
        low, high = min([*finite, target_ms]) / 1.2, max([*finite, target_ms]) * 1.2
        bins = [low * (high / low) ** (k / 30) for k in range(31)]
        axes.hist(finite, bins=bins, color=COLOUR)
        axes.set_xscale("log")
        axes.axvline(target_ms, color=WARN, linestyle="--", linewidth=1)
        props = font_manager.FontProperties(fname=str(font.path))
        axes.annotate(
            f"默认目标 {target_ms:g} ms",
            (target_ms, 1),
            xycoords=("data", "axes fraction"),
            xytext=(3, -12),
            textcoords="offset points",
            color=WARN,
            fontproperties=props,
            fontsize=8,
        )
    _style(axes, font, "服务 P95 时延分布", "季度 P95 时延（毫秒，对数刻度）", "服务数")
    return _png(figure)


def incidents_per_week(weeks: list[str], counts: list[int], font: CjkFont) -> bytes:
    """A bar per week of the quarter: the incidents detected in it."""
    figure, axes = _figure()
    axes.bar(weeks, counts, color=COLOUR, width=0.6)
    axes.set_ylim(0, max([*counts, 1]) * 1.15)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    _style(axes, font, "每周事件数", "周（起始日）", "事件数")
    for label in axes.get_xticklabels():
        label.set_rotation(45)
        label.set_horizontalalignment("right")
    return _png(figure)
