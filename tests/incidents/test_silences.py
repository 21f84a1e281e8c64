"""Silences: they keep an incident's news out of chat, never the 7.3.3 duty of a security
incident; on an injected clock, against a real store."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from monitord.errors import Refused, UsageError
from monitord.incidents import intake, notify_management, timeline, work_clocks
from monitord.incidents.silences import (
    active_silences,
    add_silence,
    expire_silence,
    parse_duration,
)
from monitord.store import Store
from monitord.store.findings import resolve_findings
from monitord.store.models import AuditEntry, Incident, Silence
from tests.conftest import FakeClock
from tests.incidents.test_clock import add_service, find, keys, run_intake, settings

PARTS = {
    "scope": "企业开办服务，全市",
    "harm": "可能泄露登录凭据",
    "measures": "已封禁来源 IP",
    "rectification": "启用登录验证码",
}


def silence(store: Store, clock: FakeClock, hours: float = 4, **match: Any) -> int:
    with store.session() as session:
        made = add_silence(
            session,
            settings().incidents,
            reason="计划内升级",
            ends_at=clock() + dt.timedelta(hours=hours),
            actor="zhang.san",
            now=clock(),
            **match,
        )
        return made.id


def events(store: Store, incident_id: int) -> list[tuple[str, dict[str, Any]]]:
    with store.session() as session:
        return [(e["kind"], e["detail"]) for e in timeline(session, incident_id)]


def tick(store: Store, clock: FakeClock, minutes: int) -> None:
    """Work the clocks every minute for `minutes` minutes, as the daemon does."""
    for _ in range(minutes):
        clock.advance(minutes=1)
        with store.session() as session:
            work_clocks(session, settings(), clock())


def test_a_silenced_outage_stays_out_of_chat_and_its_timeline_says_which_silence(
    sqlite_store: Store, clock: FakeClock
) -> None:
    sid = add_service(sqlite_store, clock, 1)
    other = add_service(sqlite_store, clock, 2)
    silence_id = silence(sqlite_store, clock, services=[sid])
    find(sqlite_store, clock, "service_down", sid)
    find(sqlite_store, clock, "service_down", other)
    opened = run_intake(sqlite_store, settings(), clock).opened
    silenced_id, loud_id = opened
    assert keys(sqlite_store) == [f"incident:{loud_id}:opened"]
    assert ("silenced", f"silenced by #{silence_id}") in [
        (kind, detail.get("note")) for kind, detail in events(sqlite_store, silenced_id)
    ]
    tick(sqlite_store, clock, 70)  # nobody acknowledges: only the loud one escalates
    assert keys(sqlite_store) == [
        f"incident:{loud_id}:opened",
        f"incident:{loud_id}:escalation:1",
        f"incident:{loud_id}:escalation:2",
    ]
    with sqlite_store.session() as session:  # the service is back: no news of that either
        resolve_findings(session, ["service_down"], "service", {other}, clock())
        intake(session, settings(), clock())
    assert f"incident:{silenced_id}:resolved" not in keys(sqlite_store)
    silenced_lines = [d for k, d in events(sqlite_store, silenced_id) if k == "silenced"]
    assert [d["alert"].split(":", 2)[2] for d in silenced_lines] == [
        "opened",
        "escalation:1",
        "escalation:2",
        "resolved",
    ]


def test_a_silenced_security_incident_still_reminds_escalates_goes_late_and_notifies(
    sqlite_store: Store, clock: FakeClock
) -> None:
    sid = add_service(sqlite_store, clock, 1)
    silence(sqlite_store, clock, hours=24, services=[sid], rule_names=["zap:*"])
    find(sqlite_store, clock, "zap:40012", sid)
    incident_id = run_intake(sqlite_store, settings(), clock).opened[0]
    assert keys(sqlite_store) == []  # the news of it stays out of chat...
    tick(sqlite_store, clock, 125)  # ...but never the two-hour clock (7.3.3)
    assert [k.split(":", 2)[2] for k in keys(sqlite_store)] == [
        "reminder:30",
        "escalation:1",
        "reminder:60",
        "escalation:2",
        "reminder:90",
        "reminder:110",
        "late",
    ]
    with sqlite_store.session() as session:
        incident = session.get(Incident, incident_id)
        assert incident is not None and incident.late
        notify_management(session, settings(), incident_id, PARTS, "zhang.san", clock())
    assert keys(sqlite_store)[-1] == f"incident:{incident_id}:notification:1"


def test_an_outage_that_outlasts_its_silence_is_announced_when_the_silence_ends(
    store: Store, clock: FakeClock
) -> None:
    # On both backends: the release reads the timeline's JSON.
    sid = add_service(store, clock, 1)
    silence(store, clock, hours=1, kinds=["outage"])
    find(store, clock, "service_down", sid)
    incident_id = run_intake(store, settings(), clock).opened[0]
    tick(store, clock, 59)
    assert keys(store) == []
    tick(store, clock, 1)
    assert keys(store)[0] == f"incident:{incident_id}:opened"
    assert "silence_ended" in [kind for kind, _ in events(store, incident_id)]


def test_an_expired_silence_holds_nothing_back_and_both_ends_are_audited(
    sqlite_store: Store, clock: FakeClock
) -> None:
    sid = add_service(sqlite_store, clock, 1)
    silence_id = silence(sqlite_store, clock, services=[sid])
    clock.advance(minutes=5)
    with sqlite_store.session() as session:
        expire_silence(session, silence_id, "li.si", clock())
        assert active_silences(session, clock()) == []
    with pytest.raises(UsageError, match="already ended"), sqlite_store.session() as session:
        expire_silence(session, silence_id, "li.si", clock())
    find(sqlite_store, clock, "service_down", sid)
    incident_id = run_intake(sqlite_store, settings(), clock).opened[0]
    assert keys(sqlite_store) == [f"incident:{incident_id}:opened"]
    with sqlite_store.session() as session:
        trail = session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all()
        assert [(a.actor, a.action, a.subject) for a in trail] == [
            ("zhang.san", "silence.add", f"silence {silence_id}"),
            ("li.si", "silence.expire", f"silence {silence_id}"),
        ]
        kept = session.get(Silence, silence_id)  # kept for the quarterly report
        assert kept is not None and kept.expired_by == "li.si"


def test_silenced_outages_are_no_storm(sqlite_store: Store, clock: FakeClock) -> None:
    cfg = settings(storm_threshold=10)
    services = [add_service(sqlite_store, clock, n) for n in range(1, 13)]
    silence(sqlite_store, clock, services=services[:10])
    for sid in services:
        find(sqlite_store, clock, "service_down", sid)
    report = run_intake(sqlite_store, cfg, clock)
    assert len(report.opened) == 12 and not report.storm
    assert keys(sqlite_store) == [f"incident:{i}:opened" for i in report.opened[10:]]


def test_a_silence_by_rule_matches_the_rules_of_the_incidents_findings(
    sqlite_store: Store, clock: FakeClock
) -> None:
    sid = add_service(sqlite_store, clock, 1)
    silence(sqlite_store, clock, rule_names=["service_slow"])
    find(sqlite_store, clock, "service_slow", sid)
    find(sqlite_store, clock, "service_down", add_service(sqlite_store, clock, 2))
    _slow, down = run_intake(sqlite_store, settings(), clock).opened
    assert keys(sqlite_store) == [f"incident:{down}:opened"]


@pytest.mark.parametrize(
    ("match", "reason", "hours", "message"),
    [
        ({}, "升级", 1, "at least one service, kind or rule"),
        ({"services": ["svc-9999"]}, "升级", 1, "service 'svc-9999': not in the store"),
        ({"kinds": ["fire"]}, "升级", 1, "kind 'fire': expected one of"),
        ({"kinds": ["compliance"]}, "升级", 1, "kind 'compliance': expected one of"),
        ({"rule_names": ["no_such_rule"]}, "升级", 1, "rule 'no_such_rule': no rule"),
        ({"kinds": ["outage"]}, "  ", 1, "reason: say why"),
        ({"kinds": ["outage"]}, "升级", -1, "is not in the future"),
    ],
)
def test_a_silence_that_cannot_work_is_refused_naming_what_is_wrong(
    sqlite_store: Store,
    clock: FakeClock,
    match: dict[str, Any],
    reason: str,
    hours: float,
    message: str,
) -> None:
    add_service(sqlite_store, clock, 1)
    with pytest.raises(UsageError, match=message), sqlite_store.session() as session:
        add_silence(
            session,
            settings().incidents,
            reason=reason,
            ends_at=clock() + dt.timedelta(hours=hours),
            actor="x",
            now=clock(),
            **match,
        )
    with sqlite_store.session() as session:
        assert session.scalars(select(Silence)).all() == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90m", dt.timedelta(minutes=90)),
        ("2h", dt.timedelta(hours=2)),
        ("1d2h", dt.timedelta(days=1, hours=2)),
    ],
)
def test_durations_read_as_people_write_them(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "3650d1m",
        "9999999999d",
        "99999999999999999999999m",
        "999999999d999999999h",
        "9" * 5000 + "m",
    ],
)
def test_a_duration_past_ten_years_is_refused_however_many_its_digits(text: str) -> None:
    # A huge one overflowed timedelta before the check: a 500 in the API, a traceback in the CLI.
    with pytest.raises(Refused, match="at most 3650 days") as refused:
        parse_duration(text)
    assert (refused.value.reason, refused.value.field) == ("too_long_a_silence", "for")
    assert refused.value.facts == {"days": 3650}


@pytest.mark.parametrize("text", ["", "2", "2x", "h", "0h", "-1h", "\u0663d"])
def test_a_duration_that_is_not_one_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="duration"):
        parse_duration(text)
