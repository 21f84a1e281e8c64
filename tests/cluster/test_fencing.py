"""A once-only job's writes are fenced by its lease: a run that outlived its lease (its daemon
paused, or cut off, while another took the job over) commits nothing, and says so once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger
from sqlalchemy import event, func, select
from sqlalchemy.exc import DBAPIError

from monitord.catalogue.apply import record_run
from monitord.cluster import running_under
from monitord.config import parse_config
from monitord.errors import LeaseLost
from monitord.runtime.app import App
from monitord.runtime.daemon import Daemon
from monitord.runtime.jobs import Job
from monitord.store import Store
from monitord.store.models import ComplianceResult, JobLease, SyncRun
from monitord.timeutil import system_clock
from tests.cluster.test_coordinator import JOBS, as_if_gone, two_members
from tests.conftest import FakeClock

SYNC = "catalogue-sync"


def sync_runs(store: Store) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(SyncRun)) or 0


def test_a_jobs_commit_is_refused_once_another_daemon_took_its_lease(pg_store: Store) -> None:
    a, b, ticks = two_members(pg_store)
    a.beat(JOBS)
    now = FakeClock()()
    term = a.term(SYNC)
    with running_under(term):
        record_run(pg_store, "portal", now, now, "ok")  # a holds the lease: written
    as_if_gone(pg_store, "a")  # kill -STOP in the middle of its next sync
    ticks.now += 60
    assert b.beat(JOBS).taken == sorted(JOBS)
    # kill -CONT: a's sync ends and records its run, as b's sync may be doing now.
    with (
        running_under(term),
        pytest.raises(LeaseLost, match="the lease of catalogue-sync passed to another"),
    ):
        record_run(pg_store, "portal", now, now, "ok")
    assert sync_runs(pg_store) == 1
    with running_under(b.term(SYNC)):
        record_run(pg_store, "portal", now, now, "ok")  # the new holder writes
    assert sync_runs(pg_store) == 2


def test_a_stale_run_whose_rows_meet_the_new_holders_says_its_lease_was_lost(
    pg_store: Store,
) -> None:
    # A daemon paused in its compliance run resumed after another had stored the quarter's
    # verdicts: its own rows met theirs (uq_compliance_result) and the run failed with an
    # IntegrityError traceback, not as the lease it had lost.
    a, b, ticks = two_members(pg_store)
    a.beat(JOBS)
    stale = a.term(SYNC)
    as_if_gone(pg_store, "a")
    ticks.now += 60
    b.beat(JOBS)
    now = FakeClock()()

    def verdict() -> ComplianceResult:
        return ComplianceResult(
            quarter="2026q4",
            rule="log_retention",
            clause="7.3.1",
            subject="",
            passed=True,
            evaluated_at=now,
        )

    with running_under(b.term(SYNC)), pg_store.session() as session:
        session.add(verdict())
    with (
        running_under(stale),
        pytest.raises(LeaseLost, match="the lease of catalogue-sync passed to another"),
        pg_store.session() as session,
    ):
        session.add(verdict())
    with pg_store.session() as session:
        assert session.scalar(select(func.count()).select_from(ComplianceResult)) == 1


def test_a_holder_paused_in_the_middle_of_a_commit_holds_up_a_takeover_for_a_second_only(
    pg_store: Store,
) -> None:
    a, b, ticks = two_members(pg_store)
    a.beat(JOBS)
    term = a.term(SYNC)
    paused, resumed = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def sync_paused_while_committing() -> None:
        def pause(*args: object) -> None:
            statement = args[2]
            if threading.current_thread() is syncing and "FOR SHARE" in str(statement):
                paused.set()  # kill -STOP once the lease row is checked, before the commit
                resumed.wait(15)

        now = FakeClock()()
        event.listen(pg_store.engine, "after_cursor_execute", pause)
        try:
            with running_under(term), pg_store.session() as session:
                session.add(SyncRun(started_at=now, finished_at=now, source="portal"))
        except Exception as exc:
            failed.append(exc)
        finally:
            event.remove(pg_store.engine, "after_cursor_execute", pause)

    syncing = threading.Thread(target=sync_paused_while_committing)
    syncing.start()
    try:
        assert paused.wait(10)
        started = time.monotonic()
        as_if_gone(pg_store, "a")
        ticks.now += 60
        assert b.beat(JOBS).taken == sorted(JOBS)
        assert time.monotonic() - started < 5
    finally:
        resumed.set()  # kill -CONT: its session was ended meanwhile
        syncing.join()
    assert len(failed) == 1 and isinstance(failed[0], DBAPIError)
    assert "idle-in-transaction timeout" in str(failed[0])
    assert sync_runs(pg_store) == 0


def test_a_paused_holder_says_once_that_it_lost_the_jobs_another_daemon_took(
    pg_store: Store,
) -> None:
    a, b, ticks = two_members(pg_store)
    a.beat(JOBS)
    as_if_gone(pg_store, "a")  # paused for a minute: its local deadlines passed long ago
    ticks.now += 60
    b.beat(JOBS)
    assert a.beat(JOBS).lost == sorted(JOBS)
    assert a.beat(JOBS).lost == []


@pytest.fixture
def pg_app(pg_store: Store, tmp_path: Path) -> Iterator[App]:
    settings = parse_config(
        {
            "store": {"url": pg_store.url.render_as_string(False)},
            "api": {"enabled": False},
            "cluster": {"name": "east-1", "heartbeat_seconds": 0.5, "lease_seconds": 2.0},
        },
        "test",
        {},
    )
    app = App(settings=settings, store=pg_store, clock=system_clock)
    yield app


async def test_a_daemon_whose_job_outlived_its_lease_writes_nothing_and_says_so(
    pg_app: App, pg_store: Store
) -> None:
    logged: list[tuple[str, str]] = []
    handler = logger.add(
        lambda m: logged.append((m.record["level"].name, m.record["message"])), level="INFO"
    )
    started, finish = asyncio.Event(), asyncio.Event()

    async def sync(app: App) -> None:
        started.set()
        await finish.wait()  # the portal is slow; meanwhile another daemon takes the job
        now = app.clock()
        await asyncio.to_thread(record_run, app.store, "portal", now, now, "ok")

    daemon = Daemon(pg_app, None, jobs=(Job(SYNC, sync, lambda s: 3600.0),))
    running = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(20):
            await started.wait()
            with pg_store.engine.begin() as connection:
                connection.exec_driver_sql(
                    "update job_leases set holder = 'west-1', fence = fence + 1, "
                    "expires_at = expires_at + interval '1 hour'"
                )
            while not any("no longer runs" in message for _, message in logged):
                await asyncio.sleep(0.05)
            finish.set()
            while not any("job catalogue-sync stopped" in message for _, message in logged):
                await asyncio.sleep(0.05)
    finally:
        finish.set()
        daemon.request_stop("test")
        await running
        logger.remove(handler)
    assert [m for m in logged if "no longer runs" in m[1]] == [
        ("WARNING", "cluster: east-1 no longer runs catalogue-sync")
    ]
    assert [level for level, message in logged if "job catalogue-sync" in message] == ["WARNING"]
    assert sync_runs(pg_store) == 0
    with pg_store.session() as session:
        lease = session.get(JobLease, SYNC)
        assert lease is not None and lease.holder == "west-1"
