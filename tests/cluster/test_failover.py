"""The faults a cluster of daemons must survive, with real processes and a real PostgreSQL
(issue 19): the daemon holding the once-only jobs killed, PostgreSQL restarted and stopped for a
minute, a daemon cut off from the database by the network."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from monitord.cluster import owner_of
from monitord.store.models import (
    Finding,
    Incident,
    IncidentEvent,
    OutboxAlert,
    ProbeResultRow,
    ProbeRound,
    ServiceEvent,
    ServiceStateChange,
    SyncRun,
)
from tests.cluster.harness import (
    HEARTBEAT,
    INTERVAL,
    LEASE,
    ONCE_JOBS,
    SERVICES,
    Cluster,
    FailureCounters,
    StallWatch,
    TcpProxy,
    largest_gaps,
    pg_ctl,
    running_cluster,
    service_id,
    utcnow,
)

ALL = [service_id(n) for n in range(1, SERVICES + 1)]
FAILING = (1, 2, 3, 4)
"""Services answering 500 from the start: their incidents open while the cluster settles."""
FAILING_LATER = (5, 6, 7, 8)
"""Services that start failing at the fault: their incidents open and alert across it."""
WRITTEN = (
    Finding,
    Incident,
    IncidentEvent,
    OutboxAlert,
    ProbeResultRow,
    ProbeRound,
    ServiceEvent,
    ServiceStateChange,
    SyncRun,
)
"""Tables the daemons write rows to, with an id."""
MISSED = 2 * INTERVAL
"""A service unprobed this long missed a round (a round that overruns on a busy machine only
delays the next one)."""


async def settled(cluster: Cluster, names: str = "abc") -> None:
    """Wait until every daemon is a live member probing its share, every once-only job is held,
    and the failing services' incidents were opened and alerted."""
    await cluster.wait(
        lambda: (
            all(m.alive and m.probe_share for m in cluster.members().values())
            and set(cluster.members()) == set(names)
        ),
        "every daemon probing its share",
    )
    await cluster.wait(lambda: set(cluster.holders()) == set(ONCE_JOBS), "every job held")
    await cluster.wait(
        lambda: sum(m["key"].startswith("incident:") for m in cluster.hook.received) > len(FAILING),
        "the failing services' alerts",
    )


def undelivered(cluster: Cluster, claimed_by_other_than: str | None = None) -> list[str]:
    """The alert copies (outbox children) not delivered yet; with claimed_by_other_than, less
    those that daemon holds a claim on."""
    with cluster.store.session() as session:
        rows = session.execute(
            select(OutboxAlert.idempotency_key, OutboxAlert.claimed_by).where(
                OutboxAlert.parent_id.is_not(None), OutboxAlert.state != "delivered"
            )
        ).all()
    if claimed_by_other_than is None:
        return [key for key, _ in rows]
    pid = cluster.daemons[claimed_by_other_than].process.pid
    return [key for key, holder in rows if (holder or "").split(":")[1:2] != [str(pid)]]


def assert_every_alert_arrived_once(cluster: Cluster) -> None:
    """Each outbox copy delivered and received at the webhook, and none received twice."""
    with cluster.store.session() as session:
        copies = list(
            session.scalars(
                select(OutboxAlert.idempotency_key).where(OutboxAlert.parent_id.is_not(None))
            )
        )
    received = [m["key"] for m in cluster.hook.received]
    assert len(received) == len(set(received)), f"an alert was sent twice: {sorted(received)}"
    assert sorted(received) == sorted(copies)


@pytest.mark.timeout(150)
async def test_the_daemon_holding_the_jobs_is_killed_and_another_takes_them_over(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, failing=FAILING) as cluster:
        await asyncio.gather(*(cluster.start(name) for name in "abc"))
        await settled(cluster)
        holders = cluster.holders()
        victim = max(set(holders.values()), key=list(holders.values()).count)
        survivors = set("abc") - {victim}
        later = [service_id(n) for n in FAILING_LATER]
        counters = FailureCounters(cluster, [service_id(n) for n in FAILING] + later)
        watching = asyncio.create_task(counters.watch())

        alerted = len(cluster.hook.received)
        cluster.targets.failing.update(later)  # outages that open across the failover
        await asyncio.sleep(INTERVAL / 2)
        killed_at, killed_wall = time.monotonic(), utcnow()
        stalls = StallWatch()
        await cluster.daemons[victim].kill()
        taken: dict[str, float] = {}

        def taken_over() -> bool:
            for job, holder in cluster.holders().items():
                if holder in survivors and job not in taken:
                    taken[job] = time.monotonic() - killed_at
            return set(taken) == set(ONCE_JOBS)

        await cluster.wait(taken_over, "the survivors to take every job", timeout=20)
        print(
            f"\nfailover after SIGKILL of {victim} (lease {LEASE:g} s, heartbeat {HEARTBEAT:g} s):"
        )
        for job in ONCE_JOBS:
            print(f"  {job:<18} taken over in {taken[job]:.2f} s")
        # The lease lapses at most LEASE after the dead daemon's last renewal; a survivor takes
        # it at its next heartbeat. Every job's interval here is ≥ 1 s; at the defaults (lease
        # 7 s, heartbeat 2 s) the same bound is within two intervals of every job.
        assert max(taken.values()) <= LEASE + 2 * HEARTBEAT, taken

        # The dead daemon's share is probed again once the survivors see it gone.
        # Seen gone after its lease, the dead daemon's share goes to the survivors' next rounds,
        # and within a round the probes are spread over most of the interval.
        settle = LEASE + HEARTBEAT + 2 * INTERVAL
        await asyncio.sleep(settle + 4 * INTERVAL)
        watching.cancel()
        until = utcnow()
        since = killed_wall + dt.timedelta(seconds=settle)
        results = await asyncio.to_thread(cluster.results, since)
        gaps = largest_gaps(results, ALL, since, until)
        print(
            f"  longest a service went unprobed after the rebalance: {max(gaps.values())[0]:.2f} s"
        )
        missed = MISSED + stalls.seconds()
        assert {sid: gap for sid, gap in gaps.items() if gap[0] >= missed} == {}
        assert {row.daemon for row in results} == survivors

        # Each service's state machine moved once per round, whoever probed it.
        sid, jump = counters.worst_jump(within=INTERVAL * 0.9)
        assert jump <= 1, f"{sid}'s failure counter rose by {jump} within one interval"
        rounds = (time.monotonic() - killed_at) / INTERVAL
        rises = counters.rises(since=killed_at)
        assert max(rises.values()) <= rounds + 1, (rounds, rises)
        assert min(rises[s] for s in later) >= rounds - settle / INTERVAL - 2, (rounds, rises)

        # No alert lost, none sent twice.
        await cluster.wait(
            lambda: len(cluster.hook.received) >= alerted + len(later) and not undelivered(cluster),
            "the later outages' alerts",
            timeout=20,
        )
        await asyncio.to_thread(assert_every_alert_arrived_once, cluster)
        for name in survivors:
            assert await cluster.daemons[name].stop() == 0
            assert_no_traceback(cluster.daemons[name].stderr)


def assert_no_traceback(stderr: str) -> None:
    """A daemon's log holds no traceback; when it does, the failure shows the error itself."""
    at = stderr.find("Traceback")
    assert at < 0, stderr[max(0, at - 300) : at + 3000]


def row_counts(cluster: Cluster, upto: dict[type, int] | None = None) -> dict[type, int]:
    """Rows of the tables the daemons write: their highest id, or (given `upto`) how many rows
    at or below that id are there."""
    counts = {}
    with cluster.store.session() as session:
        for table in WRITTEN:
            if upto is None:
                counts[table] = session.scalar(select(func.max(table.id))) or 0
            else:
                counts[table] = session.scalar(
                    select(func.count()).select_from(table).where(table.id <= upto[table])
                )
    return counts


@pytest.mark.timeout(200)
async def test_postgresql_restarted_then_stopped_for_a_minute_loses_nothing(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, failing=FAILING) as cluster:
        daemons = cluster.daemons
        await asyncio.gather(*(cluster.start(name) for name in "abc"))
        await settled(cluster)

        # A fast restart under load: the probes and the jobs carry on.
        highest = await asyncio.to_thread(row_counts, cluster)
        restarted = utcnow()
        await asyncio.to_thread(pg_ctl, cluster.server, "restart", "-m", "fast")
        await cluster.wait(
            lambda: {r.daemon for r in cluster.results(restarted) if not r.late} == set("abc"),
            "every daemon's probes after the restart",
        )
        # A daemon that saw the restart has said so, and says the store is back at its next
        # check (the probes may be recorded before it): the stop below is a new outage.
        await cluster.wait(
            lambda: all(
                len(d.said("does not answer")) == len(d.said("answers again"))
                for d in daemons.values()
            ),
            "every daemon seeing the store back after the restart",
        )

        # Stopped for a minute: the daemons keep probing and write it all afterwards.
        marks = {name: len(d.lines) for name, d in daemons.items()}
        highest = await asyncio.to_thread(row_counts, cluster)
        rows_before = await asyncio.to_thread(row_counts, cluster, highest)
        alerted = len(cluster.hook.received)
        await asyncio.to_thread(pg_ctl, cluster.server, "stop", "-m", "fast")
        stopped, stalls = utcnow(), StallWatch()
        cluster.targets.failing.add(service_id(FAILING_LATER[0]))  # goes down while away
        await asyncio.sleep(60)
        back = utcnow()
        await asyncio.to_thread(pg_ctl, cluster.server, "start")
        for name, daemon in daemons.items():
            await cluster.wait(
                lambda d=daemon, m=marks[name]: d.said(
                    "measured while the store did not answer", m
                ),
                f"{name} writing what it measured during the outage",
            )
        await cluster.wait(
            lambda: len(cluster.hook.received) > alerted and not undelivered(cluster),
            "the alert of the outage that began while the store was away",
        )

        assert await asyncio.to_thread(row_counts, cluster, highest) == rows_before
        results = await asyncio.to_thread(cluster.results, stopped)
        during = [r for r in results if r.at < back]
        assert {r.daemon for r in during} == set("abc")
        # What was measured in the outage is written late; a round that ended after it, not.
        away = [r for r in during if r.at > stopped + dt.timedelta(seconds=1)]
        assert all(r.late for r in away if r.at < back - dt.timedelta(seconds=INTERVAL))
        gaps = largest_gaps(results, ALL, stopped, back)
        print(
            f"\nlongest a service went unrecorded across the outage: {max(gaps.values())[0]:.2f} s"
        )
        missed = MISSED + stalls.seconds()
        assert {sid: gap for sid, gap in gaps.items() if gap[0] >= missed} == {}
        await asyncio.to_thread(assert_every_alert_arrived_once, cluster)
        for name, daemon in daemons.items():
            assert await daemon.stop() == 0, daemon.stderr
            assert_no_traceback(daemon.stderr)
            gone = daemon.said("does not answer", marks[name])
            again = daemon.said("answers again", marks[name])
            assert len(gone) == 1 and len(again) == 1, (name, gone, again)
            print(f"{name}: {gone[0].strip()}\n{name}: {again[0].strip()}")


def written_by(cluster: Cluster, name: str, since: dt.datetime, until: dt.datetime) -> list[str]:
    """What daemon `name` declared between since and until: state changes, incidents and
    their events, alerts queued or delivered, syncs, live probe results."""
    found = []
    checks = (
        (ServiceStateChange, ServiceStateChange.at),
        (Incident, Incident.detected_at),
        (IncidentEvent, IncidentEvent.at),
        (OutboxAlert, OutboxAlert.created_at),
        (OutboxAlert, OutboxAlert.delivered_at),
        (SyncRun, SyncRun.started_at),
    )
    with cluster.store.session() as session:
        for table, at in checks:
            rows = session.scalars(
                select(table.id).where(table.daemon == name, at > since, at < until)
            ).all()
            found += [f"{table.__tablename__} {row}" for row in rows]
        live = session.scalars(
            select(ProbeResultRow.id).where(
                ProbeResultRow.daemon == name,
                ProbeResultRow.late.is_(False),
                ProbeResultRow.at > since,
                ProbeResultRow.at < until,
            )
        ).all()
    return found + [f"probe_results {row} (not late)" for row in live]


@pytest.mark.timeout(150)
async def test_a_daemon_cut_off_from_the_database_declares_nothing_and_the_others_carry_on(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path, failing=FAILING) as cluster:
        proxy = TcpProxy(cluster.server.port)
        await proxy.listen()
        try:
            # c starts first, so it holds the once-only jobs when it is cut off.
            await cluster.start(
                "c", cluster.url.replace(f":{cluster.server.port}/", f":{proxy.port}/")
            )
            await cluster.wait(
                lambda: set(cluster.holders().values()) == {"c"}, "c holding the jobs"
            )
            await asyncio.gather(cluster.start("a"), cluster.start("b"))
            await settled(cluster)
            share = [sid for sid in ALL if owner_of(sid, "abc") == "c"]
            healthy = [sid for sid in share if sid not in cluster.targets.failing]
            alerted = len(cluster.hook.received)

            proxy.cut()
            cut_at, cut_wall = time.monotonic(), utcnow()
            cluster.targets.failing.add(healthy[0])  # goes down while c is away
            taken = await cluster.wait(
                lambda: (
                    set(cluster.holders().values()) <= {"a", "b"}
                    and set(cluster.holders()) == set(ONCE_JOBS)
                ),
                "a and b taking c's jobs",
            )
            print(f"\nc cut off: its jobs taken over in {taken:.2f} s")
            assert taken <= LEASE + 2 * HEARTBEAT

            def probed_by_others() -> bool:
                since = cut_wall + dt.timedelta(seconds=LEASE)
                return {r.service_id for r in cluster.results(since) if r.daemon != "c"} >= set(
                    share
                )

            await cluster.wait(probed_by_others, "a and b probing c's share")
            moved = time.monotonic() - cut_at
            print(
                f"c's share of {len(share)} services probed by a and b {moved:.2f} s after the cut"
            )
            assert moved <= LEASE + HEARTBEAT + 2 * INTERVAL
            # A copy c had claimed when it was cut is c's (it may have sent it) and waits for
            # c or its claim; the new outage's alerts go out from a and b.
            await cluster.wait(
                lambda: (
                    len(cluster.hook.received) > alerted
                    and not undelivered(cluster, claimed_by_other_than="c")
                ),
                f"a and b alerting {healthy[0]}'s outage",
            )
            restored_wall = utcnow()
            await proxy.restore()
            # Back, c takes its share again: its own live results after the restore.
            await cluster.wait(lambda: cluster.members()["c"].alive, "c rejoining")
            await cluster.wait(
                lambda: any(r.daemon == "c" and not r.late for r in cluster.results(restored_wall)),
                "c probing its share again",
            )
            declared = await asyncio.to_thread(
                written_by, cluster, "c", cut_wall + dt.timedelta(seconds=1), restored_wall
            )
            assert declared == []
            await asyncio.to_thread(assert_every_alert_arrived_once, cluster)
            for daemon in cluster.daemons.values():
                assert await daemon.stop() == 0, daemon.stderr
                assert_no_traceback(daemon.stderr)
        finally:
            await proxy.close()


@pytest.mark.timeout(120)
async def test_a_paused_daemon_whose_name_was_taken_meanwhile_stops_when_it_resumes(
    tmp_path: Path,
) -> None:
    async with running_cluster(tmp_path) as cluster:
        paused = await cluster.start("b")
        await cluster.wait(lambda: set(cluster.holders()) == set(ONCE_JOBS), "every job held")
        paused.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(LEASE + 2 * HEARTBEAT + 1)  # its heartbeat lapsed
        first = cluster.daemons.pop("b")
        second = await cluster.start("b")  # accepted: the first is not alive any more
        cluster.daemons["b-paused"] = first
        await cluster.wait(lambda: set(cluster.holders()) == set(ONCE_JOBS), "the jobs taken")
        resumed_at = len(first.lines)
        first.process.send_signal(signal.SIGCONT)

        assert await asyncio.wait_for(first.process.wait(), 30) == 1
        said = first.said("ERROR", resumed_at)
        assert len(said) == 1 and "another monitord daemon named 'b' joined the cluster" in said[0]
        assert not first.said("cluster: b now runs", resumed_at)
        # The one running goes on holding every job, and `monitord cluster` shows it.
        await asyncio.sleep(LEASE)
        members = cluster.members()
        assert members["b"].pid == second.process.pid and members["b"].alive
        assert set(cluster.holders()) == set(ONCE_JOBS)
        assert second.process.returncode is None
