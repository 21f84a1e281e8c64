"""Benchmark: the whole availability round as the daemon runs it, over 2,000 HTTPS targets on
loopback, side by side with Prometheus blackbox_exporter on the same targets in the same run.

What is measured, honestly:

* The targets are 2,000 distinct URLs (`https://localhost:PORT/svc/<i>`) served by nginx
  (Debian: `apt-get install nginx-light`), started by the bench with a generated TLS config on
  loopback; when nginx is absent, by the bench's own aiohttp TLS server in a separate process.
  Either way the server's CPU is not charged to the prober. Every probe opens a fresh TCP
  connection and a TLS 1.3 handshake (the probing session never reuses connections), exactly as
  in production: with `probes.tls_resume_minutes` at its default (5), as the daemon runs, it
  resumes the session of the last full handshake with the host and port, and all 2,000 targets
  share one, so nearly every handshake of a round is resumed. A daemon probing each host once a
  minute resumes four handshakes in five. "monitord, whole round, SQLite, full handshakes" sets
  it to 0: every probe a full handshake, as blackbox_exporter makes (the ssl module's, where
  the resuming connections are pyOpenSSL's: `probes/resumption.py`).
* "monitord, whole round" is `probe_round` as `monitord probe --all --kind availability` and
  the daemon run it: targets read from the store, probe, judge, record (results, state machines,
  findings); on SQLite, and on a throw-away PostgreSQL (fsync off, as the tests run it) when
  `pg_ctl` is found. A first round brings the 2,000 services from unknown to up; the rounds
  measured are the steady state the daemon lives in.
* "monitord, probe alone" is the availability probe over the same targets, nothing stored.
* "monitord probe --all, as typed" is the command itself (`--kind availability --json`), a
  fresh process each round on a SQLite store of its own, timed by GNU time (`apt-get install
  time`) with its start-up: imports, config, store. The bench also prints that start-up alone
  (the same command on an empty store, which stops before its first probe). The other rows
  time the round alone, as the daemon runs it round after round.
* Each monitord row runs in a fresh process of its own (spawned, not forked), so its CPU and
  its peak memory are its own, not the bench's nor another row's.
* probes/s is wall-clock throughput of a round at the given concurrency; CPU ms per probe is the
  row's process's user+system CPU for the round, from /proc, divided by the number of probes
  (only the round is timed: process start-up is left out). Each figure is the median of the
  rounds. Peak memory is each process's own high-water mark (VmHWM) at the end of the run.
* On PostgreSQL, the server's own processes (its backends, WAL writer …) work for the round
  too: their CPU is read from /proc and printed beside the row, and in a second ratio. It is not
  in the row's figure, as a store usually has its own host (and blackbox_exporter stores
  nothing).
  The rows take turns, a round of each and then again, and each ratio is the median of the
  ratios of rounds measured side by side: the machine's speed drifts within a run.
* The collector is tuned first (`tune_collector`), as `monitord run` and `monitord probe --all`
  tune it.
* The floor: `openssl s_time -new` (OpenSSL's own C client, Debian package `openssl`) over the
  same targets, one connection at a time, each a full handshake and a GET; and `-reuse`, each a
  resumed handshake. No client of this OpenSSL can spend less CPU per probe than they do.
* Prometheus blackbox_exporter (Debian: `apt-get install prometheus-blackbox-exporter`) is
  driven over the same targets in the same run, with the same concurrency and an `http_2xx`
  module trusting the same CA. Its CPU is read from /proc for its process, so the HTTP calls
  that drive it are not charged to it.
* Loopback has no network latency, so probes/s here is bounded by CPU (the prober's and the
  server's on the same cores), not by the network; in production the round is latency-bound and
  the CPU per probe is what matters.

Run: `.venv/bin/python bench/probes.py [--targets 2000] [--rounds 3] [--concurrency 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import re
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import trustme
from aiohttp import web
from loguru import logger

# Run as a script, this file's folder comes first on sys.path and this very file would shadow
# the `probes` package it measures: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import probes  # noqa: E402
from bench._postgres import PostgresServer, postgres_bin  # noqa: E402
from bench._proc import (  # noqa: E402
    GNU_TIME,
    MONITORD,
    cpu_seconds,
    peak_mib,
    timed,
    tree_cpu_seconds,
)
from monitord import aio  # noqa: E402
from monitord.config import ProbeSettings, Settings, parse_config  # noqa: E402
from monitord.probing import probe_round  # noqa: E402
from monitord.runtime.heap import tune_collector  # noqa: E402
from monitord.store import Store, open_store  # noqa: E402
from monitord.store.models import Service  # noqa: E402
from monitord.timeutil import system_clock  # noqa: E402
from monitord.types import ProbeContext, Target  # noqa: E402
from probes.availability import AvailabilitySpec, probe  # noqa: E402

TYPED = "monitord probe --all, as typed"
"""The row of the command as a user types it, start-up included (`CommandTurn`)."""
FULL = "monitord, whole round, SQLite, full handshakes"
"""The whole round with `probes.tls_resume_minutes = 0`: every probe a full handshake."""
BLACKBOX_NAMES = ("prometheus-blackbox-exporter", "blackbox_exporter")
NGINX_NAMES = ("nginx", "/usr/sbin/nginx")


def _serve(cert: str, key: str, port_out: multiprocessing.connection.Connection) -> None:
    """The server process: one TLS listener answering every /svc/<i> path."""

    async def main() -> None:
        async def handler(_request: web.Request) -> web.Response:
            hsts = {"Strict-Transport-Security": "max-age=600"}
            return web.json_response({"code": "0"}, headers=hsts)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        app = web.Application()
        app.router.add_get("/svc/{i}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=4096)
        await site.start()
        port_out.send(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


@dataclass
class Round:
    """One round's figures."""

    wall_s: float
    cpu_s: float
    ok: int
    n: int
    store_cpu_s: float = 0.0
    """The store server's own CPU for the round (PostgreSQL's processes), not in `cpu_s`."""

    @property
    def rate(self) -> float:
        """Probes per second."""
        return self.n / self.wall_s

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per probe."""
        return self.cpu_s * 1000 / self.n

    @property
    def store_cpu_ms(self) -> float:
        """The store server's CPU milliseconds per probe."""
        return self.store_cpu_s * 1000 / self.n


async def monitord_round(urls: list[str], context: ssl.SSLContext, concurrency: int) -> Round:
    """One availability round over `urls` with monitord's probe, `concurrency` at a time,
    resuming TLS sessions as the daemon does (the default `probes.tls_resume_minutes`)."""
    gate = asyncio.Semaphore(concurrency)
    spec = AvailabilitySpec(timeout_s=30)
    resume_s = ProbeSettings().tls_resume_minutes * 60
    async with probes.make_session(limit=concurrency, ssl_context=context) as session:
        ctx = ProbeContext(session=session, ssl_context=context, tls_resume_s=resume_s)

        async def one(url: str) -> bool:
            async with gate:
                result = await probe(Target(url), spec, ctx)
                return result.success and result.facts.get("days_to_expiry") is not None

        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(u) for u in urls))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Round(wall, cpu, sum(results), len(urls))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def blackbox_round(urls: list[str], port: int, pid: int, concurrency: int) -> Round:
    """One round driving blackbox_exporter's /probe endpoint over `urls`."""
    gate = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> bool:
            async with gate:
                params = {"module": "http_2xx_monitord", "target": url}
                async with session.get(f"http://127.0.0.1:{port}/probe", params=params) as resp:
                    return "probe_success 1" in await resp.text()

        cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
        results = await asyncio.gather(*(one(u) for u in urls))
        wall, cpu = time.perf_counter() - wall0, cpu_seconds(pid) - cpu0
    return Round(wall, cpu, sum(results), len(urls))


def start_blackbox(binary: str, ca_file: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start blackbox_exporter with an http_2xx module that trusts the bench CA."""
    config = workdir / "blackbox.yml"
    config.write_text(
        "modules:\n"
        "  http_2xx_monitord:\n"
        "    prober: http\n"
        "    timeout: 30s\n"
        "    http:\n"
        "      preferred_ip_protocol: ip4\n"
        "      tls_config:\n"
        f"        ca_file: {ca_file}\n"
    )
    port = _free_port()
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(process, port, "blackbox_exporter")
    return process, port


@dataclass(frozen=True)
class Row:
    """A bench row: what was measured, its rounds, and its process's own peak memory."""

    name: str
    rounds: list[Round]
    peak_mib: float


def _wait_listening(process: subprocess.Popen[bytes], port: int, name: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{name} did not start listening within 10 s")


def _nginx_config(port: int, cert: str, key: str, prefix: Path) -> str:
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"  {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log error;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n  access_log off;\n{temp}"
        "  server {\n"
        f"    listen 127.0.0.1:{port} ssl backlog=4096;\n"
        f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
        # A healthy service as the deep probes judge one (bench/daemon.py runs them): no CBC-SHA1
        # suites, and a JSON answer with the documented business code.
        "    ssl_protocols TLSv1.2 TLSv1.3;\n    ssl_ciphers ECDHE+AESGCM:ECDHE+CHACHA20;\n"
        "    location /svc/ {\n"
        '      add_header Strict-Transport-Security "max-age=600" always;\n'
        '      default_type application/json;\n      return 200 \'{"code": "0"}\';\n'
        "    }\n  }\n}\n"
    )


def start_nginx(
    binary: str, cert: str, key: str, workdir: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """Start nginx (one worker) on a loopback TLS port answering every /svc/<i> path."""
    port = _free_port()
    prefix = workdir / "nginx"
    prefix.mkdir()
    config = prefix / "nginx.conf"
    config.write_text(_nginx_config(port, cert, key, prefix))
    process = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(config), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_listening(process, port, "nginx")
    return process, port


def write_certs(workdir: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for localhost in workdir: (CA file, cert, key)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    ca_file, cert, key = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    return ca_file, cert, key


def start_targets(cert: Path, key: Path, workdir: Path) -> tuple[str, int, Callable[[], None]]:
    """nginx when installed, else the bench's own aiohttp server: (what serves, port, stop)."""
    nginx = next((b for b in map(shutil.which, NGINX_NAMES) if b), None)
    if nginx is not None:
        process, port = start_nginx(nginx, str(cert), str(key), workdir)

        def stop_nginx() -> None:
            process.terminate()
            process.wait(timeout=10)

        return "nginx (one worker)", port, stop_nginx
    print(
        "nginx is not installed: the targets are the bench's own aiohttp server. For nginx:\n"
        "  apt-get install nginx-light"
    )
    receive, send = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(target=_serve, args=(str(cert), str(key), send), daemon=True)
    server.start()
    port = receive.recv()

    def stop_server() -> None:
        server.terminate()
        server.join(timeout=5)

    return "the bench's aiohttp server (own process)", port, stop_server


def seeded_store(url: str, urls: list[str]) -> Store:
    """A store whose catalogue has one online service per URL."""
    store = open_store(url)
    now = system_clock()
    with store.session() as session:
        session.add_all(
            Service(
                id=f"svc-{i:05d}",
                name=f"bench {i}",
                status="online",
                url=target,
                first_seen=now,
                last_seen=now,
            )
            for i, target in enumerate(urls)
        )
    return store


def round_settings(ca_file: str, concurrency: int, tls_resume_minutes: float | None) -> Settings:
    """The probes config of the whole round: availability only, loopback allowed; TLS sessions
    resumed as configured (None: the default)."""
    probes_config: dict[str, Any] = {
        "ca_file": ca_file,
        "concurrency": concurrency,
        "deep_kinds": [],
        "denied_networks": [],
    }
    if tls_resume_minutes is not None:
        probes_config["tls_resume_minutes"] = tls_resume_minutes
    return parse_config({"probes": probes_config}, "bench", env={})


def whole_round(store: Store, settings: Settings, server_pid: int | None = None) -> Round:
    """One `monitord probe --all --kind availability` round: probe, judge, record (with the
    collector tuned as the daemon and that command tune it, `tune_collector`). With the store
    server's pid, that server's own CPU for the round is measured too."""

    def server_cpu() -> float:
        return tree_cpu_seconds(server_pid) if server_pid else 0.0

    store0, cpu0, wall0 = server_cpu(), cpu_seconds(), time.perf_counter()
    done = aio.run(probe_round(store, settings, system_clock, kinds=["availability"], spread=False))
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    ok = done.probes - done.failures
    return Round(wall, cpu, ok, done.probes, store_cpu_s=server_cpu() - store0)


@contextlib.contextmanager
def warm_store(url: str, urls: list[str], settings: Settings) -> Iterator[Store]:
    """A seeded store after a first round (its services from unknown to up), disposed after."""
    store = seeded_store(url, urls)
    try:
        whole_round(store, settings)
        yield store
    finally:
        store.dispose()


def postgres_database(
    stack: contextlib.ExitStack, workdir: Path, args: Any
) -> tuple[str, int] | None:
    """A database on a throw-away PostgreSQL stopped with `stack`, and the server's pid; None
    without pg_ctl."""
    bindir = None if args.no_postgres else postgres_bin()
    if bindir is None:
        print("PostgreSQL (pg_ctl) not found or --no-postgres: the whole round on SQLite only")
        return None
    folder = workdir / "pg"
    folder.mkdir()
    server = PostgresServer(folder, bindir)
    server.start()
    stack.callback(server.stop)
    return server.new_database(), server.pid()


class Turn(Protocol):
    """A row of the bench: a round when asked, and its process's own peak memory at the end."""

    def round(self) -> Round:
        """One round over every target."""
        ...

    def peak_mib(self) -> float:
        """Its own peak resident memory, in MiB."""
        ...


@dataclass(frozen=True)
class RowSpec:
    """What one monitord row measures, handed to its own process."""

    urls: list[str]
    ca_file: str
    concurrency: int
    store_url: str | None = None
    """The store of a whole round; None: the probe alone, nothing stored."""
    server_pid: int | None = None
    """The store server's main process, whose CPU is measured beside the round's."""
    tls_resume_minutes: float | None = None
    """`probes.tls_resume_minutes` of a whole round; None: its default."""

    def with_store(self, url: str, server_pid: int | None = None) -> RowSpec:
        """The same row as a whole round recorded in the store at `url`."""
        return dataclasses.replace(self, store_url=url, server_pid=server_pid)


def _row_process(spec: RowSpec, conn: Connection) -> None:
    """A monitord row's own process: warm up, then a round each time the bench asks for one,
    and at the end the process's own peak memory."""
    logger.remove()  # a round logs each state change; the bench prints its own figures
    tune_collector()  # as `monitord run` and `monitord probe --all` do at their start
    with contextlib.ExitStack() as stack:
        if spec.store_url is None:
            # One context for the process, as a daemon keeps one: its sessions live in it.
            context = ssl.create_default_context(cafile=spec.ca_file)
            aio.run(monitord_round(spec.urls[:50], context, spec.concurrency))  # warm-up

            def turn() -> Round:
                return aio.run(monitord_round(spec.urls, context, spec.concurrency))

        else:
            settings = round_settings(spec.ca_file, spec.concurrency, spec.tls_resume_minutes)
            store = stack.enter_context(warm_store(spec.store_url, spec.urls, settings))

            def turn() -> Round:
                return whole_round(store, settings, spec.server_pid)

        conn.send("ready")
        while conn.recv() == "round":
            conn.send(dataclasses.astuple(turn()))
        conn.send(peak_mib())


class RowProcess:
    """A monitord row run in a fresh process of its own (spawned, not forked), so that its CPU
    and its peak memory are its own and not the bench's."""

    def __init__(self, name: str, spec: RowSpec) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_row_process, args=(spec, child), daemon=True)
        self.process.start()
        child.close()

    def _receive(self) -> Any:
        try:
            return self.conn.recv()
        except EOFError:
            self.process.join(timeout=5)
            code = self.process.exitcode
            raise RuntimeError(f"{self.name}: its process ended (exit code {code})") from None

    def ready(self) -> None:
        """Wait until the row has warmed up."""
        self._receive()

    def round(self) -> Round:
        """One round, measured in the row's process."""
        self.conn.send("round")
        return Round(*self._receive())

    def peak_mib(self) -> float:
        """End the row's process; its own peak resident memory."""
        self.conn.send("stop")
        peak = float(self._receive())
        self.process.join(timeout=30)
        return peak


class BlackboxTurn:
    """blackbox_exporter's row: rounds driven over HTTP, its CPU and memory read from /proc."""

    def __init__(self, binary: str, urls: list[str], ca_file: str, workdir: Path, args: Any):
        self.urls, self.concurrency = urls, args.concurrency
        self.process, self.port = start_blackbox(binary, ca_file, workdir)
        asyncio.run(blackbox_round(urls[:50], self.port, self.process.pid, self.concurrency))

    def round(self) -> Round:
        """One round over every target."""
        return asyncio.run(blackbox_round(self.urls, self.port, self.process.pid, self.concurrency))

    def peak_mib(self) -> float:
        """Its own peak resident memory."""
        return peak_mib(self.process.pid)

    def stop(self) -> None:
        """Stop the exporter."""
        self.process.terminate()
        self.process.wait(timeout=10)


class CommandTurn:
    """`monitord probe --all --kind availability --json` as a user types it, a fresh process
    each round, on a SQLite store of its own (warmed by a first run): wall time, CPU and peak
    memory by GNU time, start-up included. The same command on an empty store (it stops with
    "run `monitord sync` first" once its imports are done and its store is open) measures
    that start-up alone."""

    def __init__(self, urls: list[str], ca_file: str, workdir: Path, concurrency: int) -> None:
        folder = workdir / "typed"
        folder.mkdir()
        self.output = folder / "stdout.jsonl"
        self.config = self._config(folder / "monitord.toml", folder / "m.db", ca_file, concurrency)
        seeded_store(f"sqlite:///{folder / 'm.db'}", urls).dispose()
        self.empty = self._config(folder / "empty.toml", folder / "e.db", ca_file, concurrency)
        open_store(f"sqlite:///{folder / 'e.db'}").dispose()
        self.peaks: list[float] = []
        self.round()  # the services from unknown to up, as the other rows' first round
        self.peaks.clear()

    @staticmethod
    def _config(path: Path, database: Path, ca_file: str, concurrency: int) -> Path:
        path.write_text(
            f'[store]\nurl = "sqlite:///{database}"\n[probes]\nca_file = "{ca_file}"\n'
            f"concurrency = {concurrency}\ndeep_kinds = []\ndenied_networks = []\n",
            encoding="utf-8",
        )
        return path

    def _run(self, config: Path, expect: tuple[int, ...]) -> tuple[float, float, float]:
        command = [MONITORD, "--config", str(config), "probe", "--all"]
        seconds, peak, cpu = timed(
            [*command, "--kind", "availability", "--json"], self.output, expect=expect
        )
        assert peak is not None and cpu is not None, "GNU time is installed (see command_turn)"
        return seconds, cpu, peak

    def round(self) -> Round:
        """One run of the command over every target."""
        seconds, cpu, peak = self._run(self.config, expect=(0, 1))
        self.peaks.append(peak)
        results = [json.loads(line) for line in self.output.read_text().splitlines()]
        return Round(seconds, cpu, sum(r["success"] for r in results), len(results))

    def startup(self) -> tuple[float, float]:
        """Wall and CPU seconds of the command up to its first probe (on the empty store)."""
        seconds, cpu, _peak = self._run(self.empty, expect=(2,))
        return seconds, cpu

    def peak_mib(self) -> float:
        """The highest of its runs' own peaks."""
        return max(self.peaks)


def command_turn(urls: list[str], ca_file: str, workdir: Path, args: Any) -> CommandTurn | None:
    """The command as typed (`CommandTurn`), or None without GNU time to measure it."""
    if GNU_TIME is None:
        print(
            "GNU time not installed: `monitord probe --all` as typed is skipped. Install it "
            "with\n  apt-get install time"
        )
        return None
    return CommandTurn(urls, ca_file, workdir, args.concurrency)


def blackbox_turn(
    stack: contextlib.ExitStack, urls: list[str], ca_file: str, workdir: Path, args: Any
) -> BlackboxTurn | None:
    """blackbox_exporter over the targets (stopped with `stack`), or None when it is not
    installed."""
    binary = next((b for b in map(shutil.which, BLACKBOX_NAMES) if b), None)
    if binary is None:
        print(
            "blackbox_exporter not installed: comparison skipped. Install it with\n"
            "  apt-get install prometheus-blackbox-exporter\n"
            "and run again to print the ratios."
        )
        return None
    turn = BlackboxTurn(binary, urls, ca_file, workdir, args)
    stack.callback(turn.stop)
    return turn


def measure(urls: list[str], ca_file: str, workdir: Path, args: Any) -> list[Row]:
    """Every row of the bench, in one run over the same targets, taking turns: a round of
    each, then again. The machine's speed drifts within a run, so each ratio is taken between
    rounds measured side by side (see `print_figures`). Each monitord row runs in its own
    process (`RowProcess`)."""
    with contextlib.ExitStack() as stack:
        base = RowSpec(urls, ca_file, args.concurrency)
        specs = {"monitord, whole round, SQLite": base.with_store(f"sqlite:///{workdir}/m.db")}
        database = postgres_database(stack, workdir, args)
        if database is not None:
            specs["monitord, whole round, PostgreSQL"] = base.with_store(*database)
        full = base.with_store(f"sqlite:///{workdir}/full.db")
        specs[FULL] = dataclasses.replace(full, tls_resume_minutes=0)
        specs["monitord, probe alone"] = base
        rows = {name: RowProcess(name, spec) for name, spec in specs.items()}
        for row in rows.values():
            stack.callback(row.process.kill)  # when the bench fails half-way
        for row in rows.values():
            row.ready()
        turns: dict[str, Turn] = dict(rows)
        typed = command_turn(urls, ca_file, workdir, args)
        if typed is not None:
            turns[TYPED] = typed
        blackbox = blackbox_turn(stack, urls, ca_file, workdir, args)
        if blackbox is not None:
            turns["blackbox_exporter"] = blackbox
        rounds: dict[str, list[Round]] = {name: [] for name in turns}
        for _ in range(args.rounds):
            for name, turn in turns.items():
                rounds[name].append(turn.round())
        if typed is not None:
            starts = [typed.startup() for _ in range(args.rounds)]
            wall, cpu = (statistics.median(figure) for figure in zip(*starts, strict=True))
            print(
                f"{TYPED}: its start-up alone (imports, config, store; the same command on an "
                f"empty store) {wall:.2f} s, {cpu:.2f} s of CPU, median of {len(starts)}"
            )
        return [Row(name, rounds[name], turn.peak_mib()) for name, turn in turns.items()]


def openssl_floor(port: int, ca_file: str, reuse: bool = False, seconds: int = 5) -> float | None:
    """CPU ms per connection of OpenSSL's own C client over the same targets, or None when the
    `openssl` command is not installed.

    `openssl s_time -new` opens connection after connection, each a full handshake (verified
    against the bench CA) and one GET, one at a time: no interpreter, no event loop, no
    recording; `-reuse`, each a resumed handshake. What it spends is what the TLS library
    itself and the kernel cost a client, so no client of this OpenSSL, monitord included, can
    spend less per probe.
    """
    binary = shutil.which("openssl")
    if binary is None:
        print("openssl not installed: the TLS library's floor is skipped (apt-get install openssl)")
        return None
    mode = "-reuse" if reuse else "-new"
    command = [binary, "s_time", "-connect", f"127.0.0.1:{port}", mode, "-www", "/svc/0"]
    command += ["-CAfile", ca_file, "-verify", "2", "-time", str(seconds)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # no other child ends meanwhile
    out = subprocess.run(command, capture_output=True, check=False).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(rb"(\d+) connections in", out)
    if found is None or int(found[1]) == 0:
        return None
    cpu_s = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu_s * 1000 / int(found[1])


def report(row: Row) -> tuple[float, float]:
    """Print a row's median figures and its peak memory; returns (probes/s, CPU ms per probe)."""
    rate = statistics.median(r.rate for r in row.rounds)
    cpu_ms = statistics.median(r.cpu_ms for r in row.rounds)
    ok = min(r.ok for r in row.rounds)
    print(
        f"{row.name:<46} {rate:5.0f} probes/s   {cpu_ms:6.2f} CPU ms/probe   "
        f"peak {row.peak_mib:5.1f} MiB   ok {ok}/{row.rounds[0].n} (worst round)   rounds: "
        + ", ".join(f"{r.rate:.0f}/s {r.cpu_ms:.2f}ms" for r in row.rounds)
    )
    return rate, cpu_ms


def _median_ratio(
    ours: list[Round], theirs: list[Round], figure: Callable[[Round], float]
) -> float:
    """The median of the ratios of rounds measured one after the other."""
    return statistics.median(figure(o) / figure(t) for o, t in zip(ours, theirs, strict=True))


def print_figures(
    rows: list[Row],
    targets: int,
    floor: float | None = None,
    floor_resumed: float | None = None,
) -> None:
    """Each row's medians and peak memory, each monitord row's ratios against
    blackbox_exporter's, the store server's own CPU where there is one, and the TLS library's
    floors (`openssl_floor`, full and resumed handshakes) when measured."""
    figures = {row.name: report(row) for row in rows}
    for row in rows:
        if row.name.startswith("monitord, whole"):
            share = figures[row.name][1] * targets / 1000 / 60
            print(f"  {row.name}: a {targets}-service round a minute is {share:.1%} of one core")
        store_ms = statistics.median(r.store_cpu_ms for r in row.rounds)
        if store_ms:
            print(
                f"  {row.name}: the PostgreSQL server's own processes spent {store_ms:.2f} CPU "
                "ms a probe besides (not in the row's figure: a store usually has its own host)"
            )
    by_name = {row.name: row for row in rows}
    blackbox = by_name.get("blackbox_exporter")
    bb_cpu = figures["blackbox_exporter"][1] if blackbox else None
    if blackbox is not None and failed(blackbox):
        print(
            f"blackbox_exporter failed {failed(blackbox)} probes: no ratio is printed (a failed "
            "probe costs less than a probe that answers)"
        )
        blackbox = bb_cpu = None
    for row in rows:
        if blackbox is None or not row.name.startswith("monitord"):
            continue
        if failed(row):
            print(f"{row.name} failed {failed(row)} probes: not compared")
            continue
        theirs = blackbox.rounds
        rate = _median_ratio(row.rounds, theirs, lambda r: r.rate)
        cpu = _median_ratio(row.rounds, theirs, lambda r: r.cpu_ms)
        with_store = ""
        if any(r.store_cpu_s for r in row.rounds):
            both = _median_ratio(row.rounds, theirs, lambda r: r.cpu_ms + r.store_cpu_ms)
            with_store = f" ({both:.2f}x with the PostgreSQL server's)"
        print(
            f"{row.name} / blackbox_exporter: {rate:.2f}x its probes/s, "
            f"{cpu:.2f}x its CPU per probe{with_store} (goal: >= 1x, <= 0.5x; medians of "
            f"{len(row.rounds)} side-by-side rounds)"
        )
    for name, ms in (("full handshake", floor), ("resumed handshake", floor_resumed)):
        if ms is None:
            continue
        versus = f", {ms / bb_cpu:.2f}x blackbox_exporter's CPU per probe" if bb_cpu else ""
        mode = "-new" if name == "full handshake" else "-reuse"
        print(
            f"floor, {name}: OpenSSL's own C client (openssl s_time {mode}: a {name} and a GET, "
            f"one at a time) {ms:.2f} CPU ms a connection{versus}; no client of this OpenSSL "
            "spends less"
        )


def failed(row: Row) -> int:
    """Probes that failed in the row's worst round."""
    return max(r.n - r.ok for r in row.rounds)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--no-postgres", action="store_true", help="the whole round on SQLite only")
    args = parser.parse_args()
    logger.remove()  # a round logs each state change; the bench prints its own figures

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # PostgreSQL's cluster below runs as its own user
        ca_file, cert, key = write_certs(workdir)
        served_by, port, stop_targets = start_targets(cert, key, workdir)
        urls = [f"https://localhost:{port}/svc/{i}" for i in range(args.targets)]
        print(
            f"{args.targets} HTTPS targets served by {served_by} on loopback, concurrency "
            f"{args.concurrency}, {args.rounds} rounds, median; {os.cpu_count()} CPUs, "
            f"{ssl.OPENSSL_VERSION}"
        )
        try:
            rows = measure(urls, str(ca_file), workdir, args)
            floor = openssl_floor(port, str(ca_file))
            floor_resumed = openssl_floor(port, str(ca_file), reuse=True)
        finally:
            stop_targets()
    print_figures(rows, args.targets, floor, floor_resumed)


if __name__ == "__main__":
    main()
