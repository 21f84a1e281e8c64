"""A service no longer probed lets go of what the probes said of it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from monitord.config import ProbeSettings, parse_config
from monitord.incidents import intake
from monitord.probing import record_results, release_withdrawn
from monitord.store import Store
from monitord.store.models import Finding, Incident, Service
from tests.conftest import FakeClock
from tests.probing.test_cluster_record import TARGET, catalogued, result, state

pytestmark = pytest.mark.usefixtures(catalogued.__name__)  # the service, in the catalogue


def down(store: Store, clock: FakeClock, probes: ProbeSettings) -> None:
    """The service declared down: three failed rounds."""
    for _ in range(3):
        now = clock.advance(seconds=60)
        record_results(store, {TARGET.id: TARGET}, [result(now, False)], probes, now)


def catalogued_as(store: Store, **changes: object) -> None:
    """The service as a later catalogue sync left it."""
    with store.session() as session:
        service = session.get(Service, TARGET.id)
        assert service is not None
        for name, value in changes.items():
            setattr(service, name, value)


def open_rules(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(Finding.rule).where(Finding.state == "open")))


@pytest.mark.parametrize("withdrawn", [{"status": "offline"}, {"gone": True}, {"url": None}])
def test_a_service_taken_offline_while_down_ends_its_outage(
    store: Store, clock: FakeClock, probes: ProbeSettings, withdrawn: dict[str, object]
) -> None:
    # Its service_down and unannounced_outage stayed open for ever (nothing probes it to see it
    # come back), and with them its outage incident, counted down on every surface.
    settings = parse_config({}, "test", env={})
    down(store, clock, probes)
    with store.session() as session:
        intake(session, settings, clock())
    assert {"service_down", "unannounced_outage"} <= open_rules(store)
    catalogued_as(store, **withdrawn)
    assert release_withdrawn(store, clock.advance(minutes=15)) == [TARGET.id]
    assert open_rules(store) == set()
    assert state(store).state == "unknown"
    with store.session() as session:
        intake(session, settings, clock())
    with store.session() as session:
        assert {i.state for i in session.scalars(select(Incident))} == {"resolved"}
    assert release_withdrawn(store, clock()) == []  # nothing left to let go


def test_a_service_still_probed_keeps_its_findings(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    down(store, clock, probes)
    catalogued_as(store, status="suspended")  # a suspended service is still probed (7.2.2)
    assert release_withdrawn(store, clock()) == []
    assert state(store).state == "down"
    assert "service_down" in open_rules(store)


def test_a_round_that_began_before_the_service_was_withdrawn_does_not_bring_it_back(
    store: Store, clock: FakeClock, probes: ProbeSettings
) -> None:
    # The round's targets were read at its start: a result recorded after the sync marked the
    # service up again and reopened its findings, until the next sync.
    down(store, clock, probes)
    catalogued_as(store, gone=True)
    release_withdrawn(store, clock.advance(seconds=10))
    now = clock.advance(seconds=20)
    record_results(store, {TARGET.id: TARGET}, [result(now, True)], probes, now)
    assert open_rules(store) == set()
    assert state(store).state == "unknown"  # not "up": it is no longer watched
