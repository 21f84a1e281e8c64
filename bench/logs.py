"""Benchmark: access-log analysis (parse + statistics + every rule) against GoAccess.

What is measured, honestly:

* A generated nginx `combined` log (with request time and X-Forwarded-For) of --lines lines and
  the portal's JSON audit log of the same requests (monitord.demo.synth: a week of
  working-hours weighted traffic of companies, their legal persons, admins and handlers).
* Each run is the command as a user types it, `monitord analyse --json FILE…`, in a process of
  its own: read, parse, statistics per service and hour, all rules of rules/logs.toml, and the
  JSON result. lines/s is lines over wall-clock time, interpreter start included; peak memory is
  that process's own peak RSS, read by GNU time (`/usr/bin/time -f %M`, Debian package `time`),
  whose small process is the one that starts it: a child's ru_maxrss read by this (large)
  script would include this script's memory at the fork. Without GNU time the bench says so
  and measures nothing. CPU time is user + system time of every thread (GNU time's %U + %S):
  on a machine shared with other work, wall time swings with the load, CPU time much less, so
  both are printed, with the load average at the start and at the end. Figures are medians of
  --runs runs.
* Three inputs: the nginx log alone (what GoAccess reads), the JSON log alone, and both.
* Logs of every shape: the nginx log is also written with --escaped shares of its lines (0 %,
  25 % and 100 % by default) carrying what nginx escapes as `\\xXX` (a quoted word in the user
  agent, `\\x22`; UTF-8 in the request target, `\\xE5\\x8A…`), and each is paired with GoAccess.
* Flat memory: a log --repeat times as long (10 M lines by default), made of the nginx log with
  each copy moved on by a month, so time runs forward as in a real log, must peak where the
  1 M-line log does.
* GoAccess, when installed (Debian: `apt-get install goaccess`), reads the same nginx file
  (`--log-format=COMBINED`, JSON output) right after each monitord run on it, timed and measured
  the same way; the machine's speed drifts, so the ratios printed are medians of these pairs.

* Each monitord process runs in an empty folder without $MONITORD_CONFIG: it reads no config
  file (the built-in `[logs]`, and pydantic is never imported), or the one --config names.
* monitord's modules are compiled to bytecode first (`compile_bytecode`), as a regular install
  leaves them: where PYTHONDONTWRITEBYTECODE is set, an editable install would otherwise compile
  every module at every start (~60 ms a run).

Run: `.venv/bin/python bench/logs.py [--lines 1000000] [--runs 5] [--repeat 10] [--escaped 0,25,100]
[--dir DIR] [--config monitord.toml]`.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path: put the project root there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from bench._proc import GNU_TIME, MONITORD, timed  # noqa: E402
from monitord.demo import synth  # noqa: E402

GOACCESS_RATE_NOTE = "GoAccess 1.7 was measured at ~23,000 lines/s and ~240 MiB on the issue's log"


def generate(folder: Path, lines: int, escaped: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) the nginx log and the matching JSON audit log; `escaped` % of the nginx
    lines carry what nginx escapes (`synth.with_escapes`: `\\x22` in the user agent, UTF-8
    in the request target)."""
    tag = f"-e{escaped}" if escaped else ""
    nginx, audit = folder / f"access-{lines}{tag}.log", folder / f"audit-{lines}{tag}.jsonl"
    if nginx.exists() and audit.exists():
        return nginx, audit
    rng = random.Random(5)
    world = synth.make_world(rng, services=60, companies=2000)
    start = synth.local(2026, 6, 1)
    events = synth.stream(world, rng, int(lines * 1.3), start, 7, escaped=escaped / 100)
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


def compile_bytecode() -> None:
    """Compile monitord's modules to bytecode first, as pip does when it installs a package.

    The editable install `make` does leaves that to the first run, and with
    PYTHONDONTWRITEBYTECODE set (as in some CI and container images) every start compiles every
    module again: ~60 ms of a 0.9 s run, measured. Compiled, each run starts as an installed
    monitord does."""
    for package in ("monitord", "rules"):
        compileall.compile_dir(_HERE.parent / package, quiet=1)


def run_child(paths: list[Path], config: Path | None = None) -> dict[str, float]:
    """`monitord analyse --json PATHS` as typed, in a process of its own: its figures. It runs in
    an empty folder: with `config`, it reads that file (`--config`), else no config at all (a
    monitord.toml in the bench's folder would be read otherwise, and pydantic with it)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        given = ["--config", str(config.resolve())] if config is not None else []
        cmd = [MONITORD, *given, "analyse", "--json", *map(str, paths)]
        seconds, peak, cpu = timed(cmd, out, cwd=Path(tmp))
        result = json.loads(out.read_text(encoding="utf-8"))
    return {"lines": result["lines"], "seconds": seconds, "peak_mib": peak or 0.0,
            "cpu": cpu or 0.0, "findings": len(result["findings"]),
            "rejected": result["rejected"]}  # fmt: skip


def run_goaccess(path: Path, lines: int) -> dict[str, float] | None:
    """GoAccess on the same file: lines/s by wall clock, its process's own peak RSS."""
    exe = shutil.which("goaccess")
    if exe is None or GNU_TIME is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [exe, str(path), "--log-format=COMBINED", "--no-progress", "-o", f"{tmp}/out.json"]
        seconds, peak, cpu = timed(cmd, Path(tmp) / "stdout")
    return {"lines": lines, "seconds": seconds, "peak_mib": peak or 0.0, "cpu": cpu or 0.0}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: the machine's other work, beside every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Median lines/s and peak MiB over runs."""
    return {
        "lines": runs[0]["lines"],
        "rate": statistics.median(r["lines"] / r["seconds"] for r in runs),
        "peak_mib": statistics.median(r["peak_mib"] for r in runs),
        "cpu": statistics.median(r.get("cpu", 0.0) for r in runs),
        "findings": runs[0].get("findings", 0),
    }


def main() -> None:
    """Generate, measure, compare, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=10, help="copies in the long log (flatness)")
    parser.add_argument(
        "--escaped",
        default="0,25,100",
        help="shares (%%) of nginx lines with escapes, each compared with GoAccess",
    )
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "monitord-bench")
    parser.add_argument(
        "--config",
        type=Path,
        help="a config file monitord reads (e.g. monitord.toml); default none, the built-in one",
    )
    args = parser.parse_args()
    if GNU_TIME is None:
        # Each run's own peak memory and its whole wall time, start-up included, are read by
        # GNU time around the command as typed; a figure measured any other way would not be
        # the same figure.
        print("GNU time is not installed: this bench needs it (apt-get install time); skipped")
        return

    args.dir.mkdir(parents=True, exist_ok=True)
    compile_bytecode()
    shares = [int(x) for x in args.escaped.split(",")]
    t = time.perf_counter()
    logs = {share: generate(args.dir, args.lines, share) for share in shares}
    nginx, audit = logs[shares[0]]
    sizes = f"{nginx.stat().st_size >> 20} MiB, {audit.stat().st_size >> 20} MiB"
    print(f"logs: {nginx}, {audit} ({sizes}), ready in {time.perf_counter() - t:.0f} s")
    print(f"cores: {os.cpu_count()}; load average at the start: {load_average()}")
    print(f"config read by monitord: {args.config or 'none (the built-in [logs])'}")

    # The machine's speed drifts (shared hosts): each monitord run on an nginx log is paired
    # with a GoAccess run right after it, and the ratio is the median of the pairs' ratios.
    paired: dict[int, list[tuple[dict[str, float], dict[str, float] | None]]] = {
        share: [
            (run_child([logs[share][0]], args.config), run_goaccess(logs[share][0], args.lines))
            for _ in range(args.runs)
        ]
        for share in shares
    }
    pairs = paired[shares[0]]
    rows: list[tuple[str, dict[str, float]]] = [
        (f"nginx {share}% esc", median_of([m for m, _ in paired[share]])) for share in shares
    ]
    for k, (name, paths) in enumerate((("json", [audit]), ("nginx+json", [nginx, audit])), 1):
        rows.insert(k, (name, median_of([run_child(paths, args.config) for _ in range(args.runs)])))
    long_log = longer(args.dir, nginx, args.repeat)
    grown = median_of([run_child([long_log], args.config) for _ in range(args.runs)])
    rows.append((f"nginx x{args.repeat}", grown))
    goaccess = [g for _, g in pairs if g]

    print(f"\n{'input':<14}{'lines':>12}{'lines/s':>12}{'peak MiB':>10}{'CPU s':>8}"
          f"{'findings':>10}")  # fmt: skip
    for name, m in rows:
        print(f"{name:<14}{m['lines']:>12,.0f}{m['rate']:>12,.0f}{m['peak_mib']:>10.0f}"
              f"{m['cpu']:>8.2f}{m['findings']:>10.0f}")  # fmt: skip
    one, many = rows[0][1]["peak_mib"], grown["peak_mib"]
    print(f"\nmemory as the log grows: {one:.0f} MiB for {args.lines:,} lines, {many:.0f} MiB "
          f"for {args.repeat * args.lines:,} lines")  # fmt: skip
    if goaccess:
        g = median_of(goaccess)
        print(f"GoAccess      {g['lines']:>12,.0f}{g['rate']:>12,.0f}{g['peak_mib']:>10.0f}"
              f"{g['cpu']:>8.2f}")  # fmt: skip
        for share in shares:
            done = [(m, g_) for m, g_ in paired[share] if g_]
            speed = statistics.median(g_["seconds"] / m["seconds"] for m, g_ in done)  # same lines
            memory = statistics.median(m["peak_mib"] / g_["peak_mib"] for m, g_ in done)
            cpu = statistics.median(g_["cpu"] / m["cpu"] for m, g_ in done if m["cpu"])
            print(
                f"ratio (nginx, {share}% of lines escaped, all rules on, median of {len(done)} "
                f"pairs): {speed:.2f}x GoAccess's lines/s ({cpu:.2f}x by CPU time), "
                f"{memory:.2f}x its peak memory"
            )
        both = rows[2][1]
        print(
            f"ratio (both logs, all rules on): {both['rate'] / g['rate']:.2f}x GoAccess's lines/s"
        )
        mine = rows[0][1]
        print(f"against the issue's figure: {mine['rate'] / 23_000:.1f}x ({GOACCESS_RATE_NOTE})")
    print(f"load average at the end: {load_average()}")
    if not goaccess:
        print(
            "GoAccess (or GNU time, to read its peak) is not installed: `apt-get install "
            "goaccess time` (Debian) to compare; skipped. " + GOACCESS_RATE_NOTE
        )


if __name__ == "__main__":
    main()
