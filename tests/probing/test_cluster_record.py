"""Recording rounds in a cluster: a state machine moved once per round whoever probed, two zones
that must both see a service down, and rounds probed while the store was away written late."""

from __future__ import annotations

import datetime as dt

import pytest
from loguru import logger
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from monitord.config import ProbeSettings, parse_config
from monitord.probing import ProbeBacklog, record_results
from monitord.probing.backlog import UnrecordedRound
from monitord.store import Store
from monitord.store.models import (
    ProbeResultRow,
    ProbeRound,
    ServiceEvent,
    ServiceState,
)
from monitord.types import ProbeResult
from tests.conftest import FakeClock
from tests.probing.helpers import TARGET, catalogue, result_of


@pytest.fixture(autouse=True)
def catalogued(store: Store, clock: FakeClock) -> None:
    """The service in the catalogue, online."""
    catalogue(store, clock)


def result(at: dt.datetime, success: bool) -> ProbeResult:
    return result_of("availability", at, success)


def state(store: Store) -> ServiceState:
    with store.session() as session:
        found = session.get(ServiceState, TARGET.id)
        assert found is not None
        return found


def test_a_service_probed_twice_in_one_round_while_members_rebalance_is_judged_once(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    once = dt.timedelta(seconds=30)
    targets = {TARGET.id: TARGET}
    for _ in range(2):  # two rounds, each probed by two daemons 5 s apart
        for _daemon in range(2):
            now = clock.advance(seconds=5)
            record_results(
                store, targets, [result(now, False)], probes, now, zone="a", once_within=once
            )
        clock.advance(seconds=50)
    assert state(store).failures == 2  # one per round, not four
    assert state(store).state != "down"
    with store.session() as session:  # yet every result is kept as evidence
        assert len(session.scalars(select(ProbeResultRow)).all()) == 4


def test_with_two_zones_a_service_is_down_only_when_both_zones_see_it_down(
    store: Store, clock: FakeClock
) -> None:
    probes = parse_config({"probes": {"zones": 2}}, "test", env={}).probes
    targets = {TARGET.id: TARGET}
    # The east zone cannot reach the service (its own network); the west zone can.
    for _ in range(5):
        now = clock.advance(seconds=30)
        record_results(store, targets, [result(now, True)], probes, now, zone="west")
        now = clock.advance(seconds=30)
        record_results(store, targets, [result(now, False)], probes, now, zone="east")
    assert state(store).state == "up" and state(store).failures == 0
    # The service really goes: both zones fail, and it is declared down.
    for _ in range(3):
        now = clock.advance(seconds=30)
        record_results(store, targets, [result(now, False)], probes, now, zone="west")
        now = clock.advance(seconds=30)
        record_results(store, targets, [result(now, False)], probes, now, zone="east")
    assert state(store).state == "down"


def zone_probes(interval: float) -> ProbeSettings:
    return parse_config(
        {"probes": {"zones": 2, "interval_seconds": interval}}, "test", env={}
    ).probes


def down_events(store: Store) -> int:
    with store.session() as session:
        return len(session.scalars(select(ServiceEvent).where(ServiceEvent.kind == "down")).all())


@pytest.mark.parametrize(
    ("interval", "west_writes_after", "east_writes_after"), [(6.0, 0.0, 8.0), (15.0, 9.0, 9.5)]
)
def test_with_two_zones_a_service_one_zone_cannot_reach_stays_up_whenever_each_zone_writes(
    store: Store,
    clock: FakeClock,
    interval: float,
    west_writes_after: float,
    east_writes_after: float,
) -> None:
    probes = zone_probes(interval)
    once = dt.timedelta(seconds=interval / 2)
    targets = {TARGET.id: TARGET}
    # Both zones probe the service in the same slot of each round and write their results in
    # batches of up to 10 s: west cannot reach it, east can, and east's result of a slot is
    # not written yet when west writes its own.
    start = clock()
    writes = []
    for number in range(30):
        slot = start + dt.timedelta(seconds=interval * number)
        writes.append((slot + dt.timedelta(seconds=west_writes_after), "west", slot, False))
        writes.append((slot + dt.timedelta(seconds=east_writes_after), "east", slot, True))
    for written_at, zone, probed_at, success in sorted(writes):
        record_results(
            store,
            targets,
            [result(probed_at, success)],
            probes,
            written_at,
            zone=zone,
            once_within=once,
        )
    assert down_events(store) == 0
    assert state(store).state == "up"


def test_with_two_zones_the_other_zones_success_written_after_a_failure_ends_the_failures(
    store: Store, clock: FakeClock
) -> None:
    probes = zone_probes(60.0)
    once = dt.timedelta(seconds=30)
    targets = {TARGET.id: TARGET}
    now = clock()
    record_results(store, targets, [result(now, True)], probes, now, zone="east")
    # Then west no longer reaches the service, and east misses it every other round. West
    # writes first and east a second later: a failure both zones saw, then one only west saw.
    for number in range(8):
        slot = clock.advance(seconds=60)
        record_results(
            store, targets, [result(slot, False)], probes, slot, zone="west", once_within=once
        )
        east_success = number % 2 == 1
        written = slot + dt.timedelta(seconds=1)
        record_results(
            store,
            targets,
            [result(slot, east_success)],
            probes,
            written,
            zone="east",
            once_within=once,
        )
        if east_success:
            assert state(store).failures == 0  # east saw it up: the run of failures ends
    assert down_events(store) == 0
    assert state(store).state == "up"


def test_rounds_probed_while_the_store_was_away_are_written_late_and_move_nothing(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    now = clock()
    record_results(store, {TARGET.id: TARGET}, [result(now, True)], probes, now)
    backlog = ProbeBacklog()
    for _ in range(4):
        now = clock.advance(seconds=60)
        backlog.keep(UnrecordedRound(now, [result(now, False)], False, "default"))
    assert backlog.write(store) == 4 and len(backlog) == 0
    with store.session() as session:
        late = session.scalars(select(ProbeResultRow).where(ProbeResultRow.late)).all()
        assert [r.at for r in late] == [
            clock.now - dt.timedelta(seconds=60 * i) for i in (3, 2, 1, 0)
        ]
        assert not any(r.success for r in late)
    assert state(store).state == "up"  # four failures measured blind to the others: no verdict


def refuse_second_round(store: Store, finished_at: dt.datetime) -> None:
    """Make the store refuse to write the probe round that finished at finished_at."""
    with store.session() as session:
        if store.engine.dialect.name == "sqlite":
            stamp = finished_at.strftime("%Y-%m-%d %H:%M:%S.%f")
            session.execute(
                text(
                    "create trigger refuse before insert on probe_rounds "
                    f"when new.finished_at = '{stamp}' "
                    "begin select raise(abort, 'the store stopped'); end"
                )
            )
            return
        session.execute(
            text(
                "create function refuse() returns trigger language plpgsql as $$ begin "
                f"if new.finished_at = '{finished_at.isoformat()}' then "
                "raise exception 'the store stopped'; end if; return new; end $$"
            )
        )
        session.execute(
            text(
                "create trigger refuse before insert on probe_rounds "
                "for each row execute function refuse()"
            )
        )


def test_a_backlog_write_the_store_stops_partway_says_what_it_wrote(
    store: Store, clock: FakeClock
) -> None:
    # The store failed again after the first kept round was committed: that round was in the
    # store as late results, but the count was said only when every round was written, so
    # the results written were never said (and the next write's count left them out).
    backlog = ProbeBacklog()
    times = [clock.advance(seconds=60) for _ in range(3)]
    for at in times:
        backlog.keep(UnrecordedRound(at, [result(at, True)] * 2, False, None))
    refuse_second_round(store, times[1])
    said: list[str] = []
    handler = logger.add(lambda m: said.append(m.record["message"]), level="INFO")
    try:
        with pytest.raises(DBAPIError, match="the store stopped"):
            backlog.write(store)
    finally:
        logger.remove(handler)
    assert said == [
        "2 probe results measured while the store did not answer are written (late); "
        "4 still wait for the store"
    ]
    assert len(backlog) == 2  # the rounds not written are kept


def test_a_backlog_over_its_bound_drops_its_oldest_rounds_and_writes_them_as_gaps(
    store: Store, clock: FakeClock
) -> None:
    backlog = ProbeBacklog(limit=10)
    per_round = 5
    rounds = []
    for _ in range(3):
        now = clock.advance(seconds=60)
        rounds.append(now)
        backlog.keep(UnrecordedRound(now, [result(now, True)] * per_round, False, None))
    assert len(backlog) == 2
    assert backlog.write(store) == 2 * per_round
    with store.session() as session:
        gaps = [r for r in session.scalars(select(ProbeRound)) if r.kinds == ["gap"]]
        assert [(g.finished_at, g.services, g.probes) for g in gaps] == [(rounds[0], per_round, 0)]
