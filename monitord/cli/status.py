"""`monitord status`: what is wrong now, in the terminal, for people and scripts.

The same reading of the store as the status page (monitord.runtime.status): services down or
degraded, open incidents with the minutes left on their two-hour clocks, silences in force, and
alerts stuck in the outbox. Exits 1 when a service is down, else 0.
"""

from __future__ import annotations

import argparse
from typing import Any

from monitord.cli.common import add_wide, app_for, print_json
from monitord.cli.incidents import incident_table
from monitord.names import SERVICE_STATE_NAMES, named
from monitord.textable import format_table
from monitord.timeutil import local_text, parse_time


def _local(iso: str | None) -> str:
    return local_text(parse_time(iso)) if iso else "-"


def _scope(silence: dict[str, Any]) -> str:
    parts = [
        f"{label} {','.join(map(str, silence[key]))}"
        for key, label in (("services", "service"), ("kinds", "kind"), ("rules", "rule"))
        if silence[key]
    ]
    return "; ".join(parts) or "everything"


def cmd_status(args: argparse.Namespace) -> int:
    """Print what is wrong now; exit 1 when a service is down."""
    from monitord.runtime.status import read_status

    with app_for(args) as app, app.store.session() as session:
        status = read_status(session, app.clock())
    if args.json:
        print_json({**status.as_json(), "anything_down": status.anything_down})
        return 1 if status.anything_down else 0
    counts = status.counts
    print(
        f"services: {counts['down']} down, {counts['degraded']} degraded, {counts['up']} up, "
        f"{counts['unknown']} not judged yet, {counts['suspended']} suspended  "
        f"(at {local_text(status.now)} CST)"
    )
    if status.troubled:
        print()
        rows = [
            [
                s["id"],
                s["name"],
                named(s["state"], SERVICE_STATE_NAMES).upper(),
                _local(s["since"]),
                s["last_error"] or "-",
            ]
            for s in status.troubled
        ]
        print(format_table(["ID", "NAME", "STATE", "SINCE (CST)", "LAST ERROR"], rows, 60))
    print()
    if status.incidents:
        print(f"open incidents: {len(status.incidents)}")
        print(incident_table(status.incidents))
    else:
        print("open incidents: none")
    print()
    if status.silences:
        print(f"silences in force: {len(status.silences)}")
        rows = [
            [f"#{s['id']}", _scope(s), s["reason"], s["created_by"], _local(s["ends_at"])]
            for s in status.silences
        ]
        print(format_table(["ID", "SILENCES", "REASON", "BY", "ENDS (CST)"], rows))
    else:
        print("silences in force: none")
    if status.stuck_total:
        oldest = status.stuck[0]
        print()
        print(
            f"alerts stuck in the outbox: {status.stuck_total} (the oldest since "
            f"{_local(oldest['created_at'])}, to {oldest['channel']}: "
            f"{oldest['last_error'] or 'not sent yet'}); is the daemon running?"
        )
    return 1 if status.anything_down else 0


def add_status_command(sub: Any) -> None:
    """Register `status` on the main parser's subparsers."""
    p = sub.add_parser(
        "status",
        help="what is wrong now: services down or degraded, incidents, silences (exit 1: down)",
        description="what is wrong now: services down or degraded, open incidents with the "
        "minutes left on their two-hour clocks, silences in force; exits 1 when a service is "
        "down, 0 otherwise",
    )
    p.add_argument("--json", action="store_true", help="print a JSON document")
    add_wide(p)
    p.set_defaults(handler=cmd_status)
