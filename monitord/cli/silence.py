"""`monitord silence add|list|expire`: keep alerts out of chat for a while, audited."""

from __future__ import annotations

import argparse
from typing import Any

from monitord.cli.common import (
    actor,
    add_by,
    add_json,
    add_wide,
    app_for,
    catalogue_id,
    print_json,
    row_id,
    time_arg,
)
from monitord.errors import UsageError
from monitord.textable import format_table
from monitord.timeutil import local_text, parse_time
from monitord.types import INCIDENT_KINDS


def cmd_add(args: argparse.Namespace) -> int:
    """Add a silence and print its id."""
    from monitord.incidents.silences import add_silence, parse_duration, silence_dict

    if args.until is not None and args.duration is not None:
        raise UsageError("--until and --for both say when the silence ends: give one of them")
    if args.until is None and args.duration is None:
        raise UsageError("say when the silence ends: --until TIME or --for DURATION (e.g. 2h)")
    with app_for(args) as app:
        now = app.clock()
        ends_at = time_arg("--until", args.until) or now + parse_duration(args.duration)
        with app.store.session() as session:
            made = add_silence(
                session,
                app.settings.incidents,
                services=args.service or [],
                kinds=args.kind or [],
                rule_names=args.rule or [],
                reason=args.reason,
                ends_at=ends_at,
                actor=actor(args),
                now=now,
            )
            data = silence_dict(made, now)
    if args.json:
        print_json(data)
    else:
        print(f"silence {data['id']} until {local_text(ends_at)} (CST)")
    return 0


def _matchers(row: dict[str, Any]) -> str:
    """What a silence covers, as `service=svc-1,svc-2 kind=outage`."""
    parts = [
        f"{name}={','.join(row[key])}"
        for name, key in (("service", "services"), ("kind", "kinds"), ("rule", "rules"))
        if row[key]
    ]
    return " ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    """List the silences in force (--all: every one ever added)."""
    from monitord.incidents.silences import list_silences, silence_dict

    with app_for(args) as app:
        now = app.clock()
        with app.store.session() as session:
            silences = list_silences(session, now, include_ended=args.all)
            rows = [silence_dict(s, now) for s in silences]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no silence in force" + ("" if args.all else " (--all shows ended ones)"))
        return 0
    table = [
        [
            str(r["id"]),
            "active" if r["active"] else "ended",
            _matchers(r),
            local_text(parse_time(r["expired_at"] or r["ends_at"])),
            r["created_by"],
            r["reason"],
        ]
        for r in rows
    ]
    print(format_table(["ID", "STATE", "MATCHES", "ENDS (CST)", "BY", "REASON"], table))
    return 0


def cmd_expire(args: argparse.Namespace) -> int:
    """End a silence now; one that already ended is said so, with exit status 0."""
    from monitord.incidents.silences import ended_at, expire_silence, get_silence

    with app_for(args) as app:
        who = actor(args)
        now = app.clock()
        with app.store.session() as session:
            ended = ended_at(get_silence(session, args.id))
            if ended <= now:
                # A repeat (or a second person) got what it asked for: a note, exit status 0.
                print(
                    f"silence {args.id} already ended at {local_text(ended)} (CST): nothing changed"
                )
                return 0
            expire_silence(session, args.id, who, now)
    print(f"silence {args.id} ended by {who}")
    return 0


def add_silence_commands(sub: Any) -> None:
    """Register `silence` and its subcommands on the main parser's subparsers."""
    silence = sub.add_parser(
        "silence",
        help="keep alerts out of chat for a while (never the 7.3.3 clock)",
        description="keep an incident's news out of chat for a while, by service, kind or "
        "rule; a security incident's 7.3.3 reminders, escalations and notification still go",
    )
    ssub = silence.add_subparsers(dest="silence_command", required=True, metavar="ACTION")

    p = ssub.add_parser("add", help="add a silence (at least one --service, --kind or --rule)")
    p.add_argument(
        "--service",
        action="append",
        metavar="ID",
        type=catalogue_id,
        help="a service id (repeatable)",
    )
    p.add_argument(
        "--kind",
        action="append",
        metavar="KIND",
        help="an incident kind (repeatable): " + ", ".join(INCIDENT_KINDS) + ", or one the "
        "config adds",
    )
    p.add_argument(
        "--rule", action="append", metavar="R", help="a rule name or glob, zap:* (repeatable)"
    )
    p.add_argument("--reason", required=True, help="why (the quarterly report shows it)")
    p.add_argument("--until", metavar="TIME", help="when it ends (read as Asia/Shanghai)")
    p.add_argument("--for", dest="duration", metavar="DURATION", help="how long: 90m, 2h, 1d")
    add_by(p)
    add_json(p, "print the silence as JSON")
    p.set_defaults(handler=cmd_add)

    p = ssub.add_parser("list", help="silences in force (--all: every one)")
    p.add_argument("--all", action="store_true", help="ended silences too")
    add_json(p, "print a JSON list")
    add_wide(p)
    p.set_defaults(handler=cmd_list)

    p = ssub.add_parser("expire", help="end a silence now")
    p.add_argument("id", type=row_id, help="the silence's number")
    add_by(p)
    p.set_defaults(handler=cmd_expire)
