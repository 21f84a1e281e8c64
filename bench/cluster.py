"""Benchmark: several daemons on one PostgreSQL store, 20,000 services across three of them,
against one daemon with 2,000: the cost per service of a probe round, and the split's
exactness.

What is measured, honestly:

* A throw-away PostgreSQL (fsync off, pg_stat_statements loaded), one database per run, seeded
  with N online services whose URLs are distinct paths (`https://localhost:PORT/svc/<i>`) of
  one nginx on loopback (bench/probes.py starts it; its own aiohttp server when nginx is
  absent). Every probe is a fresh TCP connection and TLS handshake, as in production.
* The daemons are real `monitord run` processes, each with its own `[cluster] name`, the same
  store and `probes.interval_seconds = --interval`; availability probes only (no deep kinds,
  no ZAP, no portal: the catalogue sync fails once at start and changes nothing), and
  `probes.slo_ms = 10000`: on a loaded machine a probe's wait for the CPU reads as latency, and
  services turned "degraded" by it would add incident work that is not the probes'. Their first
  `--warmup` rounds (unknown → up) are left out; the next `--rounds` are measured.
* Round time: each daemon's measured rounds, `probe_rounds.finished_at - started_at` (the
  probes are spread over 80 % of the interval, so this is bounded below by that).
* CPU per daemon per round: the process's user+system CPU from /proc between the ends of two
  of its rounds (the bench polls probe_rounds every half second), heartbeats and the
  once-only jobs included.
* The database's load per round: over the measured window, the statements the daemons sent
  (pg_stat_statements calls; the bench's own polling runs as another role and is left out)
  and the transactions committed (pg_stat_database.xact_commit, less the bench's own), scaled
  to one interval. PostgreSQL flushes xact_commit lazily (up to seconds late): it is the
  rougher of the two.
* Exactly once: for each measured round k, the k-th round of every daemon taken together
  (each daemon's results between its round's start and end) must hold each service once.
* Cost per service: the daemons' CPU and the statements per round, divided by the services;
  then the ratio of the cluster's to the one daemon's (goal: <= 1). Each daemon also has a
  fixed cost (its job loops, heartbeats, the once-only jobs: about 3.5 % of a core idle), and
  a probe costs less CPU the more probes per second a daemon runs (its TLS handshake runs with
  warm caches): at one interval for both, one daemon with 2,000 services runs a third of the
  probes per second of each of three with 20,000. `--solo-interval` measures it at another.

The machine's other work shares its cores with the daemons, nginx and PostgreSQL: on 2 cores
the CPU per service is what to compare, not the wall time.

Run: `.venv/bin/python bench/cluster.py [--services 20000] [--daemons 3] [--rounds 3]
[--interval 120] [--solo-services 2000]`.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and bench/probes.py would shadow
# the `probes` package monitord imports: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import psycopg  # noqa: E402
from loguru import logger  # noqa: E402

from bench._cluster import Daemon, stderr_tail, tls_files, write_config  # noqa: E402
from bench._postgres import PostgresServer, postgres_bin  # noqa: E402
from bench.probes import seeded_store, start_targets  # noqa: E402

POLL_SECONDS = 0.5
BENCH_ROLE = "bench"
"""The role the bench polls as, so that its own statements are told from the daemons'."""

ROUND_COUNTS = "SELECT daemon, count(*) FROM probe_rounds GROUP BY daemon"
LOAD = f"""
SELECT
  (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
  (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND userid <> (SELECT oid FROM pg_roles WHERE rolname = '{BENCH_ROLE}'))
"""
ROUND_TIMES = """
SELECT daemon, extract(epoch FROM finished_at - started_at)
FROM (SELECT daemon, started_at, finished_at,
             row_number() OVER (PARTITION BY daemon ORDER BY started_at) AS k
      FROM probe_rounds) AS r
WHERE k BETWEEN %(first)s AND %(last)s
"""
ONCE = """
WITH r AS (
  SELECT daemon, started_at, finished_at,
         row_number() OVER (PARTITION BY daemon ORDER BY started_at) AS k
  FROM probe_rounds
), probed AS (
  SELECT r.k, p.service_id, count(*) AS n
  FROM probe_results AS p
  JOIN r ON p.daemon = r.daemon AND p.at BETWEEN r.started_at AND r.finished_at
  WHERE p.kind = 'availability' AND r.k BETWEEN %(first)s AND %(last)s
  GROUP BY r.k, p.service_id
)
SELECT k, count(*) FILTER (WHERE n = 1), count(*) FILTER (WHERE n > 1)
FROM probed GROUP BY k ORDER BY k
"""


@dataclass
class Run:
    """What one run (N services over D daemons) measured."""

    label: str
    services: int
    daemons: int
    interval: float
    round_s: list[float] = field(default_factory=list)
    """Every measured round of every daemon, its wall time."""
    cpu_s: dict[str, list[float]] = field(default_factory=dict)
    """Per daemon, the CPU seconds of each measured round."""
    statements: float = 0.0
    """Statements the daemons sent per interval."""
    transactions: float = 0.0
    """Transactions committed per interval."""
    once: list[tuple[int, int, int]] = field(default_factory=list)
    """Per measured round: (round, services probed once, services probed more than once)."""
    lapses: int = 0
    """Times a daemon saw another's heartbeat lapse (`member … is gone`), start to last round."""

    def cpu_per_round(self) -> float:
        """The daemons' CPU seconds per round: each daemon's median, summed."""
        return sum(statistics.median(rounds) for rounds in self.cpu_s.values())

    def cpu_ms_per_service(self) -> float:
        """CPU milliseconds per service per round, over all the daemons."""
        return self.cpu_per_round() * 1000 / self.services

    def statements_per_service(self) -> float:
        """Statements per service per round."""
        return self.statements / self.services


def connect_as_bench(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit connection to the store's database as the bench's own role."""
    dsn = url.replace("postgresql://monitord@", f"postgresql://{BENCH_ROLE}@")
    return psycopg.connect(dsn, autocommit=True)


def prepare_database(server: PostgresServer) -> str:
    """A new database with pg_stat_statements, and the bench's role; returns its URL."""
    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (BENCH_ROLE,)).fetchone():
            return url
        conn.execute(f"CREATE ROLE {BENCH_ROLE} LOGIN SUPERUSER")
    return url


class Watch:
    """Polls the rounds each daemon recorded, and notes its CPU as each round ends."""

    def __init__(self, conn: psycopg.Connection[tuple[object, ...]], daemons: list[Daemon]):
        self.conn = conn
        self.daemons = {d.name: d for d in daemons}
        self.counts = dict.fromkeys(self.daemons, 0)
        self.cpu_at_round: dict[str, dict[int, float]] = {name: {} for name in self.daemons}
        self.queries = 0
        """Transactions the bench itself committed (each poll is one)."""

    def poll(self) -> int:
        """Look once; returns the fewest rounds any daemon has finished."""
        self.queries += 1
        for name, count in self.conn.execute(ROUND_COUNTS).fetchall():
            assert isinstance(name, str) and isinstance(count, int)
            if name in self.daemons and count != self.counts[name]:
                self.counts[name] = count
                self.cpu_at_round[name][count] = self.daemons[name].cpu_s()
        for daemon in self.daemons.values():
            if not daemon.alive():
                raise RuntimeError(f"daemon {daemon.name} stopped:\n{stderr_tail(daemon)}")
        return min(self.counts.values())

    def load(self) -> tuple[int, int]:
        """(transactions committed, statements sent by the daemons) so far."""
        self.queries += 1
        row = self.conn.execute(LOAD).fetchone()
        assert row is not None
        return int(str(row[0])), int(str(row[1]))

    def wait_rounds(self, rounds: int, deadline: float) -> None:
        """Until every daemon has finished `rounds` rounds."""
        while self.poll() < rounds:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemons did not finish {rounds} rounds in time")
            time.sleep(POLL_SECONDS)


def measure(
    label: str,
    services: int,
    count: int,
    port: int,
    server: PostgresServer,
    args: argparse.Namespace,
    workdir: Path,
) -> Run:
    """Seed `services`, start `count` daemons, and measure `args.rounds` rounds after warm-up."""
    url = prepare_database(server)
    urls = [f"https://localhost:{port}/svc/{i}" for i in range(services)]
    seeded_store(url, urls).dispose()
    run = Run(label, services, count, args.interval)
    folder = workdir / label.replace(" ", "-")
    ca_file = workdir / "ca.pem"
    daemons = [
        Daemon(name, write_config(folder / name, name, url, args.interval, ca_file, slo_ms=10000))
        for name in (f"bench-{chr(ord('a') + i)}" for i in range(count))
    ]
    for daemon in daemons:
        daemon.start()
    first, last = args.warmup + 1, args.warmup + args.rounds
    try:
        with connect_as_bench(url) as conn:
            watch = Watch(conn, daemons)
            deadline = time.monotonic() + (last + 3) * args.interval + 120
            watch.wait_rounds(args.warmup, deadline)
            start, (xacts0, statements0), queries0 = time.monotonic(), watch.load(), watch.queries
            watch.wait_rounds(last, deadline)
            xacts1, statements1 = watch.load()
            window = time.monotonic() - start
            per_interval = args.interval / window
            run.statements = (statements1 - statements0) * per_interval
            own = watch.queries - queries0
            run.transactions = (xacts1 - xacts0 - own) * per_interval
            for name, marks in watch.cpu_at_round.items():
                run.cpu_s[name] = [marks[k] - marks[k - 1] for k in range(first, last + 1)]
            bounds = {"first": first, "last": last}
            run.round_s = [float(str(s)) for _, s in conn.execute(ROUND_TIMES, bounds).fetchall()]
            run.once = [
                (int(str(k)), int(str(once)), int(str(more)))
                for k, once, more in conn.execute(ONCE, bounds).fetchall()
            ]
            # Before they stop: a clean stop is logged as "gone" by the others too.
            run.lapses = sum(
                (d.config.parent / "stderr.log").read_text().count(" is gone; ") for d in daemons
            )
    finally:
        for daemon in daemons:
            daemon.stop()
    return run


def report(run: Run) -> None:
    """Print one run's figures."""
    rate = run.services / run.daemons / run.interval
    print(
        f"-- {run.label}: {run.services:,} services over {run.daemons} daemon(s), interval "
        f"{run.interval:g} s ({rate:.0f} probes/s per daemon)"
    )
    rounds = sorted(run.round_s)
    print(
        f"  round time: median {statistics.median(rounds):.1f} s, worst {rounds[-1]:.1f} s "
        f"({rounds[-1] / run.interval:.0%} of the interval; the probes are spread over 80 %)"
    )
    for name, cpu in run.cpu_s.items():
        print(
            f"  {name}: CPU {statistics.median(cpu):.1f} s per round "
            f"({statistics.median(cpu) / run.interval:.1%} of a core), rounds: "
            + ", ".join(f"{c:.1f}" for c in cpu)
        )
    print(
        f"  database per round: {run.statements:,.0f} statements, "
        f"{run.transactions:,.0f} transactions committed"
    )
    for k, once, more in run.once:
        missing = run.services - once - more
        verdict = "exactly once" if once == run.services else "NOT exactly once"
        print(
            f"  round {k}: {once:,} services probed once, {more} more than once, "
            f"{missing} not at all: {verdict}"
        )
    print(f"  heartbeats seen lapsing (a member gone and back, no fault injected): {run.lapses}")
    print(
        f"  per service per round: {run.cpu_ms_per_service():.2f} CPU ms, "
        f"{run.statements_per_service():.2f} statements"
    )


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20000, help="services, over all daemons")
    parser.add_argument("--daemons", type=int, default=3, help="daemons on the store")
    parser.add_argument("--rounds", type=int, default=3, help="rounds measured")
    parser.add_argument("--warmup", type=int, default=2, help="rounds left out (unknown → up)")
    parser.add_argument("--interval", type=float, default=120.0, help="probes.interval_seconds")
    parser.add_argument(
        "--solo-services", type=int, default=2000, help="services of the one-daemon comparison"
    )
    parser.add_argument(
        "--solo-interval",
        type=float,
        help="the one daemon's interval (default --interval); the CPU per probe falls as the "
        "probes per second rise, so compare at the same rate per daemon too",
    )
    args = parser.parse_args()
    logger.remove()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))  # clean up first
    bindir = postgres_bin()
    if bindir is None:
        print("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
        return
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # PostgreSQL's cluster below runs as its own user
        _ca, cert, key = tls_files(workdir)
        served_by, port, stop_targets = start_targets(cert, key, workdir)
        (workdir / "pg").mkdir()
        server = PostgresServer(workdir / "pg", bindir, preload="pg_stat_statements")
        server.start()
        print(f"targets served by {served_by} on loopback; PostgreSQL, fsync off")
        try:
            cluster = measure(
                f"{args.daemons} daemons", args.services, args.daemons, port, server, args, workdir
            )
            report(cluster)
            solo_args = argparse.Namespace(**vars(args))
            solo_args.interval = args.solo_interval or args.interval
            solo = measure("1 daemon", args.solo_services, 1, port, server, solo_args, workdir)
            report(solo)
        finally:
            server.stop()
            stop_targets()
    print(
        f"cluster / one daemon, per service: "
        f"{cluster.cpu_ms_per_service() / solo.cpu_ms_per_service():.2f}x the CPU, "
        f"{cluster.statements_per_service() / solo.statements_per_service():.2f}x the statements "
        "(goal: <= 1x)"
    )


if __name__ == "__main__":
    main()
