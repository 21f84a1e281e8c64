"""Benchmark: distributed job engines on PostgreSQL, for several monitord daemons (issue 19).

What is measured, for each engine that can be imported (none of them is a monitord dependency):

* direct        PostgreSQL used directly: a `job_leases` row claimed with
                `INSERT ... ON CONFLICT (job) DO UPDATE ...
                WHERE expires_at < now() OR holder = me`,
                renewed every 5 s for 15 s, judged by the database's clock (what monitord does).
* procrastinate `pip install procrastinate`: `@app.periodic` + `lock`, worker heartbeats every
                5 s and the documented `retry_stalled_jobs` periodic task (stalled after 15 s),
                so that it is configured like `direct`; `procrastinate-qlock` adds a
                `queueing_lock`, as its users do to keep ticks from piling up.
* pgqueuer      `pip install pgqueuer asyncpg`: `@pgq.schedule` (its schedules table, heartbeat
                every 1 s, a picked schedule is re-picked after a fixed 30 s).
* apscheduler   `pip install "apscheduler==4.0.0a6" "psycopg[binary]"`: AsyncScheduler on a shared
                SQLAlchemyDataStore and the PsycopgEventBroker (LISTEN/NOTIFY); run twice, with
                its defaults (lease 30 s, clean-up every 15 min) and tuned (lease 15 s, clean-up
                every 5 s).

Per engine, on a throw-away PostgreSQL 15 (fsync off, pg_stat_statements loaded):

1. Two worker processes run one singleton job every 10 s; the job takes 3 s and appends
   "start <pid> <time>" to a shared file. Nothing else touches that database.
2. Idle load: statements (pg_stat_statements calls, BEGIN/COMMIT included) and committed
   transactions (pg_stat_database.xact_commit) per minute in that database, over `--idle` s.
   Also: runs of the job in that window, and runs that overlapped another (must be 0).
3. Failover: the process that has just started a run is SIGKILLed mid-run; the figure is the
   seconds from the kill until the other process starts the job. Repeated `--kills` times
   (a fresh pair of workers each time).

Run: `.venv/bin/python bench/engines.py [--engines direct,pgqueuer,...] [--idle 60] [--kills 2]`
(an engine that the interpreter cannot import is skipped; to measure them all, use a scratch venv:
`python3 -m venv /tmp/engines-venv && /tmp/engines-venv/bin/pip install procrastinate pgqueuer
asyncpg "apscheduler==4.0.0a6" sniffio greenlet "psycopg[binary]"`, then run this file with
its python).
As root, PostgreSQL is run as the postgres user (runuser), as the test suite does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PERIOD_S = 10
JOB_S = 3
LEASE_S = 15
RENEW_S = 5
TAKEOVER_LIMIT_S = 120

# 4.0.0a6 imports sniffio without depending on it; its SQLAlchemy store needs greenlet
APS = "pip install 'apscheduler==4.0.0a6' sniffio greenlet 'psycopg[binary]'"

# engine name -> modules it needs, and how to get them
NEEDS: dict[str, tuple[list[str], str]] = {
    "direct": (["psycopg"], "pip install 'psycopg[binary]'"),
    "procrastinate": (["procrastinate"], "pip install procrastinate"),
    "procrastinate-qlock": (["procrastinate"], "pip install procrastinate"),
    "pgqueuer": (["pgqueuer", "asyncpg"], "pip install pgqueuer asyncpg"),
    "apscheduler": (["apscheduler", "greenlet", "sniffio"], APS),
    "apscheduler-tuned": (["apscheduler", "greenlet", "sniffio"], APS),
}


# ---------------------------------------------------------------- the job every engine runs


async def run_job() -> None:
    """The singleton job: note its start in the shared file, then work for JOB_S seconds."""
    line = f"start {os.getpid()} {time.time():.3f}\n"
    fd = os.open(os.environ["ENGINES_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    await asyncio.sleep(JOB_S)


# ---------------------------------------------------------------- workers (one per process)

LEASE_SQL = """
INSERT INTO job_leases (job, holder, expires_at) VALUES ('tick', %(me)s, now() + %(lease)s)
ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE job_leases.expires_at < now() OR job_leases.holder = excluded.holder
RETURNING coalesce(extract(epoch FROM now() - last_run)::float8, 1e9)
"""


async def worker_direct(dsn: str) -> None:
    """Claim or renew the lease every RENEW_S; while it is held, run the job every PERIOD_S."""
    me = f"{socket.gethostname()}:{os.getpid()}"
    lease = f"{LEASE_S} seconds"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:

        async def run_in(delay: float) -> None:
            await asyncio.sleep(delay)
            await conn.execute("UPDATE job_leases SET last_run = now() WHERE job = 'tick'")
            await run_job()

        job: asyncio.Task[None] | None = None
        while True:
            row = await (await conn.execute(LEASE_SQL, {"me": me, "lease": lease})).fetchone()
            since_last = row[0] if row is not None else None
            idle = job is None or job.done()
            # held, and due before the next renewal
            if since_last is not None and idle and since_last + RENEW_S >= PERIOD_S:
                job = asyncio.create_task(run_in(max(0.0, PERIOD_S - since_last)))
            await asyncio.sleep(RENEW_S)


async def worker_procrastinate(dsn: str, queueing_lock: str | None) -> None:
    """A procrastinate worker with the periodic job and the documented stalled-job retry.

    `lock` keeps two runs from overlapping; `queueing_lock` (in the -qlock variant) also keeps
    ticks from piling up while a run is stuck, but then the retry of a stalled run hits the
    unique index of queued jobs (procrastinate issue #1446) and the job never runs again.
    """
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.periodic(cron=f"* * * * * */{PERIOD_S}")
    @app.task(name="tick", lock="tick", queueing_lock=queueing_lock)
    async def tick(timestamp: int) -> None:
        await run_job()

    @app.periodic(cron=f"* * * * * */{RENEW_S}")
    @app.task(name="retry_stalled", queueing_lock="retry_stalled")
    async def retry_stalled(timestamp: int) -> None:
        for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=LEASE_S):
            await app.job_manager.retry_job(job)

    async with app.open_async():
        await app.run_worker_async(
            concurrency=2,
            update_heartbeat_interval=RENEW_S,
            stalled_worker_timeout=LEASE_S,
            install_signal_handlers=False,
        )


async def worker_pgqueuer(dsn: str) -> None:
    """A pgqueuer PgQueuer (queue manager and scheduler) with the job as a cron schedule."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, PgQueuer

    conn = await asyncpg.connect(dsn)
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.schedule("tick", f"* * * * * */{PERIOD_S}")
    async def tick(schedule: object) -> None:
        await run_job()

    await pgq.run()


async def apscheduler_tick() -> None:
    """APScheduler 4 refers to tasks by module:name, so the job is a module-level function."""
    await run_job()


async def worker_apscheduler(dsn: str, tuned: bool) -> None:
    """An APScheduler 4 AsyncScheduler on the shared SQLAlchemy data store and psycopg broker."""
    from datetime import timedelta

    from apscheduler import AsyncScheduler, ConflictPolicy
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.eventbrokers.psycopg import PsycopgEventBroker
    from apscheduler.triggers.interval import IntervalTrigger
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
    options: dict[str, timedelta] = {}
    if tuned:
        options = {
            "lease_duration": timedelta(seconds=LEASE_S),
            "cleanup_interval": timedelta(seconds=RENEW_S),
        }
    async with AsyncScheduler(
        SQLAlchemyDataStore(engine),
        PsycopgEventBroker.from_async_sqla_engine(engine),
        identity=f"{socket.gethostname()}:{os.getpid()}",
        **options,
    ) as scheduler:
        await scheduler.add_schedule(
            apscheduler_tick,
            IntervalTrigger(seconds=PERIOD_S),
            id="tick",
            conflict_policy=ConflictPolicy.do_nothing,
        )
        await scheduler.run_until_stopped()


def worker_main(engine: str, dsn: str) -> None:
    """Run one worker process of `engine` until killed."""
    workers = {
        "direct": lambda: worker_direct(dsn),
        "procrastinate": lambda: worker_procrastinate(dsn, queueing_lock=None),
        "procrastinate-qlock": lambda: worker_procrastinate(dsn, queueing_lock="tick"),
        "pgqueuer": lambda: worker_pgqueuer(dsn),
        "apscheduler": lambda: worker_apscheduler(dsn, tuned=False),
        "apscheduler-tuned": lambda: worker_apscheduler(dsn, tuned=True),
    }
    asyncio.run(workers[engine]())


# ---------------------------------------------------------------- schemas


def install_schema(engine: str, dsn: str) -> None:
    """Create what `engine` needs in an empty database, once, before the workers start."""
    if engine == "direct":
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE job_leases (job text PRIMARY KEY, holder text NOT NULL,"
                " expires_at timestamptz NOT NULL, last_run timestamptz)"
            )
    elif engine.startswith("procrastinate"):
        import procrastinate

        app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=dsn))
        with app.open():
            app.schema_manager.apply_schema()
    elif engine == "pgqueuer":

        async def install() -> None:
            import asyncpg
            from pgqueuer import AsyncpgDriver, Queries

            conn = await asyncpg.connect(dsn)
            try:
                await Queries(AsyncpgDriver(conn)).install()
            finally:
                await conn.close()

        asyncio.run(install())
    elif engine.startswith("apscheduler"):
        # A scheduler creates the tables when it starts; two starting at once on an empty
        # database race on CREATE TYPE and one dies (UniqueViolation), so one goes first.
        from apscheduler import AsyncScheduler
        from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
        from sqlalchemy.ext.asyncio import create_async_engine

        async def install_aps() -> None:
            engine_ = create_async_engine(dsn.replace("postgresql://", "postgresql+psycopg://"))
            async with AsyncScheduler(SQLAlchemyDataStore(engine_)):
                pass
            await engine_.dispose()

        asyncio.run(install_aps())


# ---------------------------------------------------------------- the PostgreSQL server


@dataclass
class Postgres:
    """A throw-away PostgreSQL cluster, as tests/conftest.py starts one, with pg_stat_statements."""

    folder: Path
    bindir: Path
    port: int = 0
    prefix: list[str] = field(default_factory=list)

    def run(self, program: str, *args: str) -> None:
        """Run one of PostgreSQL's programs, as the postgres user when we are root."""
        command = [*self.prefix, str(self.bindir / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """initdb and start on a free loopback port."""
        if os.geteuid() == 0:
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        data = str(self.folder / "data")
        self.run("initdb", "-D", data, "-U", "monitord", "-A", "trust", "-E", "UTF8")
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c shared_preload_libraries=pg_stat_statements -c max_connections=200"
        )
        self.run("pg_ctl", "-D", data, "-l", str(self.folder / "log"), "-w", "-o", options, "start")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")

    def stop(self) -> None:
        """Stop at once; the folder is thrown away."""
        self.run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")

    def url(self, database: str) -> str:
        """A libpq URL of `database` on this server."""
        return f"postgresql://monitord@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create `name` and return its URL."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def load(self, database: str) -> tuple[int, int]:
        """(statements, commits) seen so far in `database`, read from the postgres database."""
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " WHERE s.dbid = d.datid), d.xact_commit FROM pg_stat_database d"
                " WHERE d.datname = %s",
                (database,),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])


def postgres_bindir() -> Path | None:
    """Where PostgreSQL's server programs are (as tests/conftest.py finds them)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


# ---------------------------------------------------------------- measuring


def starts(log: Path) -> list[tuple[int, float]]:
    """The (pid, time) of every start of the job so far."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        _, pid, at = line.split()
        found.append((int(pid), float(at)))
    return found


@contextlib.contextmanager
def workers(
    engine: str, dsn: str, log: Path, count: int = 2
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` worker processes of `engine`, killed on the way out."""
    env = {**os.environ, "ENGINES_LOG": str(log)}
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", engine, "--dsn", dsn],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(log.with_suffix(f".{i}.err"), "wb"),  # noqa: SIM115
        )
        for i in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def wait_for_starts(log: Path, count: int, limit: float) -> list[tuple[int, float]]:
    """Wait until the job has started `count` times (or `limit` s passed); return the starts."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = starts(log)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    return starts(log)


def overlaps(found: list[tuple[int, float]]) -> int:
    """Starts that began while an earlier run (JOB_S long) was still going: a singleton broken."""
    times = sorted(at for _, at in found)
    return sum(1 for a, b in itertools.pairwise(times) if b - a < JOB_S)


def measure_idle(
    pg: Postgres, engine: str, database: str, dsn: str, folder: Path, idle_s: float
) -> str:
    """Statements and commits per minute with two workers and the 10-s job, and its run count."""
    log = folder / f"{engine}-idle.log"
    with workers(engine, dsn, log) as procs:
        if len(wait_for_starts(log, 1, 60)) < 1:
            return f"never ran the job in 60 s; stderr: {err_tail(log)}"
        time.sleep(PERIOD_S)  # both workers warmed up
        before, t0 = pg.load(database), time.monotonic()
        first = len(starts(log))
        time.sleep(idle_s)
        after, t1 = pg.load(database), time.monotonic()
        window = starts(log)[first:]
        alive = sum(1 for p in procs if p.poll() is None)
    minutes = (t1 - t0) / 60
    statements = (after[0] - before[0]) / minutes
    commits = (after[1] - before[1]) / minutes
    return (
        f"{statements:.0f} statements/min, {commits:.0f} commits/min; "
        f"{len(window)} runs in {t1 - t0:.0f} s, {overlaps(window)} overlapping; "
        f"{alive}/2 workers alive"
    )


def measure_failover(engine: str, dsn: str, folder: Path, round_: int) -> str:
    """SIGKILL the worker that has just started the job; seconds until the other starts it."""
    log = folder / f"{engine}-kill{round_}.log"
    with workers(engine, dsn, log) as procs:
        found = wait_for_starts(log, 2, 90)
        if len(found) < 2:
            return f"the job did not run twice in 90 s; stderr: {err_tail(log)}"
        # wait for a fresh start, so the kill lands mid-run
        count = len(starts(log))
        found = wait_for_starts(log, count + 1, 60)
        victim, started = found[-1]
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        survivor = next(p for p in procs if p.pid != victim)
        seen = len(found)
        deadline = time.monotonic() + TAKEOVER_LIMIT_S
        while time.monotonic() < deadline:
            later = [(pid, at) for pid, at in starts(log)[seen:] if pid == survivor.pid]
            if later:
                return f"{later[0][1] - killed:.1f} s (killed {killed - started:.1f} s into a run)"
            time.sleep(0.1)
        return f"not taken over within {TAKEOVER_LIMIT_S} s"


def err_tail(log: Path) -> str:
    """The last line a worker wrote to stderr, for a one-line explanation."""
    for i in range(2):
        lines = log.with_suffix(f".{i}.err").read_text(errors="replace").strip().splitlines()
        if lines:
            return lines[-1][:200]
    return "(nothing)"


def missing(engine: str) -> str | None:
    """How to get `engine` when one of its modules cannot be imported, else None."""
    modules, how = NEEDS[engine]
    if all(importlib.util.find_spec(m) is not None for m in modules):
        return None
    return how


def main() -> None:
    """Parse the arguments; run a worker, or the whole benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default=",".join(NEEDS))
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle load measured")
    parser.add_argument("--kills", type=int, default=2, help="failovers measured per engine")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--dsn", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.dsn)
        return
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in NEEDS]
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; known: {', '.join(NEEDS)}")
    bindir = postgres_bindir()
    if bindir is None:
        sys.exit("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="monitord-engines-"))
    folder.chmod(0o777)  # the workers' shared log, written by us; PostgreSQL's files, by postgres
    pg = Postgres(folder, bindir)
    pg.start()
    try:
        for engine in engines:
            how = missing(engine)
            if how is not None:
                print(f"{engine}: skipped, not importable here ({how})", flush=True)
                continue
            # a fresh database per measurement: a killed worker's leftovers must not carry over
            name = f"{engine.replace('-', '_')}_idle"
            dsn = pg.new_database(name)
            install_schema(engine, dsn)
            idle = measure_idle(pg, engine, name, dsn, folder, args.idle)
            print(f"{engine}: idle: {idle}", flush=True)
            for round_ in range(1, args.kills + 1):
                dsn = pg.new_database(f"{engine.replace('-', '_')}_kill{round_}")
                install_schema(engine, dsn)
                took = measure_failover(engine, dsn, folder, round_)
                print(f"{engine}: failover {round_}: {took}", flush=True)
    finally:
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
