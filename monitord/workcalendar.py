"""Working time by the Chinese statutory calendar (holidays and make-up working days).

`chinesecalendar` knows the State Council's schedule up to the year it was released for; the
schedule for the next year is published each November, so a running daemon can meet a year the
package does not know. Config then supplies that year's dates (`holidays`, `workdays` overrides);
without them monitord falls back to Monday-Friday and logs one line per year (once a process;
the daemon's CalendarWatch repeats it once a day) instead of failing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import chinese_calendar

from monitord.timeutil import SHANGHAI


class CalendarSettings(Protocol):
    """What a calendar is built from: `[logs]` of the config."""

    @property
    def holidays(self) -> list[str]: ...
    @property
    def workdays(self) -> list[str]: ...
    @property
    def work_day_start(self) -> str: ...
    @property
    def work_day_end(self) -> str: ...


def statutory_year_known(year: int) -> bool:
    """Whether the installed `chinesecalendar` knows the State Council's schedule of year."""
    try:
        chinese_calendar.is_holiday(dt.date(year, 6, 1))
    except NotImplementedError:
        return False
    return True


_SAID_UNKNOWN: set[int] = set()
"""The years whose unknown calendar this process has logged: one line each, however many
calendars meet them (a command builds several: the sync's, each judged quarter's), and none
beside the daemon's CalendarWatch saying it."""


def _newly_said(years: Iterable[int]) -> list[int]:
    """The `years` this process has not said unknown yet, now recorded as said."""
    fresh = [year for year in years if year not in _SAID_UNKNOWN]
    _SAID_UNKNOWN.update(fresh)
    return fresh


def _say_unknown_year(year: int) -> None:
    """Log, once a process, that `year`'s working days are not published and how they count."""
    if not _newly_said([year]):
        return
    # Imported here: loguru brings asyncio and ssl with it, which `monitord analyse` (whose
    # rules read this calendar) keeps out of its memory.
    from loguru import logger

    logger.warning(bring_in_advice([year]))


@dataclass
class WorkCalendar:
    """Decides whether a moment falls in working time.

    `holidays` and `workdays` override the package for single dates (config-supplied, for years
    it does not know or for a local decision); `day_start`/`day_end` bound the working day.
    """

    day_start: dt.time = dt.time(8, 30)
    day_end: dt.time = dt.time(18, 0)
    holidays: frozenset[dt.date] = frozenset()
    workdays: frozenset[dt.date] = frozenset()
    _cache: dict[dt.date, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: CalendarSettings) -> WorkCalendar:
        """The calendar of `[logs]` in the config: its holidays, make-up working days and
        working day."""
        return cls.from_config(
            settings.holidays, settings.workdays, settings.work_day_start, settings.work_day_end
        )

    @classmethod
    def from_config(
        cls,
        holidays: Iterable[dt.date | str] = (),
        workdays: Iterable[dt.date | str] = (),
        day_start: str = "08:30",
        day_end: str = "18:00",
    ) -> WorkCalendar:
        """Build a calendar from config values (dates as `YYYY-MM-DD`, times as `HH:MM`)."""

        def dates(values: Iterable[dt.date | str]) -> frozenset[dt.date]:
            return frozenset(
                v if isinstance(v, dt.date) else dt.date.fromisoformat(v) for v in values
            )

        return cls(
            day_start=dt.time.fromisoformat(day_start),
            day_end=dt.time.fromisoformat(day_end),
            holidays=dates(holidays),
            workdays=dates(workdays),
        )

    def is_workday(self, day: dt.date) -> bool:
        """Whether `day` is a working day: overrides first, then the statutory calendar."""
        cached = self._cache.get(day)
        if cached is not None:
            return cached
        if day in self.holidays:
            result = False
        elif day in self.workdays:
            result = True
        else:
            try:
                result = bool(chinese_calendar.is_workday(day))
            except NotImplementedError:
                _say_unknown_year(day.year)
                result = day.weekday() < 5
        self._cache[day] = result
        return result

    def knows_year(self, year: int) -> bool:
        """Whether the working days of `year` are known: from `chinesecalendar`, or brought in
        by the config's overrides (else Monday-Friday is assumed)."""
        return statutory_year_known(year) or self.overrides_year(year)

    def overrides_year(self, year: int) -> bool:
        """Whether the config's overrides list any date of year (its calendar brought in)."""
        return any(day.year == year for day in self.holidays | self.workdays)

    def years_to_bring_in(self, today: dt.date) -> list[int]:
        """The years whose statutory calendar is missing as of today: this year, and in
        December the next, when neither `chinesecalendar` nor the overrides know them."""
        years = [today.year, today.year + 1] if today.month == 12 else [today.year]
        return [y for y in years if not statutory_year_known(y) and not self.overrides_year(y)]

    def working_days_between(self, first: dt.date, last: dt.date) -> int:
        """The working days after `first` and before `last` (none when `last` is not later)."""
        days = (last - first).days - 1
        return sum(self.is_workday(first + dt.timedelta(days=k)) for k in range(1, days + 1))

    def is_working_time(self, moment: dt.datetime) -> bool:
        """Whether `moment` (timezone-aware) is within working hours of a working day, in China."""
        local = moment.astimezone(SHANGHAI)
        return self.is_workday(local.date()) and self.day_start <= local.time() < self.day_end

    def working_seconds(self, epochs: Iterable[int]) -> list[bool]:
        """`is_working_time` for epoch seconds, computed once per distinct minute."""
        memo: dict[int, bool] = {}
        out = []
        for epoch in epochs:
            minute = epoch // 60
            value = memo.get(minute)
            if value is None:
                value = self.is_working_time(dt.datetime.fromtimestamp(minute * 60, SHANGHAI))
                memo[minute] = value
            out.append(value)
        return out


def bring_in_advice(years: list[int]) -> str:
    """What to tell the operator when the statutory calendar of years is missing."""
    listed = " and ".join(str(year) for year in years)
    version = getattr(chinese_calendar, "__version__", "")
    return (
        f"the Chinese statutory calendar of {listed} is unknown to chinesecalendar {version}: "
        f"working days of {listed} fall back to Monday-Friday (holidays and make-up working "
        "days missed). Bring it in: upgrade chinesecalendar once it knows the year (the State "
        "Council publishes the schedule each November; `pip install --upgrade chinesecalendar` "
        "in monitord's venv, then restart), or list the year's holidays and make-up working "
        "days in [logs] holidays and workdays of the config, then reload"
    )


@dataclass
class CalendarWatch:
    """Says at most once a day (in China) that a statutory calendar is missing, and never a
    second time what a calendar of this process has just said (one line per year)."""

    _said_on: dt.date | None = field(default=None, repr=False)

    def check(self, calendar: WorkCalendar, now: dt.datetime) -> str | None:
        """The advice to log now, or None (nothing missing, or already said today)."""
        today = now.astimezone(SHANGHAI).date()
        if today == self._said_on:
            return None
        years = calendar.years_to_bring_in(today)
        if not years:
            return None
        first = self._said_on is None
        self._said_on = today
        fresh = _newly_said(years)  # a calendar meeting these years now stays quiet
        if first:
            # At start a job's calendar may have met a year before this first look: said once.
            return bring_in_advice(fresh) if fresh else None
        return bring_in_advice(years)
