"""Benchmark: whether one daemon's resident memory grows once it is warm, fast: many rounds of
2,000 services at a short probe interval, on SQLite or on a throw-away PostgreSQL.

What is measured, honestly:

* The services are HTTPS URLs of one nginx on loopback (bench/probes.py starts it; its own
  aiohttp server when nginx is absent), seeded straight into the store; every probe is a fresh
  TCP connection and TLS handshake, as in production.
* One real `monitord run` (the config of bench/cluster.py and bench/soak.py: availability
  probes only, no portal, no ZAP, no API) with `probes.interval_seconds = --interval` (15 s:
  an hour of one-minute rounds in 15 minutes), on `--store sqlite` or `--store postgresql`.
  `--env NAME=VALUE` adds to its environment (e.g. `MALLOC_ARENA_MAX=2`).
* Every 5 s the bench reads the daemon's /proc/PID/status (VmRSS) and /proc/PID/stat (CPU);
  it prints RSS each minute, and the least-squares slope of RSS in MiB per hour of run time
  and per 100 rounds, after `--warmup-minutes` and over the second half of the run, with
  the CPU the daemon used. The load average at the start and at the end is printed beside
  them: the machine may be shared.

Run: `.venv/bin/python bench/memory.py [--store sqlite|postgresql] [--minutes 10]
[--interval 15] [--env MALLOC_ARENA_MAX=2]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and bench/probes.py would shadow
# the `probes` package monitord imports: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from loguru import logger  # noqa: E402

from bench._cluster import Daemon, stderr_tail, tls_files, write_config  # noqa: E402
from bench._postgres import PostgresServer, postgres_bin  # noqa: E402
from bench.probes import seeded_store, start_targets  # noqa: E402

SAMPLE_SECONDS = 5.0


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as the reader sees them in `uptime`."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    xs = [t / 3600 for t, _ in samples]
    ys = [m for _, m in samples]
    return statistics.linear_regression(xs, ys).slope


def sample(daemon: Daemon, minutes: float) -> list[tuple[float, float, float]]:
    """(seconds since start, RSS MiB, CPU s) every SAMPLE_SECONDS for `minutes`."""
    started = time.monotonic()
    samples: list[tuple[float, float, float]] = []
    tick = 0
    while tick * SAMPLE_SECONDS <= minutes * 60:
        time.sleep(max(0.0, started + tick * SAMPLE_SECONDS - time.monotonic()))
        if not daemon.alive():
            raise RuntimeError(f"the daemon stopped:\n{stderr_tail(daemon)}")
        samples.append((time.monotonic() - started, daemon.rss_mib(), daemon.cpu_s()))
        if tick and tick % int(60 / SAMPLE_SECONDS) == 0:
            print(
                f"  minute {tick * SAMPLE_SECONDS / 60:3.0f}: RSS {samples[-1][1]:6.1f} MiB",
                flush=True,
            )
        tick += 1
    return samples


def report(samples: list[tuple[float, float, float]], interval: float, warmup: float) -> None:
    """RSS slopes after warm-up and over the second half, per hour and per 100 rounds."""
    for label, part in (
        (f"after {warmup:g} min of warm-up", [s for s in samples if s[0] >= warmup * 60]),
        ("over the second half", samples[len(samples) // 2 :]),
    ):
        span = part[-1][0] - part[0][0]
        per_hour = slope([(t, m) for t, m, _ in part])
        rounds = span / interval
        cpu = part[-1][2] - part[0][2]
        print(
            f"RSS {label}: {part[0][1]:.1f} → {part[-1][1]:.1f} MiB over {span / 60:.1f} min "
            f"({rounds:.0f} rounds): {per_hour:+.1f} MiB/hour of this run, "
            f"{per_hour * interval / 36:+.2f} MiB per 100 rounds "
            f"(least squares, {len(part)} samples); CPU {cpu:.0f} s ({cpu / span:.1%} of a core)"
        )
    print(f"RSS peak: {max(m for _, m, _ in samples):.1f} MiB")


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Seed the store, start the targets and the daemon, sample it, stop everything."""
    _ca, cert, key = tls_files(workdir)
    served_by, port, stop_targets = start_targets(cert, key, workdir)
    server: PostgresServer | None = None
    try:
        if args.store == "postgresql":
            bindir = postgres_bin()
            if bindir is None:
                sys.exit("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
            (workdir / "pg").mkdir()
            server = PostgresServer(workdir / "pg", bindir)
            server.start()
            url = server.new_database()
        else:
            url = f"sqlite:///{workdir}/monitord.db"
        urls = [f"https://localhost:{port}/svc/{i}" for i in range(args.services)]
        seeded_store(url, urls).dispose()
        config = write_config(
            workdir / "daemon", "memory", url, args.interval, workdir / "ca.pem", slo_ms=10000.0
        )
        os.environ.update(dict(pair.split("=", 1) for pair in args.env))
        daemon = Daemon("memory", config)
        print(
            f"one daemon, {args.services} services served by {served_by}, {args.store}, "
            f"interval {args.interval:g} s, {args.minutes:g} min, environment "
            f"{' '.join(args.env) or '(as is)'}; {os.cpu_count()} CPUs, load average "
            f"{load_average()}",
            flush=True,
        )
        daemon.start()
        try:
            samples = sample(daemon, args.minutes)
        finally:
            daemon.stop()
        print(f"load average at the end: {load_average()}")
        report(samples, args.interval, args.warmup_minutes)
    finally:
        if server is not None:
            server.stop()
        stop_targets()


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=15.0, help="probes.interval_seconds")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the daemon's environment"
    )
    args = parser.parse_args()
    for pair in args.env:
        if "=" not in pair:
            parser.error(f"--env {pair}: expected NAME=VALUE")
    if args.minutes <= args.warmup_minutes:
        parser.error(f"--minutes {args.minutes:g}: more than --warmup-minutes, please")
    logger.remove()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # PostgreSQL's cluster below runs as its own user
        run(args, workdir)


if __name__ == "__main__":
    main()
