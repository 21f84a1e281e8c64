"""`monitord analyse`, `monitord usage` and `monitord log-audit`: access logs from the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from monitord.cli.common import (
    add_json,
    add_wide,
    app_for,
    catalogue_id,
    config_path,
    quarter_arg,
    time_arg,
)
from monitord.errors import UsageError
from monitord.names import SEVERITY_NAMES, named
from monitord.textable import format_table
from monitord.timeutil import (
    begun_quarter_bounds,
    local_text,
    parse_time,
    quarter_bounds,
    quarter_start,
)


def _time_range(args: argparse.Namespace) -> tuple[dt.datetime | None, dt.datetime | None]:
    """--since and --until as times; refused when --since is not before --until."""
    since, until = time_arg("--since", args.since), time_arg("--until", args.until)
    if since is not None and until is not None and since >= until:
        raise UsageError(
            f"--since {args.since} is not before --until {args.until}: no time is left"
        )
    return since, until


def _progress() -> Any:
    """A progress line on stderr for large inputs, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    shown = [0]

    def report(lines: int, read: int) -> None:
        if read - shown[0] >= 64 * 1024 * 1024:
            shown[0] = read
            print(
                f"\ranalysed {lines:,} lines, {read / 2**20:,.0f} MiB",
                end="",
                file=sys.stderr,
                flush=True,
            )

    return report


def _check_input(path: str) -> None:
    """Refuse an input that cannot be read, or a folder holding a file that cannot be, before
    any work (an analysis without it would be silently incomplete); warn of a folder without
    files."""
    from monitord.accesslog.sources import folder_files

    item = Path(path)
    try:
        item.stat()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file or directory") from None
    except OSError as exc:  # a name too long for the file system, a loop of links
        raise UsageError(f"{path}: cannot be read ({exc.strerror})") from None
    files = folder_files(item) if item.is_dir() else [item]
    if item.is_dir() and not files:
        print(f"monitord: {path}: no log files in this folder", file=sys.stderr)
    for file in files:
        try:
            file.open("rb").close()
        except OSError as exc:
            inside = f" (in {path}: make it readable, or move it out of the folder)"
            raise UsageError(
                f"{file}: cannot be read ({exc.strerror}){inside if file != item else ''}"
            ) from None


def _distinct_inputs(paths: list[str]) -> list[str]:
    """The inputs without those naming a file already read (the same path twice, a symlink or
    a folder's file given beside it), each left out said on stderr: read twice, every request
    would count twice. A folder whose files are only partly given elsewhere is refused."""
    from monitord.accesslog.sources import distinct_files, file_id, folder_files

    seen: dict[tuple[int, int], Path] = {}
    kept = []
    for path in paths:
        item = Path(path)
        if path == "-" or not item.exists():
            kept.append(path)
            continue
        files, left_out = distinct_files(folder_files(item) if item.is_dir() else [item])
        for name, same in left_out:
            print(f"monitord: {name} is the same file as {same}: read once", file=sys.stderr)
        again = [(file, seen[file_id(file)]) for file in files if file_id(file) in seen]
        if again and len(again) == len(files):
            print(
                f"monitord: {path} is already read (as {again[0][1]}): read once", file=sys.stderr
            )
            continue
        if again:
            file, first = again[0]
            raise UsageError(
                f"{file} in {path} is also given as {first}: give each file once, or the "
                "folder alone"
            )
        seen.update((file_id(file), file) for file in files)
        kept.append(path)
    return kept


def cmd_analyse(args: argparse.Namespace) -> int:
    """Analyse access logs: statistics, rejected lines and abnormal behaviour."""
    # Set before numpy and pyarrow are first imported; a value the user set is kept. numpy starts
    # OpenBLAS's threads at import (one per core), and analysis does no linear algebra: they
    # cost ~60 ms of CPU at start. pyarrow starts its default pool, mimalloc, at import, though
    # analysis allocates through malloc (see `prepare_process`): 2-4 MiB more peak memory.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    from monitord.accesslog.analysis import analyse, analyse_to_json, prepare_process

    prepare_process()
    from monitord.accesslog.configured import make_analyzer

    # Without a config file the built-in [logs] is used as is, and the config's models (pydantic:
    # 0.2 s of CPU and 20 MiB before the first line) are never imported.
    logs = None
    config = config_path(args)
    if config is not None:
        from monitord.config import load_config

        logs = load_config(config).logs
    analyzer = make_analyzer(logs)
    from monitord.runtime.heap import tune_collector

    # Analysis makes many short-lived containers and few cycles, as a probe round does: what
    # start-up built is kept out of the collector's scans, which run less often (~5 % of the time).
    tune_collector()
    options: dict[str, Any] = {
        "service_pattern": analyzer.service_pattern,
        "trusted_proxies": analyzer.trusted_proxies,
    }
    for path in args.paths:
        if path != "-":
            _check_input(path)
    paths = _distinct_inputs(args.paths)
    since, until = _time_range(args)
    options.update(
        fmt=args.format,
        since=since,
        until=until,
        progress=_progress(),
        engine=analyzer.engine,
    )
    if args.json:
        analyse_to_json(paths, sys.stdout, **options)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        return 0
    from monitord.accesslog.stats import counted_rows

    # Requests per service, hour and log format: the edge log and the audit log see the same
    # requests, counted once as `usage` and `log-audit` count them.
    per_hour: dict[tuple[str, str, str], int] = {}

    def count(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key = (row["service"], row["hour"], row["source"])
            per_hour[key] = per_hour.get(key, 0) + int(row["requests"] or 0)

    result = analyse(paths, on_stats=count, **options)
    services: dict[str, int] = {}
    for (service, _hour, _fmt), requests in counted_rows(per_hour.items(), lambda kv: kv[0]):
        services[service] = services.get(service, 0) + requests
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{result.lines:,} lines, {result.rejected:,} could not be read"
        + (f" (e.g. {result.rejected_samples[0][:100]!r})" if result.rejected_samples else "")
    )
    top = sorted(services.items(), key=lambda kv: -kv[1])[:10]
    if top:
        print(format_table(["SERVICE", "REQUESTS"], [[k, f"{v:,}"] for k, v in top]))
    findings = [f.to_json() for f in result.findings]
    print(f"{len(findings)} finding(s)")
    if findings:
        print(
            format_table(
                ["RULE", "CLAUSE", "SEV", "SUBJECT", "COUNT", "FIRST (CST)", "LAST (CST)"],
                [
                    [
                        f["rule"],
                        f["clause"],
                        named(f["severity"], SEVERITY_NAMES),
                        ",".join(f"{k}={v}" for k, v in f["subject"].items()),
                        str(f["count"]),
                        local_text(parse_time(f["first_seen"])),
                        local_text(parse_time(f["last_seen"])),
                    ]
                    for f in findings
                ],
                40,
            )
        )
    return 0


def cmd_usage(args: argparse.Namespace) -> int:
    """How a service was used, from the stored hourly statistics."""
    from monitord.accesslog.work import usage
    from monitord.store.models import Service

    since, until = _time_range(args)
    if since is None and until is not None:
        raise UsageError("--until needs --since (without either: the last full quarter)")
    with app_for(args) as app:
        with app.store.session() as session:
            # Zeros would read as a quiet service for a mistyped id.
            if session.get(Service, args.service) is None:
                raise UsageError(f"{args.service!r}: no such service in the store")
        now = app.clock()
        if since is None:  # default: the last full quarter
            _label, until = quarter_start(now)
            _label, since = quarter_start(until - dt.timedelta(days=1))
        elif until is None:
            until = now
            if since >= until:
                raise UsageError(f"--since {args.since} is in the future: no time is left")
        data = usage(app.store, args.service, since, until)
    if not data["hours"]:
        # Zeros alone would not tell a quiet service from a mistyped id or an unread log.
        print(
            f"monitord: no statistics of {args.service} are stored from {local_text(since)} "
            f"to {local_text(until)} (CST)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
    else:
        shown = dict(data, since=local_text(since) + " CST", until=local_text(until) + " CST")
        for key, value in shown.items():
            print(f"{key:<22} {_usage_text(value)}")
    return 0


def _usage_text(value: Any) -> str:
    """A value of `usage` as a person reads it: counts by key as `200=31, 404=2`, "-" for
    nothing known."""
    if isinstance(value, dict):
        return ", ".join(f"{key}={count:,}" for key, count in value.items()) or "-"
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def cmd_log_audit(args: argparse.Namespace) -> int:
    """Write and show the quarterly log audit (default: the previous quarter)."""
    from monitord.accesslog.work import auditable, log_audit, logs_read_past, previous_quarter

    if args.quarter:
        try:
            quarter_bounds(args.quarter)  # a malformed label is refused before the store opens
        except ValueError as exc:
            raise UsageError(f"--quarter: {exc}") from None
    with app_for(args) as app, app.store.session() as session:
        now = app.clock()
        if args.quarter:
            try:
                begun_quarter_bounds(args.quarter, now)
            except ValueError as exc:
                raise UsageError(f"--quarter: {exc}") from None
        label, start, end = (
            (args.quarter, *quarter_bounds(args.quarter)) if args.quarter else previous_quarter(now)
        )
        if not auditable(session, start, end):
            raise UsageError(
                f"{label}: monitord was not at work then (no catalogue sync before its end) and "
                "holds no log of it: there is nothing to audit"
            )
        audit = log_audit(session, app.settings, now, args.quarter)
        start, end = audit.period_start, audit.period_end
        unread = end <= now and not logs_read_past(session, app.settings, start, end)
        running = end > now
        data: dict[str, Any] = {
            "quarter": audit.quarter,
            "lines": audit.lines,
            "empty_days": audit.empty_days,
            "findings_by_rule": audit.findings_by_rule,
            "vendor_operations": audit.vendor_operations,
            "lines_per_day": audit.lines_per_day,
        }
    if running:
        print(
            f"monitord: {audit.quarter} has not ended: this audit covers it up to now; the "
            "daemon writes the whole quarter's once it has ended",
            file=sys.stderr,
        )
    if unread:
        # The last hours of a log are stored once the log moves past them: not yet, they are
        # missing, and the days they fall on may show as without logs.
        print(
            f"monitord: not every followed log has been read past the end of {audit.quarter} "
            "yet: its last hours may be missing; run log-audit again once they are read",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(data, ensure_ascii=False, indent=2))
        return 0
    print(
        f"log audit {data['quarter']}: {data['lines']:,} lines analysed; "
        f"{len(data['empty_days'])} day(s) without logs; findings by rule: "
        f"{data['findings_by_rule'] or 'none'}; vendor accounts: "
        f"{len(data['vendor_operations'])}"
    )
    return 0


def _add_range(parser: argparse.ArgumentParser) -> None:
    """The --since and --until options."""
    parser.add_argument(
        "--since", metavar="TIME", help="from this time (ISO 8601, read as Asia/Shanghai)"
    )
    parser.add_argument(
        "--until", metavar="TIME", help="up to this time (ISO 8601, read as Asia/Shanghai)"
    )


def add_log_commands(sub: Any) -> None:
    """Register `analyse`, `usage` and `log-audit`."""
    p = sub.add_parser("analyse", help="analyse access logs (nginx combined or the JSON audit log)")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files (.gz too), folders, or -")
    p.add_argument(
        "--format",
        choices=["auto", "nginx", "json"],
        default="auto",
        help="the log format: %(choices)s (default %(default)s: told from the first 20 lines "
        "that are not comments, by majority)",
    )
    _add_range(p)
    add_json(p, "print one JSON object")
    add_wide(p)
    p.set_defaults(handler=cmd_analyse, logs=False)  # it reports on stdout; nothing to log
    p = sub.add_parser("usage", help="how a service was used (default: the last quarter)")
    p.add_argument("service", metavar="SERVICE_ID", type=catalogue_id, help="the catalogue service")
    _add_range(p)
    add_json(p, "print a JSON document")
    p.set_defaults(handler=cmd_usage)
    p = sub.add_parser("log-audit", help="write and show the quarterly log audit (7.3.1)")
    p.add_argument(
        "--quarter", type=quarter_arg, metavar="YYYYqN", help="default: the previous quarter"
    )
    add_json(p, "print a JSON document")
    p.set_defaults(handler=cmd_log_audit)
