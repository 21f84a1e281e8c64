"""/api/v1/scans: security scans with ZAP, and asking for one now (admin), queued as
`monitord scan SERVICE_ID` queues it: the target checked first, the running daemon starts it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict

from monitord.errors import ZapError
from monitord.redact import one_line
from monitord.runtime.app import App
from monitord.runtime.web.api.common import (
    Param,
    Refusal,
    ShortText,
    api_route,
    in_store,
    not_found,
    page_params,
    page_query,
    paged,
    read_body,
    read_page,
    reply,
)
from monitord.runtime.web.api.openapi import (
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
from monitord.runtime.web.routes import APP, store_session
from monitord.scans import driver_settings, enqueue_manual, scan_dict
from monitord.scans.target import check_target
from monitord.store.models import Scan, Service

SCAN_STATES = ("queued", "running", "finished", "timed_out", "failed", "interrupted")
SCAN = named(
    "Scan",
    record(
        id=INT,
        service_id=TEXT,
        trigger=TEXT,
        state={"type": "string", "enum": list(SCAN_STATES)},
        step=nullable(TEXT),
        percent=nullable(INT),
        queued_at=TIME,
        started_at=nullable(TIME),
        finished_at=nullable(TIME),
        attempts=INT,
        alerts_read=INT,
        high=INT,
        medium=INT,
        new=INT,
        still_open=INT,
        fixed=INT,
        error=nullable(TEXT),
    ),
)
"""A scan as the API shows it (monitord.scans.scan_dict): its trigger, state, ZAP's step and
percentage while it runs, and its High and Medium findings."""

AFTER = Param("after", "the `next` of the previous page: scans with a smaller id", kind="int")
SERVICE = Param("service", "only this service's scans")
STATE = Param("state", "only scans in this state", choices=SCAN_STATES)
LIST_PARAMS = (*page_params(AFTER), SERVICE, STATE)


async def list_scans(request: web.Request) -> web.Response:
    """Scans, newest first, filtered by service and state."""
    page = read_page(request, AFTER)
    service, state = SERVICE.read(request), STATE.read(request)

    def work(app: App) -> dict[str, Any]:
        query = page_query(Scan, page, newest_first=True, service_id=service, state=state)
        with store_session(app) as session:
            return paged([scan_dict(s) for s in session.scalars(query)], page)

    return reply(await in_store(request, work))


class ScanRequest(BaseModel):
    """The service to scan now."""

    model_config = ConfigDict(extra="forbid")
    service_id: ShortText


async def trigger(request: web.Request) -> web.Response:
    """Queue a scan of one service now; refused (409, ZAP never hears of it) when its URL is not
    one ZAP may be pointed at."""
    body = await read_body(request, ScanRequest)
    actor = request[CALLER].name

    def url_of(app: App) -> str:
        with store_session(app) as session:
            service = session.get(Service, body.service_id)
            if service is None or service.gone:
                raise not_found(f"service {body.service_id!r}")
            if not service.url:
                raise Refusal(409, f"service {body.service_id!r} has no URL to scan")
            return service.url

    def queue(app: App) -> dict[str, Any]:
        with store_session(app) as session:
            scan, _queued_now = enqueue_manual(
                session, body.service_id, actor, app.clock(), app.settings
            )
            return scan_dict(scan)

    url = await in_store(request, url_of)
    driver = driver_settings(request.app[APP].settings)
    try:
        # The whole check the scan makes when it starts (names resolved, redirects followed).
        await check_target(url, driver.denied_networks, driver.zap.call_timeout_seconds)
        scan = await in_store(request, queue)
    except ZapError as exc:
        raise Refusal(409, one_line(str(exc))) from None
    return reply(scan, status=202)


ROUTES = (
    api_route(
        "GET",
        "/scans",
        list_scans,
        "viewer",
        operation("security scans, newest first", answer=page_of(SCAN, INT), query=LIST_PARAMS),
    ),
    api_route(
        "POST",
        "/scans",
        trigger,
        "admin",
        operation(
            "queue a security scan of one service now",
            answer=SCAN,
            status=202,
            body=ScanRequest,
            refusals=(404, 409),
            description="The running daemon starts it (see GET /api/v1/scans). 404: no such "
            "service. 409: the service has no URL, or ZAP must not be pointed at it (not "
            "http(s), or a denied network, also after its redirects).",
        ),
    ),
)
