"""Benchmark: what one Prometheus scrape of /metrics costs the daemon, at 2,000 services.

What is measured, honestly:

* A store seeded like a city portal's: 2,000 online services with their probe states, each with
  `--results` availability results carrying the full facts a real probe stores (phases,
  certificate, redirects, addresses, HSTS) and as many tls results, open incidents of both
  classes, outbox rows waiting and delivered, zap findings, followed logs and sync runs.
* The web app is served the way the daemon serves it (`monitord.runtime.web.serve`, the same
  aiohttp app, guards, token check and thread) in a process of its own; this script scrapes
  `GET /metrics` over HTTP with a Bearer token, one scrape at a time, as Prometheus does.
* The figure is the serving process's own user+system CPU (from /proc, every thread) per
  scrape: a run is `--scrapes` scrapes, and the median of `--runs` runs is printed, with what
  that costs at one scrape every 15 s as a share of one core. The client's CPU is not counted.

Run: `.venv/bin/python bench/metrics.py [--services 2000] [--results 60] [--runs 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench._proc import cpu_seconds  # noqa: E402
from monitord.config import Settings, parse_config  # noqa: E402
from monitord.runtime.app import build_app  # noqa: E402
from monitord.runtime.web import serve  # noqa: E402
from monitord.runtime.web.auth import new_token, token_hash  # noqa: E402
from monitord.store import open_store  # noqa: E402
from monitord.store.models import (  # noqa: E402
    Finding,
    Incident,
    LogSource,
    OutboxAlert,
    ProbeResultRow,
    Service,
    ServiceState,
    SyncRun,
)
from monitord.timeutil import UTC  # noqa: E402

SCRAPE_INTERVAL_S = 15
TOKEN = new_token()


def settings_for(url: str, token: str) -> Settings:
    """The daemon's settings: the store, loopback, one viewer token for the scraper."""
    return parse_config(
        {
            "store": {"url": url},
            "api": {
                "listen": "127.0.0.1:0",
                "tokens": [{"name": "prometheus", "role": "viewer", "sha256": token_hash(token)}],
            },
        },
        "bench",
        {},
    )


def _facts(i: int, n: int, now: dt.datetime) -> dict[str, Any]:
    """The facts an availability probe of an HTTPS service stores, as it stores them."""
    url = f"https://svc-{i:04d}.portal.test/health"
    return {
        "url": url,
        "scheme": "https",
        "slo_ms": 3000,
        "refused": False,
        "status": 200,
        "final_url": url,
        "redirects": [{"url": url.replace("/health", "/"), "status": 302, "location": "/health"}],
        "dns_ms": 1.2 + n % 3,
        "connect_ms": 2.5,
        "tls_ms": 31.0 + i % 7,
        "first_byte_ms": 120.0 + (i * n) % 50,
        "transfer_ms": 3.1,
        "total_ms": 160.0 + (i * n) % 50,
        "body_bytes": 5120,
        "content_type": "text/html; charset=utf-8",
        "addresses": ["10.20.30.40", "2001:db8::40"],
        "connection_reused": False,
        "hsts": {"max_age": 31536000, "include_subdomains": True, "preload": False},
        "cert_subject": f"CN=svc-{i:04d}.portal.test",
        "cert_issuer": "CN=GDCA TrustAUTH R5 ROOT",
        "cert_not_before": (now - dt.timedelta(days=200)).isoformat(),
        "cert_not_after": (now + dt.timedelta(days=5 + i % 300)).isoformat(),
        "days_to_expiry": 5 + i % 300,
        "hostname_match": True,
        "self_signed": False,
        "key_type": "RSA",
        "key_bits": 2048,
        "signature_algorithm": "sha256WithRSAEncryption",
        "tls_version": "TLSv1.3",
        "chain_trusted": True,
    }


def seed(url: str, services: int, results: int) -> None:
    """Fill a fresh store as a city portal's daemon leaves it."""
    now = dt.datetime.now(UTC)
    store = open_store(url)
    states = ("up",) * 17 + ("degraded", "down", "unknown")
    with store.session() as s:
        ids = [f"svc-{i:04d}" for i in range(services)]
        s.execute(
            insert(Service),
            [
                {
                    "id": sid,
                    "name": f"服务{i}",
                    "status": "online",
                    "url": f"https://{sid}.portal.test/",
                    "first_seen": now,
                    "last_seen": now,
                    "gone": False,
                }
                for i, sid in enumerate(ids)
            ],
        )
        s.execute(
            insert(ServiceState),
            [
                {"service_id": sid, "state": states[i % len(states)], "since": now}
                for i, sid in enumerate(ids)
            ],
        )
        for n in range(results):
            at = now - dt.timedelta(minutes=results - n)
            rows: list[dict[str, Any]] = []
            for i, sid in enumerate(ids):
                facts = _facts(i, n, now)
                rows.append(
                    {
                        "service_id": sid,
                        "kind": "availability",
                        "target": facts["url"],
                        "at": at,
                        "success": i % 20 != 18,
                        "duration_ms": facts["total_ms"],
                        "facts": facts,
                    }
                )
                rows.append(
                    {
                        "service_id": sid,
                        "kind": "tls",
                        "target": facts["url"],
                        "at": at,
                        "success": True,
                        "duration_ms": 80.0,
                        "facts": {"protocols": ["TLSv1.2", "TLSv1.3"], "weak_suites": []},
                    }
                )
            s.execute(insert(ProbeResultRow), rows)
        s.execute(
            insert(Incident),
            [
                {
                    "kind": "outage" if k % 3 else "vulnerability",
                    "klass": "availability" if k % 3 else "security",
                    "severity": "high",
                    "state": "open",
                    "group_key": f"bench:{k}",
                    "services": [ids[k * 19 % services]],
                    "detected_at": now - dt.timedelta(minutes=k),
                    "notify_by": None if k % 3 else now + dt.timedelta(minutes=120 - k),
                }
                for k in range(60)
            ],
        )
        s.execute(
            insert(OutboxAlert),
            [
                {
                    "idempotency_key": f"bench:{k}",
                    "channel": (
                        f"alerts.oncall[{k % 2}]" if k % 4 else f"contact:{ids[k % services]}:x"
                    ),
                    "parent_id": 1,
                    "title": "",
                    "body": "",
                    "created_at": now,
                    "next_attempt_at": now,
                    "state": "pending" if k % 10 == 0 else "delivered",
                }
                for k in range(2000)
            ],
        )
        s.execute(
            insert(Finding),
            [
                {
                    "rule": f"zap:{k}",
                    "clause": "8.3 b",
                    "severity": ("high", "medium", "low", "info")[k % 4],
                    "subject_kind": "service",
                    "subject": ids[k % services],
                    "service_id": ids[k % services],
                    "first_seen": now,
                    "last_seen": now,
                    "state": "open",
                }
                for k in range(400)
            ],
        )
        s.add_all(
            [
                SyncRun(started_at=now, finished_at=now, source="bench", outcome="ok"),
                LogSource(path="/var/log/nginx/access.log", lines=10**8, updated_at=now),
                LogSource(path="/var/log/portal/audit.json", lines=10**7, updated_at=now),
            ]
        )
    store.dispose()


def _serve(url: str, token: str, address_out: Connection) -> None:
    """The serving process: the daemon's web app on loopback, until killed."""

    async def main() -> None:
        app = build_app(settings_for(url, token))
        server = await serve(app)
        address_out.send(server.address)
        await asyncio.Event().wait()

    asyncio.run(main())


async def scrape_runs(
    address: str, pid: int, runs: int, scrapes: int
) -> tuple[list[float], list[float], str]:
    """CPU ms and wall ms per scrape of each run, and the last answer."""
    cpu_ms: list[float] = []
    wall_ms: list[float] = []
    text = ""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(3):  # warm up: connections, caches, the first query plans
            async with session.get(f"{address}/metrics", headers=headers) as response:
                text = await response.text()
                assert response.status == 200, text
        for _ in range(runs):
            cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
            for _ in range(scrapes):
                async with session.get(f"{address}/metrics", headers=headers) as response:
                    text = await response.text()
            wall_ms.append((time.perf_counter() - wall0) * 1000 / scrapes)
            cpu_ms.append((cpu_seconds(pid) - cpu0) * 1000 / scrapes)
    return cpu_ms, wall_ms, text


def main() -> None:
    """Seed, serve, scrape, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--results", type=int, default=60, help="availability results each")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scrapes", type=int, default=10, help="scrapes per run")
    parser.add_argument("--store", help="a store URL (default: SQLite in a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="monitord-bench-") as folder:
        url = args.store or f"sqlite:///{Path(folder) / 'm.db'}"
        began = time.perf_counter()
        seed(url, args.services, args.results)
        print(
            f"seeded {args.services} services, {args.results} availability and as many tls "
            f"results each, in {time.perf_counter() - began:.0f} s"
        )
        spawn = multiprocessing.get_context("spawn")
        receive, send = spawn.Pipe(duplex=False)
        server = spawn.Process(target=_serve, args=(url, TOKEN, send), daemon=True)
        server.start()
        try:
            address = receive.recv()
            assert server.pid is not None
            cpu, wall, text = asyncio.run(scrape_runs(address, server.pid, args.runs, args.scrapes))
        finally:
            server.terminate()
            server.join(10)
    series = sum(len(f.samples) for f in text_string_to_metric_families(text))
    median_cpu = statistics.median(cpu)
    share = median_cpu / 1000 / SCRAPE_INTERVAL_S * 100
    print(
        f"GET /metrics: {series} series, {len(text.encode()) / 1024:.0f} KiB; "
        f"runs of {args.scrapes} scrapes: CPU ms per scrape "
        + ", ".join(f"{c:.1f}" for c in cpu)
        + f"; wall ms {statistics.median(wall):.1f} (median)"
    )
    print(
        f"median {median_cpu:.1f} ms CPU per scrape in the serving process: "
        f"{share:.2f} % of one core at one scrape every {SCRAPE_INTERVAL_S} s "
        f"({'under' if share < 1 else 'OVER'} the 1 % budget)"
    )


if __name__ == "__main__":
    main()
