"""A cluster of `monitord run` processes for the fault tests, and what the tests do to it.

Everything is real and on loopback: a PostgreSQL of the test's own (the tests restart and stop
it), the fake portal listing SERVICES services, one aiohttp server answering as those services
(the failing ones with 500, so that incidents open and alerts flow), a json:// webhook that
receives the alerts, and, for a daemon to be cut off, a TCP proxy between it and PostgreSQL.
The intervals are short (probes every 2 s, leases of 2 s) so that "within two intervals" is
measured in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from sqlalchemy import func, select

from monitord.cluster import Member, members
from monitord.runtime.jobs import JOBS
from monitord.store import Store, open_store
from monitord.store.models import ProbeResultRow, ServiceState
from monitord.timeutil import UTC
from tests.conftest import STARTED, PostgresServer, postgres_bin, start_daemon
from tests.fakeportal import FakePortal, make_service, serve_portal
from tests.receivers import Webhook, serve_webhook

SERVICES = 30
INTERVAL = 2.0
"""probes.interval_seconds"""
HEARTBEAT = 0.5
LEASE = 2.0
ONCE_JOBS = tuple(sorted(job.name for job in JOBS if job.once))
"""The jobs that run on one daemon of the cluster at a time."""


def service_id(number: int) -> str:
    """The id of the fake portal's service `number` (1-based)."""
    return f"svc-{number:04d}"


def utcnow() -> dt.datetime:
    """Now, as the daemons (on this machine) stamp their rows."""
    return dt.datetime.now(UTC)


@dataclass
class Targets:
    """The services' endpoints: GET /svc-NNNN/health answers 200, or 500 while it is failing."""

    failing: set[str] = field(default_factory=set)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        if request.match_info["service"] in self.failing:
            return web.Response(status=500, text="internal error")
        return web.Response(text="ok")


@asynccontextmanager
async def serve_targets(targets: Targets) -> AsyncIterator[Targets]:
    """Serve the services on a free loopback port."""
    app = web.Application()
    app.router.add_get("/{service}/health", targets.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    targets.port = runner.addresses[0][1]
    try:
        yield targets
    finally:
        await runner.cleanup()


class TcpProxy:
    """A TCP proxy on loopback to `upstream_port`, which the test can cut and restore.

    Cut, it is a network that lost the route: the bytes of open connections stop moving, both
    ways (the connections stay open, as they do across a partition), and new connections are
    refused. Restored, it listens again on the same port and the held bytes move on, as TCP
    delivers them when a partition heals.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def listen(self) -> None:
        """Accept connections (on a free port the first time, on the same port after)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        """Stop moving bytes, and refuse new connections."""
        self._flowing.clear()
        if self._server is not None:
            self._server.close()
            self._server = None

    async def restore(self) -> None:
        """Listen again and let the held bytes through."""
        await self.listen()
        self._flowing.set()

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        self.cut()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            sink.close()


@dataclass
class Daemon:
    """One `monitord run` of the cluster, and what it said on stderr (read as it comes, so
    that a full pipe never blocks the daemon)."""

    name: str
    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def stderr(self) -> str:
        """Everything the daemon wrote to stderr so far."""
        return "".join(self.lines)

    def said(self, text: str, since: int = 0) -> list[str]:
        """The lines (from line `since` on) that hold text."""
        return [line for line in self.lines[since:] if text in line]

    async def read(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines.append(line.decode())

    async def kill(self) -> None:
        """SIGKILL: no goodbye, no lease given back."""
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> int:
        """SIGTERM and wait; the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(self.process.wait(), 30)
        if self.reader is not None:
            await self.reader
        return status


@dataclass
class Cluster:
    """The PostgreSQL, the portal, the services, the webhook, and the daemons on them."""

    folder: Path
    server: PostgresServer
    url: str
    portal: FakePortal
    targets: Targets
    hook: Webhook
    store: Store
    daemons: dict[str, Daemon] = field(default_factory=dict)

    def config(self, name: str, store_url: str) -> Path:
        """Write daemon `name`'s config; its path."""
        path = self.folder / f"{name}.toml"
        path.write_text(
            f"""
[daemon]
grace_seconds = 5.0
[store]
url = "{store_url}"
[portal]
url = "{self.portal.url}"
sync_interval_seconds = 2
page_size = 50
timeout_seconds = 5
retries = 0
[logging]
file = "{self.folder / f"{name}.log.jsonl"}"
[api]
enabled = false
[probes]
interval_seconds = {INTERVAL}
timeout_seconds = 1.0
deep_kinds = []
[zap]
enabled = false
[alerts]
oncall = ["{self.hook.apprise_url("oncall")}"]
management = ["{self.hook.apprise_url("management")}"]
service_contacts = false
delivery_interval_seconds = 1.0
retry_seconds = 1.0
retry_max_seconds = 2.0
[incidents]
check_interval_seconds = 1.0
[cluster]
name = "{name}"
heartbeat_seconds = {HEARTBEAT}
lease_seconds = {LEASE}
""",
            encoding="utf-8",
        )
        return path

    async def start(self, name: str, store_url: str | None = None) -> Daemon:
        """Start daemon `name` (on the store, or through store_url) and wait for it to run."""
        process = (await start_daemon(self.config(name, store_url or self.url))).process
        daemon = Daemon(name, process)
        daemon.reader = asyncio.create_task(daemon.read())
        self.daemons[name] = daemon
        deadline = time.monotonic() + 60
        while not daemon.said("monitord running"):
            if process.returncode is not None or time.monotonic() > deadline:
                pytest.fail(f"daemon {name} did not start:\n{daemon.stderr}")
            await asyncio.sleep(0.1)
        return daemon

    async def stop_all(self) -> None:
        """Stop every daemon still running (a failed test's are killed)."""
        for daemon in self.daemons.values():
            if daemon.process.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await daemon.stop()
            if daemon.process.returncode is None:
                await daemon.kill()
            if daemon.process in STARTED:
                STARTED.remove(daemon.process)

    def members(self) -> dict[str, Member]:
        """The cluster as `monitord cluster` shows it: name → member."""
        return {m.name: m for m in members(self.store, LEASE, utcnow())}

    def holders(self) -> dict[str, str]:
        """Each once-only job held now (by the database's clock) → its holder."""
        return {job: m.name for m in self.members().values() for job in m.jobs}

    def results(self, since: dt.datetime) -> list[ProbeResultRow]:
        """The availability results measured since `since`, oldest first."""
        with self.store.session() as session:
            return list(
                session.scalars(
                    select(ProbeResultRow)
                    .where(ProbeResultRow.kind == "availability", ProbeResultRow.at >= since)
                    .order_by(ProbeResultRow.at)
                )
            )

    def count(self, table: type, *where: object) -> int:
        """Rows of a table (matching `where`)."""
        with self.store.session() as session:
            return int(session.scalar(select(func.count()).select_from(table).where(*where)) or 0)

    async def wait(self, condition: object, what: str, timeout: float = 30.0) -> float:
        """Poll condition (a function of nothing, run in a thread) until true; seconds taken."""
        assert callable(condition)
        started = time.monotonic()
        while not await asyncio.to_thread(condition):
            if time.monotonic() - started > timeout:
                pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.05)
        return time.monotonic() - started


def pg_ctl(server: PostgresServer, *args: str) -> None:
    """Run pg_ctl on the test's own PostgreSQL (restart -m fast, stop -m fast, start)."""
    options = f"-p {server.port} -k {server.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        [
            *server.prefix,
            str(server.bindir / "pg_ctl"),
            *("-D", str(server.data), "-l", str(server.folder / "log"), "-w", "-o", options),
            *args,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@asynccontextmanager
async def running_cluster(folder: Path, failing: Sequence[int] = ()) -> AsyncIterator[Cluster]:
    """A migrated store on a PostgreSQL of its own, the portal listing SERVICES services (those
    numbered in `failing` answer 500), the webhook; no daemon yet (Cluster.start)."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="monitord-pg-")), bindir)
    await asyncio.to_thread(server.start)
    store: Store | None = None
    cluster: Cluster | None = None
    try:
        url = await asyncio.to_thread(server.new_database)
        # Migrated once here, so the daemons' starts measure nothing but their joining.
        store = await asyncio.to_thread(open_store, url)
        targets = Targets(failing={service_id(n) for n in failing})
        async with (
            serve_targets(targets),
            serve_portal(FakePortal()) as portal,
            serve_webhook() as hook,
        ):
            portal.services = [
                make_service(
                    n,
                    url=f"http://127.0.0.1:{targets.port}/{service_id(n)}/",
                    access_method="http",
                    probe={"path": "health", "method": "GET", "expect_status": [200]},
                )
                for n in range(1, SERVICES + 1)
            ]
            cluster = Cluster(folder, server, url, portal, targets, hook, store)
            try:
                yield cluster
            finally:
                await cluster.stop_all()
    finally:
        if store is not None:
            store.dispose()
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(shutil.rmtree, server.folder, True)


class StallWatch:
    """How long the machine stood still since this was made: its wall clock stepped past its
    monotonic clock, as when the host pauses the virtual machine. Every process stops then,
    the daemons included, so a bound on how long a service went unprobed allows for it."""

    def __init__(self) -> None:
        self._drift = time.time() - time.monotonic()

    def seconds(self) -> float:
        """The seconds the machine stood still since the watch began."""
        return max(0.0, time.time() - time.monotonic() - self._drift)


def largest_gaps(
    results: Sequence[ProbeResultRow],
    services: Sequence[str],
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, tuple[float, dt.datetime]]:
    """Per service, the longest stretch of [since, until] without a result of it: its length in
    seconds and where it began."""
    seen: dict[str, list[dt.datetime]] = {sid: [since] for sid in services}
    for row in results:
        if row.service_id in seen and since <= row.at <= until:
            seen[row.service_id].append(row.at)
    gaps = {}
    for sid, times in seen.items():
        times = [*sorted(times), until]
        gaps[sid] = max(((b - a).total_seconds(), a) for a, b in itertools.pairwise(times))
    return gaps


@dataclass
class FailureCounters:
    """The failure counters of some services' state machines, sampled as time goes."""

    cluster: Cluster
    services: Sequence[str]
    samples: list[tuple[float, dict[str, int]]] = field(default_factory=list)

    def sample(self) -> None:
        with self.cluster.store.session() as session:
            rows = session.execute(
                select(ServiceState.service_id, ServiceState.failures).where(
                    ServiceState.service_id.in_(self.services)
                )
            ).all()
        self.samples.append((time.monotonic(), {sid: failures for sid, failures in rows}))

    async def watch(self, every: float = 0.2) -> None:
        """Sample until cancelled."""
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(every)

    def worst_jump(self, within: float) -> tuple[str, int]:
        """The largest rise of one counter between two samples less than `within` s apart."""
        worst = ("", 0)
        for i, (t1, first) in enumerate(self.samples):
            for t2, later in self.samples[i + 1 :]:
                if t2 - t1 >= within:
                    break
                for sid, failures in later.items():
                    rise = failures - first.get(sid, failures)
                    if rise > worst[1]:
                        worst = (sid, rise)
        return worst

    def rises(self, since: float) -> dict[str, int]:
        """How much each counter rose from the first sample at or after `since` to the last."""
        first = next(counts for at, counts in self.samples if at >= since)
        last = self.samples[-1][1]
        return {sid: last[sid] - first.get(sid, 0) for sid in last}
