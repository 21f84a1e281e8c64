"""Each copy of an alert is claimed before it is sent: two delivery passes at once (two
processes, a second daemon) never send one twice, and a claim whose holder died is taken over."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import socket
import subprocess
import sys

from sqlalchemy import select

from alerts.delivery import deliver_due, expand, make_apprise_sender
from monitord.incidents import open_manual
from monitord.store import Store, open_store
from monitord.store.models import ClusterMember, OutboxAlert
from tests.alerts.test_delivery import add_service, config
from tests.conftest import FakeClock
from tests.receivers import Webhook

ALERTS = 12


async def test_two_delivery_passes_at_once_send_every_alert_exactly_once(
    store: Store, store_url: str, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook, oncall=[hook.apprise_url("a"), hook.apprise_url("b")])
    sid = add_service(store, clock)
    with store.session() as session:
        for n in range(ALERTS):
            open_manual(session, cfg, "outage", [sid], f"故障 {n}", "值班员", clock())
    other = open_store(store_url)  # a second process on the same store
    try:
        send = make_apprise_sender(None)
        await asyncio.gather(
            deliver_due(store, cfg, clock, send), deliver_due(other, cfg, clock, send)
        )
    finally:
        other.dispose()
    # Twelve at once are a flood: they may arrive several to a digest, each with its own key.
    keys = [
        (m["path"], key)
        for m in hook.received
        for key in re.findall(r"编号 (incident:\d+:opened)", m["message"])
    ]
    assert len(keys) == 2 * ALERTS
    assert len(set(keys)) == len(keys), "an alert was sent twice"


def claim(store: Store, holder: str, until: dt.datetime) -> None:
    """Leave the one copy in the outbox claimed by `holder`, as a process that died mid-send."""
    with store.session() as session:
        [copy] = session.scalars(select(OutboxAlert).where(OutboxAlert.parent_id.is_not(None)))
        copy.state = "sending"
        copy.claimed_by = holder
        copy.claimed_until = until


async def test_a_copy_claimed_by_a_process_on_another_host_goes_out_after_its_lease(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    sid = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", [sid], "故障", "值班员", clock())
    expand(sqlite_store, cfg, clock())
    claim(sqlite_store, "other-host:4242:ab12", clock() + dt.timedelta(minutes=5))
    send = make_apprise_sender(None)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert hook.received == []  # it may still be sending it
    clock.advance(minutes=5, seconds=1)
    await deliver_due(sqlite_store, cfg, clock, send)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert len(hook.received) == 1


async def test_a_copy_claimed_by_a_process_of_this_host_that_died_goes_out_at_once(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    cfg = config(hook)
    sid = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", [sid], "故障", "值班员", clock())
    expand(sqlite_store, cfg, clock())
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = f"{socket.gethostname()}:{int(gone.stdout)}:ab12"
    claim(sqlite_store, dead, clock() + dt.timedelta(minutes=5))
    await deliver_due(sqlite_store, cfg, clock, make_apprise_sender(None))
    assert len(hook.received) == 1


async def test_a_copy_claimed_by_a_cluster_daemon_whose_heartbeat_lapsed_waits_for_its_claim(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A daemon on another machine went silent mid-send: it may have died, or it may have sent
    # the copy and been cut off before recording it. Sending it again at once sent alerts
    # twice in the cluster's cut-off test; it goes out when its claim lapses instead.
    cfg = config(hook)
    sid = add_service(sqlite_store, clock)
    with sqlite_store.session() as session:
        open_manual(session, cfg, "outage", [sid], "故障", "值班员", clock())
        session.add(
            ClusterMember(
                name="mon2",
                host="portal-mon2",
                pid=4242,
                run="r",
                started_at=clock() - dt.timedelta(hours=1),
                heartbeat_at=clock() - dt.timedelta(minutes=1),
            )
        )
    expand(sqlite_store, cfg, clock())
    claim(sqlite_store, "portal-mon2:4242:ab12", clock() + dt.timedelta(minutes=5))
    send = make_apprise_sender(None)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert hook.received == []
    clock.advance(minutes=5, seconds=1)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert len(hook.received) == 1
