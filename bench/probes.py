"""Benchmark: one availability round (with certificate facts) over 2,000 HTTPS targets on loopback.

What is measured, honestly:

* The targets are 2,000 distinct URLs (`https://localhost:PORT/svc/<i>`) on one aiohttp TLS
  listener running in a separate process, so the server's CPU is not charged to the prober.
  Every probe opens a fresh TCP connection and does a full TLS 1.3 handshake (the probing session
  never reuses connections), exactly as in production; only the server process is shared.
* probes/s is wall-clock throughput of a round at the given concurrency; CPU ms per probe is the
  prober process's user+system CPU time for the round divided by the number of probes. Each
  figure is the median of several rounds.
* Loopback has no network latency, so probes/s here is bounded by CPU (the prober's and the
  server's on the same cores), not by the network; in production the round is latency-bound and
  the CPU per probe is what matters for "a 2,000-service round every minute under a quarter core".

When Prometheus blackbox_exporter is installed (Debian: `apt-get install
prometheus-blackbox-exporter`), it is driven over the same targets in the same run, with the
same concurrency and an `http_2xx` module trusting the same CA, and the ratios are printed. Its CPU
is read from /proc for its process, so the HTTP calls that drive it are not charged to it.

Run: `.venv/bin/python bench/probes.py [--targets 2000] [--rounds 3] [--concurrency 100]`.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import trustme
from aiohttp import web

# Run as a script, this file's folder comes first on sys.path and this very file would shadow
# the `probes` package it measures: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import probes  # noqa: E402
from monitord import aio  # noqa: E402
from monitord.types import ProbeContext, Target  # noqa: E402
from probes.availability import AvailabilitySpec, probe  # noqa: E402

BLACKBOX_NAMES = ("prometheus-blackbox-exporter", "blackbox_exporter")


def _serve(cert: str, key: str, port_out: multiprocessing.connection.Connection) -> None:
    """The server process: one TLS listener answering every /svc/<i> path."""

    async def main() -> None:
        async def handler(_request: web.Request) -> web.Response:
            return web.Response(text="ok", headers={"Strict-Transport-Security": "max-age=600"})

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

    @property
    def rate(self) -> float:
        """Probes per second."""
        return self.n / self.wall_s

    @property
    def cpu_ms(self) -> float:
        """CPU milliseconds per probe."""
        return self.cpu_s * 1000 / self.n


async def monitord_round(urls: list[str], ca_file: str, concurrency: int) -> Round:
    """One availability round over `urls` with monitord's probe, `concurrency` at a time."""
    context = ssl.create_default_context(cafile=ca_file)
    gate = asyncio.Semaphore(concurrency)
    spec = AvailabilitySpec(timeout_s=30)
    async with probes.make_session(limit=concurrency, ssl_context=context) as session:
        ctx = ProbeContext(session=session, ssl_context=context)

        async def one(url: str) -> bool:
            async with gate:
                result = await probe(Target(url), spec, ctx)
                return result.success and result.facts.get("days_to_expiry") is not None

        cpu0, wall0 = time.process_time(), time.perf_counter()
        results = await asyncio.gather(*(one(u) for u in urls))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return Round(wall, cpu, sum(results), len(urls))


def _proc_cpu_s(pid: int) -> float:
    """User+system CPU seconds of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

        cpu0, wall0 = _proc_cpu_s(pid), time.perf_counter()
        results = await asyncio.gather(*(one(u) for u in urls))
        wall, cpu = time.perf_counter() - wall0, _proc_cpu_s(pid) - cpu0
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
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("blackbox_exporter did not start listening within 10 s")


def report(name: str, rounds: list[Round]) -> tuple[float, float]:
    """Print the median figures of `rounds`; returns (probes/s, CPU ms per probe)."""
    rate = statistics.median(r.rate for r in rounds)
    cpu_ms = statistics.median(r.cpu_ms for r in rounds)
    ok = min(r.ok for r in rounds)
    n = rounds[0].n
    print(
        f"{name:<22} {rate:8.0f} probes/s   {cpu_ms:6.2f} CPU ms/probe   "
        f"ok {ok}/{n} (worst round)   rounds: "
        + ", ".join(f"{r.rate:.0f}/s {r.cpu_ms:.2f}ms" for r in rounds)
    )
    return rate, cpu_ms


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ca = trustme.CA()
        leaf = ca.issue_cert("localhost")
        ca_file, cert, key = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        leaf.private_key_pem.write_to_path(str(key))
        for blob in leaf.cert_chain_pems:
            blob.write_to_path(str(cert), append=True)

        receive, send = multiprocessing.Pipe(duplex=False)
        server = multiprocessing.Process(
            target=_serve, args=(str(cert), str(key), send), daemon=True
        )
        server.start()
        port = receive.recv()
        urls = [f"https://localhost:{port}/svc/{i}" for i in range(args.targets)]
        print(
            f"{args.targets} HTTPS targets (paths on one TLS listener in its own process), "
            f"concurrency {args.concurrency}, {args.rounds} rounds, median; "
            f"{os.cpu_count()} CPUs, {ssl.OPENSSL_VERSION}"
        )
        try:
            aio.run(monitord_round(urls[:50], str(ca_file), args.concurrency))  # warm-up
            ours = [
                aio.run(monitord_round(urls, str(ca_file), args.concurrency))
                for _ in range(args.rounds)
            ]
            rate, cpu_ms = report("monitord availability", ours)
            share = cpu_ms * args.targets / 1000 / 60
            print(
                f"  a {args.targets}-service round every 60 s costs {share:.1%} of one core "
                f"(goal: under 25%)"
            )
            binary = next((b for b in map(shutil.which, BLACKBOX_NAMES) if b), None)
            if binary is None:
                print(
                    "blackbox_exporter not installed: comparison skipped. Install it with\n"
                    "  apt-get install prometheus-blackbox-exporter\n"
                    "and run again to print the ratios."
                )
                return
            process, bb_port = start_blackbox(binary, str(ca_file), workdir)
            try:
                asyncio.run(blackbox_round(urls[:50], bb_port, process.pid, args.concurrency))
                theirs = [
                    asyncio.run(blackbox_round(urls, bb_port, process.pid, args.concurrency))
                    for _ in range(args.rounds)
                ]
            finally:
                process.terminate()
                process.wait(timeout=10)
            bb_rate, bb_cpu = report("blackbox_exporter", theirs)
            print(
                f"ratio monitord/blackbox: throughput {rate / bb_rate:.2f}x, "
                f"CPU per probe {cpu_ms / bb_cpu:.2f}x (goal: >= 1x throughput, <= 1x CPU)"
            )
        finally:
            server.terminate()
            server.join(timeout=5)


if __name__ == "__main__":
    main()
