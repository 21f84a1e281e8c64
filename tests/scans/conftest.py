"""Fixtures for the ZAP tests: fake ZAP servers on loopback and a clock that sleeps instantly."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from zaphelpers import ListLogger, SleepClock

from monitord.config import ZapSettings
from monitord.demo.fakezap import FakeZapServer, Scenario
from monitord.netguard import DEFAULT_DENIED_NETWORKS
from monitord.scans.state import ZapDriverSettings
from monitord.scans.zap import ZapScanner


@pytest.fixture
def fake_zap() -> Iterator[Callable[[Scenario], FakeZapServer]]:
    """Start fake ZAP servers for scenarios; all are closed after the test."""
    servers: list[FakeZapServer] = []

    def start(scenario: Scenario) -> FakeZapServer:
        server = FakeZapServer(scenario).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def sleep_clock() -> SleepClock:
    """A fresh instant-sleep clock."""
    return SleepClock()


@pytest.fixture
def logs() -> ListLogger:
    """A logger keeping its lines."""
    return ListLogger()


@pytest.fixture
def make_scanner(sleep_clock: SleepClock, logs: ListLogger) -> Callable[..., ZapScanner]:
    """Build a ZapScanner for a fake ZAP with fast polls; keyword arguments override settings."""

    def make(server: FakeZapServer | str, **overrides: Any) -> ZapScanner:
        url = server if isinstance(server, str) else server.url
        key = "" if isinstance(server, str) else server.zap.scenario.api_key
        factory = overrides.pop("client_factory", None)
        api_key = overrides.pop("api_key", key)
        denied = tuple(overrides.pop("denied_networks", DEFAULT_DENIED_NETWORKS))
        zap: dict[str, Any] = {
            "url": url,
            "poll_interval_seconds": 5.0,
            "call_timeout_seconds": 5.0,
            "page_size": 100,
            "stuck_polls": 1000,
        }
        zap.update(overrides)
        settings = ZapDriverSettings(
            zap=ZapSettings(**zap), api_key=api_key, denied_networks=denied
        )
        kwargs: dict[str, object] = {
            "clock": sleep_clock,
            "sleep": sleep_clock.sleep,
            "logger": logs,
        }
        if factory is not None:
            kwargs["client_factory"] = factory
        return ZapScanner(settings, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (ZAP down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def web_service() -> AsyncIterator[Callable[[dict[str, tuple[int, str]]], Awaitable[str]]]:
    """Start a real web service on 127.0.0.1 answering `{path: (status, Location)}`; returns
    its base URL. A path not listed answers 200; "{port}" in a Location is the service's own
    port."""
    runners: list[web.AppRunner] = []

    async def start(answers: dict[str, tuple[int, str]]) -> str:
        async def handle(request: web.Request) -> web.Response:
            status, location = answers.get(request.path, (200, ""))
            port = str(request.url.port)
            headers = {"Location": location.replace("{port}", port)} if location else {}
            return web.Response(status=status, headers=headers, text="service")

        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()
