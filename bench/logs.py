"""Benchmark: access-log analysis (parse + statistics + every rule) against GoAccess.

What is measured, honestly:

* A generated nginx `combined` log (with request time and X-Forwarded-For) of --lines lines and
  the portal's JSON audit log of the same requests (monitord.demo.synth: a week of
  working-hours weighted traffic of companies, their legal persons, admins and handlers).
* Each run is a fresh child process doing exactly what `monitord analyse` does: read, parse,
  statistics per service and hour, all rules of rules/logs.toml, and the JSON result. lines/s is
  lines over wall-clock time; peak memory is the child's peak RSS (ru_maxrss), interpreter and
  imports included. Figures are medians of --runs runs.
* Three inputs: the nginx log alone (what GoAccess reads), the JSON log alone, and both.
* Flat memory: a log --repeat times as long (10 M lines by default), made of the nginx log with
  each copy moved on by a month, so time runs forward as in a real log, must peak where the
  1 M-line log does.
* GoAccess, when installed (Debian: `apt-get install goaccess`), reads the same nginx file
  (`--log-format=COMBINED`, JSON output) right after each monitord run on it, timed and measured
  the same way; the machine's speed drifts, so the ratios printed are medians of these pairs.

Run: `.venv/bin/python bench/logs.py [--lines 1000000] [--runs 5] [--repeat 10] [--dir DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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

from monitord.demo import synth  # noqa: E402

GOACCESS_RATE_NOTE = "GoAccess 1.7 was measured at ~23,000 lines/s and ~240 MiB on the issue's log"


def generate(folder: Path, lines: int) -> tuple[Path, Path]:
    """Write (or reuse) the nginx log and the matching JSON audit log."""
    nginx, audit = folder / f"access-{lines}.log", folder / f"audit-{lines}.jsonl"
    if nginx.exists() and audit.exists():
        return nginx, audit
    rng = random.Random(5)
    world = synth.make_world(rng, services=60, companies=2000)
    events = synth.stream(world, rng, int(lines * 1.3), synth.local(2026, 6, 1), 7)
    written = 0
    with nginx.open("w", encoding="utf-8") as ng, audit.open("w", encoding="utf-8") as js:
        for e in events:
            ng.write(synth.nginx_line(e))
            js.write(synth.json_line(e))
            written += 1
            if written >= lines:
                break
    return nginx, audit


def longer(folder: Path, nginx: Path, copies: int) -> Path:
    """The nginx log `copies` times over, each copy a month later than the one before."""
    out = folder / f"{nginx.stem}-x{copies}.log"
    if out.exists():
        return out
    data = nginx.read_bytes()
    first = b"/Jun/2026:"
    months = ["Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec", "Jan", "Feb", "Mar", "Apr", "May"]
    with out.open("wb") as fh:
        for k in range(copies):
            year = 2026 + (5 + k) // 12
            fh.write(data.replace(first, f"/{months[k % 12]}/{year}:".encode()))
    return out


def child(paths: list[str], output: str) -> None:
    """One measured run: what `monitord analyse --json` does, output written to `output`."""
    import rules
    from monitord.accesslog.analysis import analyse_to_json, prepare_process

    prepare_process()  # as `monitord analyse` does
    start = time.perf_counter()
    with open(output, "w", encoding="utf-8") as out:
        result = analyse_to_json(paths, out, engine=rules.log_rule_engine())
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"lines": result.lines, "seconds": seconds, "peak_mib": peak,
                      "findings": len(result.findings), "rejected": result.rejected}))  # fmt: skip


def run_child(paths: list[Path]) -> dict[str, float]:
    """Run `child` in a fresh interpreter and return its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, __file__, "--output", f"{tmp}/out.json", "--child", *map(str, paths)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run_goaccess(path: Path, lines: int) -> dict[str, float] | None:
    """GoAccess on the same file: lines/s by wall clock, peak RSS of its process."""
    exe = shutil.which("goaccess")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, str(path), "--log-format=COMBINED", "--no-progress", "-o", f"{tmp}/out.json"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    if status != 0:
        return None
    return {"lines": lines, "seconds": seconds, "peak_mib": usage.ru_maxrss / 1024}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median lines/s and peak MiB over runs."""
    return {
        "lines": runs[0]["lines"],
        "rate": statistics.median(r["lines"] / r["seconds"] for r in runs),
        "peak_mib": statistics.median(r["peak_mib"] for r in runs),
        "findings": runs[0].get("findings", 0),
    }


def main() -> None:
    """Generate, measure, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=10, help="copies in the long log (flatness)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "monitord-bench")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=os.devnull, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.output)
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    nginx, audit = generate(args.dir, args.lines)
    sizes = f"{nginx.stat().st_size >> 20} MiB, {audit.stat().st_size >> 20} MiB"
    print(f"logs: {nginx}, {audit} ({sizes}), ready in {time.perf_counter() - t:.0f} s")

    # The machine's speed drifts (shared hosts): each monitord run on the nginx log is paired
    # with a GoAccess run right after it, and the ratio is the median of the pairs' ratios.
    pairs: list[tuple[dict[str, float], dict[str, float] | None]] = [
        (run_child([nginx]), run_goaccess(nginx, args.lines)) for _ in range(args.runs)
    ]
    rows: list[tuple[str, dict[str, float]]] = [("nginx", median_of([m for m, _ in pairs]))]
    for name, paths in (("json", [audit]), ("nginx+json", [nginx, audit])):
        rows.append((name, median_of([run_child(paths) for _ in range(args.runs)])))
    long_log = longer(args.dir, nginx, args.repeat)
    grown = median_of([run_child([long_log]) for _ in range(args.runs)])
    rows.append((f"nginx x{args.repeat}", grown))
    goaccess = [g for _, g in pairs if g]

    print(f"\n{'input':<14}{'lines':>12}{'lines/s':>12}{'peak MiB':>10}{'findings':>10}")
    for name, m in rows:
        print(f"{name:<14}{m['lines']:>12,.0f}{m['rate']:>12,.0f}{m['peak_mib']:>10.0f}"
              f"{m['findings']:>10.0f}")  # fmt: skip
    one, many = rows[0][1]["peak_mib"], grown["peak_mib"]
    print(f"\nmemory as the log grows: {one:.0f} MiB for {args.lines:,} lines, {many:.0f} MiB "
          f"for {args.repeat * args.lines:,} lines")  # fmt: skip
    if goaccess:
        g = median_of(goaccess)
        print(f"GoAccess      {g['lines']:>12,.0f}{g['rate']:>12,.0f}{g['peak_mib']:>10.0f}")
        mine = rows[0][1]
        speed = statistics.median(
            (m["lines"] / m["seconds"]) / (g_["lines"] / g_["seconds"]) for m, g_ in pairs if g_
        )
        memory = statistics.median(m["peak_mib"] / g_["peak_mib"] for m, g_ in pairs if g_)
        print(f"ratio (nginx, all rules on, median of {len(goaccess)} paired runs): {speed:.2f}x "
              f"GoAccess's lines/s, {memory:.2f}x its peak memory")  # fmt: skip
        both = rows[2][1]
        print(
            f"ratio (both logs, all rules on): {both['rate'] / g['rate']:.2f}x GoAccess's lines/s"
        )
        print(f"against the issue's figure: {mine['rate'] / 23_000:.1f}x ({GOACCESS_RATE_NOTE})")
    else:
        print(
            "GoAccess is not installed: `apt-get install goaccess` (Debian) to compare; "
            "skipped. " + GOACCESS_RATE_NOTE
        )


if __name__ == "__main__":
    main()
