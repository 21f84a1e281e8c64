"""/healthz (the process answers) and /readyz (it can do its work), open to systemd and load
balancers without a token; they say nothing a stranger could use."""

from __future__ import annotations

import asyncio
import datetime as dt

from aiohttp import web
from sqlalchemy import func, select

from monitord.runtime.web.routes import APP, DAEMON, DaemonView, Route, store_session
from monitord.store import StoreUnreachable
from monitord.store.models import (
    Finding,
    FindingEpisode,
    ProbeResultRow,
    ProbeRound,
    ServiceState,
    ServiceStateChange,
    SyncRun,
)

SYNC_STALE_FACTOR = 3
"""The catalogue counts as stale when its last good sync is this many sync intervals old."""

RECORDED_TABLES = tuple(
    model.__tablename__
    for model in (
        ProbeRound,
        ProbeResultRow,
        ServiceState,
        ServiceStateChange,
        Finding,
        FindingEpisode,
    )
)
"""The tables a probe round records to: the daemon is not ready while one stays locked."""


async def healthz(request: web.Request) -> web.Response:
    """The process is alive and its event loop answers."""
    return web.json_response({"status": "alive"})


def _last_sync(request: web.Request) -> dt.datetime | None:
    app = request.app[APP]
    with store_session(app) as session:
        last: dt.datetime | None = session.scalar(
            select(func.max(SyncRun.finished_at)).where(SyncRun.outcome.in_(("ok", "unchanged")))
        )
    return last


def _store_problem(request: web.Request) -> tuple[str, str | None]:
    """The store's check ("ok", "unreachable", "cannot record") and the problem to say."""
    app = request.app[APP]
    try:
        blocked = app.store.write_blocked_reason(RECORDED_TABLES)
    except StoreUnreachable:
        return "unreachable", "the store does not answer"
    if blocked is None:
        return "ok", None
    return "cannot record", f"the daemon cannot record: {blocked}"


async def readyz(request: web.Request) -> web.Response:
    """200 when the store answers and takes the daemon's records, the daemon's jobs run and
    the catalogue is fresh; else 503 with the reasons. Writes nothing: a load balancer asks
    every few seconds."""
    app = request.app[APP]
    problems: list[str] = []
    checks: dict[str, object] = {}
    checks["store"], problem = await asyncio.to_thread(_store_problem, request)
    if problem is not None:
        problems.append(problem)
    daemon = request.app.get(DAEMON)
    if isinstance(daemon, DaemonView):
        view = daemon.readiness()
        checks.update(view)
        if not view.get("jobs_running", False):
            problems.append("the daemon's jobs are not running")
    if checks["store"] != "unreachable":
        last = await asyncio.to_thread(_last_sync, request)
        interval = app.settings.portal.sync_interval_seconds
        age = None if last is None else (app.clock() - last).total_seconds()
        checks["last_sync_age_seconds"] = None if age is None else round(age)
        if age is None or age > SYNC_STALE_FACTOR * interval:
            problems.append("the catalogue has not been synced lately")
    body: dict[str, object] = {"status": "ready" if not problems else "not ready", "checks": checks}
    if problems:
        body["problems"] = problems
    return web.json_response(body, status=200 if not problems else 503)


ROUTES = (
    Route("GET", "/healthz", healthz, role=None),
    Route("GET", "/readyz", readyz, role=None),
)
