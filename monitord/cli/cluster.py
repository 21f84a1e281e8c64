"""`monitord cluster`: the daemons on the store, whether each is alive, what each runs."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from monitord.cli.common import add_wide, existing_sqlite, print_json, settings_for
from monitord.textable import format_table
from monitord.timeutil import local_text

REGISTRATION = "0009"
"""The migration that made the table the daemons register in."""


def _ago(moment: dt.datetime, now: dt.datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{local_text(moment)} CST"


def _state(alive: bool, stopped: dt.datetime | None) -> str:
    if alive:
        return "alive"
    return "stopped" if stopped is not None else "gone"


def cmd_cluster(args: argparse.Namespace) -> int:
    """List the daemons on the store; exit 1 when none is alive.

    The store is read as it is, never migrated: while daemons of the version before still run
    on a store this version has yet to migrate, every other command is refused, and telling
    which daemons to stop is this command's job.
    """
    from monitord import timeutil
    from monitord.cluster import database_now, members
    from monitord.runtime.jobs import ONCE_JOBS
    from monitord.store import Store

    settings = settings_for(args)
    existing_sqlite(settings)
    once = list(ONCE_JOBS)
    store = Store(settings.store.url)
    try:
        pending = store.pending_migrations()  # refuses a store a newer version migrated
        revision = store.revision()
        unregistered = any(m.revision == REGISTRATION for m in pending)
        # The heartbeats' clock, not this machine's (see database_now).
        now = database_now(store, timeutil.system_clock)
        listed = [] if unregistered else members(store, settings.cluster.lease_seconds, now, once)
    finally:
        store.dispose()
    if args.json:
        print_json([{**m.as_json(), "state": _state(m.alive, m.stopped_at)} for m in listed])
        return 0 if any(m.alive for m in listed) else 1
    if unregistered and revision is not None:
        print(
            f"the store at {store.display_url} is at schema {revision}, from before daemons "
            f"registered in it (migration {REGISTRATION}): no daemon can be listed"
        )
        return 1
    if not listed:
        print("no daemon has run on this store yet (start one with `monitord run`)")
        return 1
    rows: list[list[Any]] = [
        [
            m.name,
            m.zone,
            f"{m.host}:{m.pid}",
            _state(m.alive, m.stopped_at),
            _ago(m.heartbeat_at, now),
            f"{m.probe_share:,}",
            ", ".join(m.jobs) or "-",
        ]
        for m in listed
    ]
    print(
        format_table(["NAME", "ZONE", "HOST:PID", "STATE", "HEARTBEAT", "PROBES", "JOBS"], rows, 80)
    )
    alive = [m for m in listed if m.alive]
    unheld = sorted(set(once) - {job for m in alive for job in m.jobs})
    print()
    print(
        f"{len(alive)} of {len(listed)} daemon(s) alive; "
        f"{sum(m.probe_share for m in alive):,} services probed in their last rounds"
        + (f"; not running now: {', '.join(unheld)}" if unheld and alive else "")
    )
    return 0 if alive else 1


def add_cluster_command(sub: Any) -> None:
    """Register `cluster` on the main parser's subparsers."""
    p = sub.add_parser(
        "cluster",
        help="the daemons on the store: alive or not, last heartbeat, jobs held, probe share",
        description="the daemons on the store (several share a PostgreSQL store): whether each "
        "is alive, its last heartbeat, the once-only jobs it runs and how many services it "
        "probed in its last round; exits 1 when no daemon is alive",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_wide(p)
    p.set_defaults(handler=cmd_cluster)
