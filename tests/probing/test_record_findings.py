"""A probe result ends, rule by rule, the findings of its kind that it no longer draws."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from monitord.config import ProbeSettings
from monitord.probing import record_results
from monitord.store import Store
from monitord.store.models import Finding, ServiceState
from monitord.types import ProbeResult
from tests.conftest import FakeClock
from tests.probing.helpers import TARGET, catalogue, result_of

NO_HSTS = {"present": False, "enabled": False, "max_age": None}


def tls_result(at: dt.datetime, success: bool = True, **facts: Any) -> ProbeResult:
    return result_of("tls", at, success, duration_ms=40.0, **facts)


def availability_result(at: dt.datetime, **facts: Any) -> ProbeResult:
    base = {"status": 200, "scheme": "https", "total_ms": 20.0, "slo_ms": 3000}
    return result_of("availability", at, duration_ms=20.0, **{**base, **facts})


def open_findings(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(Finding.rule).where(Finding.state == "open")))


def test_a_fixed_weakness_ends_its_finding_while_another_stays(
    store: Store, clock: FakeClock
) -> None:
    # nginx's weak CBC suites were removed; HSTS was still missing: weak_cipher stayed open
    # as long as no_hsts did, because the result drew a finding.
    catalogue(store, clock)
    settings, targets = ProbeSettings(), {TARGET.id: TARGET}
    weak = ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]
    record_results(
        store,
        targets,
        [tls_result(clock(), weak_ciphers=weak, hsts=NO_HSTS)],
        settings,
        clock(),
        deep=True,
    )
    assert {"weak_cipher", "no_hsts"} <= open_findings(store)
    clock.advance(hours=1)
    record_results(
        store,
        targets,
        [tls_result(clock(), weak_ciphers=[], hsts=NO_HSTS)],
        settings,
        clock(),
        deep=True,
    )
    assert "weak_cipher" not in open_findings(store)
    assert "no_hsts" in open_findings(store)
    # A tls probe that could not reach the service judges nothing: what stands, stands.
    clock.advance(hours=1)
    record_results(
        store, targets, [tls_result(clock(), success=False)], settings, clock(), deep=True
    )
    assert "no_hsts" in open_findings(store)


def test_a_resumed_handshake_neither_opens_nor_ends_certificate_findings(
    store: Store, clock: FakeClock
) -> None:
    # The certificate was renewed in place (the server kept its ticket keys): `monitord probe`
    # saw the new one and ended cert_expiring_7d, then the daemon's resumed probe, carrying the
    # old certificate's 5 days, opened it again, and ran the deep probes at once, twice.
    catalogue(store, clock)
    settings, targets = ProbeSettings(), {TARGET.id: TARGET}
    old_cert = {"days_to_expiry": 5.0, "cert_not_after": "2026-12-11T00:00:00+00:00"}
    new_cert = {"days_to_expiry": 300.0, "cert_not_after": "2027-10-02T00:00:00+00:00"}

    def record(**facts: Any) -> list[str]:
        clock.advance(minutes=1)
        results = [availability_result(clock(), **facts)]
        return record_results(store, targets, results, settings, clock()).deep_due

    record(tls_resumed=False, **old_cert)
    with store.session() as session:  # its deep probes have run
        state = session.get(ServiceState, TARGET.id)
        assert state is not None
        state.last_deep_at = clock()
    assert "cert_expiring_7d" in open_findings(store)
    # Renewed: a full handshake ends the finding, and the new certificate calls the deep probes.
    assert record(tls_resumed=False, **new_cert) == [TARGET.id]
    assert "cert_expiring_7d" not in open_findings(store)
    assert record(tls_resumed=True, **old_cert) == []  # the old session's: not news
    assert "cert_expiring_7d" not in open_findings(store)
    record(tls_resumed=False, **old_cert)
    assert "cert_expiring_7d" in open_findings(store)
    record(tls_resumed=True, **new_cert)  # nor does a resumed one end what stands
    assert "cert_expiring_7d" in open_findings(store)
