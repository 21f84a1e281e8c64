"""The API about itself: who is asking, and its OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from monitord.config import API_ROLES
from monitord.runtime.web.api.common import api_route, reply
from monitord.runtime.web.api.openapi import ANY_OBJECT, TEXT, document, operation, record
from monitord.runtime.web.auth import CALLER
from monitord.runtime.web.routes import ROUTES as SERVED
from monitord.runtime.web.routes import Route


async def whoami(request: web.Request) -> web.Response:
    """The caller's token name and role: how a client checks its token."""
    caller = request[CALLER]
    return reply({"name": caller.name, "role": caller.role})


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the API this app serves."""
    served: tuple[Route, ...] = request.app[SERVED]
    return reply(document(served))


ROUTES = (
    api_route(
        "GET",
        "/whoami",
        whoami,
        "viewer",
        operation(
            "the caller's token name and role",
            answer=record(name=TEXT, role={"type": "string", "enum": list(API_ROLES)}),
        ),
    ),
    api_route(
        "GET",
        "/openapi.json",
        openapi_json,
        "viewer",
        operation("this document (OpenAPI 3.1)", answer=ANY_OBJECT),
    ),
)
