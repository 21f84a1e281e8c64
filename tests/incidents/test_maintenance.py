"""Maintenance windows of the config are kept in the store as they apply, so that a past
quarter is judged against the windows in force then, whatever the config says later."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from monitord.config import Settings, parse_config
from monitord.runtime.app import App
from monitord.runtime.jobs import incident_clock
from monitord.store import Store
from monitord.store.history import quiet_windows
from monitord.timeutil import SHANGHAI, parse_time
from tests.conftest import FakeClock

UPGRADE: dict[str, Any] = {
    "start": "2026-11-02T10:00:00+08:00",
    "end": "2026-11-02T12:00:00+08:00",
    "services": ["svc-a", "svc-b"],
    "reason": "数据库升级",
}
NIGHTLY: dict[str, Any] = {
    "start": "2026-11-02T22:00:00+08:00",
    "end": "2026-11-03T02:00:00+08:00",
}


def settings_with(store: Store, *windows: dict[str, Any]) -> Settings:
    return parse_config(
        {"store": {"url": str(store.engine.url)}, "alerts": {"maintenance": list(windows)}},
        "test",
        env={},
    )


def stored(app: App) -> list[tuple[str, str, str | None, str | None, str]]:
    """Every stored maintenance window: service, Shanghai hours of start, end and ended."""

    def hour(moment: dt.datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(SHANGHAI).strftime("%d %H:%M")

    with app.store.session() as session:
        since = parse_time("2026-11-01T00:00:00+08:00")
        return [
            (w.service_id, str(hour(w.starts_at)), hour(w.ends_at), hour(w.ended_at), w.reason)
            for w in quiet_windows(session, since, since + dt.timedelta(days=7))
        ]


def at(app: App, clock: FakeClock, moment: str) -> None:
    clock.now = parse_time(moment)
    asyncio.run(incident_clock(app))


def test_a_window_is_stored_once_it_begins_and_follows_the_config_while_it_lasts(
    sqlite_store: Store, clock: FakeClock
) -> None:
    # Written into the config after it was over: it quieted nothing, and is no record.
    after_the_fact = {"start": "2026-11-01T10:00:00+08:00", "end": "2026-11-01T12:00:00+08:00"}
    app = App(
        settings=settings_with(sqlite_store, UPGRADE, NIGHTLY, after_the_fact), store=sqlite_store
    )
    app.clock = clock
    at(app, clock, "2026-11-02T09:00:00+08:00")
    assert stored(app) == []  # nothing in force
    at(app, clock, "2026-11-02T10:01:00+08:00")
    at(app, clock, "2026-11-02T10:02:00+08:00")  # again: stored once
    assert stored(app) == [
        ("svc-a", "02 10:00", "02 12:00", None, "数据库升级"),
        ("svc-b", "02 10:00", "02 12:00", None, "数据库升级"),
    ]
    # Extended while it lasts: followed.
    extended = dict(UPGRADE, end="2026-11-02T13:00:00+08:00")
    app.settings = settings_with(sqlite_store, extended, NIGHTLY)
    at(app, clock, "2026-11-02T11:00:00+08:00")
    assert [row[2] for row in stored(app)] == ["02 13:00", "02 13:00"]
    # Over: a later config that rewrites or drops it changes nothing of what happened.
    at(app, clock, "2026-11-02T22:30:00+08:00")
    app.settings = settings_with(sqlite_store, dict(UPGRADE, end="2026-11-02T20:00:00+08:00"))
    at(app, clock, "2026-11-02T23:00:00+08:00")  # the nightly window, taken out of the config
    assert stored(app) == [
        ("svc-a", "02 10:00", "02 13:00", None, "数据库升级"),
        ("svc-b", "02 10:00", "02 13:00", None, "数据库升级"),
        ("*", "02 22:00", "03 02:00", "02 23:00", "计划维护"),  # cut short when it left
    ]
