"""Two daemons recording the same new service at once, on PostgreSQL (SQLite serialises its
writers, so the race cannot happen there)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from monitord.config import parse_config
from monitord.probing import record, record_results
from monitord.store import Store, open_store
from monitord.store.models import ProbeResultRow, Service
from tests.conftest import FakeClock, PostgresServer
from tests.probing.test_cluster_record import TARGET, result, state


@pytest.fixture
def pg_store(postgres: PostgresServer | None, clock: FakeClock) -> Iterator[Store]:
    """A PostgreSQL store holding the service, online."""
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    store = open_store(postgres.new_database())
    with store.session() as session:
        session.add(
            Service(
                id=TARGET.id,
                name=TARGET.name,
                status="online",
                first_seen=clock(),
                last_seen=clock(),
            )
        )
    yield store
    store.dispose()


def test_two_daemons_recording_a_new_service_at_once_both_land(
    pg_store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
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
    probes = parse_config({}, "test", env={}).probes
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
