"""Two daemons recording the same new service at once, on PostgreSQL (SQLite serialises its
writers, so the race cannot happen there)."""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select

from monitord.config import ProbeSettings
from monitord.probing import record, record_results
from monitord.probing.targets import ServiceTarget
from monitord.store import Store
from monitord.store.models import ProbeResultRow, ServiceState
from tests.conftest import FakeClock
from tests.probing.helpers import catalogue
from tests.probing.test_cluster_record import TARGET, result, state


@pytest.fixture
def pg_store(pg_store: Store, clock: FakeClock) -> Store:
    """A PostgreSQL store holding the service, online."""
    catalogue(pg_store, clock, TARGET)
    return pg_store


def test_two_daemons_recording_a_new_service_at_once_both_land(
    pg_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, probes: ProbeSettings
) -> None:
    # While the split changes hands two daemons probe the same service; both found no state
    # row and inserted one, and the second's whole round failed on the key.
    both_read = threading.Barrier(2)
    calls = []
    original = record.round_states

    def round_states_then_wait(session: Any, probed: Any) -> Any:
        states = original(session, probed)
        calls.append(1)
        if len(calls) <= 2:  # each daemon's first attempt: both have read, neither written
            both_read.wait(timeout=10)
        return states

    monkeypatch.setattr(record, "round_states", round_states_then_wait)
    now = clock()
    errors: list[BaseException] = []

    def daemon() -> None:
        try:
            record_results(pg_store, {TARGET.id: TARGET}, [result(now, True)], probes, now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=daemon) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(calls) == 3  # one of them recorded again
    with pg_store.session() as session:
        assert len(session.scalars(select(ProbeResultRow)).all()) == 2
    assert state(pg_store).successes == 2


def second_service(store: Store, clock: FakeClock) -> ServiceTarget:
    """A second online service beside TARGET, in the store, as its target."""
    other = dataclasses.replace(TARGET, id="svc-0002", url="https://svc2.example/")
    catalogue(store, clock, other)
    return other


def test_three_daemons_whose_rounds_overlap_differently_all_land(
    pg_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, probes: ProbeSettings
) -> None:
    """At a cold start every daemon probes every service for a few seconds (none counts the
    others yet). Daemon a records services 1 and 2, b service 1, c service 2: a's first try
    meets b's new rows, its second c's, committed in between; its third lands."""
    other = second_service(pg_store, clock)
    ab_read = threading.Barrier(2)
    b_done, c_may_read, c_done = threading.Event(), threading.Event(), threading.Event()
    reads: dict[str, int] = {}
    original = record.round_states

    def choreographed(session: Any, probed: Any) -> Any:
        states = original(session, probed)
        name = threading.current_thread().name
        reads[name] = reads.get(name, 0) + 1
        if name in "ab" and reads[name] == 1:
            ab_read.wait(timeout=10)  # a and b have both read: neither sees the other's rows
        if name == "a" and reads[name] == 1:
            b_done.wait(timeout=10)  # b's rows are committed before a writes its own
        if name == "a" and reads[name] == 2:
            c_may_read.set()  # c reads now: it cannot see a's rows, a has not seen c's
            c_done.wait(timeout=10)
        return states

    monkeypatch.setattr(record, "round_states", choreographed)
    now = clock()
    errors: list[BaseException] = []
    targets = {TARGET.id: TARGET, other.id: other}
    batches = {
        "a": [result(now, True), dataclasses.replace(result(now, True), service_id=other.id)],
        "b": [result(now, True)],
        "c": [dataclasses.replace(result(now, True), service_id=other.id)],
    }

    def daemon() -> None:
        name = threading.current_thread().name
        if name == "c":
            c_may_read.wait(timeout=10)
        try:
            record_results(pg_store, targets, batches[name], probes, now)
        except BaseException as exc:
            errors.append(exc)
        finally:
            (c_done if name == "c" else b_done if name == "b" else threading.Event()).set()

    threads = [threading.Thread(target=daemon, name=name) for name in "abc"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert reads["a"] == 3  # met b's rows, then c's
    with pg_store.session() as session:
        assert len(session.scalars(select(ProbeResultRow)).all()) == 4


def test_a_round_that_deadlocks_with_another_daemons_transaction_is_recorded_again(
    pg_store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    """Another daemon holds service 2's state and then wants service 1's, while this one's
    round records both: PostgreSQL gives one of the two up. This round was written late, as if
    the store were down; it is recorded again, and moves both state machines."""
    other = second_service(pg_store, clock)
    targets = {TARGET.id: TARGET, other.id: other}
    first = clock()
    both = [result(first, True), dataclasses.replace(result(first, True), service_id=other.id)]
    record_results(pg_store, targets, both, probes, first)  # the states exist
    now = clock.advance(seconds=60)
    both = [result(now, True), dataclasses.replace(result(now, True), service_id=other.id)]
    errors: list[BaseException] = []

    def daemon() -> None:
        try:
            record_results(pg_store, targets, both, probes, now)
        except BaseException as exc:
            errors.append(exc)

    with pg_store.engine.connect() as watcher, pg_store.engine.connect() as another:
        another.exec_driver_sql("set deadlock_timeout = '5s'")  # this round is the one given up
        another.exec_driver_sql(
            "select 1 from service_states where service_id = 'svc-0002' for update"
        )
        thread = threading.Thread(target=daemon)
        thread.start()
        deadline = time.monotonic() + 10
        while not watcher.exec_driver_sql(  # the round waits for service 2's row
            "select count(*) from pg_stat_activity where wait_event_type = 'Lock'"
        ).scalar():
            assert time.monotonic() < deadline, "the round never waited for the row"
            watcher.rollback()  # the activity is read once per transaction
            time.sleep(0.05)
        another.exec_driver_sql(
            "update service_states set failures = failures where service_id = 'svc-0001'"
        )
        another.commit()
        thread.join(30)
    assert errors == []
    assert state(pg_store).successes == 2
    with pg_store.session() as session:
        assert session.get(ServiceState, other.id).successes == 2  # type: ignore[union-attr]
