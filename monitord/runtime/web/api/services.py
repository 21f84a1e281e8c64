"""/api/v1/services: each service's catalogue status and probe state; one service with its last
probe results and open findings."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from monitord.redact import mask_url, mask_urls_within
from monitord.runtime.app import App
from monitord.runtime.web.api.common import (
    Param,
    api_route,
    in_store,
    not_found,
    page_params,
    paged,
    read_page,
    reply,
    storable_text,
)
from monitord.runtime.web.api.findings import FINDING
from monitord.runtime.web.api.openapi import (
    ANY_OBJECT,
    BOOL,
    INT,
    NUMBER,
    TEXT,
    TIME,
    array,
    extended,
    named,
    nullable,
    operation,
    page_of,
    record,
)
from monitord.runtime.web.routes import store_session
from monitord.store.findings import finding_dict
from monitord.store.models import Finding, ProbeResultRow, Service, ServiceState

PROBE_STATES = ("unknown", "up", "degraded", "down")
SERVICE = named(
    "Service",
    record(
        id=TEXT,
        name=TEXT,
        status=TEXT,
        gone=BOOL,
        url=nullable(TEXT),
        provider=nullable(TEXT),
        state={"type": "string", "enum": list(PROBE_STATES)},
        state_since=nullable(TIME),
        last_probe_at=nullable(TIME),
        failures=INT,
        last_error=nullable(TEXT),
        filing_problems=INT,
        open_findings=INT,
    ),
)
"""A service in a list: its catalogue status, its probe state, how many problems it has."""
RESULT = named(
    "ProbeResult",
    record(
        kind=TEXT,
        at=TIME,
        success=BOOL,
        duration_ms=NUMBER,
        error=nullable(TEXT),
        blind=BOOL,
        facts=ANY_OBJECT,
    ),
)
SERVICE_DETAIL = named(
    "ServiceDetail",
    extended(
        SERVICE,
        filing_problems=array(TEXT),
        last_results=array(RESULT),
        findings=array(FINDING),
    ),
)
"""One service: its filing problems listed, its last result of each probe kind, and its open
findings."""

AFTER = Param("after", "the `next` of the previous page: services with a larger id")
STATUS = Param("status", "only services of this catalogue status (online, suspended…)")
STATE = Param("state", "only services in this probe state", choices=PROBE_STATES)
GONE = Param("gone", "also services gone from the catalogue (default false)", kind="bool")
LIST_PARAMS = (*page_params(AFTER), STATUS, STATE, GONE)


def _summary(service: Service, state: ServiceState | None, open_findings: int) -> dict[str, Any]:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": service.id,
        "name": service.name,
        "status": service.status,
        "gone": service.gone,
        # A filed URL may carry credentials: shown as every listing shows URLs.
        "url": mask_url(service.url) if service.url else None,
        "provider": service.provider,
        "state": state.state if state else "unknown",
        "state_since": iso(state.since) if state else None,
        "last_probe_at": iso(state.last_probe_at) if state else None,
        "failures": state.failures if state else 0,
        "last_error": state.last_error if state else None,
        "filing_problems": len(service.filing_problems or []),
        "open_findings": open_findings,
    }


def _open_counts(session: Session, service_ids: list[str]) -> dict[str, int]:
    rows = session.execute(
        select(Finding.service_id, func.count())
        .where(Finding.service_id.in_(service_ids), Finding.state == "open")
        .group_by(Finding.service_id)
    ).all()
    return {service_id: count for service_id, count in rows if service_id is not None}


async def list_services(request: web.Request) -> web.Response:
    """Services by id, with their catalogue status and probe state."""
    page = read_page(request, AFTER)
    status, state, gone = (p.read(request) for p in (STATUS, STATE, GONE))

    def work(app: App) -> dict[str, Any]:
        query = (
            select(Service, ServiceState)
            .outerjoin(ServiceState, ServiceState.service_id == Service.id)
            .order_by(Service.id)
            .limit(page.limit + 1)
        )
        if page.after is not None:
            query = query.where(Service.id > page.after)
        if status is not None:
            query = query.where(Service.status == status)
        if state == "unknown":
            query = query.where((ServiceState.state.is_(None)) | (ServiceState.state == "unknown"))
        elif state is not None:
            query = query.where(ServiceState.state == state)
        if not gone:
            query = query.where(Service.gone.is_(False))
        with store_session(app) as session:
            rows = session.execute(query).all()
            counts = _open_counts(session, [service.id for service, _ in rows])
            items = [_summary(s, st, counts.get(s.id, 0)) for s, st in rows]
        return paged(items, page)

    return reply(await in_store(request, work))


def _last_results(session: Session, service_id: str) -> list[dict[str, Any]]:
    """The newest result of each probe kind the service had."""
    newest = (
        select(func.max(ProbeResultRow.id))
        .where(ProbeResultRow.service_id == service_id)
        .group_by(ProbeResultRow.kind)
    )
    rows = session.scalars(
        select(ProbeResultRow).where(ProbeResultRow.id.in_(newest)).order_by(ProbeResultRow.kind)
    )
    return [
        {
            "kind": r.kind,
            "at": r.at.isoformat(),
            "success": r.success,
            "duration_ms": r.duration_ms,
            "error": r.error,
            "blind": r.blind,
            "facts": mask_urls_within(r.facts or {}),
        }
        for r in rows
    ]


async def get_service(request: web.Request) -> web.Response:
    """One service: its filing problems, last probe results and open findings."""
    service_id = request.match_info["id"]

    def work(app: App) -> dict[str, Any]:
        with store_session(app) as session:
            service = session.get(Service, service_id) if storable_text(service_id) else None
            if service is None:
                raise not_found(f"service {service_id!r}")
            findings = session.scalars(
                select(Finding)
                .where(Finding.service_id == service_id, Finding.state == "open")
                .order_by(Finding.id)
            ).all()
            data = _summary(service, session.get(ServiceState, service_id), len(findings))
            data["filing_problems"] = list(service.filing_problems or [])
            data["last_results"] = _last_results(session, service_id)
            data["findings"] = [finding_dict(f) for f in findings]
            return data

    return reply(await in_store(request, work))


ROUTES = (
    api_route(
        "GET",
        "/services",
        list_services,
        "viewer",
        operation(
            "services by id, with catalogue status and probe state",
            answer=page_of(SERVICE, TEXT),
            query=LIST_PARAMS,
        ),
    ),
    api_route(
        "GET",
        "/services/{id}",
        get_service,
        "viewer",
        operation(
            "one service: filing problems, last probe results, open findings",
            answer=SERVICE_DETAIL,
        ),
    ),
)
