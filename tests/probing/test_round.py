"""Probe rounds against real servers on loopback: the state machine, blind rounds, suspensions,
deep probes, provider-friendly limits, roll-ups, and `monitord probe`."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from loguru import logger
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

import monitord.store
from monitord.config import Settings, parse_config
from monitord.probing import ProbeBacklog, ServiceTarget, probe_round, run_probes, schedule
from monitord.probing.prober import Prober
from monitord.store import Store
from monitord.store.histogram import bucket_of, percentile
from monitord.store.history import probe_quarter
from monitord.store.models import (
    Finding,
    ProbeResultRow,
    ProbeRollup,
    Service,
    ServiceEvent,
    ServiceState,
    ServiceStateChange,
)
from monitord.store.retention import purge, roll_up
from monitord.timeutil import quarter_bounds
from monitord.types import ProbeContext, ProbeResult
from probes import trust_context
from tests.conftest import FakeClock, table_locked, wait_for
from tests.probes.helpers import Serve

pytestmark = pytest.mark.timeout(60)


@dataclass
class Backend:
    """A service on loopback over TLS whose health the test switches."""

    healthy: bool = True
    delay: float = 0.0
    active: int = 0
    most_active: int = 0
    requests: int = 0
    url: str = ""
    arrivals: list[float] = field(default_factory=list)
    """The event loop's time at each request."""
    never_answers: str | None = None
    """A User-Agent substring whose requests are held open and never answered (a tarpit)."""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.arrivals.append(asyncio.get_running_loop().time())
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if self.never_answers and self.never_answers in request.headers.get("User-Agent", ""):
                await asyncio.sleep(30)
            if self.delay:
                await asyncio.sleep(self.delay)
            if not self.healthy:
                return web.json_response({"code": "5000"}, status=503)
            return web.json_response(
                {"code": "0"}, headers={"Strict-Transport-Security": "max-age=31536000"}
            )
        finally:
            self.active -= 1


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    pem = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return ca, pem


@pytest.fixture
async def backend(tls_ca: tuple[trustme.CA, Path]) -> AsyncIterator[Backend]:
    ca, _ = tls_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    service = Backend()
    app = web.Application()
    app.router.add_get("/{tail:.*}", service.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    service.url = f"https://127.0.0.1:{runner.addresses[0][1]}/svc"
    yield service
    await runner.cleanup()


def settings_for(ca_file: Path, **probes: Any) -> Settings:
    values: dict[str, Any] = {
        "ca_file": str(ca_file),
        "timeout_seconds": 2.0,
        "denied_networks": ["169.254.0.0/16"],
    }
    values.update(probes)
    return parse_config({"probes": values}, "test", env={})


def add_service(store: Store, clock: FakeClock, url: str, **changes: Any) -> None:
    values: dict[str, Any] = {
        "id": "svc-0001",
        "name": "企业开办",
        "status": "online",
        "url": url,
        "probe": {
            "path": "/health",
            "expect_status": [200],
            "expect_codes": {"field": "code", "ok": ["0"]},
        },
        "return_codes": {"0": "成功", "5000": "系统繁忙"},
        "max_concurrency": 100,
        "first_seen": clock(),
        "last_seen": clock(),
    }
    values.update(changes)
    with store.session() as session:
        session.add(Service(**values))


def state_of(store: Store) -> str:
    with store.session() as session:
        state = session.get(ServiceState, "svc-0001")
        return state.state if state else "none"


def open_rules(store: Store) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(Finding.rule).where(Finding.state == "open")))


async def test_down_after_three_failures_and_up_after_two_successes(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=[])
    add_service(sqlite_store, clock, backend.url)
    start = clock()
    states = []
    for healthy in [True, False, False, False, True, True]:
        backend.healthy = healthy
        clock.advance(minutes=1)
        await probe_round(sqlite_store, cfg, clock, spread=False)
        states.append(state_of(sqlite_store))
    assert states == ["up", "up", "up", "down", "down", "up"]
    with sqlite_store.session() as session:
        events = session.scalars(select(ServiceEvent.kind).order_by(ServiceEvent.id)).all()
        assert events == ["up", "down", "up"]
        changes = session.scalars(select(ServiceStateChange).order_by(ServiceStateChange.id))
        assert [(c.from_state, c.to_state, c.at) for c in changes] == [
            ("unknown", "up", start + dt.timedelta(minutes=1)),
            ("up", "down", start + dt.timedelta(minutes=4)),
            ("down", "up", start + dt.timedelta(minutes=6)),
        ]
        findings = {f.rule: f.state for f in session.scalars(select(Finding))}
    assert findings["service_down"] == "resolved"
    assert findings["unannounced_outage"] == "resolved"


async def test_one_lost_probe_opens_no_finding(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=[])
    add_service(sqlite_store, clock, backend.url)
    backend.healthy = False
    await probe_round(sqlite_store, cfg, clock, spread=False)
    assert "service_down" not in open_rules(sqlite_store)
    backend.healthy = True
    for _ in range(2):
        backend.healthy = False
        await probe_round(sqlite_store, cfg, clock, spread=False)
        backend.healthy = True
        await probe_round(sqlite_store, cfg, clock, spread=False)
    assert state_of(sqlite_store) == "up"


async def test_a_table_locked_for_long_holds_no_round_and_its_results_move_nothing_late(
    pg_store: Store,
    clock: FakeClock,
    backend: Backend,
    tls_ca: tuple[trustme.CA, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # probe_results locked for two minutes (VACUUM FULL, ALTER TABLE): every round waited on
    # the lock with nothing said, and once it went, results measured two minutes before moved
    # the state machine as if live: an incident opened for an outage long over.
    monkeypatch.setattr(monitord.store, "LOCK_WAIT_SECONDS", 0.5)
    cfg = settings_for(tls_ca[1], deep_kinds=[])
    add_service(pg_store, clock, backend.url)
    await probe_round(pg_store, cfg, clock, spread=False)
    backlog = ProbeBacklog()
    backend.healthy = False
    with table_locked(pg_store.engine, "probe_results"):
        for _ in range(3):
            clock.advance(minutes=1)
            round_ = probe_round(pg_store, cfg, clock, spread=False, backlog=backlog)
            with pytest.raises(OperationalError, match="lock timeout"):
                await asyncio.wait_for(round_, 10)
    assert len(backlog) == 3  # every round kept its results
    assert backlog.write(pg_store) == 3
    assert state_of(pg_store) == "up"  # three failures, written late: no verdict
    assert "service_down" not in open_rules(pg_store)


async def test_results_measured_while_the_cluster_did_not_count_the_daemon_are_said_late(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    # Right after a store outage the daemon's heartbeat has not yet counted it alive again:
    # what it measured then was written late with no line saying so, and late rows appeared
    # that no log accounted for.
    cfg = settings_for(tls_ca[1], deep_kinds=[])
    add_service(sqlite_store, clock, backend.url)
    backend.healthy = False
    plan = schedule.Schedule(start=clock().timestamp(), interval=0.4, counted=lambda: False)
    said: list[str] = []
    handler = logger.add(lambda m: said.append(m.record["message"]), level="INFO")
    try:
        await probe_round(sqlite_store, cfg, clock, schedule=plan)
    finally:
        logger.remove(handler)
    assert said[0] == (
        "1 probe results measured while the cluster did not count this daemon alive are "
        "written (late)"
    )
    with sqlite_store.session() as session:
        assert [r.late for r in session.scalars(select(ProbeResultRow))] == [True]
    assert state_of(sqlite_store) == "none"  # measured uncounted: its machine never moved


async def test_a_slow_service_is_degraded(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=[], slo_ms=200.0)
    add_service(sqlite_store, clock, backend.url)
    backend.delay = 0.4
    await probe_round(sqlite_store, cfg, clock, spread=False)
    assert state_of(sqlite_store) == "degraded"
    assert "service_slow" in open_rules(sqlite_store)


async def test_a_blind_round_declares_nothing_down(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=[], canaries=["https://127.0.0.1:1/"])
    add_service(sqlite_store, clock, backend.url)
    backend.healthy = False
    reports = [await probe_round(sqlite_store, cfg, clock, spread=False) for _ in range(4)]
    assert all(r.blind for r in reports)
    assert state_of(sqlite_store) in ("none", "unknown")
    assert "service_down" not in open_rules(sqlite_store)
    # Its results are kept, marked blind, and left out of the service's uptime.
    with sqlite_store.session() as session:
        results = session.scalars(
            select(ProbeResultRow).where(ProbeResultRow.service_id.is_not(None))
        )
        assert [(r.success, r.blind) for r in results] == [(False, True)] * 4
        [stats] = probe_quarter(session, *quarter_bounds("2026q4")).values()
    assert (stats.count, stats.failures, stats.blind, stats.uptime) == (0, 0, 4, None)


async def test_a_suspended_service_is_probed_but_its_outage_is_expected(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=[])
    add_service(
        sqlite_store,
        clock,
        backend.url,
        status="suspended",
        suspension={
            "filed_at": "2026-10-30T09:00:00+08:00",
            "planned_resume": "2026-11-01T08:00:00+08:00",
        },
    )
    backend.healthy = False
    for _ in range(3):
        await probe_round(sqlite_store, cfg, clock, spread=False)
    assert backend.requests == 3
    assert state_of(sqlite_store) == "down"
    assert open_rules(sqlite_store) == {"suspension_overdue"}  # planned resume has passed


async def test_deep_probes_run_once_a_day_and_on_a_new_certificate(
    sqlite_store: Store, clock: FakeClock, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    cfg = settings_for(tls_ca[1], deep_kinds=["contract"])
    add_service(sqlite_store, clock, backend.url)
    kinds = []
    for minutes in (0, 1, 60 * 24 + 5):
        clock.advance(minutes=minutes)
        report = await probe_round(sqlite_store, cfg, clock, spread=False)
        kinds.append(sorted({r.kind for r in report.results}))
    assert kinds == [["availability", "contract"], ["availability"], ["availability", "contract"]]


def dead_url() -> str:
    """An HTTPS URL on a loopback port nothing listens on: a service that has stopped."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"https://127.0.0.1:{sock.getsockname()[1]}/svc"


@pytest.mark.parametrize("gone", ["stopped", "denied"])
@pytest.mark.parametrize(
    ("kind", "rule"),
    [
        ("contract", "undocumented_return_code"),
        ("tls", "no_hsts"),
        ("compatibility", "incompatible_client"),
    ],
)
async def test_a_deep_probe_that_cannot_reach_the_service_leaves_its_findings_open(
    kind: str,
    rule: str,
    gone: str,
    sqlite_store: Store,
    clock: FakeClock,
    backend: Backend,
    tls_ca: tuple[trustme.CA, Path],
) -> None:
    """A finding of a deep kind was marked fixed (已修复) by a round whose probe could not reach
    the service (stopped, or at an address in the denied networks): a result that measured
    nothing leaves it open."""
    cfg = settings_for(tls_ca[1], deep_kinds=[], timeout_seconds=0.5)
    add_service(sqlite_store, clock, backend.url)
    if kind == "compatibility":
        backend.never_answers = "MicroMessenger"  # WeChat left without an answer
    else:
        backend.healthy = False  # 503 with an undocumented code, and no HSTS header
    await probe_round(sqlite_store, cfg, clock, spread=False, kinds=[kind])
    assert rule in open_rules(sqlite_store)
    with sqlite_store.session() as session:
        service = session.get(Service, "svc-0001")
        assert service is not None
        service.url = dead_url() if gone == "stopped" else "https://169.254.169.254/svc"
    clock.advance(minutes=1)
    report = await probe_round(sqlite_store, cfg, clock, spread=False, kinds=[kind])
    assert [r.success for r in report.results if r.kind == kind] == [False]
    assert rule in open_rules(sqlite_store)


async def test_probes_never_load_a_provider_beyond_its_share(
    backend: Backend, tls_ca: tuple[trustme.CA, Path], clock: FakeClock
) -> None:
    cfg = settings_for(tls_ca[1], per_service_concurrency=4).probes
    backend.delay = 0.05
    target = ServiceTarget(
        id="svc-0001",
        name="x",
        url=backend.url,
        status="online",
        probe=None,
        return_codes=None,
        max_concurrency=20,
        suspension=None,
    )
    context = trust_context(cfg.ca_file)
    import probes

    async with probes.make_session(ssl_context=context) as session:
        ctx = ProbeContext(session=session, clock=clock, ssl_context=context)
        results = await run_probes(ctx, cfg, [(target, "availability", backend.url)] * 6)
    assert all(r.success for r in results)
    assert backend.most_active == 2  # a tenth of the filed max_concurrency of 20


@dataclass
class ConnectionCount:
    """The TCP connections open through a counting proxy, now and at most."""

    port: int = 0
    open: int = 0
    most_open: int = 0


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ended: Callable[[], None]
) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        ended()
        writer.close()


@asynccontextmanager
async def counting_proxy(upstream_url: str) -> AsyncIterator[ConnectionCount]:
    """A TCP proxy on loopback in front of a service, counting the connections through it: a
    connection is open from its accept until either side closes it."""
    count = ConnectionCount()
    upstream_port = int(upstream_url.split(":")[2].split("/")[0])

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count.open += 1
        count.most_open = max(count.most_open, count.open)
        closed = False

        def ended() -> None:
            # Counted the moment either side's end is read, not a loop iteration later, when
            # the client may already have opened its next connection.
            nonlocal closed
            if not closed:
                closed = True
                count.open -= 1

        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pipe(reader, up_writer, ended), _pipe(up_reader, writer, ended))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    count.port = server.sockets[0].getsockname()[1]
    async with server:
        yield count


def _service_at(url: str, max_concurrency: int) -> ServiceTarget:
    return ServiceTarget(
        id="svc-0001",
        name="x",
        url=url,
        status="online",
        probe=None,
        return_codes=None,
        max_concurrency=max_concurrency,
        suspension=None,
    )


@pytest.mark.parametrize(("max_concurrency", "limit"), [(10, 1), (20, 2)])
async def test_every_probe_kind_together_keeps_to_the_services_connection_limit(
    max_concurrency: int,
    limit: int,
    backend: Backend,
    tls_ca: tuple[trustme.CA, Path],
    clock: FakeClock,
) -> None:
    """Every kind probing one service at once (the tls probe's protocol handshakes and HSTS
    request, the four compatibility clients) never has more connections open to it than a
    tenth of the max_concurrency it filed, and every probe still gets its result."""
    cfg = settings_for(tls_ca[1]).probes
    context = trust_context(cfg.ca_file)
    import probes

    async with (
        counting_proxy(backend.url) as count,
        probes.make_session(ssl_context=context) as session,
    ):
        url = f"https://127.0.0.1:{count.port}/svc"
        target = _service_at(url, max_concurrency)
        ctx = ProbeContext(session=session, clock=clock, ssl_context=context)
        results = await run_probes(ctx, cfg, [(target, kind, url) for kind in probes.PROBES])
    assert {r.kind: r.error for r in results} == dict.fromkeys(probes.PROBES)
    tls = next(r for r in results if r.kind == "tls")
    assert "TLSv1.2" in tls.facts["protocols"] and tls.facts["hsts"]["present"]
    assert count.most_open == limit


async def test_a_client_left_hanging_counts_its_own_time_not_its_wait_for_a_connection(
    backend: Backend, tls_ca: tuple[trustme.CA, Path], clock: FakeClock
) -> None:
    """With a limit of one connection the compatibility clients go one after another: WeChat,
    never answered, fails after its own timeout, and Alipay, which waited for WeChat's
    connection longer than that, still gets the page."""
    cfg = settings_for(tls_ca[1], timeout_seconds=0.5).probes
    backend.never_answers = "MicroMessenger"
    context = trust_context(cfg.ca_file)
    import probes

    async with probes.make_session(ssl_context=context) as session:
        ctx = ProbeContext(session=session, clock=clock, ssl_context=context)
        (result,) = await run_probes(
            ctx, cfg, [(_service_at(backend.url, 10), "compatibility", backend.url)]
        )
    assert result.facts["incompatible_clients"] == ["wechat"]
    assert result.facts["clients"]["wechat"]["problems"] == ["timed out after 0.5 s"]
    assert result.facts["clients"]["alipay"]["status"] == 200


async def test_a_probe_whose_connections_wait_their_turn_is_not_cut_by_the_deadline(
    backend: Backend, tls_ca: tuple[trustme.CA, Path], clock: FakeClock
) -> None:
    """Four compatibility clients the service never answers, one connection at a time, take
    four timeouts (8 s), longer than a probe's deadline (timeout + 5 s = 7 s): the probe still
    reports each client's own failure rather than losing them all to the deadline."""
    cfg = settings_for(tls_ca[1], timeout_seconds=2.0).probes
    backend.never_answers = "Mozilla"
    context = trust_context(cfg.ca_file)
    import probes

    async with probes.make_session(ssl_context=context) as session:
        ctx = ProbeContext(session=session, clock=clock, ssl_context=context)
        (result,) = await run_probes(
            ctx, cfg, [(_service_at(backend.url, 10), "compatibility", backend.url)]
        )
    clients = result.facts["clients"]
    assert set(clients) == {"desktop", "phone", "wechat", "alipay"}
    assert all(clients[c]["problems"] == ["timed out after 2 s"] for c in clients)


async def test_hourly_roll_ups_keep_percentiles_and_raw_results_are_purged(
    sqlite_store: Store, clock: FakeClock
) -> None:
    start = dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.UTC)
    with sqlite_store.session() as session:
        for i in range(150):
            session.add(
                ProbeResultRow(
                    service_id="svc-0001",
                    kind="availability",
                    target="https://x/",
                    at=start + dt.timedelta(seconds=30 * i),
                    success=i % 10 != 0,
                    duration_ms=float(i),
                    facts={},
                )
            )
    clock.now = start + dt.timedelta(days=40)
    assert roll_up(sqlite_store, clock()) == 2  # every 30 s from 01:00 to 02:14:30: two hours
    assert roll_up(sqlite_store, clock()) == 0
    with sqlite_store.session() as session:
        first = session.scalars(select(ProbeRollup).order_by(ProbeRollup.hour)).first()
        assert first is not None
        assert (first.count, first.failures) == (120, 12)
        assert (first.p50_ms, first.p95_ms) == (61.0, 114.0)  # of the 108 successes
        # and the histogram a quarter's percentiles are merged from, read back the same
        assert sum(first.latency_buckets.values()) == 108 and first.blind == 0
        assert bucket_of(percentile(first.latency_buckets, 0.95) or 0) == bucket_of(114.0)
    deleted = purge(sqlite_store, parse_config({}, "test", env={}), clock())
    assert deleted["probe_results"] == 135  # the 15 failures are kept store.retention_days
    with sqlite_store.session() as session:
        assert session.scalars(select(ProbeRollup)).all() != []


def test_probe_cli_prints_one_json_object_per_probe(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from monitord.cli import main

    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "m.db"}"\n')
    status = main(
        [
            "--config",
            str(config),
            "probe",
            "https://127.0.0.1:1/",
            "--json",
            "--kind",
            "availability",
        ]
    )
    assert status == 1  # the probe failed: a script can tell
    [line] = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert set(obj) >= {"kind", "target", "success", "duration_ms", "facts", "findings"}
    assert obj["success"] is False
    assert [f["rule"] for f in obj["findings"]] == ["service_down"]


async def statements_per_round(
    store: Store, cfg: Settings, clock: FakeClock, backend: Backend, ids: list[str]
) -> list[int]:
    """SQL statements each of four rounds over these services sends: first seen (all up),
    steady, all down, back up."""
    counts: list[int] = []

    def count(*_args: Any) -> None:
        counts[-1] += 1

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        for healthy in [True, True, False, True]:
            backend.healthy = healthy
            clock.advance(minutes=1)
            counts.append(0)
            await probe_round(store, cfg, clock, service_ids=ids, spread=False)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    return counts


async def test_a_round_is_recorded_in_as_many_statements_for_forty_services_as_for_two(
    store: Store,
    clock: FakeClock,
    backend: Backend,
    tls_ca: tuple[trustme.CA, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recording a round reads and writes sets of rows, never a query per service: on
    PostgreSQL each query is a network round trip, and per-service queries made a whole round
    cost twice blackbox_exporter's CPU per probe."""
    # Each round in one batch: on a busy machine forty probes outlast the half second after
    # which a round records what it has, and a second batch is not a query per service.
    monkeypatch.setattr(schedule, "AT_ONCE_FLUSH_SECONDS", 60.0)
    cfg = settings_for(tls_ca[1], deep_kinds=[], down_after=1, up_after=1)
    few = [f"svc-a{i:03d}" for i in range(2)]
    many = [f"svc-b{i:03d}" for i in range(40)]
    for service_id in few + many:
        add_service(store, clock, backend.url, id=service_id)
    counts = {
        len(ids): await statements_per_round(store, cfg, clock, backend, ids) for ids in (few, many)
    }
    assert counts[40] == counts[2]
    with store.session() as session:
        changes = session.scalars(select(ServiceStateChange.to_state)).all()
        down = session.scalars(select(Finding.state).where(Finding.rule == "service_down"))
        assert sorted(down) == ["resolved"] * 42
    assert sorted(changes) == sorted(["up", "down", "up"] * 42)


@dataclass
class HeldBack:
    """Three services on loopback, the first of which answers only once `release` is set."""

    settings: Settings
    release: asyncio.Event
    store: Store

    def recorded(self) -> list[str]:
        with self.store.session() as session:
            return sorted(session.scalars(select(ProbeResultRow.service_id)))


@pytest.fixture
async def held_back(
    sqlite_store: Store, clock: FakeClock, tls_ca: tuple[trustme.CA, Path], serve: Serve
) -> AsyncIterator[HeldBack]:
    ca, pem = tls_ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await release.wait()
        return web.json_response({"code": "0"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    base = f"https://127.0.0.1:{await serve(app, context)}"
    for number, path in [(1, "/slow"), (2, "/fast"), (3, "/fast")]:
        add_service(sqlite_store, clock, base + path, id=f"svc-000{number}", probe={"path": path})
    yield HeldBack(settings_for(pem, deep_kinds=[], timeout_seconds=20.0), release, sqlite_store)
    release.set()


async def test_probing_every_service_at_once_records_each_result_as_it_comes(
    held_back: HeldBack, clock: FakeClock
) -> None:
    # `monitord probe --all`: a service slow to answer does not hold back the record of the
    # others, and the report lists the services in their order.
    round_ = asyncio.create_task(
        probe_round(held_back.store, held_back.settings, clock, spread=False)
    )
    await wait_for(lambda: held_back.recorded() == ["svc-0002", "svc-0003"], "the fast ones")
    assert not round_.done()
    held_back.release.set()
    report = await round_
    assert held_back.recorded() == ["svc-0001", "svc-0002", "svc-0003"]
    assert [r.service_id for r in report.results] == ["svc-0001", "svc-0002", "svc-0003"]
    assert all(r.success for r in report.results)


async def test_a_round_at_once_cancelled_records_what_it_measured(
    held_back: HeldBack, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C before the next batch was due: the results that came are recorded all the same.
    monkeypatch.setattr(schedule, "AT_ONCE_FLUSH_SECONDS", 60.0)
    came: list[str | None] = []
    probe = Prober.probe

    async def counted(self: Prober, *args: Any) -> ProbeResult:
        result = await probe(self, *args)
        came.append(result.service_id)
        return result

    monkeypatch.setattr(Prober, "probe", counted)
    round_ = asyncio.create_task(
        probe_round(held_back.store, held_back.settings, clock, spread=False)
    )
    await wait_for(lambda: len(came) == 2, "the fast ones measured")
    assert held_back.recorded() == []
    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_
    assert held_back.recorded() == ["svc-0002", "svc-0003"]


async def test_a_round_at_once_tells_how_far_it_got_as_it_records(
    held_back: HeldBack, clock: FakeClock
) -> None:
    told: list[tuple[int, int]] = []
    round_ = asyncio.create_task(
        probe_round(
            held_back.store,
            held_back.settings,
            clock,
            spread=False,
            progress=lambda done, total: told.append((done, total)),
        )
    )
    await wait_for(lambda: bool(told) and told[-1] == (2, 3), "the fast ones told")
    held_back.release.set()
    await round_
    assert told[-1] == (3, 3)
    assert [done for done, _ in told] == sorted(done for done, _ in told)


@pytest.mark.parametrize("kind", [[], ["--kind", "contract"]], ids=["availability", "deep"])
def test_probe_all_says_how_far_it_got_while_a_slow_service_holds_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    kind: list[str],
) -> None:
    from monitord.cli import main
    from monitord.cli import probe as probe_cli
    from monitord.store import open_store

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow"):
                time.sleep(2.0)  # past the first batch the round records (every 0.5 s)
            body = b'{"code": "0"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = open_store(url)
    try:
        for number, path in [(1, "/slow"), (2, "/fast"), (3, "/fast")]:
            add_service(store, clock, base + path, id=f"svc-000{number}", probe={"path": path})
    finally:
        store.dispose()
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\n[probes]\ndenied_networks = []\ndeep_kinds = []\n',
        encoding="utf-8",
    )
    # Said on a timer: the fast ones end before the first line is due, and nothing else ends
    # until the slow one does (a round of probes hanging until their timeout said nothing).
    monkeypatch.setattr(probe_cli, "PROGRESS_SECONDS", 0.8)
    try:
        assert main(["--config", str(config), "probe", "--all", "--json", *kind]) == 0
    finally:
        server.shutdown()
        server.server_close()
    captured = capsys.readouterr()
    told = [line for line in captured.err.splitlines() if line.endswith("probes done…")]
    # The two fast ones come in the first batch or two; the slow one ends the round unsaid.
    assert told and told[-1] == "monitord: 2 of 3 probes done…"
    assert len(captured.out.splitlines()) == 3  # stdout keeps the results alone


async def test_the_rounds_keep_their_slots_while_deep_probes_run(
    sqlite_store: Store, backend: Backend, tls_ca: tuple[trustme.CA, Path]
) -> None:
    # The deep probes ran inside the round job after its availability probes: the next round
    # waited for them, and the windows that passed meanwhile went unprobed for every service.
    from monitord.runtime.app import App
    from monitord.runtime.daemon import Daemon
    from monitord.runtime.jobs import JOBS
    from monitord.timeutil import system_clock

    cfg = settings_for(
        tls_ca[1], deep_kinds=["compatibility"], interval_seconds=2.0, timeout_seconds=5.0
    )
    cfg = cfg.model_copy(update={"api": cfg.api.model_copy(update={"enabled": False})})
    add_service(sqlite_store, FakeClock(system_clock()), backend.url)
    backend.never_answers = "MicroMessenger"  # the WeChat client waits out its 5 s timeout
    app = App(settings=cfg, store=sqlite_store, clock=system_clock)
    daemon = Daemon(app, None, jobs=tuple(j for j in JOBS if j.name in {"probes", "deep-probes"}))
    running = asyncio.create_task(daemon.run())

    def results(kind: str) -> list[dt.datetime]:
        with sqlite_store.session() as session:
            return list(
                session.scalars(
                    select(ProbeResultRow.at)
                    .where(ProbeResultRow.kind == kind)
                    .order_by(ProbeResultRow.at)
                )
            )

    try:
        await wait_for(lambda: results("compatibility"), "the deep probe's result", timeout=20)
        await wait_for(lambda: len(results("availability")) >= 6, "more rounds", timeout=20)
    finally:
        daemon.request_stop("test")
        assert await running == 0
    deep = results("compatibility")
    rounds = results("availability")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(rounds)]
    assert len(deep) == 1  # once, though every round until it was recorded found it due
    assert max(gaps) < 4.0, gaps  # no round missed while it ran its 5 s
