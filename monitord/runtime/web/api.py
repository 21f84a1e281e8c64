"""The JSON API under /api/v1/."""

from __future__ import annotations

from aiohttp import web

from monitord.runtime.web.auth import CALLER
from monitord.runtime.web.routes import Route


async def whoami(request: web.Request) -> web.Response:
    """The caller's token name and role: how a client checks its token."""
    caller = request[CALLER]
    return web.json_response({"name": caller.name, "role": caller.role})


ROUTES = (Route("GET", "/api/v1/whoami", whoami, role="viewer"),)
