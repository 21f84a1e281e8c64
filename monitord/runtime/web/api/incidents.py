"""/api/v1/incidents: incidents with their clause 7.3.3 clocks; one with its findings and
timeline; and the on-call actions (acknowledge, notify the management unit, record a
notification made by phone, resolve) through monitord.incidents, as the CLI does them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy.orm import Session

from monitord.errors import UsageError
from monitord.incidents import (
    acknowledge,
    draft_facts,
    incident_dict,
    incident_findings,
    notify_management,
    resolve,
    still_due,
    timeline,
)
from monitord.runtime.app import App
from monitord.runtime.web.api.common import (
    LongText,
    Moment,
    OptionalText,
    Param,
    ShortText,
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
from monitord.runtime.web.api.findings import FINDING
from monitord.runtime.web.api.openapi import (
    ANY_OBJECT,
    BOOL,
    INT,
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
from monitord.runtime.web.auth import CALLER
from monitord.runtime.web.routes import store_session
from monitord.store.findings import finding_dict
from monitord.store.models import Incident
from monitord.types import SEVERITIES

INCIDENT_STATES = ("open", "acknowledged", "notified", "resolved", "closed")
CLASSES = ("security", "availability")
INCIDENT = named(
    "Incident",
    record(
        id=INT,
        kind=TEXT,
        **{"class": {"type": "string", "enum": list(CLASSES)}},
        severity={"type": "string", "enum": list(SEVERITIES)},
        state={"type": "string", "enum": list(INCIDENT_STATES)},
        summary=TEXT,
        services=array(TEXT),
        subjects=array(TEXT),
        detected_at=TIME,
        occurred_at=nullable(TIME),
        notify_by=nullable(TIME),
        minutes_left=nullable(INT),
        notification_sent_at=nullable(TIME),
        notified_at=nullable(TIME),
        notified_via=nullable(TEXT),
        late=BOOL,
        acknowledged_at=nullable(TIME),
        acknowledged_by=nullable(TEXT),
        resolved_at=nullable(TIME),
        closed_at=nullable(TIME),
    ),
)
"""An incident as the API shows it (monitord.incidents.incident_dict): `notify_by` is its 7.3.3
deadline and `minutes_left` the minutes to it while the management unit has not received it."""
EVENT = named("IncidentEvent", record(at=TIME, kind=TEXT, actor=TEXT, detail=ANY_OBJECT))
DRAFT = named(
    "NotificationDraft",
    record(
        detected_at=TIME, occurred_at=TIME, services=array(ANY_OBJECT), findings=array(ANY_OBJECT)
    ),
)
INCIDENT_DETAIL = named(
    "IncidentDetail",
    extended(INCIDENT, findings=array(FINDING), timeline=array(EVENT), draft=DRAFT),
)
"""One incident with its findings, its timeline (oldest first) and what monitord drafts for
the notification (times, services and their coverage, findings)."""

AFTER = Param("after", "the `next` of the previous page: incidents with a smaller id", kind="int")
STATE = Param(
    "state",
    "only incidents in this state; active: open, acknowledged or notified, or resolved with "
    "the 7.3.3 notification still due",
    choices=(*INCIDENT_STATES, "active"),
)
CLASS = Param("class", "only security or only availability incidents", choices=CLASSES)
LIST_PARAMS = (*page_params(AFTER), STATE, CLASS)


class Note(BaseModel):
    """An optional note for the timeline."""

    model_config = ConfigDict(extra="forbid")
    note: OptionalText = ""


class Notification(BaseModel):
    """The four parts clause 7.3.3 requires of a notification to the management unit."""

    model_config = ConfigDict(extra="forbid")
    scope: LongText
    """初步判定的影响范围"""
    harm: LongText
    """初步判定的危害"""
    measures: LongText
    """已采取的应急处置措施"""
    rectification: LongText
    """整改措施"""

    def parts(self) -> dict[str, str | None]:
        """The parts as monitord.incidents.notify_management takes them."""
        return {
            "scope": self.scope,
            "harm": self.harm,
            "measures": self.measures,
            "rectification": self.rectification,
        }


class OutOfBand(Notification):
    """A notification made by phone or in person: how and to whom, and when (default: now)."""

    how: ShortText
    at: Moment | None = None


async def list_incidents(request: web.Request) -> web.Response:
    """Incidents, newest first, filtered by state and class."""
    page = read_page(request, AFTER)
    state, klass = STATE.read(request), CLASS.read(request)

    def work(app: App) -> dict[str, Any]:
        exact = None if state == "active" else state
        query = page_query(Incident, page, newest_first=True, state=exact, klass=klass)
        if state == "active":
            query = query.where(still_due())
        now = app.clock()
        with store_session(app) as session:
            return paged([incident_dict(i, now) for i in session.scalars(query)], page)

    return reply(await in_store(request, work))


def _detail(session: Session, incident: Incident, app: App) -> dict[str, Any]:
    data = incident_dict(incident, app.clock())
    data["findings"] = [finding_dict(f) for f in incident_findings(session, incident.id)]
    data["timeline"] = timeline(session, incident.id)
    data["draft"] = draft_facts(session, incident)
    return data


def _existing(session: Session, incident_id: int) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise not_found(f"incident {incident_id}")
    return incident


async def get_incident(request: web.Request) -> web.Response:
    """One incident with its findings, timeline and notification draft."""
    incident_id = path_id(request, "incident")

    def work(app: App) -> dict[str, Any]:
        with store_session(app) as session:
            return _detail(session, _existing(session, incident_id), app)

    return reply(await in_store(request, work))


def _acting(
    request: web.Request, incident_id: int, act: Callable[[Session, App, str], object]
) -> Callable[[App], dict[str, Any]]:
    """Store work: `act(session, app, caller)` on an existing incident, then its detail."""
    actor = request[CALLER].name

    def work(app: App) -> dict[str, Any]:
        with store_session(app) as session:
            _existing(session, incident_id)
            try:
                act(session, app, actor)
            except UsageError as exc:
                raise in_fields(exc) from None
            session.flush()
            return _detail(session, _existing(session, incident_id), app)

    return work


async def ack(request: web.Request) -> web.Response:
    """Acknowledge: somebody is on it; the escalation stops."""
    incident_id = path_id(request, "incident")
    body = await read_body(request, Note)
    work = _acting(
        request,
        incident_id,
        lambda session, app, actor: acknowledge(
            session, incident_id, actor, app.clock(), body.note
        ),
    )
    return reply(await in_store(request, work))


async def resolve_incident(request: web.Request) -> web.Response:
    """Mark resolved; a security incident's duty to notify stays until it is notified."""
    incident_id = path_id(request, "incident")
    body = await read_body(request, Note)
    work = _acting(
        request,
        incident_id,
        lambda session, app, actor: resolve(session, incident_id, actor, app.clock(), body.note),
    )
    return reply(await in_store(request, work))


async def notify(request: web.Request) -> web.Response:
    """Queue the 7.3.3 notification (or a follow-up) to the management unit's channels. The
    daemon delivers it; the incident counts as notified once a channel confirms delivery."""
    incident_id = path_id(request, "incident")
    body = await read_body(request, Notification)
    work = _acting(
        request,
        incident_id,
        lambda session, app, actor: notify_management(
            session, app.settings, incident_id, body.parts(), actor, app.clock()
        ),
    )
    return reply(await in_store(request, work), status=202)


async def notify_out_of_band(request: web.Request) -> web.Response:
    """Record a notification made by phone or in person: it counts at `at` (default now)."""
    incident_id = path_id(request, "incident")
    body = await read_body(request, OutOfBand)
    work = _acting(
        request,
        incident_id,
        lambda session, app, actor: notify_management(
            session,
            app.settings,
            incident_id,
            body.parts(),
            actor,
            app.clock(),
            out_of_band=body.how,
            at=body.at,
        ),
    )
    return reply(await in_store(request, work))


ROUTES = (
    api_route(
        "GET",
        "/incidents",
        list_incidents,
        "viewer",
        operation(
            "incidents, newest first, with their 7.3.3 clocks",
            answer=page_of(INCIDENT, INT),
            query=LIST_PARAMS,
        ),
    ),
    api_route(
        "GET",
        r"/incidents/{id:[0-9]+}",
        get_incident,
        "viewer",
        operation("one incident: findings, timeline, notification draft", answer=INCIDENT_DETAIL),
    ),
    api_route(
        "POST",
        r"/incidents/{id:[0-9]+}/ack",
        ack,
        "oncall",
        operation(
            "acknowledge an incident: somebody is on it, the escalation stops",
            answer=INCIDENT_DETAIL,
            body=Note,
            refusals=(409,),
            description="409: it was already acknowledged, or is no longer open.",
        ),
    ),
    api_route(
        "POST",
        r"/incidents/{id:[0-9]+}/notify",
        notify,
        "oncall",
        operation(
            "send the clause 7.3.3 notification (or a follow-up) to the management unit",
            answer=INCIDENT_DETAIL,
            status=202,
            body=Notification,
            refusals=(409,),
            description="Queued for the management unit's channels and delivered by the "
            "daemon; `notified_at` is set when a channel confirms it. 409: the incident is "
            "closed, or no management channel is configured.",
        ),
    ),
    api_route(
        "POST",
        r"/incidents/{id:[0-9]+}/out-of-band",
        notify_out_of_band,
        "oncall",
        operation(
            "record a 7.3.3 notification made by phone or in person",
            answer=INCIDENT_DETAIL,
            body=OutOfBand,
            refusals=(409,),
            description="It counts as received at `at` (default now). 409: the incident is "
            "closed, or `at` is in the future or before the incident happened.",
        ),
    ),
    api_route(
        "POST",
        r"/incidents/{id:[0-9]+}/resolve",
        resolve_incident,
        "oncall",
        operation(
            "mark an incident resolved",
            answer=INCIDENT_DETAIL,
            body=Note,
            refusals=(409,),
            description="409: it is already resolved or closed.",
        ),
    ),
)
