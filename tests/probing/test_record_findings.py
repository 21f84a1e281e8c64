"""A probe result ends, rule by rule, the findings of its kind that it no longer draws."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from monitord.config import ProbeSettings
from monitord.probing import ServiceTarget, record_results
from monitord.store import Store
from monitord.store.models import Finding, Service
from monitord.types import ProbeResult
from tests.conftest import FakeClock

TARGET = ServiceTarget(
    id="svc-0001",
    name="企业开办",
    url="https://svc.example/",
    status="online",
    probe=None,
    return_codes=None,
    max_concurrency=None,
    suspension=None,
)
NO_HSTS = {"present": False, "enabled": False, "max_age": None}


def tls_result(at: dt.datetime, success: bool = True, **facts: Any) -> ProbeResult:
    return ProbeResult(
        kind="tls",
        target=TARGET.url,
        success=success,
        duration_ms=40.0,
        started_at=at,
        facts=facts,
        error=None if success else "connection refused",
        service_id=TARGET.id,
    )


def open_findings(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(Finding.rule).where(Finding.state == "open")))


def test_a_fixed_weakness_ends_its_finding_while_another_stays(
    store: Store, clock: FakeClock
) -> None:
    # nginx's weak CBC suites were removed; HSTS was still missing: weak_cipher stayed open
    # as long as no_hsts did, because the result drew a finding.
    with store.session() as session:
        session.add(
            Service(
                id=TARGET.id,
                name=TARGET.name,
                status="online",
                url=TARGET.url,
                first_seen=clock(),
                last_seen=clock(),
            )
        )
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
