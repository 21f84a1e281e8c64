"""Benchmark: the daemon as it lives — `monitord run` with 2,000 services on a one-minute interval,
its CPU per minute and its resident memory, every job included.

What is measured, honestly:

* The 2,000 services are HTTPS URLs (`https://localhost:PORT/svc/<i>/`) served by nginx on
  loopback (Debian: `apt-get install nginx-light`; when absent, by the bench's own aiohttp TLS
  server in a separate process, and the bench says so), with the same helpers as
  `bench/probes.py`. Every probe opens a fresh connection and a TLS handshake, resumed as the
  daemon resumes sessions by default (`probes.tls_resume_minutes`, 5): the 2,000 services
  share one host and port, so all but about one handshake in five minutes are resumed (a
  daemon probing many hosts resumes four in five at most).
* The catalogue comes from a stand-in portal in the bench's process (the catalogue API of
  spec/catalogue-api.md: pages, ETag, 304), the security scans go to the fake ZAP
  (`monitord.demo.fakezap`, every scan clean), and alerts to a json:// webhook in the bench's
  process, which counts what arrives. None of that is charged to monitord.
* monitord is started as a user starts it: `.venv/bin/monitord --config FILE run`, with a SQLite
  store in a temporary folder, `probes.interval_seconds = 60` and every other job at its default
  (catalogue sync, deep probes, ZAP scans, incidents, alert delivery, housekeeping, compliance,
  the status page and API).
* Every 10 s the bench reads the daemon's /proc/PID/stat (user+system CPU, its threads and any
  child it waited for) and /proc/PID/status (VmRSS, VmHWM). It prints the CPU of each minute as a
  share of one core, and the median after the first two minutes (the start, the first sync and
  the first round); RSS at the end of each minute, the least-squares slope of RSS in MiB per
  hour after those two minutes and over the second half of the run (the second round, which
  brings the services up and runs their deep probes, is past by then), and the peak (VmHWM).
  Then SIGTERM: the daemon must exit 0.
* The machine may be shared: the load average at the start and at the end is printed beside the
  figures, and so is a gauge of the machine's speed (bench/_gauge.py: the CPU ms of a full TLS
  handshake, at the start and the end), since a share of a core is only as fast as the core.
  The goal (issue 17) is under 5 % of one core a minute, and RSS flat after warm-up.

Run: `.venv/bin/python bench/daemon.py [--minutes 10] [--services 2000]` (`--minutes 2` for a
quick try).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

# Run as a script, this file's folder comes first on sys.path and bench/probes.py would shadow
# the `probes` package: put the project root there instead (as bench/probes.py does).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from sqlalchemy import func, select  # noqa: E402

from bench._gauge import describe, handshake_ms  # noqa: E402
from bench._proc import cpu_seconds, status_kib  # noqa: E402
from monitord.demo.fakezap import FakeZapServer, Scenario  # noqa: E402
from monitord.store import open_store  # noqa: E402
from monitord.store.models import Finding, Incident, ProbeRound, Scan, Service  # noqa: E402


def _load_probes_bench() -> Any:
    """bench/probes.py as a module (its nginx targets and certificates), under another name."""
    spec = importlib.util.spec_from_file_location("bench_probes", _HERE / "probes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench_probes = _load_probes_bench()

SAMPLE_SECONDS = 10
WARM_UP_MINUTES = 2
PORTAL_TOKEN = "bench-portal-token"  # the stand-in portal's own token, no real system's
MIB = 1024 * 1024


@dataclass
class Sample:
    """One reading of the daemon's /proc files."""

    at_s: float
    cpu_s: float
    rss_kib: int
    hwm_kib: int


def read_sample(pid: int, started: float) -> Sample:
    """The daemon's CPU seconds (itself and its waited-for children) and memory, from /proc."""
    return Sample(
        at_s=time.monotonic() - started,
        cpu_s=cpu_seconds(pid, waited_children=True),
        rss_kib=status_kib(pid, "VmRSS"),
        hwm_kib=status_kib(pid, "VmHWM"),
    )


def catalogue(services: int, port: int) -> list[dict[str, Any]]:
    """The stand-in portal's catalogue: `services` online HTTPS services, fully filed."""
    return [
        {
            "id": f"svc-{i:05d}",
            "name": f"基准服务 {i}",
            "type": "government",
            "permission": "handle",
            "source": "bureau",
            "provider": "苏州市行政审批局",
            "developer": "江苏某某信息技术有限公司",
            "coverage": ["all"],
            "access_method": "https",
            "max_concurrency": 100,
            "url": f"https://localhost:{port}/svc/{i}/",
            "return_codes": {"0": "成功", "1001": "令牌无效"},
            "manual_url": f"https://docs.example.gov.cn/svc-{i:05d}/manual.pdf",
            "flowchart_url": f"https://docs.example.gov.cn/svc-{i:05d}/flow.png",
            "security_plan_url": f"https://docs.example.gov.cn/svc-{i:05d}/security.pdf",
            "faq_url": f"https://docs.example.gov.cn/svc-{i:05d}/faq.html",
            "emergency_plan_url": f"https://docs.example.gov.cn/svc-{i:05d}/emergency.pdf",
            "description": "基准测试服务：在线办理。",
            "planned_release": "2026-03-01",
            "review": {
                "opinion": "同意上线",
                "signed_by": "苏州市数据局",
                "signed_at": "2026-02-20T10:00:00+08:00",
            },
            "status": "online",
            "suspension": None,
            "offline_notice": None,
            "updated_at": "2026-10-01T09:00:00+08:00",
            "contacts": [
                {"name": "值班员", "role": "oncall", "apprise": "mailto://oncall@example.gov.cn"}
            ],
        }
        for i in range(services)
    ]


@dataclass
class StandIns:
    """The portal's catalogue API and a chat webhook, served by the bench on loopback."""

    services: list[dict[str, Any]]
    alerts: int = 0
    pages: int = 0
    not_modified: int = 0
    url: str = ""
    runner: web.AppRunner | None = field(default=None, repr=False)

    async def portal(self, request: web.Request) -> web.Response:
        """GET /api/v1/services?page=N&page_size=M, with a fixed ETag (nothing changes)."""
        if request.headers.get("Authorization") != f"Bearer {PORTAL_TOKEN}":
            return web.json_response({"error": "unauthorized"}, status=401)
        page = int(request.query.get("page", "1"))
        size = int(request.query.get("page_size", "200"))
        etag = '"bench-catalogue"'
        if page == 1 and request.headers.get("If-None-Match") == etag:
            self.not_modified += 1
            return web.Response(status=304, headers={"ETag": etag})
        self.pages += 1
        more = page * size < len(self.services)
        document = {
            "page": page,
            "page_size": size,
            "total": len(self.services),
            "next": page + 1 if more else None,
            "services": self.services[(page - 1) * size : page * size],
        }
        return web.json_response(document, headers={"ETag": etag})

    async def hook(self, _request: web.Request) -> web.Response:
        """A json:// chat webhook: counts each alert that arrives."""
        self.alerts += 1
        return web.json_response({"errcode": 0})

    async def start(self) -> None:
        """Serve both on a free loopback port."""
        app = web.Application()
        app.router.add_get("/api/v1/services", self.portal)
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Stop serving."""
        if self.runner is not None:
            await self.runner.cleanup()


def write_config(workdir: Path, portal: str, zap: str, ca_file: Path) -> Path:
    """The daemon's config: the store and files in workdir, one-minute probes, the rest default."""
    api_port = bench_probes._free_port()
    text = f"""
[store]
url = "sqlite:///{workdir}/monitord.db"
files_dir = "{workdir}/evidence"

[portal]
url = "{portal}"

[logging]
file = "{workdir}/monitord.log.jsonl"

[probes]
interval_seconds = 60.0
ca_file = "{ca_file}"

[zap]
url = "{zap}"

[alerts]
oncall = ["{portal.replace("http://", "json://")}/hook"]

[api]
listen = "127.0.0.1:{api_port}"

[report]
dir = "{workdir}/reports"
"""
    config = workdir / "monitord.toml"
    config.write_text(text)
    return config


def start_daemon(config: Path, workdir: Path, zap_key: str) -> subprocess.Popen[bytes]:
    """`monitord --config FILE run`, as the user starts it, its output to workdir/daemon.log."""
    monitord = Path(sys.executable).parent / "monitord"
    env = dict(os.environ, MONITORD_PORTAL_TOKEN=PORTAL_TOKEN, MONITORD_ZAP_API_KEY=zap_key)
    with (workdir / "daemon.log").open("wb") as out:
        return subprocess.Popen(
            [str(monitord), "--config", str(config), "run"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def sample_for(process: subprocess.Popen[bytes], minutes: int) -> list[Sample]:
    """Read the daemon's /proc every SAMPLE_SECONDS for `minutes`; stops early if it dies."""
    started = time.monotonic()
    samples = [read_sample(process.pid, started)]
    for tick in range(1, minutes * 60 // SAMPLE_SECONDS + 1):
        await asyncio.sleep(max(0.0, started + tick * SAMPLE_SECONDS - time.monotonic()))
        if process.poll() is not None:
            raise RuntimeError(f"monitord exited with status {process.returncode} during the run")
        samples.append(read_sample(process.pid, started))
        if tick % (60 // SAMPLE_SECONDS) == 0:
            minute = tick * SAMPLE_SECONDS // 60
            cpu = samples[-1].cpu_s - samples[-1 - 60 // SAMPLE_SECONDS].cpu_s
            print(
                f"  minute {minute:2d}: CPU {cpu / 60:6.2%} of one core, "
                f"RSS {samples[-1].rss_kib / 1024:6.1f} MiB",
                flush=True,
            )
    return samples


def slope_mib_per_hour(samples: list[Sample]) -> float:
    """Least-squares slope of RSS over time, in MiB per hour."""
    xs = [s.at_s / 3600 for s in samples]
    ys = [s.rss_kib / 1024 for s in samples]
    return statistics.linear_regression(xs, ys).slope


def print_figures(samples: list[Sample], minutes: int) -> None:
    """CPU per minute, its median after warm-up, RSS per minute, its slope and the peak."""
    per_minute = 60 // SAMPLE_SECONDS
    ends = samples[per_minute::per_minute]
    cpu = [(b.cpu_s - a.cpu_s) / 60 for a, b in zip(samples[::per_minute], ends, strict=False)]
    warm = WARM_UP_MINUTES if minutes > WARM_UP_MINUTES else minutes - 1
    print("CPU % of one core per minute: " + ", ".join(f"{c:.2%}" for c in cpu))
    print(
        f"CPU after the first {warm} minute(s): median {statistics.median(cpu[warm:]):.2%} "
        f"(max {max(cpu[warm:]):.2%}; goal < 5 %)"
    )
    print("RSS per minute (MiB): " + ", ".join(f"{s.rss_kib / 1024:.1f}" for s in ends))
    # The second round brings the services up and runs their deep probes (minute 3 or 4): the
    # slope over the second half of the run says whether memory is flat once that is past.
    for label, after in (
        (f"after the first {warm} minute(s)", samples[warm * per_minute :]),
        ("over the second half", samples[len(samples) // 2 :]),
    ):
        print(
            f"RSS {label}: {after[0].rss_kib / 1024:.1f} → {after[-1].rss_kib / 1024:.1f} MiB, "
            f"slope {slope_mib_per_hour(after):+.1f} MiB/hour (least squares, {len(after)} "
            "samples)"
        )
    print(f"RSS peak (VmHWM): {samples[-1].hwm_kib / 1024:.1f} MiB")


def print_store(db: Path, stand_ins: StandIns) -> None:
    """What the daemon did, read from its store after it stopped: a check that it worked."""
    store = open_store(f"sqlite:///{db}")
    try:
        with store.session() as session:
            services = session.scalar(select(func.count()).select_from(Service))
            rounds = session.execute(
                select(func.count(), func.sum(ProbeRound.probes), func.sum(ProbeRound.failures))
            ).one()
            findings = session.scalar(
                select(func.count()).select_from(Finding).where(Finding.state == "open")
            )
            incidents = session.scalar(select(func.count()).select_from(Incident))
            scans = session.scalar(select(func.count()).select_from(Scan))
    finally:
        store.dispose()
    print(
        f"the store: {services} services, {rounds[0]} probe rounds ({rounds[1] or 0} probes, "
        f"{rounds[2] or 0} failed), {findings} open findings, {incidents} incidents, {scans} "
        f"ZAP scans; the portal served {stand_ins.pages} pages and {stand_ins.not_modified} "
        f"'not modified'; the webhook received {stand_ins.alerts} alerts"
    )


def stop_daemon(process: subprocess.Popen[bytes], workdir: Path) -> int:
    """SIGTERM, and the exit status (the daemon's log tail is printed when it is not 0)."""
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        status = process.wait()
    print(f"SIGTERM: monitord exited with status {status}")
    if status != 0:
        print((workdir / "daemon.log").read_text(errors="replace")[-4000:])
    return status


def log_problems(workdir: Path) -> list[str]:
    """The daemon's WARNING and ERROR lines (its readable log), for the reader to judge."""
    lines = (workdir / "daemon.log").read_text(errors="replace").splitlines()
    return [line for line in lines if line[20:27].rstrip() in ("WARNING", "ERROR")]


async def run(args: argparse.Namespace, workdir: Path) -> int:
    """Serve the targets and stand-ins, run the daemon, sample it, stop it; the exit status."""
    ca_file, cert, key = bench_probes.write_certs(workdir)
    gauge_before = handshake_ms(ca_file, cert, key)
    served_by, port, stop_targets = bench_probes.start_targets(cert, key, workdir)
    stand_ins = StandIns(catalogue(args.services, port))
    await stand_ins.start()
    zap = FakeZapServer(Scenario()).start()
    try:
        config = write_config(workdir, stand_ins.url, zap.url, ca_file)
        print(
            f"monitord run: {args.services} HTTPS services served by {served_by} on loopback, "
            f"probes every 60 s, every other job at its default, SQLite; {args.minutes} minutes, "
            f"a sample every {SAMPLE_SECONDS} s; {os.cpu_count()} CPUs, load average "
            + " ".join(f"{x:.2f}" for x in os.getloadavg())
            + f"; {describe(gauge_before)}",
            flush=True,
        )
        process = start_daemon(config, workdir, zap.zap.scenario.api_key)
        try:
            samples = await sample_for(process, args.minutes)
        finally:
            status = await asyncio.to_thread(stop_daemon, process, workdir)
    finally:
        zap.close()
        await stand_ins.stop()
        stop_targets()
    print("load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"at the end, {describe(handshake_ms(ca_file, cert, key))}")
    print_figures(samples, args.minutes)
    print_store(workdir / "monitord.db", stand_ins)
    problems = log_problems(workdir)
    print(f"the daemon logged {len(problems)} warnings and errors" + (":" if problems else ""))
    for line in problems[:10]:
        print("  " + line[:200])
    return status


def main() -> None:
    """Run the benchmark and print its figures; exit 1 when the daemon did not exit 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="how long to sample (at least 2)")
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument(
        "--keep", type=Path, help="an empty folder to keep the daemon's store, config and log in"
    )
    args = parser.parse_args()
    if args.minutes < 2:
        parser.error(f"--minutes {args.minutes}: at least 2 (the first minute is warm-up)")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        status = asyncio.run(run(args, args.keep.resolve()))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            status = asyncio.run(run(args, Path(tmp)))
    sys.exit(0 if status == 0 else 1)


if __name__ == "__main__":
    main()
