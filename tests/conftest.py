"""Shared fixtures: an injectable clock, stores on SQLite and (when installed) PostgreSQL, and
`monitord run` as a process (tests/runtime, tests/cluster)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from alembic import command
from alembic.config import Config as AlembicConfig
from loguru import logger
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError

# One throw-away PostgreSQL for the suite and the benches (bench/_postgres.py has no pytest).
from bench._postgres import PostgresServer as PostgresServer
from bench._postgres import free_port as free_port
from bench._postgres import postgres_bin as postgres_bin
from monitord.store import MIGRATIONS, Store, open_store
from monitord.timeutil import UTC
from tests.fakeportal import TOKEN
from tests.probes.helpers import Serve


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime(2026, 11, 2, 1, 0, tzinfo=UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting on Monday 2026-11-02 09:00 Asia/Shanghai."""
    return FakeClock()


class DaemonProcess:
    """A running `monitord run` and the lines it wrote to stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = ""

    async def stop(self, sig: int = signal.SIGTERM, within: float = 15.0) -> float:
        """Send sig, wait for the exit, and return how long it took."""
        started = time.monotonic()
        self.process.send_signal(sig)
        _, err = await asyncio.wait_for(self.process.communicate(), within)
        self.stderr = err.decode()
        return time.monotonic() - started


STARTED: list[asyncio.subprocess.Process] = []


async def start_daemon(
    config: Path, env_extra: dict[str, str] | None = None, umask: int = 0o022
) -> DaemonProcess:
    """`monitord run` as a process, started as a shell would (umask 022 unless told)."""
    env = dict(os.environ, MONITORD_PORTAL_TOKEN=TOKEN, **(env_extra or {}))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitord.cli",
        "--config",
        str(config),
        "run",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=lambda: os.umask(umask),
    )
    STARTED.append(process)
    return DaemonProcess(process)


async def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    def check() -> bool:
        try:
            return bool(condition())
        except OperationalError:  # the daemon has not created the tables yet
            return False

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_for_line(daemon: DaemonProcess, text: str, timeout: float = 30.0) -> str:
    """Read the daemon's stderr until a line holding text; that line."""
    assert daemon.process.stderr is not None
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out waiting for {text!r} on the daemon's stderr")
        line = (await asyncio.wait_for(daemon.process.stderr.readline(), left)).decode()
        if not line:
            pytest.fail(f"the daemon exited before saying {text!r}")
        if text in line:
            return line


def sigint_as_in_a_terminal() -> None:
    """`preexec_fn` of a child process a test stops with SIGINT, as Ctrl-C in a terminal would:
    SIGINT at its default. A shell starts a background job (`make test &`) with SIGINT ignored,
    every process under it inherits that, and a Python child that starts with SIGINT ignored
    never sees the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def restart_postgres(server: PostgresServer) -> None:
    """Start a stopped cluster again, on the same port."""
    subprocess.run(
        [
            *server.prefix,
            str(server.bindir / "pg_ctl"),
            "-D",
            str(server.data),
            "-l",
            str(server.folder / "log"),
            "-w",
            "-o",
            f"-p {server.port} -k {server.folder} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer | None]:
    """A PostgreSQL server for the session, or None when pg_ctl is not installed."""
    bindir = postgres_bin()
    if bindir is None:
        yield None
        return
    # Its own folder, not pytest's numbered ones: another pytest run's clean-up of old numbered
    # folders must never delete a running cluster's data.
    folder = Path(tempfile.mkdtemp(prefix="monitord-pg-"))
    server = PostgresServer(folder, bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer | None
) -> str:
    """A fresh store URL, once on SQLite and once on PostgreSQL (skipped when not installed)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'monitord.db'}"
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    return postgres.new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """An opened, migrated store on each backend."""
    opened = open_store(store_url)
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """An opened, migrated SQLite store."""
    opened = open_store(f"sqlite:///{tmp_path / 'monitord.db'}")
    try:
        yield opened
    finally:
        opened.dispose()


@pytest.fixture
def pg_store(postgres: PostgresServer | None) -> Iterator[Store]:
    """An opened, migrated PostgreSQL store (skipped when PostgreSQL is not installed)."""
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    opened = open_store(postgres.new_database())
    try:
        yield opened
    finally:
        opened.dispose()


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


@contextmanager
def logged(level: str) -> Iterator[list[str]]:
    """The messages loguru writes at `level` and above while the block runs (each ends with a
    newline)."""
    said: list[str] = []
    sink = logger.add(said.append, level=level, format="{message}")
    try:
        yield said
    finally:
        logger.remove(sink)


def migrated_to(store: Store, revision: str) -> None:
    """The store as an older monitord left it: migrated up to revision only."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def store_at(url: str, revision: str) -> None:
    """A store at url as an older monitord left it: migrated up to revision only."""
    store = Store(url)
    try:
        migrated_to(store, revision)
    finally:
        store.dispose()


@contextmanager
def table_locked(engine: Engine, table: str) -> Iterator[Connection]:
    """Hold a PostgreSQL table in ACCESS EXCLUSIVE mode, as VACUUM FULL or ALTER TABLE do, until
    the block ends; the connection given can end it sooner (rollback)."""
    locker = engine.connect()
    try:
        locker.execute(text(f"lock table {table} in access exclusive mode"))
        yield locker
    finally:
        locker.rollback()
        locker.close()


def query_plan(store: Store, statement: str, params: Any) -> str:
    """How the store would run a statement, its steps joined by " / ": SQLite's EXPLAIN QUERY
    PLAN, or PostgreSQL's EXPLAIN with sequential scans off (a small table is read whole unless
    it must not be: can it be not?)."""
    with store.engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if not sqlite:
            connection.exec_driver_sql("SET enable_seqscan = off")
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        rows = connection.exec_driver_sql(explain + statement, params)
        return " / ".join(str(row[-1]) for row in rows)
