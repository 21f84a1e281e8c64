"""Benchmark: the quarterly report for 2,000 services and a full quarter of data.

What is measured, honestly:

* A SQLite store seeded once (kept in --dir, reused by later runs) with 2026q3 for --services
  services as monitord writes it: every service's catalogue revision, an hourly availability
  roll-up per service for every hour of the quarter (2,000 × 2,208 hours = 4.4 million roll-ups,
  each with its latency histogram), incidents on time and late, finding episodes, a scan per
  service, the log audit, the admin review, evidence, complaints; and a compliance verdict per
  service and rule and a score per service, as the runtime hands them to the report
  (tests/reports/seed.py).
* Each run is a fresh child process doing what `monitord report` does for the PDF:
  `reports.render_quarterly` over the store (reading the quarter, tables, charts, laying out
  every page, the appendix's 2,000 rows included). Time is wall-clock from the call to the
  PDF's bytes; peak memory is the process's own high-water mark (VmHWM, which an exec resets),
  interpreter and imports included. Figures are medians of --runs runs. The target: under 30 s
  and 500 MiB.
* The whole command as an operator types it, `monitord report --quarter 2026q3`, on a copy of
  the store: the compliance rules judged and stored, the services scored, the PDF rendered,
  written and recorded. Wall-clock time, interpreter start included, and the process's own
  peak memory read by GNU time (`/usr/bin/time`, Debian package `time`; skipped without it).

Run: `.venv/bin/python bench/report.py [--services 2000] [--runs 3] [--dir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path: put the project root there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench._proc import peak_mib  # noqa: E402

QUARTER = "2026q3"
TARGET_SECONDS, TARGET_MIB = 30.0, 500.0


def seed(folder: Path, services: int) -> tuple[Path, Path]:
    """Write (or reuse) the seeded store and the verdicts and scores handed to the report."""
    from monitord.store import open_store
    from tests.reports.seed import seed_quarter

    database, judged = folder / f"report-{services}.db", folder / f"report-{services}.pickle"
    if database.exists() and judged.exists():
        return database, judged
    database.unlink(missing_ok=True)
    started = time.perf_counter()
    store = open_store(f"sqlite:///{database}")
    try:
        with store.session() as session:
            seeded = seed_quarter(session, QUARTER, services=services, hours_step=1)
    finally:
        store.dispose()
    judged.write_bytes(pickle.dumps((seeded.verdicts, seeded.scores)))
    size = database.stat().st_size / 2**20
    print(f"seeded {database} ({size:.0f} MiB) in {time.perf_counter() - started:.0f} s")
    return database, judged


def child(database: str, judged: str, output: str) -> None:
    """One measured run: the report rendered from the store, written to `output`."""
    import datetime as dt

    import reports
    from monitord.config import Settings
    from monitord.runtime.reporting import online_availability
    from monitord.store import open_store
    from monitord.timeutil import UTC

    verdicts, scores = pickle.loads(Path(judged).read_bytes())
    store = open_store(f"sqlite:///{database}")
    start = time.perf_counter()
    now = dt.datetime(2026, 10, 2, 1, tzinfo=UTC)
    with store.session() as session:
        report = reports.render_quarterly(
            session,
            Settings(),
            QUARTER,
            verdicts=verdicts,
            scores=scores,
            availability=online_availability(session, Settings(), QUARTER, now),
            now=now,
            formula="得分 = 各项加权和",
        )
    seconds = time.perf_counter() - start
    Path(output).write_bytes(report.pdf)
    peak = peak_mib()
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "pages": report.pages,
                      "bytes": len(report.pdf), "probes": report.figures["probes"]}))  # fmt: skip


def run_command(database: Path, folder: Path) -> dict[str, float] | None:
    """`monitord report --quarter 2026q3` as typed, on a copy of the store: its figures."""
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return None
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        copy = Path(tmp) / "store.db"
        shutil.copyfile(database, copy)
        config = Path(tmp) / "monitord.toml"
        config.write_text(
            f'[store]\nurl = "sqlite:///{copy}"\n[report]\ndir = "{tmp}"\n', encoding="utf-8"
        )
        monitord = Path(sys.executable).parent / "monitord"
        cmd = [str(gnu_time), "-f", "%M", str(monitord), "--config", str(config)]
        start = time.perf_counter()
        done = subprocess.run(
            [*cmd, "report", "--quarter", QUARTER], capture_output=True, text=True, check=True
        )
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mib": int(done.stderr.strip().splitlines()[-1]) / 1024}


def run_child(database: Path, judged: Path, output: Path) -> dict[str, float]:
    """Run `child` in a fresh interpreter and return its figures."""
    cmd = [sys.executable, __file__, "--child", str(database), str(judged), str(output)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    """Seed once, render --runs times, print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "monitord-bench")
    parser.add_argument("--child", nargs=3, metavar=("DB", "JUDGED", "OUT"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    database, judged = seed(args.dir, args.services)
    output = args.dir / f"report-{args.services}.pdf"
    runs = [run_child(database, judged, output) for _ in range(args.runs)]
    seconds = statistics.median(r["seconds"] for r in runs)
    peak = statistics.median(r["peak_mib"] for r in runs)
    first = runs[0]
    print(
        f"report for {args.services} services, {QUARTER} ({first['probes']:,} probes in hourly "
        f"roll-ups): {first['pages']} pages, {first['bytes'] / 2**20:.1f} MiB PDF"
    )
    print(
        f"render: {seconds:.1f} s (target < {TARGET_SECONDS:.0f} s), peak memory {peak:.0f} MiB "
        f"(target < {TARGET_MIB:.0f} MiB); medians of {len(runs)} runs: "
        + ", ".join(f"{r['seconds']:.1f} s / {r['peak_mib']:.0f} MiB" for r in runs)
    )
    print(f"the PDF: {output}")
    whole = [run_command(database, args.dir) for _ in range(args.runs)]
    if whole[0] is None:
        print("monitord report as typed: skipped (GNU time is not installed: apt-get install time)")
        return
    measured = [w for w in whole if w is not None]
    print(
        f"`monitord report --quarter {QUARTER}` as typed (judge, score, render, write, record): "
        f"{statistics.median(w['seconds'] for w in measured):.1f} s, peak "
        f"{statistics.median(w['peak_mib'] for w in measured):.0f} MiB; medians of "
        f"{len(measured)} runs: "
        + ", ".join(f"{w['seconds']:.1f} s / {w['peak_mib']:.0f} MiB" for w in measured)
    )


if __name__ == "__main__":
    main()
