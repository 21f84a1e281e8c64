"""`monitord scan …` and `monitord findings …`: security scans and what they found."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

from monitord.cli.common import (
    actor,
    add_by,
    add_json,
    add_wide,
    app_for,
    catalogue_id,
    file_path,
    print_json,
    row_id,
    time_arg,
)
from monitord.errors import UsageError, ZapOccupied
from monitord.names import FINDING_STATE_NAMES, SEVERITY_NAMES, named
from monitord.textable import format_table
from monitord.timeutil import SHANGHAI, local_text, parse_time
from monitord.types import SEVERITIES

if TYPE_CHECKING:
    from monitord.config import Settings
    from monitord.store import Store

# sqlalchemy, the models, the scan logic and the ZAP client are imported by each handler:
# registering these commands must not load them into every `monitord` process (see monitord.cli).


def cmd_scan(args: argparse.Namespace) -> int:
    """`scan SERVICE_ID [--wait]`, `scan status [--json]`, `scan import FILE --service ID`."""
    words: list[str] = args.words
    if not words:
        raise UsageError("give a service id, `status`, or `import FILE --service ID`")
    if words[0] == "status":
        if len(words) != 1:
            raise UsageError("usage: monitord scan status [--json]")
        _refuse_options(args, "status", wait="--wait", service="--service", any_site="--any-site")
        return _status(args)
    if words[0] == "import":
        _refuse_options(args, "import", wait="--wait", json="--json")
        if len(words) != 2 or not args.service:
            raise UsageError("usage: monitord scan import FILE --service ID [--any-site]")
        try:
            return _import(args, file_path(words[1]))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"import FILE: {exc}") from None
    if len(words) != 1:
        raise UsageError("give one service id")
    _refuse_options(args, "a scan", json="--json", service="--service", any_site="--any-site")
    words = [catalogue_id(words[0])]
    from monitord import aio
    from monitord.scans import (
        driver_settings,
        enqueue_manual,
        run_scan,
        scan_rows,
        scanned_service,
        zap,
    )
    from monitord.scans.target import check_target

    with app_for(args) as app:
        with app.store.session() as session:
            url = scanned_service(session, words[0]).url or ""
        # The whole check the scan makes when it starts (names resolved, redirects followed), so
        # a target ZAP must not scan is told now, in one line, and never queued.
        driver = driver_settings(app.settings)
        aio.run(check_target(url, driver.denied_networks, driver.zap.call_timeout_seconds))
        with app.store.session() as session:
            scan, queued_now = enqueue_manual(
                session, words[0], actor(args), app.clock(), app.settings
            )
            scan_id = scan.id
        if not args.wait:
            said = "queued" if queued_now else "was already queued (no other is queued)"
            print(
                f"scan {scan_id} of {words[0]} {said}; the running daemon starts it "
                f"(`monitord scan status` shows it)"
            )
            return 0
        scanner = zap.ZapScanner(driver, clock=app.clock)
        live = live_daemons(app.store, app.settings, app.clock())
        try:
            state = aio.run(
                run_scan(app.store, app.settings, scanner, scan_id, app.clock, live_daemons=live)
            )
        except ZapOccupied as exc:
            print(f"scan {scan_id} of {words[0]} queued, not run now: {exc}; the daemon runs it")
            return 1
        except KeyboardInterrupt:
            # The scan was queued again (or, cut short, is reconciled once this process is gone).
            print(
                f"monitord: scan {scan_id} of {words[0]} interrupted; the running daemon runs it",
                file=sys.stderr,
            )
            raise
        [row] = [r for r in scan_rows(app.store) if r["id"] == scan_id]
    print(
        f"scan {scan_id} of {words[0]}: {state}; {row['alerts_read']} alerts, "
        f"{row['high']} high and {row['medium']} medium findings "
        f"({row['new']} new, {row['fixed']} fixed)" + (f"; {row['error']}" if row["error"] else "")
    )
    return 0 if state in ("finished", "timed_out") else 1


def _refuse_options(args: argparse.Namespace, used: str, **flags: str) -> None:
    """UsageError naming the first of `flags` (attribute: option) given, which `used` ignores."""
    for attribute, option in flags.items():
        if getattr(args, attribute):
            raise UsageError(f"{option}: not with {used} (see `monitord scan --help`)")


def live_daemons(store: Store, settings: Settings, now: dt.datetime) -> frozenset[str]:
    """The daemons alive on the store: a scan one of them runs is its own."""
    from monitord.cluster import members

    alive = members(store, settings.cluster.lease_seconds, now)
    return frozenset(m.name for m in alive if m.alive)


def _status(args: argparse.Namespace) -> int:
    from monitord.scans import scan_rows

    with app_for(args) as app:
        rows = scan_rows(app.store)
    if args.json:
        print_json(rows)
        return 0
    table = [
        [
            str(r["id"]),
            r["service_id"],
            r["trigger"],
            r["state"],
            local_text(parse_time(r["finished_at"] or r["started_at"] or r["queued_at"])),
            f"{r['step'] or '-'} {r['percent'] or ''}".strip(),
            f"{r['high']}/{r['medium']}",
            r["error"] or "",
        ]
        for r in rows
    ]
    headers = ["ID", "SERVICE", "TRIGGER", "STATE", "SINCE (CST)", "STEP", "HIGH/MED", "ERROR"]
    print(format_table(headers, table, 70))
    return 0


def _import(args: argparse.Namespace, path: str) -> int:
    from sqlalchemy import select

    from monitord.scans import store_findings
    from monitord.scans.report_import import generated_at, read_report, site_problem
    from monitord.store.models import Scan, Service

    with app_for(args) as app:
        now = app.clock()
        with app.store.session() as session:
            service = session.get(Service, args.service)
            if service is None:
                raise UsageError(f"--service {args.service!r}: no such service in the store")
            # The report's findings under the service's URL only, unless --any-site says that
            # another site (a staging copy) stands for the service.
            base_url = None if args.any_site else service.url
            report = read_report(
                path,
                service_id=service.id,
                base_url=base_url,
                max_bytes=app.settings.zap.max_answer_mb << 20,
                max_field_bytes=app.settings.zap.max_field_kb << 10,
            )
            problem = None if base_url is None else site_problem(report, base_url)
            if problem is not None:
                raise UsageError(
                    f"{path}: {problem}; not imported (--any-site imports a report of another "
                    "site that stands for the service, such as a staging copy)"
                )
            # The scan is as old as the report: an old report neither counts as this
            # quarter's scan nor stands for a scan after a later update.
            scanned_at = generated_at(report, now)
            # Keys are unique: a script importing several reports runs more than one a second.
            key = base = f"{service.id}-import-{now:%Y%m%dT%H%M%S}"
            taken = set(
                session.scalars(select(Scan.scan_key).where(Scan.scan_key.like(f"{base}%")))
            )
            number = 1
            while key in taken:
                number += 1
                key = f"{base}-{number}"
            new, still, _fixed = store_findings(
                session, service.id, list(report.findings), now, complete=False
            )
            session.add(
                Scan(
                    service_id=service.id,
                    scan_key=key,
                    trigger="import",
                    state="finished",
                    queued_at=scanned_at,
                    next_attempt_at=scanned_at,
                    started_at=scanned_at,
                    finished_at=scanned_at,
                    progress={"file": path, "sites": list(report.sites)},
                    alerts_read=report.instances,
                    findings_new=new,
                    findings_open=still,
                    high=sum(1 for d in report.findings if d.severity == "high"),
                    medium=sum(1 for d in report.findings if d.severity == "medium"),
                )
            )
    print(
        f"imported {len(report.findings)} findings for {args.service} from {report.program} "
        f"{report.version} of {local_text(scanned_at)} CST ({new} new)"
    )
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    """List findings, or accept one with a reason and an expiry."""
    from sqlalchemy import select

    from monitord.scans import accept_finding
    from monitord.store.findings import finding_dict
    from monitord.store.models import Finding, Service

    if args.accept is None:
        for flag, value in (("--reason", args.reason), ("--until", args.until)):
            if value is not None:
                raise UsageError(f"{flag}: only with --accept ID (to accept a finding)")
    with app_for(args) as app:
        if args.accept is not None:
            if not args.until:
                raise UsageError("--until DATE: an accepted finding needs an expiry date")
            expiry = time_arg("--until", args.until)
            assert expiry is not None  # given: checked above
            # In Asia/Shanghai, so that the dates said back are the ones people read.
            until = expiry.astimezone(SHANGHAI)
            with app.store.session() as session:
                accept_finding(
                    session, args.accept, args.reason or "", until, actor(args), app.clock()
                )
            print(f"finding {args.accept} accepted until {local_text(until)} CST")
            return 0
        with app.store.session() as session:
            query = select(Finding).order_by(Finding.id)
            if args.service:
                # An empty table would read as "nothing found" for a mistyped id.
                if session.get(Service, args.service) is None:
                    raise UsageError(f"--service {args.service!r}: no such service in the store")
                query = query.where(Finding.service_id == args.service)
            if args.risk:
                query = query.where(Finding.severity.in_(args.risk))
            if not args.all:
                query = query.where(Finding.state.in_(("open", "accepted")))
            rows: list[dict[str, Any]] = [finding_dict(f) for f in session.scalars(query)]
    if args.json:
        print_json(rows)
        return 0
    print(
        format_table(
            ["ID", "SEV", "STATE", "CLAUSE", "SERVICE", "RULE", "LAST SEEN (CST)", "SUMMARY"],
            [
                [
                    str(r["id"]),
                    named(r["severity"], SEVERITY_NAMES),
                    named(r["state"], FINDING_STATE_NAMES),
                    r["clause"],
                    r["service_id"] or "-",
                    r["rule"],
                    local_text(parse_time(r["last_seen"])),
                    r["summary"],
                ]
                for r in rows
            ],
            60,
        )
    )
    return 0


def severities(text: str) -> list[str]:
    """An argparse type: a comma-separated list of severities (an unknown one matched nothing)."""
    chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SEVERITIES]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected severities from {', '.join(SEVERITIES)}, e.g. high,medium"
        )
    return chosen


def add_scan_commands(sub: Any) -> None:
    """Register `scan` and `findings` on the main parser's subparsers."""
    p = sub.add_parser(
        "scan",
        help="security scans with ZAP: SERVICE_ID [--wait] | status | import FILE",
        description="monitord scan SERVICE_ID [--wait]  |  monitord scan status [--json]  |  "
        "monitord scan import FILE --service ID [--any-site]",
    )
    p.add_argument(
        "words",
        nargs="*",
        metavar="SERVICE_ID|status|import FILE",
        help="a service to scan, `status` (the scans and their progress), or `import FILE`",
    )
    p.add_argument("--wait", action="store_true", help="run the scan now and wait for it")
    add_json(p, "with status: print a JSON list")
    add_wide(p)
    p.add_argument(
        "--service",
        metavar="ID",
        type=catalogue_id,
        help="with import: the service the report is for",
    )
    p.add_argument(
        "--any-site",
        action="store_true",
        help="with import: the report is of another site that stands for the service (a "
        "staging copy): import its findings of every site",
    )
    add_by(p)
    p.set_defaults(handler=cmd_scan)
    p = sub.add_parser("findings", help="findings: list, or --accept ID with a reason and expiry")
    p.add_argument(
        "--service", metavar="ID", type=catalogue_id, help="only this service's findings"
    )
    p.add_argument("--risk", metavar="LIST", type=severities, help="severities, e.g. high,medium")
    p.add_argument("--all", action="store_true", help="include resolved findings")
    add_json(p, "print a JSON list")
    add_wide(p)
    p.add_argument(
        "--accept",
        type=row_id,
        metavar="ID",
        help="accept a finding as a false positive or tolerated risk",
    )
    p.add_argument("--reason", help="with --accept: why it is accepted (the report shows it)")
    p.add_argument(
        "--until",
        metavar="DATE",
        help="with --accept: when it comes back (ISO 8601, read as Asia/Shanghai: 2027-03-31)",
    )
    add_by(p)
    p.set_defaults(handler=cmd_findings)
