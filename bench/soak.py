"""Soak: three daemons on one PostgreSQL store probing 2,000 services for an hour, a fault
injected every few minutes, alerts flowing to a webhook; what was lost, doubled or missed.

What it does, honestly:

* 2,000 online services, `https://localhost:PORT/svc/<i>`: nginx on loopback for most (as in
  bench/probes.py), and the bench's own TLS server for `--flapping` of them, which fail (503)
  and recover in turn every `--flap-minutes`, so that services go down and up and incidents
  open, resolve and alert.
* `--daemons` real `monitord run` processes, each its own `[cluster] name`, the same store,
  `probes.interval_seconds = --interval` (60 s), alerts.oncall a json:// webhook served by the
  bench, and `probes.slo_ms = --slo-ms` (10 s): on a loaded bench machine a probe's wait for
  the CPU reads as the service's latency, and the soak is about faults, not latency.
* Every `--fault-every` minutes one fault, in turn: SIGKILL the daemon that holds the once-only
  jobs (and start it again 15 s later; the seconds until every job it held has another holder
  are measured); `pg_ctl restart -m fast`; SIGSTOP a daemon for 20 s, then SIGCONT.
* At the end, once the outbox is drained (up to two minutes): every alert copy queued in the
  outbox against the webhook's deliveries, told apart by the X-Monitord-Key header monitord
  sends (lost: queued and never received; duplicated: received more than once); each
  service's availability results after warm-up, a round counted missed where no result came
  within 2 intervals; every daemon's resident memory, sampled every 15 s, and its least-squares
  slope (MiB/hour) per process after `--warmup-minutes` and over the second half of that.

Run: `.venv/bin/python bench/soak.py [--minutes 60] [--services 2000] [--daemons 3]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import signal
import ssl
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and bench/probes.py would shadow
# the `probes` package monitord imports: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import psycopg  # noqa: E402
from aiohttp import web  # noqa: E402
from loguru import logger  # noqa: E402

from bench._cluster import Daemon, tls_files, write_config  # noqa: E402
from bench._postgres import PostgresServer, postgres_bin  # noqa: E402
from bench.probes import seeded_store, start_targets  # noqa: E402

SAMPLE_SECONDS = 15.0
STOP_SECONDS = 20.0
RESTART_AFTER_SECONDS = 15.0

HOLDER = """
SELECT holder FROM job_leases WHERE expires_at > timezone('UTC', now())
GROUP BY holder ORDER BY count(*) DESC LIMIT 1
"""
HELD_BY = "SELECT job FROM job_leases WHERE holder = %s AND expires_at > timezone('UTC', now())"
TAKEN = """
SELECT count(*) FROM job_leases
WHERE job = ANY(%s) AND holder <> %s AND expires_at > timezone('UTC', now())
"""
OUTBOX = "SELECT idempotency_key, state FROM alert_outbox WHERE parent_id IS NOT NULL"
WAITING = """
SELECT count(*) FROM alert_outbox
WHERE state IN ('sending') OR (state = 'pending' AND (parent_id IS NOT NULL OR last_error IS NULL))
"""
INCIDENTS = """
SELECT kind, count(*), count(resolved_at), min(summary) FROM incidents GROUP BY kind ORDER BY 2 DESC
"""
UNSENT = """
SELECT kind, state, count(*), extract(epoch FROM min(next_attempt_at) - timezone('UTC', now()))
FROM alert_outbox WHERE parent_id IS NOT NULL AND state <> 'delivered' GROUP BY kind, state
"""
GAPS = """
WITH r AS (
  SELECT service_id, at, lag(at) OVER (PARTITION BY service_id ORDER BY at) AS before
  FROM probe_results
  WHERE kind = 'availability' AND at >= %(since)s AND at <= %(until)s
)
SELECT service_id, extract(epoch FROM at - before), at
FROM r WHERE before IS NOT NULL AND at - before > %(window)s
"""
EDGES = """
SELECT s.id, min(p.at), max(p.at) FROM services AS s
LEFT JOIN probe_results AS p
  ON p.service_id = s.id AND p.kind = 'availability' AND p.at >= %(since)s AND p.at <= %(until)s
GROUP BY s.id
"""
LONGEST = """
WITH r AS (
  SELECT at - lag(at) OVER (PARTITION BY service_id ORDER BY at) AS gap
  FROM probe_results
  WHERE kind = 'availability' AND at >= %(since)s AND at <= %(until)s
)
SELECT extract(epoch FROM max(gap)), count(*) FILTER (WHERE gap > %(late)s) FROM r
"""
TWICE = """
WITH r AS (
  SELECT at - lag(at) OVER (PARTITION BY service_id ORDER BY at) AS gap
  FROM probe_results
  WHERE kind = 'availability' AND at >= %(since)s AND at <= %(until)s
)
SELECT count(*) FROM r WHERE gap < %(half)s
"""


@dataclass
class Fault:
    """A fault injected, when (minutes into the soak), and what followed."""

    at_min: float
    kind: str
    detail: str


@dataclass
class Soak:
    """The soak's running state."""

    url: str
    server: PostgresServer
    daemons: list[Daemon]
    started: float = field(default_factory=time.monotonic)
    faults: list[Fault] = field(default_factory=list)
    rss: list[tuple[str, int, float, float]] = field(default_factory=list)
    """(daemon, pid, seconds since its start, MiB) samples."""
    born: dict[int, float] = field(default_factory=dict)
    """Process id → when it started (monotonic)."""
    received: list[str] = field(default_factory=list)
    """The X-Monitord-Key of every message the webhook received."""
    failing: set[int] = field(default_factory=set)
    """The flapping services answering 503 now."""

    def minutes(self) -> float:
        """Minutes since the soak started."""
        return (time.monotonic() - self.started) / 60

    def query(self, sql: str, params: object = None) -> list[tuple[object, ...]]:
        """Run one query on a fresh connection (the server may have restarted since)."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


async def serve_webhook(soak: Soak) -> tuple[web.AppRunner, int]:
    """The json:// receiver: notes each message's X-Monitord-Key."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        soak.received.append(request.headers.get("X-Monitord-Key", ""))
        return web.json_response({"errcode": 0})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


async def serve_flapping(soak: Soak, cert: Path, key: Path) -> tuple[web.AppRunner, int]:
    """The flapping services' TLS server: 503 for those failing now, 200 for the others."""

    async def handle(request: web.Request) -> web.Response:
        status = 503 if int(request.match_info["i"]) in soak.failing else 200
        headers = {"Strict-Transport-Security": "max-age=600"}
        return web.Response(status=status, text="ok", headers=headers)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    app = web.Application()
    app.router.add_get("/svc/{i}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    return runner, runner.addresses[0][1]


def start(soak: Soak, daemon: Daemon) -> None:
    """Start (again) a daemon, noting when its process was born."""
    daemon.start()
    soak.born[daemon.pid] = time.monotonic()


async def sample_memory(soak: Soak) -> None:
    """Every SAMPLE_SECONDS, each daemon's resident memory."""
    while True:
        for daemon in soak.daemons:
            if daemon.alive():
                with contextlib.suppress(OSError):
                    age = time.monotonic() - soak.born[daemon.pid]
                    soak.rss.append((daemon.name, daemon.pid, age, daemon.rss_mib()))
        await asyncio.sleep(SAMPLE_SECONDS)


async def flap(soak: Soak, flapping: list[int], minutes: float) -> None:
    """Each period, the next half of the flapping services fails and the others recover."""
    halves = [set(flapping[::2]), set(flapping[1::2])]
    turn = 0
    while True:
        await asyncio.sleep(minutes * 60)
        soak.failing = halves[turn % 2]
        turn += 1


async def kill_holder(soak: Soak) -> Fault:
    """SIGKILL the daemon holding the most once-only jobs; time the takeover; restart it."""
    rows = await asyncio.to_thread(soak.query, HOLDER)
    name = str(rows[0][0]) if rows else soak.daemons[0].name
    victim = next(d for d in soak.daemons if d.name == name)
    jobs = [str(r[0]) for r in await asyncio.to_thread(soak.query, HELD_BY, (name,))]
    at = soak.minutes()
    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    taken = None
    while time.monotonic() - killed < 120:
        count = (await asyncio.to_thread(soak.query, TAKEN, (jobs, name)))[0][0]
        if count == len(jobs):
            taken = time.monotonic() - killed
            break
        if time.monotonic() - killed > RESTART_AFTER_SECONDS and not victim.alive():
            start(soak, victim)
        await asyncio.sleep(0.5)
    if not victim.alive():
        await asyncio.sleep(max(0.0, killed + RESTART_AFTER_SECONDS - time.monotonic()))
        start(soak, victim)
    took = f"its {len(jobs)} jobs taken over in {taken:.1f} s" if taken else "NOT taken over"
    return Fault(at, "SIGKILL", f"{name} ({took}), started again")


async def restart_postgres(soak: Soak) -> Fault:
    """`pg_ctl restart -m fast` under load."""
    at = soak.minutes()
    took = await asyncio.to_thread(soak.server.restart)
    return Fault(at, "pg_ctl restart -m fast", f"took {took:.1f} s")


async def stop_daemon(soak: Soak, turn: int) -> Fault:
    """SIGSTOP a daemon (each in turn) for STOP_SECONDS, then SIGCONT."""
    victim = soak.daemons[turn % len(soak.daemons)]
    at = soak.minutes()
    victim.signal(signal.SIGSTOP)
    await asyncio.sleep(STOP_SECONDS)
    victim.signal(signal.SIGCONT)
    return Fault(at, f"SIGSTOP {STOP_SECONDS:g} s", victim.name)


async def inject_faults(soak: Soak, every_min: float, until_min: float) -> None:
    """A fault every `every_min` minutes, in turn, the last one starting before until_min."""
    turn = 0
    while soak.minutes() + every_min < until_min:
        await asyncio.sleep(every_min * 60)
        kind = turn % 3
        if kind == 0:
            fault = await kill_holder(soak)
        elif kind == 1:
            fault = await restart_postgres(soak)
        else:
            fault = await stop_daemon(soak, turn // 3)
        soak.faults.append(fault)
        print(f"  {fault.at_min:5.1f} min  {fault.kind}: {fault.detail}", flush=True)
        turn += 1


async def drain(soak: Soak, seconds: float) -> int:
    """Wait until no alert copy waits to be sent (up to `seconds`); returns how many wait."""
    deadline = time.monotonic() + seconds
    while True:
        with contextlib.suppress(psycopg.Error):
            waiting = int(str((await asyncio.to_thread(soak.query, WAITING))[0][0]))
            if waiting == 0 or time.monotonic() > deadline:
                return waiting
        await asyncio.sleep(1)


def slope_mib_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return cov / var * 3600 if var else 0.0


def report_alerts(soak: Soak, waiting: int) -> None:
    """Alerts queued in the outbox against those the webhook received."""
    queued = {str(key): str(state) for key, state in soak.query(OUTBOX)}
    got = Counter(soak.received)
    lost = [k for k in queued if k not in got]
    not_sent = [k for k in lost if queued[k] != "delivered"]
    doubled = {k: n for k, n in got.items() if n > 1}
    unknown = [k for k in got if k not in queued]
    print(
        f"alerts: {len(queued)} copies queued, {len(got)} received "
        f"({sum(got.values())} messages); lost {len(lost) - len(not_sent)}, "
        f"duplicated {len(doubled)}, still waiting at the end {len(not_sent)} "
        f"(outbox rows waiting: {waiting}), received but not in the outbox {len(unknown)}"
    )
    for key, n in sorted(doubled.items()):
        print(f"  duplicated: {key} received {n} times")
    for key in sorted(lost)[:10]:
        print(f"  not received: {key} ({queued[key]})")
    for kind, state, count, due in soak.query(UNSENT):
        due_s = float(str(due)) if due is not None else 0.0
        print(
            f"  not delivered at the end: {count} {kind} ({state}), the first due in {due_s:.0f} s"
        )
    for kind, count, resolved, summary in soak.query(INCIDENTS):
        print(f"  incidents {kind}: {count} opened, {resolved} resolved, e.g. {summary}")


def report_rounds(soak: Soak, since: float, until: float, interval: float, services: int) -> None:
    """Rounds missed per service (no result within 2 intervals) and services probed twice."""
    bounds = _db_times(soak, since, until)
    params = {
        **bounds,
        "window": f"{2 * interval} seconds",
        "half": f"{interval / 2} seconds",
        "late": f"{1.5 * interval} seconds",
    }
    gaps = [(str(s), float(str(g))) for s, g, _ in soak.query(GAPS, params)]
    edge_missed = 0
    span = (until - since) / 60
    for _sid, first, last in soak.query(EDGES, bounds):
        if first is None or last is None:
            edge_missed += 1
            continue
        edge_missed += _edge(first, bounds["since"], interval) + _edge(
            bounds["until"], last, interval
        )
    missed = Counter(s for s, _ in gaps)
    twice = int(str(soak.query(TWICE, params)[0][0]))
    longest, over_one_and_half = soak.query(LONGEST, params)[0]
    worst = float(str(longest or 0))
    print(
        f"probe rounds over {span:.0f} min after warm-up: {len(missed)} of {services} services "
        f"had a gap over 2 intervals ({len(gaps)} gaps; {edge_missed} at the window's edges); "
        f"the longest gap between two results of a service {worst:.0f} s = "
        f"{worst / interval:.2f} intervals, {over_one_and_half} gaps over 1.5 intervals; "
        f"{twice} results came within half an interval of the previous one (probed twice)"
    )


def _edge(later: object, earlier: object, interval: float) -> int:
    """1 when more than 2 intervals passed between earlier and later."""
    assert isinstance(later, dt.datetime) and isinstance(earlier, dt.datetime)
    return int((later - earlier).total_seconds() > 2 * interval)


def _db_times(soak: Soak, since: float, until: float) -> dict[str, object]:
    """Monotonic bench times as the database's UTC timestamps (probe_results.at)."""
    [(now,)] = soak.query("SELECT timezone('UTC', now())")

    assert isinstance(now, dt.datetime)
    at_now = time.monotonic()
    return {
        "since": now - dt.timedelta(seconds=at_now - since),
        "until": now - dt.timedelta(seconds=at_now - until),
    }


def report_memory(soak: Soak, warmup_min: float) -> None:
    """Each daemon process's resident memory, first and last, and its slope after warm-up."""
    by_process: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for name, pid, age, mib in soak.rss:
        by_process.setdefault((name, pid), []).append((age, mib))
    for (name, pid), samples in sorted(by_process.items()):
        later = [(t, m) for t, m in samples if t >= warmup_min * 60]
        line = (
            f"memory {name} pid {pid}: {samples[0][1]:.0f} MiB at start, {samples[-1][1]:.0f} "
            f"MiB after {samples[-1][0] / 60:.0f} min"
        )
        if len(later) >= 4:
            span = (later[-1][0] - later[0][0]) / 60
            line += (
                f"; after warm-up {slope_mib_per_hour(later):+.1f} MiB/hour "
                f"(least squares, {len(later)} samples over {span:.0f} min)"
            )
            # A process restarted late in the soak is still warming up: the second half of its
            # life after warm-up tells growth from a level being reached.
            half = [(t, m) for t, m in later if t >= (later[0][0] + later[-1][0]) / 2]
            if len(half) >= 4:
                line += f", its second half {slope_mib_per_hour(half):+.1f} MiB/hour"
        print(line)


async def soak_run(args: argparse.Namespace, workdir: Path, bindir: Path) -> None:
    """Set up, run the soak, and print its figures."""
    _ca, cert, key = tls_files(workdir)
    served_by, port, stop_targets = start_targets(cert, key, workdir)
    (workdir / "pg").mkdir()
    server = PostgresServer(workdir / "pg", bindir)
    server.start()
    url = server.new_database()
    soak = Soak(url, server, [])
    hook, hook_port = await serve_webhook(soak)
    flapper, flap_port = await serve_flapping(soak, cert, key)
    flapping = list(range(args.flapping))
    urls = [
        f"https://localhost:{flap_port if i in flapping else port}/svc/{i}"
        for i in range(args.services)
    ]
    await asyncio.to_thread(lambda: seeded_store(url, urls).dispose())
    # slo_ms: on a loaded bench machine the probes' own CPU wait reads as latency; the soak is
    # about faults, so only the flapping services should go down (or degraded).
    extra = f'[alerts]\noncall = ["json://127.0.0.1:{hook_port}/hook"]\n'
    soak.daemons = [
        Daemon(
            name,
            write_config(
                workdir / name,
                name,
                url,
                args.interval,
                workdir / "ca.pem",
                extra,
                slo_ms=args.slo_ms,
            ),
        )
        for name in (f"soak-{chr(ord('a') + i)}" for i in range(args.daemons))
    ]
    print(
        f"{args.services} services ({args.flapping} flapping every {args.flap_minutes:g} min; "
        f"the others served by {served_by}), {args.daemons} daemons, interval "
        f"{args.interval:g} s, a fault every {args.fault_every:g} min, {args.minutes:g} min",
        flush=True,
    )
    soak.started = time.monotonic()
    for daemon in soak.daemons:
        start(soak, daemon)
    helpers = [
        asyncio.create_task(sample_memory(soak)),
        asyncio.create_task(flap(soak, flapping, args.flap_minutes)),
    ]
    try:
        await inject_faults(soak, args.fault_every, args.minutes)
        await asyncio.sleep(max(0.0, args.minutes * 60 - (time.monotonic() - soak.started)))
        until = time.monotonic()
        for task in helpers:
            task.cancel()
        waiting = await drain(soak, 120)
        for daemon in soak.daemons:
            daemon.stop()
        since = soak.started + args.warmup_minutes * 60
        print(f"faults injected: {len(soak.faults)}")
        for fault in soak.faults:
            print(f"  {fault.at_min:5.1f} min  {fault.kind}: {fault.detail}")
        report_alerts(soak, waiting)
        report_rounds(soak, since, until, args.interval, args.services)
        report_memory(soak, args.warmup_minutes)
    finally:
        for daemon in soak.daemons:
            daemon.stop()
        await hook.cleanup()
        await flapper.cleanup()
        server.stop()
        stop_targets()


def main() -> None:
    """Run the soak and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="how long (default 60)")
    parser.add_argument(
        "--services", type=int, default=2000, help="services probed (default 2,000)"
    )
    parser.add_argument("--daemons", type=int, default=3, help="daemons on the store (default 3)")
    parser.add_argument("--interval", type=float, default=60.0, help="probes.interval_seconds")
    parser.add_argument("--slo-ms", type=float, default=10000.0, help="probes.slo_ms")
    parser.add_argument("--fault-every", type=float, default=4.0, help="minutes between faults")
    parser.add_argument("--flapping", type=int, default=8, help="services that fail and recover")
    parser.add_argument(
        "--flap-minutes", type=float, default=6.0, help="minutes between flapping turns"
    )
    parser.add_argument(
        "--warmup-minutes", type=float, default=5.0, help="left out of the memory slope"
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
        asyncio.run(soak_run(args, workdir, bindir))


if __name__ == "__main__":
    main()
