"""Real servers on loopback for the probe tests: aiohttp over TLS with certificates made here."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

import probes
from monitord.types import ProbeContext
from tests.probes.helpers import Serve, fixed_clock


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The test root CA, trusted by the probe context."""
    return trustme.CA()


@pytest.fixture(scope="session")
def certdir() -> Iterator[Path]:
    """A folder for key and certificate files the server contexts load."""
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on 127.0.0.1 (optionally over TLS); returns the port."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def ctx(ca: trustme.CA) -> AsyncIterator[ProbeContext]:
    """A probe context as the daemon builds it: probing session, injected clock, trusted CA."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with probes.make_session() as session:
        yield ProbeContext(session=session, clock=fixed_clock, ssl_context=client)
