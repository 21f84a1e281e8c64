"""What recording a round writes: only the state columns it moved, its results' JSON as the
store reads it back, and a report cheap to show."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from monitord.config import ProbeSettings
from monitord.probing import record_results
from monitord.probing.record import RoundReport
from monitord.probing.state import advance_state, mark_deep, round_states, write_states
from monitord.store import Store, json_text
from monitord.store.findings import NewRows
from monitord.store.models import Finding, ProbeResultRow, Service, ServiceState
from tests.conftest import FakeClock
from tests.probing.test_cluster_record import TARGET, catalogued, result, state

pytestmark = pytest.mark.usefixtures(catalogued.__name__)  # the service, in the catalogue


def test_a_round_writes_only_what_it_moved_and_keeps_what_another_daemon_wrote_meanwhile(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    first = clock()
    record_results(store, {TARGET.id: TARGET}, [result(first, True)], probes, first)
    later = first + dt.timedelta(minutes=1)
    deep_at = first + dt.timedelta(seconds=30)
    with store.session() as session:
        states = round_states(session, [TARGET.id], lock=False)  # as read unlocked
        with store.session() as other:  # another daemon's deep round lands after the read
            mark_deep(other, [TARGET.id], deep_at)
        machine = states[TARGET.id]
        advance_state(NewRows(), machine, TARGET, result(later, True), probes, later, blind=False)
        write_states(session, states.values())
    written = state(store)
    assert written.last_deep_at == deep_at  # not put back to what this round read (None)
    assert (written.successes, written.last_probe_at, written.state) == (2, later, "up")


def test_a_state_machine_that_did_not_move_is_not_written(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    now = clock()
    record_results(store, {TARGET.id: TARGET}, [result(now, True)], probes, now)
    with store.session() as session:
        states = round_states(session, [TARGET.id], lock=False)  # as read unlocked
        with store.session() as other:  # another daemon judged it meanwhile
            other.execute(update(ServiceState).values(failures=1, last_error="connection refused"))
        write_states(session, states.values())  # read, not moved: nothing to write
    assert (state(store).failures, state(store).last_error) == (1, "connection refused")


def test_result_facts_are_stored_as_json_and_read_back_whole(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    now = clock()
    facts = {"status": 200, "cert_subject": "CN=苏商通", "hsts": {"max_age": 600}, "huge": 2**70}
    probed = result(now, True)
    probed.facts.update(facts)
    record_results(store, {TARGET.id: TARGET}, [probed], probes, now)
    with store.session() as session:
        stored = session.scalars(select(ProbeResultRow.facts)).one()
    assert stored == facts


def test_store_json_refuses_what_json_refuses() -> None:
    assert json_text({"中": 1, 2: None}) == '{"中":1,"2":null}'
    with pytest.raises(TypeError):
        json_text({"at": dt.datetime(2026, 1, 1)})


def test_a_round_report_shows_its_counts_not_its_thousands_of_results(clock: FakeClock) -> None:
    results = [result(clock(), True) for _ in range(2000)]
    report = RoundReport(services=2000, probes=2000, results=results)
    shown = repr(report)
    assert "probes=2000" in shown
    assert len(shown) < 200


def test_a_suspension_filed_while_a_round_ran_counts_for_the_outage_it_sees(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    # The round judged by the catalogue as it stood when it began: a provider who filed the
    # suspension, then stopped the service, got service_down and "服务中断且未报备暂停申请",
    # never resolved while the service stayed down.
    targets = {TARGET.id: TARGET}  # the round's view: online, no suspension
    for _ in range(2):
        now = clock.advance(seconds=60)
        record_results(store, targets, [result(now, False)], probes, now)
    with store.session() as session:
        service = session.get(Service, TARGET.id)
        assert service is not None
        service.status = "suspended"
        service.suspension = {
            "filed_at": "2026-11-02T09:01:30+08:00",
            "planned_resume": "2026-11-09",
        }
    now = clock.advance(seconds=60)
    record_results(store, targets, [result(now, False)], probes, now)
    assert state(store).state == "down"
    with store.session() as session:
        opened = session.scalars(select(Finding.rule).where(Finding.state == "open")).all()
    assert not {"service_down", "unannounced_outage"} & set(opened)


def test_a_service_still_down_moves_its_findings_last_seen_and_count_on(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    # They stood at the round the state changed: "last seen 19:20, x1" for a service that had
    # failed 17 times since, read as "it stopped at 19:20".
    targets = {TARGET.id: TARGET}
    for _ in range(6):
        now = clock.advance(seconds=60)
        record_results(store, targets, [result(now, False)], probes, now)
    with store.session() as session:
        down = session.scalars(select(Finding).where(Finding.rule == "service_down")).one()
        assert (down.count, down.last_seen) == (4, now)  # down at the third failure, then 3 more
