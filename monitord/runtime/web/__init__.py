"""The daemon's web face: health checks, the JSON API, /metrics and the status page.

One aiohttp application inside the daemon's process and event loop. Every route is declared in
a module's ROUTES with the role it needs (monitord.runtime.web.routes.Route); `build_web_app`
registers them all behind the same guards: the caller's token and role, security headers on
every answer, and errors as one JSON line, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from aiohttp import web
from loguru import logger
from sqlalchemy.exc import OperationalError

import monitord.store
from monitord.config import ApiRole
from monitord.runtime.app import App
from monitord.runtime.web import api, health, metrics, page, silences
from monitord.runtime.web.auth import CALLER, SIGN_INS, SignIns, allows, bearer, identify, signed_in
from monitord.runtime.web.health import STORE_CHECK, StoreCheck
from monitord.runtime.web.routes import (
    APP,
    DAEMON,
    ROUTES,
    THREADS,
    WEB_THREADS,
    DaemonView,
    Handler,
    Route,
    error_response,
)

ROUTE_SETS: tuple[tuple[Route, ...], ...] = (
    health.ROUTES,
    api.ROUTES,
    silences.ROUTES,
    metrics.ROUTES,
    page.ROUTES,
)
"""Every module's routes; a new module adds its ROUTES here."""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


IDLE_SECONDS = 30.0
"""How long a connection may stay without a whole request: idle between requests, or sending
its headers slowly. aiohttp's keep-alive timeout bounds both (it is not extended by a request's
partial headers); its default of an hour let a client hold a connection, and its memory, by
sending a header byte now and then."""


def _guarded(handler: Handler, role: ApiRole | None) -> Handler:
    """The handler behind the token check: 401 without a valid token (a Bearer header, or a
    signed-in browser's session cookie), 403 below `role`. A browser asking for a page without
    either is sent to the sign-in form; one sending a form of the page after its session ended
    (or with an earlier sign-in's CSRF token) gets a page saying so, with what it typed."""
    if role is None:
        return handler

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = bearer(request)
        settings = request.app[APP].settings.api
        try:
            caller = identify(settings, token) if token else await signed_in(request, settings)
        except web.HTTPForbidden:
            if page.posts_form(request):  # a CSRF token of an earlier sign-in
                return await page.stale_form(request, signed_out=False)
            raise
        if caller is None and not token and page.wants_page(request):
            return page.to_sign_in(request)
        if caller is None and not token and page.posts_form(request):
            return await page.stale_form(request, signed_out=True)
        if caller is None:
            response = error_response(401, "a valid token is needed: Authorization: Bearer …")
            response.headers["WWW-Authenticate"] = 'Bearer realm="monitord"'
            return response
        if not allows(caller.role, role):
            return error_response(
                403, f"this needs the {role} role; {caller.name} is {caller.role}"
            )
        request[CALLER] = caller
        return await handler(request)

    return guarded


@web.middleware
async def _guards(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a store that does not answer a 503 and one warning;
    an unexpected error logged, answered as a 500 line."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = error_response(exc.status, exc.reason)
        # What the exception says besides its text stays: a 405's Allow, a 401's
        # WWW-Authenticate, a redirect's Location.
        for name, value in exc.headers.items():
            if name.lower() not in ("content-type", "content-length"):
                response.headers.add(name, value)
    except json.JSONDecodeError as exc:
        response = error_response(400, f"the body is not JSON: {exc.msg} at {exc.pos}")
    except UnicodeDecodeError:
        # request.json() and .text() decode the body in its charset (UTF-8 unless it says).
        response = error_response(400, "the body is not text in its charset (UTF-8 unless said)")
    except OperationalError as exc:
        response = await _store_unavailable(request, exc)
    except Exception:
        logger.exception("{} {} failed", request.method, request.path)
        response = error_response(500, "internal error; the daemon's log has the details")
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _store_unavailable(request: web.Request, exc: OperationalError) -> web.Response:
    """The 503 answering a request the store did not answer, or a table it needed stayed
    locked for (see routes.store_session): one warning, no traceback (a Prometheus scrape
    every 15 s must not write one each time); a browser gets a page, an API client a line."""
    locked = monitord.store.lock_wait_given_up(exc)
    why = "a table it needs stays locked" if locked else "the store does not answer"
    logger.warning("{} {}: {}", request.method, request.path, why)
    if page.wants_page(request) or page.posts_form(request):
        return await page.store_unavailable(request, locked=locked)
    if locked:
        waited = monitord.store.LOCK_WAIT_SECONDS
        return error_response(
            503,
            "the store does not answer now: a table this needs is locked by another "
            f"transaction (VACUUM FULL, ALTER TABLE), waited {waited:g} s; try again shortly",
        )
    return error_response(503, "the store does not answer now; try again shortly")


def build_web_app(
    app: App,
    *,
    daemon: DaemonView | None = None,
    route_sets: Iterable[Iterable[Route]] = ROUTE_SETS,
) -> web.Application:
    """The aiohttp application serving `app`'s store under its settings' tokens."""
    web_app = web.Application(middlewares=[_guards], client_max_size=1 << 20)
    web_app[APP] = app
    web_app[DAEMON] = daemon
    web_app[SIGN_INS] = SignIns()
    web_app[ROUTES] = tuple(route for routes in route_sets for route in routes)
    threads = ThreadPoolExecutor(WEB_THREADS, thread_name_prefix="web")
    web_app[THREADS] = threads
    web_app[STORE_CHECK] = StoreCheck()

    async def _stop_threads(_app: web.Application) -> None:
        threads.shutdown(wait=False, cancel_futures=True)

    web_app.on_cleanup.append(_stop_threads)
    for route in web_app[ROUTES]:
        handler = _guarded(route.handler, route.role)
        if route.method == "GET":
            # HEAD wherever GET is (a monitoring check asking /healthz with HEAD), without body.
            web_app.router.add_get(route.path, handler, name=route.name)
        else:
            web_app.router.add_route(route.method, route.path, handler, name=route.name)
    return web_app


@dataclass
class WebServer:
    """The running web app; `stop()` closes it."""

    runner: web.AppRunner
    address: str

    async def stop(self) -> None:
        """Stop listening and finish the answers in flight."""
        await self.runner.cleanup()


async def serve(app: App, *, daemon: DaemonView | None = None) -> WebServer:
    """Start serving on `[api] listen`. Raises OSError when the address cannot be taken."""
    host, _, port = app.settings.api.listen.rpartition(":")
    host = host.strip("[]")
    runner = web.AppRunner(
        build_web_app(app, daemon=daemon), access_log=None, keepalive_timeout=IDLE_SECONDS
    )
    await runner.setup()
    site = web.TCPSite(runner, host, int(port))
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    bound = runner.addresses[0] if runner.addresses else (host, int(port))
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return WebServer(runner, f"http://{shown}:{bound[1]}")
