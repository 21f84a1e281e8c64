"""Helpers for the ZAP tests: a clock that sleeps at once, a progress recorder, a list logger."""

from __future__ import annotations

import asyncio
import datetime as dt

from monitord.scans.state import ScanState
from monitord.timeutil import UTC

SERVICE = "http://127.0.0.1:9/app/"
"""The scanned service. The fake ZAP never connects to it; its sites tree is the scenario's.
monitord's own check before a scan finds nothing listening there, and lets the scan go on."""


class SleepClock:
    """A clock whose `sleep` moves time on at once, so a four-hour deadline takes milliseconds."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
        self.slept = 0.0

    def __call__(self) -> dt.datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
        self.slept += seconds
        await asyncio.sleep(0)


class Recorder:
    """An `on_progress` callback that keeps every state, as the store would."""

    def __init__(self) -> None:
        self.states: list[ScanState] = []

    async def __call__(self, state: ScanState) -> None:
        self.states.append(state)

    @property
    def last(self) -> ScanState:
        return self.states[-1]


class ListLogger:
    """A logger that keeps the formatted lines, to check that no secret is ever logged."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _log(self, level: str, message: str, *args: object) -> None:
        self.lines.append(f"{level} " + message.format(*args))

    def info(self, message: str, *args: object) -> None:
        self._log("INFO", message, *args)

    def warning(self, message: str, *args: object) -> None:
        self._log("WARNING", message, *args)

    def error(self, message: str, *args: object) -> None:
        self._log("ERROR", message, *args)
