"""/healthz (the process answers) and /readyz (it can do its work), open to systemd and load
balancers without a token; they say nothing a stranger could use."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass

from aiohttp import web
from sqlalchemy import func, select

from monitord.runtime.app import App
from monitord.runtime.web.routes import (
    APP,
    DAEMON,
    DaemonView,
    Route,
    in_web_thread,
    store_session,
)
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


READY_LOCK_WAIT_SECONDS = 1.5
"""How long /readyz waits for a lock on a table the daemon records to: a load balancer asks
with a timeout of a few seconds, and must get the 503 saying why, not its own timeout."""


@dataclass(frozen=True)
class StoreView:
    """What /readyz learnt of the store."""

    status: str
    """"ok", "unreachable" or "cannot record"."""
    problem: str | None
    last_sync: dt.datetime | None
    """When the catalogue was last synced (None: never, or the store does not answer)."""


@dataclass
class StoreCheck:
    """The store check under way. The /readyz requests that come while it runs share it: a
    flood of them (load balancers, each giving up after its timeout, which cannot stop a
    thread) makes one check at a time, not a thread each waiting out a lock."""

    running: asyncio.Task[StoreView] | None = None


STORE_CHECK = web.AppKey("monitord_store_check", StoreCheck)


def _store_view(app: App) -> StoreView:
    try:
        blocked = app.store.write_blocked_reason(RECORDED_TABLES, READY_LOCK_WAIT_SECONDS)
    except StoreUnreachable:
        return StoreView("unreachable", "the store does not answer", None)
    with store_session(app, READY_LOCK_WAIT_SECONDS) as session:
        last: dt.datetime | None = session.scalar(
            select(func.max(SyncRun.finished_at)).where(SyncRun.outcome.in_(("ok", "unchanged")))
        )
    if blocked is None:
        return StoreView("ok", None, last)
    return StoreView("cannot record", f"the daemon cannot record: {blocked}", last)


async def _shared_store_view(request: web.Request) -> StoreView:
    shared = request.app[STORE_CHECK]
    if shared.running is None or shared.running.done():
        shared.running = asyncio.create_task(in_web_thread(request, _store_view, request.app[APP]))
    return await asyncio.shield(shared.running)  # a request given up leaves it to the others


async def readyz(request: web.Request) -> web.Response:
    """200 when the store answers and takes the daemon's records, the daemon's jobs run and
    the catalogue is fresh; else 503 with the reasons. Writes nothing: a load balancer asks
    every few seconds."""
    app = request.app[APP]
    problems: list[str] = []
    checks: dict[str, object] = {}
    view = await _shared_store_view(request)
    checks["store"] = view.status
    if view.problem is not None:
        problems.append(view.problem)
    daemon = request.app.get(DAEMON)
    if isinstance(daemon, DaemonView):
        own = daemon.readiness()
        checks.update(own)
        if not own.get("jobs_running", False):
            problems.append("the daemon's jobs are not running")
    if view.status != "unreachable":
        last = view.last_sync
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
