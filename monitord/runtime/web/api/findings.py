"""/api/v1/findings: what the checks found, and accepting one as a false positive or a
tolerated risk (admin)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from monitord.errors import UsageError
from monitord.runtime.app import App
from monitord.runtime.web.api.common import (
    LongText,
    Moment,
    Param,
    api_route,
    in_fields,
    in_store,
    not_found,
    page_params,
    page_query,
    paged,
    path_id,
    read_body,
    read_page,
    reply,
)
from monitord.runtime.web.api.openapi import (
    ANY_OBJECT,
    INT,
    TEXT,
    TIME,
    named,
    nullable,
    operation,
    page_of,
    record,
)
from monitord.runtime.web.auth import CALLER
from monitord.runtime.web.routes import store_session
from monitord.scans import accept_finding
from monitord.store.findings import finding_dict
from monitord.store.models import Finding
from monitord.types import SEVERITIES

FINDING_STATES = ("open", "accepted", "resolved")
FINDING = named(
    "Finding",
    record(
        id=INT,
        rule=TEXT,
        clause=TEXT,
        severity={"type": "string", "enum": list(SEVERITIES)},
        state={"type": "string", "enum": list(FINDING_STATES)},
        service_id=nullable(TEXT),
        subject=TEXT,
        summary=TEXT,
        first_seen=TIME,
        last_seen=TIME,
        count=INT,
        evidence=ANY_OBJECT,
        incident_id=nullable(INT),
        accepted_reason=nullable(TEXT),
        accepted_by=nullable(TEXT),
        accepted_until=nullable(TIME),
        resolved_at=nullable(TIME),
    ),
)
"""A finding as the API shows it (monitord.store.findings.finding_dict)."""

AFTER = Param("after", "the `next` of the previous page: findings with a larger id", kind="int")
SERVICE = Param("service", "only this service's findings")
SEVERITY = Param("severity", "only findings of this severity", choices=SEVERITIES)
STATE = Param("state", "only findings in this state (default: every state)", choices=FINDING_STATES)
LIST_PARAMS = (*page_params(AFTER), SERVICE, SEVERITY, STATE)


async def list_findings(request: web.Request) -> web.Response:
    """Findings, oldest first, filtered by service, severity and state."""
    page = read_page(request, AFTER)
    service, severity, state = (p.read(request) for p in (SERVICE, SEVERITY, STATE))

    def work(app: App) -> dict[str, Any]:
        query = page_query(Finding, page, service_id=service, severity=severity, state=state)
        with store_session(app) as session:
            return paged([finding_dict(f) for f in session.scalars(query)], page)

    return reply(await in_store(request, work))


class Acceptance(BaseModel):
    """Why a finding is accepted, and until when (it comes back open then)."""

    model_config = ConfigDict(extra="forbid")
    reason: LongText
    until: Moment


async def accept(request: web.Request) -> web.Response:
    """Accept a finding as a false positive or a tolerated risk, until a date (audited)."""
    finding_id = path_id(request, "finding")
    body = await read_body(request, Acceptance)
    actor = request[CALLER].name

    def work(app: App) -> dict[str, Any]:
        with store_session(app) as session:
            if session.get(Finding, finding_id) is None:
                raise not_found(f"finding {finding_id}")
            try:
                finding = accept_finding(
                    session, finding_id, body.reason, body.until, actor, app.clock()
                )
            except UsageError as exc:
                raise in_fields(exc) from None
            return finding_dict(finding)

    return reply(await in_store(request, work))


ROUTES = (
    api_route(
        "GET",
        "/findings",
        list_findings,
        "viewer",
        operation("findings, oldest first", answer=page_of(FINDING, INT), query=LIST_PARAMS),
    ),
    api_route(
        "POST",
        r"/findings/{id:[0-9]+}/accept",
        accept,
        "admin",
        operation(
            "accept a finding as a false positive or tolerated risk until a time",
            answer=FINDING,
            body=Acceptance,
            refusals=(409,),
            description="It comes back open when `until` passes. 409: `until` is not in the "
            "future.",
        ),
    ),
)
