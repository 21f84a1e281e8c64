"""The cluster's parts in one process: leases judged by PostgreSQL's clock, the probe split,
names, `monitord cluster`, and the one-daemon path on SQLite."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from monitord.cli import main
from monitord.cluster import (
    SharedCoordinator,
    SoloCoordinator,
    make_coordinator,
    members,
    owner_of,
)
from monitord.config import ClusterSettings
from monitord.errors import Replaced, StoreError
from monitord.store import Store, open_store
from monitord.store.models import ClusterMember, JobLease, ProbeRound, writer_name
from monitord.timeutil import system_clock
from tests.conftest import FakeClock

JOBS = ("catalogue-sync", "incidents", "alert-delivery")


class Monotonic:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def member(
    store: Store, name: str, zone: str = "default", monotonic: Monotonic | None = None
) -> SharedCoordinator:
    settings = ClusterSettings(name=name, zone=zone, heartbeat_seconds=1.0, lease_seconds=5.0)
    return SharedCoordinator(store, settings, FakeClock(), monotonic or Monotonic())


def two_members(store: Store) -> tuple[SharedCoordinator, SharedCoordinator, Monotonic]:
    """Daemons a and b joined on the store, on one monotonic clock the test moves."""
    ticks = Monotonic()
    a, b = member(store, "a", monotonic=ticks), member(store, "b", monotonic=ticks)
    a.join()
    b.join()
    return a, b, ticks


def as_if_gone(store: Store, name: str) -> None:
    """As if daemon `name` died or was cut off an hour ago: its heartbeat and leases lapsed."""
    with store.engine.begin() as connection:
        connection.exec_driver_sql(
            "update job_leases set expires_at = expires_at - interval '1 hour' "
            f"where holder = '{name}'"
        )
        connection.exec_driver_sql(
            "update cluster_members set heartbeat_at = heartbeat_at - interval '1 hour' "
            f"where name = '{name}'"
        )


def test_each_once_only_job_is_held_by_one_daemon_and_taken_over_when_its_lease_lapses(
    pg_store: Store,
) -> None:
    a, b, ticks = two_members(pg_store)
    assert a.beat(JOBS).taken == sorted(JOBS)
    assert b.beat(JOBS).taken == []
    assert [j for j in JOBS if a.holds(j)] == list(JOBS)
    assert not any(b.holds(j) for j in JOBS)
    # a renews: b still gets nothing, and a's term (its fence) is the same.
    a.beat(JOBS)
    assert b.beat(JOBS).taken == []
    with pg_store.session() as session:
        assert {lease.fence for lease in session.query(JobLease)} == {1}

    as_if_gone(pg_store, "a")  # a stopped answering
    ticks.now += 5.0  # and its own deadline passed (lease minus a second of margin) first
    assert not a.holds("incidents")
    report = b.beat(JOBS)
    assert report.taken == sorted(JOBS) and report.gone == ["a"]
    assert all(b.holds(j) for j in JOBS)
    with pg_store.session() as session:
        leases = list(session.query(JobLease))
        assert {(lease.holder, lease.fence) for lease in leases} == {("b", 2)}
    # a comes back: b holds the leases, a takes nothing and says it lost them.
    back = a.beat(JOBS)
    assert back.taken == [] and not any(a.holds(j) for j in JOBS)


def test_a_clean_stop_gives_the_jobs_back_at_once(pg_store: Store) -> None:
    a, b = member(pg_store, "a"), member(pg_store, "b")
    a.join()
    b.join()
    a.beat(JOBS)
    a.leave()
    assert b.beat(JOBS).taken == sorted(JOBS)  # no lease to wait out


def test_a_live_daemons_name_is_refused_and_free_again_once_it_stopped(pg_store: Store) -> None:
    first = member(pg_store, "a")
    first.join()
    second = member(pg_store, "a")
    with pytest.raises(StoreError, match="a monitord daemon named 'a' is already running on"):
        second.join()
    first.leave()
    second.join()


def test_a_daemon_killed_on_this_machine_and_restarted_at_once_takes_its_name_back(
    pg_store: Store,
) -> None:
    # Its heartbeat was still fresh: the restart was refused, naming the dead pid, with the
    # advice to rename the daemon.
    killed = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    first = member(pg_store, "a")
    first.join()
    with pg_store.session() as session:
        session.execute(update(ClusterMember).values(pid=int(killed.stdout)))
    member(pg_store, "a").join()  # the pid is gone from this host: no daemon holds the name


def test_the_probes_are_split_without_overlap_and_a_death_moves_only_the_dead_ones_share(
    pg_store: Store,
) -> None:
    services = [f"svc-{n:05d}" for n in range(3000)]
    daemons = [member(pg_store, name) for name in ("a", "b", "c")]
    for daemon in daemons:
        daemon.join()
    for daemon in daemons:
        daemon.beat(())
    shares = {d.name: set(d.share(services)) for d in daemons}
    assert sum(len(s) for s in shares.values()) == len(services)  # each exactly once
    assert set().union(*shares.values()) == set(services)
    assert all(800 < len(s) < 1200 for s in shares.values()), {k: len(v) for k, v in shares.items()}

    as_if_gone(pg_store, "c")
    a, b = daemons[0], daemons[1]
    assert a.beat(()).gone == ["c"]
    b.beat(())
    after = {"a": set(a.share(services)), "b": set(b.share(services))}
    assert after["a"] | after["b"] == set(services) and not after["a"] & after["b"]
    assert shares["a"] <= after["a"] and shares["b"] <= after["b"]  # nothing else moved


def test_zones_split_their_own_members_so_each_zone_probes_every_service(
    pg_store: Store,
) -> None:
    services = [f"svc-{n:04d}" for n in range(500)]
    east = [member(pg_store, "e1", "east"), member(pg_store, "e2", "east")]
    west = [member(pg_store, "w1", "west")]
    for daemon in east + west:
        daemon.join()
    for daemon in east + west:
        daemon.beat(())
    assert set(west[0].share(services)) == set(services)
    e1, e2 = (set(d.share(services)) for d in east)
    assert e1 | e2 == set(services) and not e1 & e2


def test_rendezvous_owner_is_stable_and_spread() -> None:
    owners = [owner_of(f"svc-{n}", ["a", "b"]) for n in range(1000)]
    assert owners == [owner_of(f"svc-{n}", ["b", "a"]) for n in range(1000)]
    assert 400 < owners.count("a") < 600


def test_monitord_cluster_lists_the_members_their_jobs_and_shares(
    pg_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = member(pg_store, "a"), member(pg_store, "b")
    a.join()
    b.join()
    a.beat(JOBS)
    b.beat(JOBS)
    a.record_round(1480)
    b.record_round(1520)
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{pg_store.url.render_as_string(False)}"\n')
    assert main(["--config", str(config), "cluster"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ZONE", "HOST:PID", "STATE", "HEARTBEAT", "PROBES", "JOBS"]
    row_a = next(line for line in lines if line.startswith("a "))
    assert "alive" in row_a and "1,480" in row_a and "alert-delivery, catalogue-sync" in row_a
    assert "2 of 2 daemon(s) alive; 3,000 services probed in their last rounds" in out

    b.leave()
    assert main(["--config", str(config), "cluster", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["b"]["state"] == "stopped" and listed["b"]["jobs"] == []
    assert listed["a"]["jobs"] == sorted(JOBS) and listed["a"]["probe_share"] == 1480


def test_monitord_cluster_tells_heartbeats_by_the_databases_clock_on_a_skewed_machine(
    pg_store: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = member(pg_store, "a")
    a.join()
    a.beat(JOBS)
    # This machine's clock runs ten minutes ahead of the database's.
    monkeypatch.setattr(
        "monitord.timeutil.system_clock", lambda: system_clock() + dt.timedelta(minutes=10)
    )
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{pg_store.url.render_as_string(False)}"\n')
    assert main(["--config", str(config), "cluster"]) == 0
    row_a = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("a "))
    assert " 0 s ago " in row_a or " 1 s ago " in row_a  # not "10 min ago"


def test_on_sqlite_the_one_daemon_holds_everything_and_cluster_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    store = open_store(url, for_daemon=True)  # as `monitord run` opens it: with its flock
    try:
        solo = make_coordinator(store, ClusterSettings(name="solo"), FakeClock())
        assert type(solo) is SoloCoordinator
        solo.join()
        services = [f"svc-{n}" for n in range(10)]
        assert solo.share(services) == services and solo.holds("incidents")
        with store.session() as session:  # rows name the daemon that wrote them
            session.add(ProbeRound(started_at=FakeClock()(), services=1))
        with store.session() as session:
            assert session.query(ProbeRound).one().daemon == "solo" == writer_name()
        config = tmp_path / "monitord.toml"
        config.write_text(f'[store]\nurl = "{url}"\n')
        assert main(["--config", str(config), "cluster"]) == 0
        out = capsys.readouterr().out
        assert "solo" in out and "alive" in out and "alert-delivery" in out
        solo.leave()
        store.dispose()  # the daemon's process ended
        assert main(["--config", str(config), "cluster"]) == 1
        assert "0 of 1 daemon(s) alive" in capsys.readouterr().out
    finally:
        store.dispose()


def test_migrate_is_refused_while_daemons_run_on_a_postgresql_store(
    pg_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = member(pg_store, "a")
    a.join()
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{pg_store.url.render_as_string(False)}"\n')
    assert main(["--config", str(config), "migrate"]) == 1
    err = capsys.readouterr().err
    assert "monitord daemons are running on the store at" in err
    assert err.rstrip().endswith(
        ": a; stop every one of them first (`monitord cluster` lists them), then migrate"
    )
    a.leave()
    assert main(["--config", str(config), "migrate"]) == 0


def test_a_daemon_that_just_joined_is_left_its_share_only_once_its_first_round_is_due(
    pg_store: Store,
) -> None:
    services = [f"svc-{n:04d}" for n in range(400)]
    ticks = Monotonic()
    a = member(pg_store, "a", monotonic=ticks)
    a.join()
    b = member(pg_store, "b", monotonic=ticks)
    b.join()  # just started: its first round comes one interval from now
    a.beat(())
    # Until then a keeps probing every service, b's share included: none goes a round unprobed.
    assert a.share(services, settle_seconds=60) == services
    ticks.now += 61  # b's first round is due
    assert len(a.share(services, settle_seconds=60)) < 300
    b.beat(())
    assert set(a.share(services, settle_seconds=60)) | set(b.share(services, 60)) == set(services)


def test_a_daemon_whose_name_another_process_took_while_it_was_paused_stops_holding_anything(
    pg_store: Store,
) -> None:
    ticks = Monotonic()
    paused = member(pg_store, "b", monotonic=ticks)
    paused.join()
    assert paused.beat(JOBS).taken == sorted(JOBS)
    as_if_gone(pg_store, "b")  # kill -STOP: its heartbeat and leases lapsed
    ticks.now += 5.0
    started = member(pg_store, "b", monotonic=ticks)
    started.join()  # accepted: the first's heartbeat lapsed
    assert started.beat(JOBS).taken == sorted(JOBS)

    # kill -CONT: the paused one's next heartbeat finds its place taken, and renews nothing.
    with pytest.raises(Replaced, match="another monitord daemon named 'b' joined the cluster"):
        paused.beat(JOBS)
    assert not any(paused.holds(j) for j in JOBS)
    paused.leave()  # its clean stop gives back nothing of the other's
    assert started.beat(JOBS).lost == []
    with pg_store.session() as session:
        leases = list(session.query(JobLease))
        assert {(lease.holder, lease.fence) for lease in leases} == {("b", 2)}
        row = session.get(ClusterMember, "b")
        assert row is not None and row.run == started.run and row.stopped_at is None
    config_members = {m.name: m for m in members(pg_store, 5.0, FakeClock()(), JOBS)}
    assert config_members["b"].alive and config_members["b"].jobs == tuple(sorted(JOBS))


def as_if_of_version(store: Store, name: str, version: str) -> None:
    """As if daemon `name` ran another version of monitord."""
    with store.session() as session:
        session.execute(
            update(ClusterMember).where(ClusterMember.name == name).values(version=version)
        )


def test_run_that_would_migrate_the_store_under_running_daemons_is_refused(
    pg_store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = member(pg_store, "a")
    older.join()
    as_if_of_version(pg_store, "a", "0.0.9")
    with pg_store.engine.begin() as connection:  # as the older version left the schema
        connection.exec_driver_sql("update alembic_version set version_num = '0008'")
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{pg_store.url.render_as_string(False)}"\n'
        f'[logging]\nfile = "{tmp_path / "log.jsonl"}"\n'
    )
    assert main(["--config", str(config), "run"]) == 1
    err = capsys.readouterr().err
    assert "is at schema 0008, older than this version of monitord (" in err
    assert "daemons of the version before (schema 0008) are running on it: a. To" in err
    assert "To upgrade a cluster: stop every daemon" in err and len(err.splitlines()) == 1
    assert pg_store.revision() == "0008"  # nothing migrated under the running daemon


def test_a_daemon_does_not_join_daemons_of_another_version(pg_store: Store) -> None:
    older = member(pg_store, "a")
    older.join()
    as_if_of_version(pg_store, "a", "0.0.9")
    newer = member(pg_store, "b")
    with pytest.raises(StoreError, match=r"another version are running on the store at .*: a "):
        newer.join()
    older.leave()
    newer.join()  # the older one stopped: the store is this version's
