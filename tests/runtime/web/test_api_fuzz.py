"""The API fuzzed from its own OpenAPI document with schemathesis, against the server on
loopback: valid and invalid requests to every operation, as an admin (every operation open to
it), and never a 500, an undocumented status or media type, or an answer unlike its schema."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monitord.runtime.app import build_app
from monitord.runtime.web import build_web_app
from monitord.store.models import Service
from tests.conftest import FakeClock
from tests.runtime.web.test_api import TOKENS, api_settings, seed

EXAMPLES = 20
"""Examples per operation and mode: 16 operations, twice, in 15 s of CPU."""
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@contextmanager
def served_in_a_thread(app: web.Application) -> Iterator[str]:
    """Serve `app` on a free loopback port from its own event loop in a thread (schemathesis
    sends its requests synchronously); its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def test_the_api_fuzzed_from_its_document_never_fails_and_keeps_to_it(
    store_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    app_settings = api_settings(store_url, "json://127.0.0.1:9/management")
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    with build_app(app_settings, clock=clock) as app:
        seed(app.store, app.settings, clock, tmp_path)
        with app.store.session() as session:
            # A scan asked for checks its service's URL: nothing there, and no name to resolve.
            for service in session.query(Service):
                service.url = "http://127.0.0.1:9/"
        with served_in_a_thread(build_web_app(app)) as base:
            schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json", headers=headers)
            operations = [result.ok() for result in schema.get_all_operations()]
            assert len(operations) >= 16
            for operation in operations:
                for mode in (
                    schemathesis.GenerationMode.POSITIVE,
                    schemathesis.GenerationMode.NEGATIVE,
                ):

                    @given(case=operation.as_strategy(generation_mode=mode))
                    @settings(
                        max_examples=EXAMPLES,
                        deadline=None,
                        database=None,
                        derandomize=True,
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck),
                    )
                    def fuzz(case: schemathesis.Case) -> None:
                        case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)

                    try:
                        fuzz()
                    except Exception as exc:
                        pytest.fail(f"{operation.label} ({mode.value}): {exc}")
