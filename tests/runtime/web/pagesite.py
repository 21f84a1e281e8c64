"""A store with something wrong in it, and the web app serving it on loopback: what the status
page's tests (HTTP and Chromium) look at."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from monitord.config import parse_config
from monitord.incidents import open_manual
from monitord.runtime.app import App, build_app
from monitord.runtime.web import build_web_app
from monitord.runtime.web.auth import SIGN_INS, SignIns, new_token, token_hash
from monitord.store.models import ProbeResultRow, Service, ServiceState
from tests.conftest import FakeClock

VIEWER = new_token()
ONCALL = new_token()


class Ticker:
    """A monotonic clock in seconds that moves only when told to (sessions, rate limits)."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def page_app(
    tmp_path: Path,
    clock: FakeClock,
    management: tuple[str, ...] = ("json://127.0.0.1:9/management",),
    **api: Any,
) -> App:
    """An App on SQLite with a viewer (li.si) and an on-call (zhang.san) token, notifying the
    management unit through `management` (apprise URLs)."""
    settings = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'm.db'}"},
            "alerts": {"management": list(management)},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [
                    {"name": "li.si", "role": "viewer", "sha256": token_hash(VIEWER)},
                    {"name": "zhang.san", "role": "oncall", "sha256": token_hash(ONCALL)},
                ],
                **api,
            },
        },
        "test",
        {},
    )
    return build_app(settings, clock=clock)


def add_service(app: App, service_id: str, name: str, state: str, error: str | None = None) -> None:
    """A service online in the catalogue, in this probe state since an hour ago."""
    now = app.clock()
    with app.store.session() as session:
        session.add(
            Service(
                id=service_id,
                name=name,
                status="online",
                url=f"https://{service_id}.test/",
                first_seen=now,
                last_seen=now,
            )
        )
        session.add(
            ServiceState(
                service_id=service_id,
                state=state,
                since=now - dt.timedelta(hours=1),
                last_error=error,
            )
        )


def add_results(app: App, service_id: str, outcomes: list[tuple[int, bool, float]]) -> None:
    """Availability results (minutes ago, success, milliseconds)."""
    now = app.clock()
    with app.store.session() as session:
        for minutes_ago, success, ms in outcomes:
            session.add(
                ProbeResultRow(
                    service_id=service_id,
                    kind="availability",
                    target=f"https://{service_id}.test/",
                    at=now - dt.timedelta(minutes=minutes_ago),
                    success=success,
                    duration_ms=ms,
                )
            )


def seed(app: App) -> int:
    """One service down, one degraded, one up, and a security incident just opened (its
    two-hour clock at 120 minutes); returns the incident's id."""
    add_service(app, "svc-0001", "企业开办一件事", "down", "HTTP 503 from https://u:pw@svc.test/")
    add_service(app, "svc-0002", "税务登记", "degraded")
    add_service(app, "svc-0003", "社保缴纳", "up")
    with app.store.session() as session:
        return open_manual(
            session,
            app.settings,
            "data_exposure",
            ["svc-0001"],
            "服务商电话报告疑似数据泄露",
            "王值班",
            app.clock(),
        ).id


@dataclass
class Site:
    """The web app on loopback, its sign-in clock, and a browser-like client (cookies kept)."""

    app: App
    url: str
    ticker: Ticker
    http: aiohttp.ClientSession

    async def sign_in(self, token: str) -> tuple[int, CIMultiDict[str], str]:
        """Fetch the form and post `token` with its CSRF value, as a browser does: the
        answer's status, headers and text."""
        async with self.http.get(f"{self.url}/login", headers=HTML) as form:
            csrf = field(await form.text(), "csrf")
        async with self.http.post(
            f"{self.url}/login",
            data={"csrf": csrf, "token": token, "next": "/"},
            allow_redirects=False,
        ) as response:
            return response.status, CIMultiDict(response.headers), await response.text()

    async def page(self, path: str) -> tuple[int, str]:
        """GET a page as a browser: its status and HTML."""
        async with self.http.get(f"{self.url}{path}", headers=HTML) as response:
            return response.status, await response.text()


HTML = {"Accept": "text/html,application/xhtml+xml"}


def field(html: str, name: str) -> str:
    """The value of the first hidden input `name` in a page."""
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no {name} field in the page"
    return found.group(1)


@asynccontextmanager
async def serve_page(app: App) -> AsyncIterator[Site]:
    """Serve `app`'s web app on 127.0.0.1, sign-ins on a Ticker."""
    web_app = build_web_app(app)
    ticker = Ticker()
    web_app[SIGN_INS] = SignIns(ticker)
    server = TestServer(web_app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Site(app, str(server.make_url("")).rstrip("/"), ticker, http)
    finally:
        await server.close()
