"""/api/v1/silences over real HTTP on loopback: who may do what, what is refused, and what is
audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from monitord.config import parse_config
from monitord.runtime.app import App, build_app
from monitord.runtime.web import build_web_app
from monitord.runtime.web.auth import new_token, token_hash
from monitord.store.models import AuditEntry, Service
from tests.conftest import FakeClock

VIEWER = new_token()
ONCALL = new_token()


@pytest.fixture
def app(tmp_path: Path, clock: FakeClock) -> Iterator[App]:
    settings = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'm.db'}"},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [
                    {"name": "li.si", "role": "viewer", "sha256": token_hash(VIEWER)},
                    {"name": "zhang.san", "role": "oncall", "sha256": token_hash(ONCALL)},
                ],
            },
        },
        "test",
        {},
    )
    with build_app(settings, clock=clock) as built:
        with built.store.session() as session:
            session.add(Service(id="svc-0001", first_seen=clock(), last_seen=clock()))
        yield built


@pytest.fixture
async def client(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    server = TestServer(build_web_app(app), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield session, str(server.make_url(""))
    await server.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


GOOD = {"services": ["svc-0001"], "reason": "机房割接", "for": "2h"}


async def test_oncall_adds_and_expires_a_silence_that_a_viewer_can_only_read(
    app: App, client: tuple[aiohttp.ClientSession, str], clock: FakeClock
) -> None:
    session, base = client
    url = f"{base}/api/v1/silences"
    async with session.post(url, json=GOOD, headers=auth(VIEWER)) as response:
        assert response.status == 403
    async with session.post(url, json=GOOD) as response:
        assert response.status == 401
    async with session.post(url, json=GOOD, headers=auth(ONCALL)) as response:
        assert response.status == 201
        made = await response.json()
    assert (made["created_by"], made["services"], made["active"]) == (
        "zhang.san",
        ["svc-0001"],
        True,
    )
    assert made["ends_at"] == (clock() + dt.timedelta(hours=2)).isoformat()
    async with session.get(url, headers=auth(VIEWER)) as response:
        assert [s["id"] for s in await response.json()] == [made["id"]]

    expire = f"{url}/{made['id']}/expire"
    async with session.post(expire, headers=auth(VIEWER)) as response:
        assert response.status == 403
    async with session.post(expire, headers=auth(ONCALL)) as response:
        assert response.status == 200
        assert (await response.json())["expired_by"] == "zhang.san"
    async with session.post(expire, headers=auth(ONCALL)) as response:
        assert response.status == 409
        assert "already ended" in (await response.json())["error"]
    async with session.post(f"{url}/999/expire", headers=auth(ONCALL)) as response:
        assert (response.status, await response.json()) == (404, {"error": "no silence 999"})
    async with session.get(url, headers=auth(VIEWER)) as response:
        assert await response.json() == []
    async with session.get(f"{url}?all=true", headers=auth(VIEWER)) as response:
        assert [s["active"] for s in await response.json()] == [False]
    with app.store.session() as db:
        trail = db.execute(select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id))
        assert [tuple(row) for row in trail] == [
            ("zhang.san", "silence.add"),
            ("zhang.san", "silence.expire"),
        ]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([], "body: expected a JSON object"),
        ({**GOOD, "services": "svc-0001"}, "services: expected a list of strings"),
        ({**GOOD, "kinds": [1]}, "kinds: expected a list of strings"),
        ({**GOOD, "reason": None}, "reason: expected a string"),
        ({**GOOD, "color": "red"}, "color: not a field of a silence"),
        ({**GOOD, "for": None}, "ends_at or for: give exactly one"),
        ({**GOOD, "ends_at": "2030-01-01"}, "ends_at or for: give exactly one"),
        ({**GOOD, "for": "forever"}, "for: duration 'forever'"),
        ({**GOOD, "for": 7200}, "for: expected a duration"),
        ({**GOOD, "for": "9999999999d"}, "for: duration '9999999999d': at most 3650 days"),
        ({**GOOD, "for": "9" * 23 + "m"}, f"for: duration '{'9' * 23}m': at most 3650 days"),
        ({"services": ["svc-0001"], "reason": "x", "ends_at": "soon"}, "ends_at: expected an ISO"),
        ({"services": ["svc-0001"], "reason": "x", "ends_at": "2020-01-01"}, "not in the future"),
        ({**GOOD, "services": ["svc-0404"]}, "service 'svc-0404': not in the store"),
        ({**GOOD, "services": []}, "at least one service, kind or rule"),
        ({**GOOD, "reason": " "}, "reason: say why"),
    ],
)
async def test_a_body_that_does_not_validate_is_a_422_naming_the_field(
    client: tuple[aiohttp.ClientSession, str], body: Any, error: str
) -> None:
    session, base = client
    url = f"{base}/api/v1/silences"
    async with session.post(url, json=body, headers=auth(ONCALL)) as response:
        assert response.status == 422
        assert error in (await response.json())["error"]
    async with session.get(f"{url}?all=true", headers=auth(VIEWER)) as response:
        assert await response.json() == []


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[" * 200_000],  # nested too deeply: it was a 500 and a traceback
    ids=["broken", "nested"],
)
async def test_a_body_that_is_not_json_is_a_400(
    client: tuple[aiohttp.ClientSession, str], data: bytes
) -> None:
    session, base = client
    async with session.post(f"{base}/api/v1/silences", data=data, headers=auth(ONCALL)) as response:
        assert response.status == 400
        assert await response.json() == {"error": "the body is not JSON"}


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("all=1", "all: expected true or false"),
        ("all=TRUE", "all: expected true or false"),
        ("all=true&all=false", "all: give it once"),
    ],
)
async def test_all_is_read_as_every_other_boolean_parameter(
    client: tuple[aiohttp.ClientSession, str], query: str, error: str
) -> None:
    # all=1, all=TRUE and a repeated all were taken here, refused everywhere else.
    session, base = client
    async with session.get(f"{base}/api/v1/silences?{query}", headers=auth(VIEWER)) as response:
        assert response.status == 422
        assert await response.json() == {"error": error}
