"""Real servers on loopback for the probe tests: aiohttp over TLS with certificates made here."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme

import probes
from monitord.types import ProbeContext
from tests.probes.helpers import fixed_clock


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
async def ctx(ca: trustme.CA) -> AsyncIterator[ProbeContext]:
    """A probe context as the daemon builds it: probing session, injected clock, trusted CA."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with probes.make_session() as session:
        yield ProbeContext(session=session, clock=fixed_clock, ssl_context=client)
