"""`monitord incidents …`: list, show, open, ack, notify and resolve incidents."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from monitord.cli.common import (
    actor,
    add_by,
    add_json,
    add_wide,
    app_for,
    catalogue_id,
    positive_int,
    print_json,
    row_id,
    time_arg,
)
from monitord.names import CLASS_NAMES, INCIDENT_STATE_NAMES, KIND_NAMES, SEVERITY_NAMES, named
from monitord.redact import one_line
from monitord.textable import format_table
from monitord.timeutil import local_text, parse_time
from monitord.types import AVAILABILITY_KINDS, SECURITY_KINDS, SEVERITIES

# The store, the models and the incident logic are imported by each handler: registering these
# commands must not load sqlalchemy into every `monitord` process (see monitord.cli).
if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from monitord.store.models import Incident

    Transition = Callable[[Session, int, str, dt.datetime, str], Incident]


def _local(iso: str) -> str:
    """A stored ISO time as people read it: Asia/Shanghai, to the minute."""
    return local_text(parse_time(iso))


def cmd_list(args: argparse.Namespace) -> int:
    """List incidents: the active ones, and those resolved with their 7.3.3 notification still
    due (--all: every one)."""
    from sqlalchemy import select

    from monitord.incidents import incident_dict, still_due
    from monitord.store.models import Incident

    with app_for(args) as app:
        now = app.clock()
        with app.store.session() as session:
            query = select(Incident).order_by(Incident.id.desc()).limit(args.limit)
            if not args.all:
                query = query.where(still_due())
            rows = [incident_dict(i, now) for i in session.scalars(query)]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no active incidents" + ("" if args.all else " (--all shows resolved ones)"))
        return 0
    print(incident_table(rows))
    return 0


def clock_text(r: dict[str, Any]) -> str:
    """An incident's 7.3.3 clock (an incident_dict) in a few words: by when and minutes left,
    sent but not delivered, received, late."""
    clock = "-"
    if r["notified_at"]:
        clock = ("LATE " if r["late"] else "") + "received " + _local(r["notified_at"])
    elif r["notification_sent_at"]:
        clock = ("LATE " if r["late"] else "") + "sent, NOT DELIVERED"
        clock += f" (by {_local(r['notify_by'])})" if r["notify_by"] else ""
    elif r["notify_by"]:
        clock = ("LATE " if r["late"] else "") + f"by {_local(r['notify_by'])}"
        clock += f" ({minutes_text(r['minutes_left'])})"
    return clock


def minutes_text(minutes_left: int) -> str:
    """The minutes left to notify the management unit, as on-call staff read them:
    "剩余 35 分钟", or "已逾期 20 分钟" once the deadline has passed."""
    return f"剩余 {minutes_left} 分钟" if minutes_left >= 0 else f"已逾期 {-minutes_left} 分钟"


def state_text(r: dict[str, Any]) -> str:
    """An incident's state (an incident_dict) with its Chinese name; a security incident
    resolved before the management unit received its notification says that it is still due."""
    text = named(r["state"], INCIDENT_STATE_NAMES)
    if r["state"] == "resolved" and r["class"] == "security" and not r["notified_at"]:
        text += ", NOT NOTIFIED 未通报"
    return text


def incident_table(rows: list[dict[str, Any]]) -> str:
    """Incidents (incident_dicts) as the table `incidents list` and `status` print."""
    table = [
        [
            str(r["id"]),
            named(r["class"], CLASS_NAMES),
            named(r["kind"], KIND_NAMES),
            named(r["severity"], SEVERITY_NAMES),
            state_text(r),
            ",".join(r["services"]) or "-",
            clock_text(r),
            r["summary"],
        ]
        for r in rows
    ]
    return format_table(
        ["ID", "CLASS", "KIND", "SEV", "STATE", "SERVICES", "7.3.3 CLOCK", "SUMMARY"], table
    )


def _incident_findings(session: Session, incident_id: int) -> list[dict[str, Any]]:
    """The findings that opened or joined an incident (in any of their episodes), by id."""
    from monitord.incidents import incident_findings
    from monitord.store.findings import finding_dict

    return [finding_dict(f) for f in incident_findings(session, incident_id)]


def _clock_line(data: dict[str, Any]) -> str | None:
    """The 7.3.3 clock of a security incident not yet notified, in words; else None."""
    if data["notified_at"] or data["minutes_left"] is None:
        return None
    sent = " (sent, NOT DELIVERED)" if data["notification_sent_at"] else ""
    return f"notify by {_local(data['notify_by'])}: {minutes_text(data['minutes_left'])}{sent}"


def cmd_show(args: argparse.Namespace) -> int:
    """Show one incident: its facts, 7.3.3 clock, findings, timeline and alerts."""
    from sqlalchemy import select

    from monitord.incidents import draft_facts, get_incident, incident_dict, timeline
    from monitord.store.models import OutboxAlert

    with app_for(args) as app:
        now = app.clock()
        with app.store.session() as session:
            incident = get_incident(session, args.id)
            data = incident_dict(incident, now)
            data["findings"] = _incident_findings(session, incident.id)
            data["timeline"] = timeline(session, incident.id)
            data["draft"] = draft_facts(session, incident)
            data["alerts"] = [
                {
                    "kind": a.kind,
                    "state": a.state,
                    "attempts": a.attempts,
                    "created_at": a.created_at.isoformat(),
                    "delivered_at": a.delivered_at.isoformat() if a.delivered_at else None,
                    "last_error": a.last_error,
                }
                for a in session.scalars(
                    select(OutboxAlert)
                    .where(
                        OutboxAlert.incident_id == incident.id, OutboxAlert.parent_id.is_not(None)
                    )
                    .order_by(OutboxAlert.id)
                )
            ]
    if args.json:
        print_json(data)
        return 0
    print_incident(data)
    return 0


def print_incident(data: dict[str, Any]) -> None:
    """The text of `incidents show`: times in Asia/Shanghai to the minute, codes with their
    Chinese names, the clock in minutes left or overdue."""
    # Summaries and subjects quote catalogue and log text: one line each, whatever they hold.
    print(f"incident {data['id']}: {one_line(data['summary'])}")
    names = {
        "class": CLASS_NAMES,
        "kind": KIND_NAMES,
        "severity": SEVERITY_NAMES,
        "state": INCIDENT_STATE_NAMES,
    }
    times = ("occurred_at", "detected_at", "notify_by", "notification_sent_at", "notified_at")
    for key in (
        *names,
        "services",
        "subjects",
        *times,
        "notified_via",
        "late",
        "acknowledged_by",
    ):
        value = data[key]
        if key in names:
            value = named(value, names[key])
        elif key in times:
            value = f"{_local(value)} CST" if value else "-"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        elif isinstance(value, bool):
            value = "yes 是" if value else "no 否"
        elif value is None:
            value = "-"
        print(f"  {key:<20} {one_line(str(value))}")
    clock = _clock_line(data)
    if clock:
        print(f"  {'7.3.3 clock':<20} {clock}")
    print(f"findings ({len(data['findings'])}):")
    for f in data["findings"]:
        print(
            f"  #{f['id']}  {named(f['severity'], SEVERITY_NAMES)}  {f['rule']} ({f['clause']})  "
            f"{f['subject']}  x{f['count']}  last {_local(f['last_seen'])}  "
            f"{one_line(f['summary'])}"
        )
    print("timeline (CST):")
    for event in data["timeline"]:
        note = (event["detail"] or {}).get("note")
        print(
            f"  {_local(event['at'])}  {event['kind']:<14} {event['actor']}"
            + (f"  {one_line(note)}" if note else "")
        )
    print("alerts:")
    for alert in data["alerts"]:
        print(
            f"  {alert['kind']:<12} {alert['state']:<10} attempts {alert['attempts']}  "
            f"{_local(alert['created_at'])}"
            + (f"  {one_line(alert['last_error'])}" if alert["last_error"] else "")
        )


def cmd_open(args: argparse.Namespace) -> int:
    """Register an incident reported from outside (a phone call, a provider's report)."""
    from monitord.incidents import incident_dict, open_manual

    with app_for(args) as app:
        now = app.clock()
        occurred = time_arg("--occurred-at", args.occurred_at)
        with app.store.session() as session:
            incident = open_manual(
                session,
                app.settings,
                args.kind,
                list(dict.fromkeys(args.service)),  # --service a --service a: listed once
                args.summary,
                actor(args),
                now,
                occurred,
                args.severity,
            )
            data = incident_dict(incident, now)
    if args.json:
        print_json(data)
    else:
        print(data["id"])
    return 0


def _transition(
    args: argparse.Namespace, change: Transition, done: str, already: tuple[str, ...]
) -> int:
    """Apply one state change to the incident named on the command line, as the caller.

    An incident already in one of the `already` states is left as it is and said so, with exit
    status 0: a script (or a second person at 3 a.m.) repeating the command got what it asked.
    The incident is held while its state is read, so that a change another session makes at
    the same moment is seen here as such, not refused by the change itself.
    """
    from monitord.incidents import held_incident

    with app_for(args) as app:
        who = actor(args)
        with app.store.session() as session:
            incident = held_incident(session, args.id)
            if incident.state in already and (done != "acknowledged" or incident.acknowledged_by):
                by = f" by {incident.acknowledged_by}" if done == "acknowledged" else ""
                print(
                    f"incident {incident.id} is already {done}{by} "
                    f"({named(incident.state, INCIDENT_STATE_NAMES)}): nothing changed"
                )
                return 0
            incident = change(session, args.id, who, app.clock(), args.note or "")
            print(f"incident {incident.id} {done} by {who}")
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    """Acknowledge an incident."""
    from monitord.incidents import acknowledge

    return _transition(args, acknowledge, "acknowledged", ("acknowledged", "notified"))


def cmd_resolve(args: argparse.Namespace) -> int:
    """Resolve an incident."""
    from monitord.incidents import resolve

    return _transition(args, resolve, "resolved", ("resolved", "closed"))


def cmd_close(args: argparse.Namespace) -> int:
    """Close a resolved incident."""
    from monitord.incidents import close

    return _transition(args, close, "closed", ("closed",))


def cmd_notify(args: argparse.Namespace) -> int:
    """Send the clause 7.3.3 notification (or a follow-up) to the management unit, or record
    one made by phone or in person."""
    from monitord import aio
    from monitord.config import SECRET_ENV, urls_needing_smtp_password
    from monitord.incidents import confirm_deliveries, get_incident, notify_management
    from monitord.runtime.delivery import deliver_alerts

    with app_for(args) as app:
        parts = {
            "scope": args.scope,
            "harm": args.harm,
            "measures": args.measures,
            "rectification": args.rectification,
        }
        at = time_arg("--at", args.at)
        # A shell without the daemon's SMTP password would only fail (and count an attempt the
        # daemon then waits out) on a channel that needs it: the daemon delivers it all.
        needing_password = (
            [
                key
                for key in urls_needing_smtp_password(app.settings.alerts)
                if key.startswith("alerts.management[")
            ]
            if app.settings.secrets.smtp_password is None
            else []
        )
        with app.store.session() as session:
            notify_management(
                session,
                app.settings,
                args.id,
                parts,
                actor(args),
                app.clock(),
                out_of_band=args.out_of_band,
                at=at,
            )
        report = None
        if args.out_of_band is None and not needing_password:
            report = aio.run(
                deliver_alerts(app, incident_id=args.id, kinds=("notification", "update"))
            )
        with app.store.session() as session:
            confirm_deliveries(
                session
            )  # what the channel took counts now, not at the daemon's pass
            incident = get_incident(session, args.id)
            delivered, late, klass = incident.notified_at, incident.late, incident.klass
    if args.out_of_band is not None:
        made = local_text(at or app.clock())
        print(
            f"notification for incident {args.id} made out of band at {made} (CST): "
            f"{args.out_of_band.strip()}"
        )
    else:
        print(f"notification for incident {args.id} submitted at {local_text(app.clock())} (CST)")
        if report is None:
            print(
                f"queued: the running daemon delivers it ({needing_password[0]} needs the SMTP "
                f"password, and this shell has no {SECRET_ENV['alerts', 'smtp_password']})"
            )
        elif report.failed:
            print(
                "not delivered yet: the management channel could not be reached now; it waits in "
                "the outbox and the running daemon will deliver it. Until a channel takes it, the "
                "incident is not notified: phone it in if it is urgent and record that with "
                "--out-of-band"
            )
        elif delivered is None:
            # Nothing failed, and nothing was left for this command to send: another process
            # claimed the copy first, or the channel's pace holds it for the next minute.
            print(
                "not delivered by this command: another monitord process (the running daemon) "
                "is sending it, or the channel's alerts.rate_per_minute holds it for a moment; it "
                f"waits in the outbox. `monitord incidents show {args.id}` says when the "
                "management unit received it"
            )
        else:
            print(f"delivered to {report.delivered} channel(s)")
    if delivered is not None:
        print(
            f"the management unit received it at {local_text(delivered)} (CST): "
            + (
                "an availability incident has no 7.3.3 deadline"
                if klass != "security"
                else "LATE, after its 7.3.3 deadline"
                if late
                else "within the deadline"
            )
        )
    elif late:
        print("its 7.3.3 deadline has passed: the incident is marked late")
    return 0


def add_incident_commands(sub: Any) -> None:
    """Register `incidents` and its subcommands on the main parser's subparsers."""
    incidents = sub.add_parser(
        "incidents",
        help="incidents and the 7.3.3 two-hour clock",
        description="incidents and the 7.3.3 two-hour clock",
    )
    isub = incidents.add_subparsers(dest="incident_command", required=True, metavar="ACTION")

    p = isub.add_parser(
        "list", help="active incidents and those still to notify (--all: every one)"
    )
    p.add_argument("--all", action="store_true", help="resolved and closed incidents too")
    p.add_argument(
        "--limit", type=positive_int, default=100, help="how many, newest first (default 100)"
    )
    add_json(p, "print a JSON list")
    add_wide(p)
    p.set_defaults(handler=cmd_list)

    p = isub.add_parser("show", help="one incident with its clock, findings, timeline and alerts")
    p.add_argument("id", type=row_id, help="the incident's number")
    add_json(p, "print a JSON document")
    p.set_defaults(handler=cmd_show)

    p = isub.add_parser("open", help="register an incident monitord did not see")
    p.add_argument(
        "--kind",
        required=True,
        metavar="KIND",
        # Not argparse choices: [incidents] security_kinds may add kinds of the operator's own.
        help="what happened: "
        + ", ".join(named(k, KIND_NAMES) for k in (*SECURITY_KINDS, *AVAILABILITY_KINDS))
        + ", or a kind [incidents] adds",
    )
    p.add_argument(
        "--service",
        action="append",
        required=True,
        metavar="ID",
        type=catalogue_id,
        help="a service (repeatable)",
    )
    p.add_argument("--summary", required=True, help="what happened, in a line")
    p.add_argument(
        "--occurred-at",
        metavar="TIME",
        help="when it began (read as Asia/Shanghai; default: now); the 7.3.3 clock runs from "
        "now, when it is reported, as it does from a finding's detection",
    )
    p.add_argument(
        "--severity",
        default="high",
        choices=SEVERITIES,
        help="one of %(choices)s (default %(default)s)",
    )
    add_by(p)
    add_json(p, "print the incident as JSON instead of its number")
    p.set_defaults(handler=cmd_open)

    p = isub.add_parser("ack", help="acknowledge: somebody is on it (again: a note, exit 0)")
    p.add_argument("id", type=row_id, help="the incident's number")
    p.add_argument("--note", help="a note for the timeline")
    add_by(p)
    p.set_defaults(handler=cmd_ack)

    p = isub.add_parser("notify", help="send the 7.3.3 notification to the management unit")
    p.add_argument("id", type=row_id, help="the incident's number")
    p.add_argument("--scope", help="初步判定的影响范围")
    p.add_argument("--harm", help="初步判定的危害")
    p.add_argument("--measures", help="已采取的应急处置措施")
    p.add_argument("--rectification", help="整改措施")
    p.add_argument(
        "--out-of-band",
        metavar="HOW",
        help='record a notification made by phone or in person, e.g. "电话：市数据局 王科长"',
    )
    p.add_argument(
        "--at", metavar="TIME", help="when the out-of-band notification was made (default: now)"
    )
    add_by(p)
    p.set_defaults(handler=cmd_notify)

    p = isub.add_parser("close", help="close a resolved incident")
    p.add_argument("id", type=row_id, help="the incident's number")
    p.add_argument("--note", help="a note for the timeline")
    add_by(p)
    p.set_defaults(handler=cmd_close)

    p = isub.add_parser("resolve", help="mark resolved")
    p.add_argument("id", type=row_id, help="the incident's number")
    p.add_argument("--note", help="a note for the timeline")
    add_by(p)
    p.set_defaults(handler=cmd_resolve)
