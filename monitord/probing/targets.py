"""What a round probes: the services the catalogue has online or suspended, each kind's spec
from its filing, and how many probes one service takes at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, or_, select

import probes
from monitord.config import ProbeSettings
from monitord.store import Store
from monitord.store.models import Service
from monitord.types import IN_SERVICE

CHEAP_KIND = "availability"


@dataclass(frozen=True)
class ServiceTarget:
    """What a round needs to know about one catalogue service."""

    id: str
    name: str
    url: str
    status: str
    probe: dict[str, Any] | None
    return_codes: dict[str, Any] | None
    max_concurrency: int | None
    suspension: dict[str, Any] | None


def not_probed() -> ColumnElement[bool]:
    """The services the probes no longer watch: gone, in a status they do not probe, or
    without a URL (the opposite of what `load_targets` reads)."""
    return or_(Service.gone.is_(True), Service.status.not_in(IN_SERVICE), Service.url.is_(None))


def load_targets(store: Store, service_ids: Iterable[str] | None = None) -> list[ServiceTarget]:
    """Online and suspended services with a URL (7.2.2: a suspended service is still probed)."""
    # Only the columns a round needs: a service's whole row (its raw filing, contacts …) is
    # many times their size, and reading it dominated loading a large catalogue.
    columns = (
        Service.id,
        Service.name,
        Service.url,
        Service.status,
        Service.probe,
        Service.return_codes,
        Service.max_concurrency,
        Service.suspension,
    )
    with store.session() as session:
        query = select(*columns).where(
            Service.gone.is_(False),
            Service.status.in_(IN_SERVICE),
            Service.url.is_not(None),
        )
        if service_ids is not None:
            query = select(*columns).where(Service.id.in_(list(service_ids)))
        return [
            ServiceTarget(
                id=row.id,
                name=row.name,
                url=row.url or "",
                status=row.status,
                probe=row.probe,
                return_codes=row.return_codes,
                max_concurrency=row.max_concurrency,
                suspension=row.suspension,
            )
            for row in session.execute(query.order_by(Service.id))
            if row.url
        ]


def spec_for_target(kind: str, target: ServiceTarget | None, settings: ProbeSettings) -> Any:
    """The spec of a kind for a service: its catalogue probe object, and the config's limits."""
    overrides: dict[str, Any] = {
        "timeout_s": settings.timeout_seconds,
        "denied_networks": tuple(settings.denied_networks),
    }
    if kind == CHEAP_KIND:
        overrides["slo_ms"] = settings.slo_ms
    return probes.spec_for(
        kind,
        target.probe if target else None,
        return_codes=target.return_codes if target else None,
        **overrides,
    )


def per_service_limit(target: ServiceTarget, settings: ProbeSettings) -> int:
    """Connections at once to one service: the config's limit, and at most a tenth of what the
    provider filed as its max_concurrency, so monitord never loads a provider."""
    if target.max_concurrency:
        return max(1, min(settings.per_service_concurrency, target.max_concurrency // 10))
    return settings.per_service_concurrency
