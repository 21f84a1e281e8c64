"""Time: UTC in the store, Asia/Shanghai for people, and an injectable clock."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.UTC
SHANGHAI = ZoneInfo("Asia/Shanghai")

Clock = Callable[[], dt.datetime]
"""A clock returns the current time, timezone-aware. Tests inject their own."""


def system_clock() -> dt.datetime:
    """Return the current time in UTC."""
    return dt.datetime.now(UTC)


EARLIEST = dt.datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest time a person may give monitord (a command's or a request's): before it
monitord has nothing, and a year-1 time is a typo (and, at some offsets, no time a clock can
show)."""


def parse_time(value: str) -> dt.datetime:
    """Parse an ISO 8601 time; a time without an offset is read as Asia/Shanghai.

    Raises ValueError with the offending text when it is not ISO 8601, or not a time of years
    1-9999 once in UTC.
    """
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=SHANGHAI)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+09:00 is in year 0 in UTC
        raise TimeOutOfRange(f"{value!r} is outside years 1-9999 in UTC") from None


class TimeOutOfRange(ValueError):
    """An ISO 8601 time that is no time once in UTC (year 0 or 10000)."""


def local_text(moment: dt.datetime) -> str:
    """Format a time for people: Asia/Shanghai, minutes precision. A time whose Beijing time
    no datetime holds (the last hours of year 9999 UTC, a mistyped year in a request) keeps its
    own offset: a message saying it is in the future must not fail instead."""
    try:
        return moment.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")
    except OverflowError:
        return moment.isoformat(sep=" ", timespec="minutes")


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


@dataclass(frozen=True)
class ClockEvent:
    """What SteadyClock.check saw: a step of the system clock, the step followed, or undone."""

    kind: str  # "stepped", "followed" or "back"
    step: dt.timedelta

    def describe(self) -> str:
        """One line for the log."""
        size = _signed(self.step)
        if self.kind == "stepped":
            return (
                f"the system clock stepped by {size}: monitord keeps counting time on the "
                "monotonic clock (job schedules and incident deadlines are not moved), and follows "
                f"the step if it lasts {_signed(STEP_PERSISTS).lstrip('+')}"
            )
        if self.kind == "followed":
            return f"the system clock's step of {size} has lasted: monitord's time follows it"
        return f"the system clock came back after a step of {size}: nothing was moved"


STEP_TOLERANCE = dt.timedelta(seconds=2)
"""A departure of the system clock from the monotonic clock beyond this, between two checks a
second apart, is a step (NTP slews far slower: half a millisecond a second at most)."""
STEP_PERSISTS = dt.timedelta(minutes=30)
"""A step that lasts this long is the system clock corrected, and followed; one undone sooner
(a bad time server, an operator's slip) is never seen by the jobs."""


def _signed(delta: dt.timedelta) -> str:
    seconds = round(delta.total_seconds())
    hours, rest = divmod(abs(seconds), 3600)
    return f"{'-' if seconds < 0 else '+'}{hours}:{rest // 60:02d}:{rest % 60:02d}"


class SteadyClock:
    """The daemon's clock: wall-clock time, advanced by the monotonic clock.

    It follows the system clock's slow corrections (each `check`), not its steps: a backward
    step of an hour stopped every job, and a forward jump of three hours, undone soon after,
    marked incidents late for ever and told the director. A step is followed only once it has
    lasted STEP_PERSISTS: then the system clock was wrong before and is right now.
    """

    def __init__(
        self,
        wall: Clock = system_clock,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._base = (wall(), monotonic())
        self._step_since: float | None = None  # monotonic time the current step was first seen
        self._step = dt.timedelta(0)
        self._follow_due = False  # a "followed" event was returned and follow() not called yet

    def __call__(self) -> dt.datetime:
        wall, since = self._base  # one tuple: read whole even while check() replaces it
        return wall + dt.timedelta(seconds=self._monotonic() - since)

    def check(self) -> ClockEvent | None:
        """Compare with the system clock (the daemon calls this every second); what changed.

        A "followed" event does not move this clock yet: the caller first moves what counts
        on it (the incidents' deadlines), then calls follow(), so that nothing reads the new
        time against an old deadline in between.
        """
        if self._follow_due:
            return None
        now = self._monotonic()
        departure = self._wall() - self()
        if abs(departure) <= STEP_TOLERANCE:
            self._base = (self._wall(), self._monotonic())  # follow NTP's slewing
            if self._step_since is not None:
                self._step_since = None
                return ClockEvent("back", self._step)
            return None
        if self._step_since is None:
            self._step_since, self._step = now, departure
            return ClockEvent("stepped", departure)
        if now - self._step_since >= STEP_PERSISTS.total_seconds():
            self._follow_due = True
            return ClockEvent("followed", departure)
        return None

    @property
    def stepped(self) -> bool:
        """Whether a step of the system clock was seen and is neither followed nor undone yet:
        meanwhile this clock and the system clock disagree by it."""
        return self._step_since is not None

    def follow(self) -> None:
        """Take the system clock's time, after a "followed" event (see check)."""
        self._base = (self._wall(), self._monotonic())
        self._step_since = None
        self._follow_due = False

    def defer_follow(self) -> None:
        """Not now (what counts on the clock could not be moved): the next check says
        "followed" again."""
        self._follow_due = False


def quarter_start(moment: dt.datetime) -> tuple[str, dt.datetime]:
    """The label ("2026q4") and first moment, in Asia/Shanghai, of the quarter holding moment."""
    local = moment.astimezone(SHANGHAI)
    quarter = (local.month - 1) // 3 + 1
    start = dt.datetime(local.year, 3 * quarter - 2, 1, tzinfo=SHANGHAI)
    return f"{local.year}q{quarter}", start


QUARTER_PATTERN = r"^[0-9]{4}q[1-4]$"
"""A quarter's label, such as 2026q3."""


def quarter_bounds(label: str) -> tuple[dt.datetime, dt.datetime]:
    """The first moment of quarter `label` ("2026q3") and of the next one.

    Raises ValueError naming the label when it is not YYYYqN, or before 1970.
    """
    if re.fullmatch(QUARTER_PATTERN, label) is None:
        raise ValueError(f"{label!r} is not a quarter such as 2026q3")
    year, quarter = int(label[:4]), int(label[5])
    if year < EARLIEST.year:
        raise ValueError(f"{label!r} is not a quarter monitord can hold (from 1970q1 on)")
    start = dt.datetime(year, 3 * quarter - 2, 1, tzinfo=SHANGHAI)
    end = dt.datetime(year + (quarter == 4), (3 * quarter) % 12 + 1, 1, tzinfo=SHANGHAI)
    return start, end


def begun_quarter_bounds(label: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """`quarter_bounds` of a quarter that has begun at `now`: nothing can be judged, audited or
    reported of one that has not.

    Raises ValueError naming the label when it is not YYYYqN, or when the quarter has not begun
    (saying when it starts).
    """
    start, end = quarter_bounds(label)
    if start > now:
        raise ValueError(f"{label!r} has not begun: it starts {local_text(start)} Asia/Shanghai")
    return start, end


def local_days(start: dt.datetime, until: dt.datetime) -> tuple[dt.date, dt.date]:
    """The first and the last local day (Asia/Shanghai) of [start, until): a quarter's days, or
    those so far while it runs (today included). A document dated one of them is in it."""
    last = (until - dt.timedelta(microseconds=1)).astimezone(SHANGHAI).date()
    return start.astimezone(SHANGHAI).date(), last
