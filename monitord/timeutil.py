"""Time: UTC in the store, Asia/Shanghai for people, and an injectable clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")

Clock = Callable[[], dt.datetime]
"""A clock returns the current time, timezone-aware. Tests inject their own."""


def system_clock() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(UTC)


def parse_time(value: str) -> dt.datetime:
    """Parse an ISO 8601 time; a time without an offset is read as Asia/Shanghai.

    Raises ValueError with the offending text when it is not ISO 8601.
    """
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=SHANGHAI)
    return parsed.astimezone(UTC)


def local_text(moment: dt.datetime) -> str:
    """Format a time for people: Asia/Shanghai, minutes precision."""
    return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")


class ScaledClock:
    """A clock that runs `factor` times faster than real time, from the moment it is made.

    The demo uses it so that a newcomer sees the two-hour clock of clause 7.3.3 pass in a minute.
    """

    def __init__(self, factor: float, start: dt.datetime | None = None) -> None:
        self.factor = factor
        self.start = start or system_clock()
        self._real_start = system_clock()

    def __call__(self) -> dt.datetime:
        return self.start + (system_clock() - self._real_start) * self.factor


def quarter_start(moment: dt.datetime) -> tuple[str, dt.datetime]:
    """The label ("2026q4") and first moment, in Asia/Shanghai, of the quarter holding moment."""
    local = moment.astimezone(SHANGHAI)
    quarter = (local.month - 1) // 3 + 1
    start = dt.datetime(local.year, 3 * quarter - 2, 1, tzinfo=SHANGHAI)
    return f"{local.year}q{quarter}", start


def quarter_bounds(label: str) -> tuple[dt.datetime, dt.datetime]:
    """The first moment of quarter `label` ("2026q3") and of the next one.

    Raises ValueError naming the label when it is not YYYYqN.
    """
    if len(label) != 6 or label[4] != "q" or not label[:4].isdigit() or label[5] not in "1234":
        raise ValueError(f"{label!r} is not a quarter such as 2026q3")
    year, quarter = int(label[:4]), int(label[5])
    start = dt.datetime(year, 3 * quarter - 2, 1, tzinfo=SHANGHAI)
    end = dt.datetime(year + (quarter == 4), (3 * quarter) % 12 + 1, 1, tzinfo=SHANGHAI)
    return start, end
