"""`monitord report` and `monitord reports`: the quarterly report written, and those recorded."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from monitord.cli.common import (
    add_wide,
    app_for,
    file_path,
    print_json,
    progress_line,
    quarter_arg,
)
from monitord.textable import format_table
from monitord.timeutil import local_text, parse_time, quarter_start


def cmd_report(args: argparse.Namespace) -> int:
    """Write a quarter's report (PDF), record it, and print its path, SHA-256 and pages."""
    from monitord.runtime.reporting import write_report

    with app_for(args) as app:
        now = app.clock()
        quarter = args.quarter
        if quarter == quarter_start(now)[0]:
            progress_line(f"{quarter} is not over: the report covers it up to now")
        written = write_report(
            app.store,
            app.settings,
            quarter,
            now,
            out=Path(args.out) if args.out else None,
            progress=progress_line,
        )
    print(f"report {written.quarter}: {written.path}")
    print(f"sha256 {written.sha256}")
    print(f"pages  {written.pages}")
    return 0


def _sent(row: dict[str, Any]) -> tuple[str, str]:
    """The SENT TO and DELIVERED (CST) cells of a recorded report."""
    sent_to = ", ".join(row["sent_to"]) or "-"
    delivered = row["delivered_at"]
    return sent_to, local_text(parse_time(delivered)) if delivered else "-"


def cmd_reports(args: argparse.Namespace) -> int:
    """List the recorded quarterly reports, newest first."""
    from monitord.runtime.reporting import report_rows

    with app_for(args) as app:
        rows = report_rows(app.store)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no reports yet: write one with `monitord report --quarter 2026q3`")
        return 0
    table = [
        [
            row["quarter"],
            local_text(parse_time(row["generated_at"])),
            row["sha256"][:12],
            str(row["pages"]),
            *_sent(row),
            row["path"],
        ]
        for row in rows
    ]
    headers = ["QUARTER", "GENERATED (CST)", "SHA256", "PAGES", "SENT TO", "DELIVERED (CST)"]
    print(format_table([*headers, "PATH"], table, 80))
    return 0


def add_report_commands(sub: Any) -> None:
    """Add `report` and `reports` to the subcommand parser."""
    p = sub.add_parser(
        "report",
        help="write a quarter's compliance report (PDF) and record it",
        description="Write a quarter's compliance report for the management unit (a PDF in "
        "Chinese), record it, and print its path, SHA-256 and number of pages.",
    )
    p.add_argument(
        "--quarter", required=True, type=quarter_arg, metavar="YYYYqN", help="such as 2026q3"
    )
    p.add_argument(
        "--out",
        metavar="FILE.pdf",
        type=file_path,
        help="where to write it (default: [report] dir/monitord-YYYYqN.pdf)",
    )
    p.set_defaults(handler=cmd_report)
    p = sub.add_parser(
        "reports",
        help="list the recorded quarterly reports",
        description="List the recorded quarterly reports: quarter, when generated, SHA-256, "
        "pages, the channels it was sent to and when its e-mail was delivered.",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_wide(p)
    p.set_defaults(handler=cmd_reports)
