"""The daemons on the store, as `monitord cluster` lists them."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from monitord.cluster import members
from monitord.runtime.app import App
from monitord.runtime.jobs import ONCE_JOBS
from monitord.runtime.web.api.common import api_route, in_store, reply
from monitord.runtime.web.api.openapi import (
    BOOL,
    INT,
    TEXT,
    TIME,
    array,
    named,
    nullable,
    operation,
    record,
)

MEMBER = named(
    "ClusterMember",
    record(
        name=TEXT,
        zone=TEXT,
        host=TEXT,
        pid=INT,
        alive=BOOL,
        started_at=TIME,
        heartbeat_at=TIME,
        stopped_at=nullable(TIME),
        jobs=array(TEXT),
        probe_share=INT,
        last_round_at=nullable(TIME),
        version=TEXT,
    ),
)


def _read(app: App) -> list[dict[str, Any]]:
    listed = members(app.store, app.settings.cluster.lease_seconds, app.clock(), ONCE_JOBS)
    return [m.as_json() for m in listed]


async def cluster(request: web.Request) -> web.Response:
    """The daemons on the store: alive or not, their heartbeat, jobs and probe share."""
    return reply(await in_store(request, _read))


ROUTES = (
    api_route(
        "GET",
        "/cluster",
        cluster,
        "viewer",
        operation(
            "the daemons on the store: alive or not, last heartbeat, jobs held, probe share",
            answer=array(MEMBER),
        ),
    ),
)
