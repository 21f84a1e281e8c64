"""The warning that next year's Chinese statutory calendar is missing: in December and at start,
once a day, until a newer chinesecalendar or the config's overrides bring the year in."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import chinese_calendar
import pytest
from loguru import logger

from monitord import workcalendar
from monitord.config import parse_config
from monitord.runtime.app import App
from monitord.runtime.daemon import Daemon
from monitord.runtime.jobs import Job
from monitord.store import open_store
from monitord.timeutil import SHANGHAI
from monitord.workcalendar import (
    CalendarWatch,
    WorkCalendar,
    bring_in_advice,
    statutory_year_known,
)
from tests.conftest import FakeClock

# chinesecalendar knows up to the year it was released for; 2031 is far beyond any release.
FAR = 2031
needs_2027_unknown = pytest.mark.skipif(
    statutory_year_known(2027), reason="the installed chinesecalendar already knows 2027"
)


def shanghai(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=SHANGHAI)  # type: ignore[misc]


@pytest.fixture(autouse=True)
def nothing_said_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test as a fresh process: no unknown year said by an earlier test."""
    monkeypatch.setattr(workcalendar, "_SAID_UNKNOWN", set())


@needs_2027_unknown
def test_next_year_is_missing_from_december_on() -> None:
    calendar = WorkCalendar()
    assert calendar.years_to_bring_in(dt.date(2026, 11, 30)) == []
    assert calendar.years_to_bring_in(dt.date(2026, 12, 1)) == [2027]
    # In the unknown year itself it is still missing, all year long.
    assert calendar.years_to_bring_in(dt.date(2027, 3, 2)) == [2027]


def test_the_overrides_bring_a_year_in() -> None:
    calendar = WorkCalendar.from_config(holidays=[f"{FAR}-01-01"], workdays=[f"{FAR}-02-08"])
    assert calendar.years_to_bring_in(dt.date(FAR, 5, 1)) == []
    assert calendar.years_to_bring_in(dt.date(FAR, 12, 1)) == [FAR + 1]
    assert WorkCalendar().years_to_bring_in(dt.date(FAR, 12, 1)) == [FAR, FAR + 1]


def test_the_advice_is_given_once_a_day_in_china() -> None:
    watch, calendar = CalendarWatch(), WorkCalendar()
    advice = watch.check(calendar, shanghai(FAR, 12, 1, 9, 0))
    assert advice is not None
    assert f"statutory calendar of {FAR} and {FAR + 1} is unknown to chinesecalendar" in advice
    assert "pip install --upgrade chinesecalendar" in advice
    assert "[logs] holidays and workdays" in advice
    assert watch.check(calendar, shanghai(FAR, 12, 1, 23, 59)) is None
    # 00:30 in China is still the 1st in UTC: the day is China's.
    assert watch.check(calendar, shanghai(FAR, 12, 2, 0, 30)) is not None


@pytest.fixture
def messages() -> Iterator[list[str]]:
    logged: list[str] = []
    handler = logger.add(lambda m: logged.append(m.record["message"]), level="WARNING")
    yield logged
    logger.remove(handler)


async def warnings_of_a_daemon(
    tmp_path: Path, logs: dict[str, object], now: dt.datetime, meets: dt.date | None = None
) -> None:
    """Start a daemon whose clock says now, and stop it once it has started; its one job asks
    a calendar of the config whether the day `meets` is a working day, as the report job does."""
    settings = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'm.db'}"},
            "api": {"enabled": False},
            "logs": logs,
        },
        "test",
        {},
    )
    app = App(settings=settings, store=open_store(settings.store.url), clock=FakeClock(now))
    started = asyncio.Event()

    async def job(app: App) -> None:
        if meets is not None:
            WorkCalendar.from_settings(app.settings.logs).is_workday(meets)
        started.set()

    daemon = Daemon(app, None, jobs=(Job("tick", job, lambda s: 0.05),))
    running = asyncio.create_task(daemon.run())
    await asyncio.wait_for(started.wait(), 10)
    daemon.request_stop("test")
    assert await running == 0
    app.store.dispose()


async def test_the_daemon_warns_at_start_in_december_when_next_year_is_missing(
    tmp_path: Path, messages: list[str]
) -> None:
    await warnings_of_a_daemon(tmp_path, {}, shanghai(FAR - 1, 12, 3, 10, 0))
    assert [m for m in messages if "statutory calendar" in m] == [
        f"the Chinese statutory calendar of {FAR - 1} and {FAR} is unknown to chinesecalendar "
        f"{chinese_calendar.__version__}: working days of {FAR - 1} and {FAR} "
        "fall back to Monday-Friday (holidays and make-up working days missed). Bring it in: "
        "upgrade chinesecalendar once it knows the year (the State Council publishes the "
        "schedule each November; `pip install --upgrade chinesecalendar` in monitord's venv, "
        "then restart), or list the year's holidays and make-up working days in [logs] "
        "holidays and workdays of the config, then reload"
    ]


async def test_the_daemon_is_quiet_once_the_overrides_bring_the_years_in(
    tmp_path: Path, messages: list[str]
) -> None:
    logs = {"holidays": [f"{FAR - 1}-01-01", f"{FAR}-01-01"], "workdays": []}
    await warnings_of_a_daemon(tmp_path, logs, shanghai(FAR - 1, 12, 3, 10, 0))
    assert not [m for m in messages if "statutory calendar" in m]


async def test_a_job_meeting_the_missing_year_at_start_adds_no_second_line(
    tmp_path: Path, messages: list[str]
) -> None:
    # `monitord run` in December said 2027 was unknown twice in the same second: the watch,
    # then the quarterly report job's calendar, which asks whether 2027-01-04 is a working day.
    await warnings_of_a_daemon(tmp_path, {}, shanghai(FAR, 12, 3, 10, 0), dt.date(FAR + 1, 1, 4))
    said = [m for m in messages if "statutory calendar" in m]
    assert said == [bring_in_advice([FAR, FAR + 1])]


def test_the_watch_and_a_calendar_say_a_missing_year_once_whichever_meets_it_first(
    messages: list[str],
) -> None:
    monday = dt.date(FAR + 1, 1, 5)
    watch = CalendarWatch()
    assert watch.check(WorkCalendar(), shanghai(FAR, 12, 3, 10, 0)) is not None
    WorkCalendar().is_workday(monday)  # the watch has said it: quiet
    assert [m for m in messages if "statutory calendar" in m] == []

    workcalendar._SAID_UNKNOWN.clear()  # another process: a job's calendar meets it first
    WorkCalendar().is_workday(monday)
    WorkCalendar().is_workday(dt.date(FAR, 12, 4))
    watch = CalendarWatch()
    assert watch.check(WorkCalendar(), shanghai(FAR, 12, 3, 10, 0)) is None
    assert len([m for m in messages if "statutory calendar" in m]) == 2  # FAR + 1, then FAR
    # The next day in China the watch says it again, as it does every day.
    assert watch.check(WorkCalendar(), shanghai(FAR, 12, 4, 10, 0)) is not None
