"""The web app's guards, as a client meets them over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import monitord.runtime.web
import monitord.store
from monitord.cli import main
from monitord.config import parse_config
from monitord.runtime.app import App, build_app
from monitord.runtime.settings import load_settings
from monitord.runtime.web import build_web_app, health, serve
from monitord.runtime.web.auth import identify, new_token, token_hash
from monitord.runtime.web.routes import Route
from monitord.store import Store, sqlite_file
from monitord.store.models import SyncRun
from monitord.timeutil import UTC
from tests.conftest import PostgresServer, table_locked

VIEWER = new_token()
ONCALL = new_token()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
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
    with build_app(settings) as built:
        yield built


@pytest.fixture
async def client(app: App) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    server = TestServer(build_web_app(app), host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield session, str(server.make_url(""))
    await server.close()


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer ", 401),
        ("Bearer not-a-token", 401),
        (f"Basic {VIEWER}", 401),
        (f"Bearer {VIEWER}", 200),
        (f"bearer {ONCALL}", 200),
    ],
    # Named, not shown: the tokens are new each run, and the test workers must agree on ids.
    ids=["none", "empty", "unknown", "basic", "bearer", "lowercase-bearer"],
)
async def test_only_a_configured_token_is_let_in(
    client: tuple[aiohttp.ClientSession, str], header: str | None, status: int
) -> None:
    session, base = client
    headers = {"Authorization": header} if header is not None else {}
    async with session.get(f"{base}/api/v1/whoami", headers=headers) as response:
        assert response.status == status
        body = await response.json()
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in body["error"]
        else:
            assert body["name"] in ("li.si", "zhang.san")


async def test_every_answer_carries_the_security_headers(
    client: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = client
    for path in ("/healthz", "/api/v1/whoami", "/no-such-page"):
        async with session.get(f"{base}{path}") as response:
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    async with session.get(f"{base}/no-such-page") as response:
        assert response.status == 404
        assert (await response.json()) == {"error": "Not Found"}


@pytest.mark.parametrize(
    ("path", "token"),
    [("/healthz", None), ("/readyz", None), ("/metrics", VIEWER)],
    ids=["healthz", "readyz", "metrics"],
)
async def test_head_is_answered_wherever_get_is_without_a_body(
    client: tuple[aiohttp.ClientSession, str], path: str, token: str | None
) -> None:
    session, base = client
    headers = _auth(token) if token else {}
    async with session.get(f"{base}{path}", headers=headers) as got:
        expected = got.status
    async with session.head(f"{base}{path}", headers=headers) as response:
        assert response.status == expected  # it was a 405
        assert await response.read() == b""


async def test_a_method_the_path_does_not_take_is_a_405_saying_which_it_takes(
    client: tuple[aiohttp.ClientSession, str],
) -> None:
    session, base = client
    async with session.delete(f"{base}/healthz") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
        assert await response.json() == {"error": "Method Not Allowed"}
    async with session.put(f"{base}/api/v1/silences", headers=_auth(ONCALL)) as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


async def test_readyz_says_why_it_is_not_ready_and_healthz_answers_anyway(
    app: App, client: tuple[aiohttp.ClientSession, str]
) -> None:
    session, base = client
    async with session.get(f"{base}/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "alive"})
    async with session.get(f"{base}/readyz") as response:
        body = await response.json()
        assert response.status == 503
        assert body["problems"] == ["the catalogue has not been synced lately"]
    now = dt.datetime.now(UTC)
    with app.store.session() as db:
        db.add(SyncRun(started_at=now, finished_at=now, source="test", outcome="ok"))
    async with session.get(f"{base}/readyz") as response:
        body = await response.json()
        assert (response.status, body["status"]) == (200, "ready")
        assert body["checks"]["store"] == "ok"


@pytest.fixture
def each_app(store_url: str) -> Iterator[App]:
    """The app on each store backend, its catalogue just synced."""
    settings = parse_config(
        {"store": {"url": store_url}, "api": {"listen": "127.0.0.1:0"}}, "test", {}
    )
    with build_app(settings) as built:
        now = dt.datetime.now(UTC)
        with built.store.session() as db:
            db.add(SyncRun(started_at=now, finished_at=now, source="test", outcome="ok"))
        yield built


async def _readyz(app: App) -> tuple[int, dict[str, Any]]:
    server = TestServer(build_web_app(app), host="127.0.0.1")
    await server.start_server()
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/readyz")) as response,
        ):
            return response.status, await response.json()
    finally:
        await server.close()


async def test_readyz_is_not_ready_while_a_table_the_probes_record_to_stays_locked(
    each_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # probe_results locked (VACUUM FULL, ALTER TABLE): the store answered, /readyz said ready,
    # and not one probe result could be recorded.
    if each_app.store.url.get_backend_name() != "postgresql":
        pytest.skip("SQLite has no table locks: its one write lock waits its busy timeout")
    monkeypatch.setattr(health, "READY_LOCK_WAIT_SECONDS", 0.5)
    with table_locked(each_app.store.engine, "probe_results"):
        status, body = await asyncio.wait_for(_readyz(each_app), 10)
    assert status == 503
    assert body["checks"]["store"] == "cannot record"
    assert body["problems"] == [
        "the daemon cannot record: table probe_results is locked by another transaction: "
        "a write to it waited 0.5 s"
    ]
    assert (await _readyz(each_app))[0] == 200


async def test_readyz_on_sqlite_behind_a_long_writer_answers_after_its_own_wait(
    each_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holding SQLite's write lock (a long `monitord purge`, a backup): /readyz
    # waited out the store's 10 s busy timeout, past a load balancer's timeout of a few seconds.
    if each_app.store.url.get_backend_name() != "sqlite":
        pytest.skip("PostgreSQL locks tables, not the store: the test above")
    sqlite_app = each_app
    monkeypatch.setattr(health, "READY_LOCK_WAIT_SECONDS", 0.5)
    file = sqlite_file(sqlite_app.store.url)
    assert file is not None
    writer = sqlite3.connect(file, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        status, body = await asyncio.wait_for(_readyz(sqlite_app), 8)
        took = loop.time() - began
    finally:
        writer.rollback()
        writer.close()
    assert status == 503
    assert body["problems"] == [
        "the daemon cannot record: the store is locked by another writer: a write to it "
        "waited 0.5 s"
    ]
    assert took < 3, took
    # The store's own busy timeout is back on its pooled connections for every other write.
    with sqlite_app.store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    assert (await _readyz(sqlite_app))[0] == 200


async def test_a_flood_of_readyz_on_a_locked_table_holds_none_of_the_daemons_threads(
    pg_app: App,
) -> None:
    # A load balancer asking /readyz 20 times a second while a table was locked: each check
    # held one of the daemon's threads for the 10 s lock wait, and the probe rounds, their
    # recording and the API all queued behind them (one round in 50 s).
    server = TestServer(build_web_app(pg_app), host="127.0.0.1")
    await server.start_server()
    loop = asyncio.get_running_loop()
    try:
        with table_locked(pg_app.store.engine, "probe_results"):
            async with aiohttp.ClientSession() as session:

                async def ask() -> int:
                    async with session.get(server.make_url("/readyz")) as response:
                        return response.status

                began = loop.time()
                asking = [asyncio.create_task(ask()) for _ in range(40)]
                await asyncio.sleep(0.3)
                # The daemon's own work (asyncio.to_thread, as its jobs run) is not held.
                await asyncio.wait_for(asyncio.to_thread(lambda: None), 0.5)
                statuses = await asyncio.gather(*asking)
                took = loop.time() - began
    finally:
        await server.close()
    assert statuses == [503] * 40
    # One check shared by them all, answered after its 1.5 s wait, in time for a load
    # balancer's timeout of a few seconds: not 40 checks queued on a few threads.
    assert took < health.READY_LOCK_WAIT_SECONDS + 1.5, took


def _written_since(store: Store) -> Callable[[], bool]:
    """Whether anything was written to the store since this call: PostgreSQL's next
    transaction id moved on, or SQLite's data_version, as a connection of its own sees it."""
    if store.url.get_backend_name() == "postgresql":
        query = "select txid_snapshot_xmax(txid_current_snapshot())"
        with store.engine.connect() as connection:
            before = connection.exec_driver_sql(query).scalar()

        def moved() -> bool:
            with store.engine.connect() as connection:
                return bool(connection.exec_driver_sql(query).scalar() != before)

        return moved
    file = sqlite_file(store.url)
    assert file is not None
    own = sqlite3.connect(file)  # kept open: data_version counts others' commits since
    first = own.execute("pragma data_version").fetchone()

    def changed() -> bool:
        try:
            return bool(own.execute("pragma data_version").fetchone() != first)
        finally:
            own.close()

    return changed


async def test_readyz_writes_nothing_to_the_store(each_app: App) -> None:
    # A load balancer asks every few seconds: each answer committed an update, a dead row
    # version and a transaction id on PostgreSQL.
    written = _written_since(each_app.store)
    for _ in range(3):
        status, body = await _readyz(each_app)
        assert (status, body["checks"]["store"]) == (200, "ok")
    assert not written()


@pytest.fixture
def pg_app(postgres: PostgresServer | None) -> Iterator[App]:
    """The app on PostgreSQL, where a table can be locked alone."""
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    settings = parse_config(
        {
            "store": {"url": postgres.new_database()},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [{"name": "li.si", "role": "viewer", "sha256": token_hash(VIEWER)}],
            },
        },
        "test",
        {},
    )
    with build_app(settings) as built:
        yield built


LOCKED_READS = [
    ("/api/v1/incidents", "incidents"),
    ("/api/v1/services", "services"),
    ("/api/v1/reports", "quarterly_reports"),
    ("/api/v1/compliance", "compliance_results"),
    ("/api/v1/cluster", "cluster_members"),
]


@pytest.mark.parametrize(("path", "table"), LOCKED_READS, ids=[t for _, t in LOCKED_READS])
async def test_an_api_read_of_a_locked_table_answers_a_503_rather_than_hanging(
    pg_app: App, monkeypatch: pytest.MonkeyPatch, path: str, table: str
) -> None:
    # A table locked for minutes (VACUUM FULL, ALTER TABLE) held every read of it, and a
    # thread each, until the lock went.
    monkeypatch.setattr(monitord.store, "LOCK_WAIT_SECONDS", 0.5)
    server = TestServer(build_web_app(pg_app), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers=_auth(VIEWER)) as session:
            with table_locked(pg_app.store.engine, table) as locker:
                async with session.get(server.make_url(path), timeout=_SHORT) as response:
                    assert response.status == 503
                    said = (await response.json())["error"]
                locker.rollback()
                async with session.get(server.make_url(path), timeout=_SHORT) as response:
                    assert response.status == 200
    finally:
        await server.close()
    assert said == (
        "the store does not answer now: a table this needs is locked by another transaction "
        "(VACUUM FULL, ALTER TABLE), waited 0.5 s; try again shortly"
    )


async def test_the_status_page_over_a_locked_table_says_so_in_a_page(
    pg_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitord.store, "LOCK_WAIT_SECONDS", 0.5)
    server = TestServer(build_web_app(pg_app), host="127.0.0.1")
    await server.start_server()
    headers = {**_auth(VIEWER), "Accept": "text/html"}
    try:
        with table_locked(pg_app.store.engine, "incidents"):
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.make_url("/"), headers=headers, timeout=_SHORT) as response,
            ):
                assert response.status == 503
                assert response.content_type == "text/html"
                page = await response.text()
    finally:
        await server.close()
    assert "暂时无法访问" in page
    assert "数据库正在维护（所需的数据表被锁定），暂时无法读取或保存，请稍后刷新重试。" in page


_SHORT = aiohttp.ClientTimeout(total=10)
"""Far past the bounded lock wait, far short of a lock that is never given up."""


async def test_the_daemon_serves_on_the_configured_address(app: App) -> None:
    server = await serve(app)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{server.address}/healthz") as response,
        ):
            assert response.status == 200
    finally:
        await server.stop()
    assert server.address.startswith("http://127.0.0.1:")


async def test_a_role_below_the_routes_is_refused_and_an_error_is_one_line(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    async def acknowledge(request: web.Request) -> web.Response:
        return web.json_response({"done": True})

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    routes = [
        Route("POST", "/ack", acknowledge, role="oncall"),
        Route("GET", "/broken", broken, role="viewer"),
    ]
    server = TestServer(build_web_app(app, route_sets=[routes]), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            url = str(server.make_url(""))
            async with session.post(f"{url}/ack", headers=_auth(VIEWER)) as response:
                assert response.status == 403
                assert (await response.json())["error"] == (
                    "this needs the oncall role; li.si is viewer"
                )
            async with session.post(f"{url}/ack", headers=_auth(ONCALL)) as response:
                assert (response.status, await response.json()) == (200, {"done": True})
            async with session.get(f"{url}/broken", headers=_auth(VIEWER)) as response:
                text = await response.text()
                assert response.status == 500
                assert "secret detail" not in text and "Traceback" not in text
    finally:
        await server.close()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_new_token_works_once_its_printed_table_is_in_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    assert main(["--config", str(config), "token", "new", "王五", "--role", "oncall"]) == 0
    printed = capsys.readouterr().out.splitlines()
    token = printed[1].strip()
    table = "\n".join(printed[printed.index("[[api.tokens]]") :])
    config.write_text(config.read_text(encoding="utf-8") + table + "\n", encoding="utf-8")
    settings = load_settings(config)
    assert identify(settings.api, token) == settings.api.tokens[0]
    assert (settings.api.tokens[0].name, settings.api.tokens[0].role) == ("王五", "oncall")
    assert token not in config.read_text(encoding="utf-8")
    # The same name twice would make the audit trail ambiguous.
    assert main(["--config", str(config), "token", "new", "王五", "--role", "viewer"]) == 2
    assert "already has a token named" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("a\nb", "token name: holds a control character; write a plain name"),
        ("a\tb", "token name: holds a control character; write a plain name"),
        ("a" * 201, "token name: 201 characters, at most 200"),
        ("a\u202eb", 'token name "a\\u202eb": use visible characters only'),
    ],
    ids=["newline", "tab", "too-long", "bidi"],
)
def test_a_token_name_the_audit_trail_cannot_show_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, said: str
) -> None:
    # "a\nb" was printed as the name of a token, and check-config took it: the actor of the
    # audit trail that --by refuses.
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n', encoding="utf-8")
    assert main(["--config", str(config), "token", "new", name, "--role", "oncall"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"monitord: {said}\n")


async def test_a_client_sending_its_headers_slowly_is_disconnected(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client that opened a connection and sent a header byte now and then held it an hour.
    monkeypatch.setattr(monitord.runtime.web, "IDLE_SECONDS", 0.5)
    server = await serve(app)
    try:
        host, port = server.address.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        await writer.drain()
        for _ in range(4):
            await asyncio.sleep(0.25)
            if writer.is_closing() or reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")
        closed = await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        await server.stop()
    assert closed == b""
