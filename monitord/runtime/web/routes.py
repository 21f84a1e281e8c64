"""What a route is: a method, a path, a handler and the role it needs (None: open to all)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from aiohttp import web
from sqlalchemy.orm import Session

from monitord.config import ApiRole
from monitord.runtime.app import App
from monitord.store import bound_lock_wait

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")

WEB_THREADS = 4
"""Threads the web app's store work runs on: its own, apart from the daemon's jobs'. A table
locked for minutes holds each request's thread for the lock wait; a flood of requests (a load
balancer's checks) then queues on these, while the probe rounds, their recording and the
heartbeat keep the threads they run on."""


@runtime_checkable
class DaemonView(Protocol):
    """What the web app may ask the daemon it runs in (None when served without one)."""

    def readiness(self) -> dict[str, object]:
        """The daemon's own view: jobs running, store answering, last job beat."""
        ...


APP = web.AppKey("monitord_app", App)
"""The App (store, settings, clock) that every handler reads."""
DAEMON = web.AppKey("monitord_daemon", object)
"""The DaemonView serving this app, or None."""
THREADS = web.AppKey("monitord_web_threads", ThreadPoolExecutor)
"""The web app's own threads (WEB_THREADS), shut down with it."""


async def in_web_thread(request: web.Request, work: Callable[..., T], *args: Any) -> T:
    """Run blocking work (the store's) for a request on the web app's own threads, never the
    daemon's (see WEB_THREADS); like asyncio.to_thread, with the request's context."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        request.app[THREADS], functools.partial(context.run, work, *args)
    )


def error_response(status: int, message: str) -> web.Response:
    """An error as clients read it: {"error": message} with `status`."""
    return web.json_response({"error": message}, status=status)


@contextmanager
def store_session(app: App, lock_wait_seconds: float | None = None) -> Iterator[Session]:
    """A session of `app`'s store for answering a request, committed on success; every
    session of the web app is opened here. It gives up a lock it waits for after
    `lock_wait_seconds` (LOCK_WAIT_SECONDS when None; bound_lock_wait), which the guards answer
    as a 503: a table locked for minutes (VACUUM FULL, ALTER TABLE) held each request, and a
    thread, until it went."""
    with app.store.session() as session:
        bound_lock_wait(session, lock_wait_seconds)
        yield session


@dataclass(frozen=True)
class Route:
    """One endpoint. `role` None: no token needed (health checks only)."""

    method: str
    path: str
    handler: Handler
    role: ApiRole | None = "viewer"
    name: str | None = None
    doc: Mapping[str, Any] | None = field(default=None, compare=False)
    """Its OpenAPI operation (monitord.runtime.web.api.openapi): every /api/ route has one."""


ROUTES = web.AppKey("monitord_routes", tuple[Route, ...])
"""Every Route the app serves, as registered (the OpenAPI document is built from them)."""
