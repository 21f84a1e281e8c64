"""Fixtures of the alert tests: a webhook and an SMTP server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.receivers import Mailbox, Webhook, serve_smtp, serve_webhook


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    """A chat webhook on loopback that apprise's json:// reaches."""
    async with serve_webhook() as webhook:
        yield webhook


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """An SMTP server on loopback: what it received, and its port."""
    with serve_smtp() as server:
        yield server
