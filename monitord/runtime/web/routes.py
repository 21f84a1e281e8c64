"""What a route is: a method, a path, a handler and the role it needs (None: open to all)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiohttp import web

from monitord.config import ApiRole
from monitord.runtime.app import App

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


@dataclass(frozen=True)
class Route:
    """One endpoint. `role` None: no token needed (health checks only)."""

    method: str
    path: str
    handler: Handler
    role: ApiRole | None = "viewer"
    name: str | None = None
