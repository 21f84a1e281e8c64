"""Small charts drawn on the server as inline SVG: a service's uptime and latency.

No script and no style attribute (the page's Content-Security-Policy allows neither inline):
colours are SVG presentation attributes, and each bar's <title> is its tooltip.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from html import escape

from monitord.timeutil import local_text

WIDTH = 336
HEIGHT = 48
COLOURS = {"ok": "#2e7d32", "partial": "#f9a825", "failed": "#c62828", "none": "#d0d0d0"}


@dataclass(frozen=True)
class Bucket:
    """The probe results of one stretch of time: how many, how many failed, latency p95."""

    start: dt.datetime
    total: int
    failures: int
    p95_ms: float | None


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at `fraction` of sorted values (nearest rank), as the hourly roll-ups take it."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def uptime(buckets: list[Bucket]) -> float | None:
    """The share of successful results over the buckets, in percent (None: no result)."""
    total = sum(b.total for b in buckets)
    if total == 0:
        return None
    return 100.0 * (total - sum(b.failures for b in buckets)) / total


def _health(bucket: Bucket) -> str:
    if bucket.total == 0:
        return "none"
    if bucket.failures == 0:
        return "ok"
    return "failed" if bucket.failures == bucket.total else "partial"


def _bucket_text(bucket: Bucket) -> str:
    if bucket.total == 0:
        return f"{local_text(bucket.start)} 无数据"
    rate = 100.0 * (bucket.total - bucket.failures) / bucket.total
    latency = f"，p95 {bucket.p95_ms:.0f} ms" if bucket.p95_ms is not None else ""
    return f"{local_text(bucket.start)} 可用 {rate:.1f}%（{bucket.total} 次探测）{latency}"


def uptime_strip(buckets: list[Bucket], label: str) -> str:
    """One bar per bucket, green when every probe succeeded, amber when some failed, red when
    all did, grey without results."""
    if not buckets:
        return ""
    step = WIDTH / len(buckets)
    bars = []
    for n, bucket in enumerate(buckets):
        bars.append(
            f'<rect x="{n * step:.2f}" y="0" width="{max(step - 1, 1):.2f}" height="{HEIGHT // 2}"'
            f' fill="{COLOURS[_health(bucket)]}"><title>{escape(_bucket_text(bucket))}</title>'
            "</rect>"
        )
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT // 2}" role="img" '
        f'aria-label="{escape(label)}">{"".join(bars)}</svg>'
    )


def latency_line(buckets: list[Bucket], label: str) -> str:
    """The p95 latency of each bucket as a line, scaled to the highest; gaps where none."""
    values = [b.p95_ms for b in buckets]
    top = max((v for v in values if v is not None), default=None)
    if top is None or not buckets:
        return ""
    top = max(top, 1.0)
    step = WIDTH / len(buckets)
    segments: list[list[str]] = [[]]
    for n, value in enumerate(values):
        if value is None:
            if segments[-1]:
                segments.append([])
            continue
        x = n * step + step / 2
        y = HEIGHT - 2 - (HEIGHT - 12) * value / top
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
        if len(points) > 1
        else f'<circle cx="{points[0].split(",")[0]}" cy="{points[0].split(",")[1]}" r="1.5" '
        'fill="#1565c0"/>'
        for points in segments
        if points
    )
    scale = f'<text x="2" y="9" font-size="9" fill="#555">{top:.0f} ms</text>'
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}">'
        f'<line x1="0" y1="{HEIGHT - 1}" x2="{WIDTH}" y2="{HEIGHT - 1}" stroke="#ccc"/>'
        f"{lines}{scale}</svg>"
    )
