"""One catalogued service for the tests that record probe results by hand."""

from __future__ import annotations

from monitord.probing import ServiceTarget
from monitord.store import Store
from monitord.store.models import Service
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


def catalogue(store: Store, clock: FakeClock) -> None:
    """Put `TARGET` in the store's catalogue, online."""
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
