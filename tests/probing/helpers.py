"""One catalogued service, and its probe results, for the tests that record results by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from monitord.probing import ServiceTarget
from monitord.store import Store
from monitord.store.models import Service
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


def catalogue(store: Store, clock: FakeClock, target: ServiceTarget = TARGET) -> None:
    """Put `target` in the store's catalogue, online."""
    with store.session() as session:
        session.add(
            Service(
                id=target.id,
                name=target.name,
                status="online",
                url=target.url,
                first_seen=clock(),
                last_seen=clock(),
            )
        )


def result_of(
    kind: str, at: dt.datetime, success: bool = True, duration_ms: float = 12.0, **facts: Any
) -> ProbeResult:
    """A `kind` probe result of `TARGET` measured at `at`; a failure says "connection refused"."""
    return ProbeResult(
        kind=kind,
        target=TARGET.url,
        success=success,
        duration_ms=duration_ms,
        started_at=at,
        facts=facts,
        error=None if success else "connection refused",
        service_id=TARGET.id,
    )
