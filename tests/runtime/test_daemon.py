"""The daemon in-process, its clock and the system clock stepped under it: jobs keep their
schedule, incidents their deadlines, and the watchdog is fed only while jobs run."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from monitord.config import LoggingSettings, parse_config
from monitord.incidents import open_manual, timeline
from monitord.runtime import daemon as daemon_module
from monitord.runtime.app import App
from monitord.runtime.daemon import Daemon
from monitord.runtime.jobs import Job, incident_clock
from monitord.store import open_store
from monitord.store.models import Incident
from monitord.timeutil import STEP_PERSISTS, SteadyClock, system_clock
from tests.conftest import FakeClock

HOUR = dt.timedelta(hours=1)


class SteppedWall:
    """The system clock, which a test can step."""

    def __init__(self) -> None:
        self.step = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return system_clock() + self.step


class FakeMonotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def messages() -> Iterator[list[str]]:
    """What the daemon logs at INFO and above, one message each."""
    logged: list[str] = []
    handler = logger.add(lambda m: logged.append(m.record["message"]), level="INFO")
    yield logged
    logger.remove(handler)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    settings = parse_config(
        {"store": {"url": f"sqlite:///{tmp_path / 'm.db'}"}, "api": {"listen": "127.0.0.1:0"}},
        "test",
        {},
    )
    made = App(settings=settings, store=open_store(settings.store.url), clock=system_clock)
    yield made
    made.store.dispose()


def test_the_steady_clock_ignores_a_step_undone_and_follows_one_that_lasts() -> None:
    wall, monotonic = FakeClock(), FakeMonotonic()
    clock = SteadyClock(wall, monotonic)
    start = wall.now

    def tick(seconds: float) -> str | None:
        wall.advance(seconds=seconds)
        monotonic.now += seconds
        event = clock.check()
        return event.kind if event is not None else None

    assert tick(1) is None
    wall.advance(hours=-1)  # stepped back an hour
    assert tick(1) == "stepped"
    assert clock() == start + dt.timedelta(seconds=2)
    assert tick(600) is None
    wall.advance(hours=1)  # and put right ten minutes later
    assert tick(1) == "back"
    assert clock() == start + dt.timedelta(seconds=603)
    wall.advance(hours=3)  # a jump forward that lasts
    assert tick(1) == "stepped"
    assert clock() == start + dt.timedelta(seconds=604)
    for _ in range(int(STEP_PERSISTS.total_seconds() // 60) - 1):
        assert tick(60) is None
    assert tick(60) == "followed"
    assert clock() < wall.now  # not yet: the daemon moves the incidents' deadlines first
    assert tick(1) is None
    clock.follow()
    assert clock() == wall.now


def test_a_transient_forward_jump_does_not_make_an_incident_late(app: App) -> None:
    # A jump of three hours, undone a minute later, marked every open incident late for ever
    # and told the director.
    wall, monotonic = FakeClock(), FakeMonotonic()
    clock = SteadyClock(wall, monotonic)
    app.clock = clock
    with app.store.session() as session:
        incident = open_manual(
            session,
            app.settings,
            kind="data_exposure",
            service_ids=[],
            summary="服务商电话报告疑似数据泄露",
            actor="值班员",
            now=clock(),
        )
        incident_id = incident.id

    def late() -> bool:
        asyncio.run(incident_clock(app))
        with app.store.session() as session:
            found = session.get(Incident, incident_id)
            assert found is not None
            return found.late

    wall.advance(hours=3)
    monotonic.now += 1
    assert clock.check() is not None
    assert not late()
    wall.advance(hours=-3, seconds=60)
    monotonic.now += 60
    assert clock.check() is not None
    assert not late()
    wall.advance(minutes=120)  # two hours that really pass: late, as it should be
    monotonic.now += 7200
    assert late()


async def test_a_backward_step_of_an_hour_stops_no_job(
    app: App, messages: list[str], tmp_path: Path
) -> None:
    # The scheduler computed each next run from the wall clock: after the step every job waited
    # an hour, while the watchdog kept being fed.
    wall = SteppedWall()
    app.clock = SteadyClock(wall)
    runs: list[dt.datetime] = []

    async def tick(app: App) -> None:
        runs.append(app.clock())

    daemon = Daemon(app, None, jobs=(Job("tick", tick, lambda s: 0.05),))
    running = asyncio.create_task(daemon.run())
    while len(runs) < 3:
        await asyncio.sleep(0.05)
    wall.step = -HOUR
    await asyncio.sleep(1.5)  # the clock is checked every second
    before = len(runs)
    await asyncio.sleep(0.5)
    daemon.request_stop("test")
    assert await running == 0
    assert len(runs) - before >= 5
    assert all(b > a for a, b in itertools.pairwise(runs))
    assert abs(runs[-1] - system_clock()) < dt.timedelta(seconds=5)
    stepped = [m for m in messages if "system clock stepped" in m]
    assert stepped == [
        "the system clock stepped by -1:00:00: monitord keeps counting time on the monotonic "
        "clock (job schedules and incident deadlines are not moved), and follows the step if it "
        "lasts 0:30:00"
    ]


async def watchdog_messages(
    app: App,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    job: Job,
    seconds: float,
    reload_from: tuple[Path, float] | None = None,
) -> list[str]:
    """What the daemon sends systemd's notify socket in `seconds`, with a 0.4 s watchdog;
    `reload_from`: the config file it reloads, and after how many seconds."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    daemon = Daemon(app, None if reload_from is None else reload_from[0], jobs=(job,))
    running = asyncio.create_task(daemon.run())
    loop = asyncio.get_running_loop()
    if reload_from is not None:
        loop.call_later(reload_from[1], daemon.reload)
    received: list[str] = []
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        with contextlib.suppress(TimeoutError):
            received.append((await asyncio.wait_for(loop.sock_recv(sock, 256), left)).decode())
    daemon.request_stop("test")
    await running
    sock.close()
    return [m for m in received if not m.startswith("STATUS=")]  # the status line is its own


async def test_the_watchdog_is_fed_while_jobs_run(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def quick(app: App) -> None:
        return None

    got = await watchdog_messages(
        app, tmp_path, monkeypatch, Job("quick", quick, lambda s: 0.05), 2.0
    )
    assert got[0] == "READY=1"
    assert got.count("WATCHDOG=1") >= 6


async def test_the_watchdog_goes_hungry_when_every_job_hangs(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A live event loop whose jobs had all stopped kept feeding the watchdog: systemd never
    # restarted it.
    async def hang(app: App) -> None:
        await asyncio.Event().wait()

    app.settings = app.settings.model_copy(
        update={"daemon": app.settings.daemon.model_copy(update={"grace_seconds": 0.1})}
    )
    got = await watchdog_messages(
        app, tmp_path, monkeypatch, Job("hang", hang, lambda s: 0.05), 2.0
    )
    assert got[0] == "READY=1"
    assert got.count("WATCHDOG=1") <= 2  # the first 0.4 s at most


async def test_a_reload_that_turns_daemon_watchdog_off_stops_the_feeding(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # daemon.watchdog was read at the start only: "config reloaded", and WATCHDOG=1 went on.
    async def quick(app: App) -> None:
        return None

    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[daemon]\nwatchdog = false\n[store]\nurl = "{app.settings.store.url}"\n'
        '[api]\nlisten = "127.0.0.1:0"\n'
    )
    got = await watchdog_messages(
        app, tmp_path, monkeypatch, Job("quick", quick, lambda s: 0.05), 2.0, (config, 0.8)
    )
    fed = got.count("WATCHDOG=1")
    assert 1 <= fed <= 5  # in the first 0.8 s only (one each 0.2 s)
    assert app.settings.daemon.watchdog is False


async def test_a_step_that_lasts_moves_the_incident_clocks_so_only_real_time_counts(
    app: App, messages: list[str]
) -> None:
    # The system clock was three hours behind and is put right: once the daemon follows the
    # step, an incident detected before it must not be late on the three hours that never passed.
    wall, monotonic = FakeClock(), FakeMonotonic()
    clock = SteadyClock(wall, monotonic)
    app.clock = clock
    with app.store.session() as session:
        incident = open_manual(
            session,
            app.settings,
            "data_exposure",
            [],
            "服务商电话报告疑似数据泄露",
            "值班员",
            clock(),
        )
        incident_id, deadline = incident.id, incident.notify_by
    assert deadline is not None

    async def incidents(app: App) -> None:
        await incident_clock(app)

    async def logged(words: str) -> None:
        # Waited for, not slept on: a loaded machine may take more than a second to start.
        async with asyncio.timeout(30):
            while not any(words in m for m in messages):
                await asyncio.sleep(0.05)

    daemon = Daemon(app, None, jobs=(Job("incidents", incidents, lambda s: 0.05),))
    running = asyncio.create_task(daemon.run())
    wall.advance(hours=3)
    monotonic.now += 1
    await logged("the system clock stepped by")  # seen at a check: stepped, not followed yet
    wall.advance(seconds=STEP_PERSISTS.total_seconds() + 60)
    monotonic.now += STEP_PERSISTS.total_seconds() + 60
    await logged("incident clock(s) moved by the step")  # followed, the clock moved with it
    await asyncio.sleep(0.2)  # a few incident passes after it
    daemon.request_stop("test")
    assert await running == 0

    with app.store.session() as session:
        found = session.get(Incident, incident_id)
        assert found is not None
        assert found.late is False
        assert found.notify_by is not None  # moved by the step (3 h less the 1 s that passed)
        assert abs(found.notify_by - deadline - dt.timedelta(hours=3)) <= dt.timedelta(seconds=1)
    assert any("incident clock(s) moved by the step" in m for m in messages)

    wall.advance(minutes=90)  # 31 minutes + 90 minutes really passed: over two hours, late
    monotonic.now += 90 * 60
    await incident_clock(app)
    with app.store.session() as session:
        found = session.get(Incident, incident_id)
        assert found is not None and found.late is True


@pytest.mark.parametrize("step", [HOUR, -HOUR])
async def test_a_followed_step_leaves_an_incident_opened_by_hand_meanwhile_as_it_was(
    app: App, messages: list[str], step: dt.timedelta
) -> None:
    # `monitord incidents open` reads the system clock: an incident phoned in while the daemon
    # had not followed the step yet already had the right time, and following the step moved its
    # deadline too (three hours to notify after +1 h; one hour after -1 h, then late for ever).
    wall, monotonic = FakeClock(), FakeMonotonic()
    clock = SteadyClock(wall, monotonic)
    app.clock = clock

    def open_by_hand(now: dt.datetime) -> tuple[int, dt.datetime]:
        with app.store.session() as session:
            incident = open_manual(
                session, app.settings, "data_exposure", [], "电话报告数据泄露", "值班员", now
            )
            assert incident.notify_by is not None
            return incident.id, incident.notify_by

    async def logged(words: str) -> None:
        async with asyncio.timeout(30):
            while not any(words in m for m in messages):
                await asyncio.sleep(0.05)

    before, before_deadline = open_by_hand(clock())
    daemon = Daemon(app, None, jobs=(Job("idle", lambda app: asyncio.sleep(0), lambda s: 60),))
    running = asyncio.create_task(daemon.run())
    wall.advance(seconds=1 + step.total_seconds())  # a second passes; the clock steps in it
    monotonic.now += 1
    await logged("the system clock stepped by")
    meanwhile, meanwhile_deadline = open_by_hand(wall())  # the CLI's clock: the system clock
    wall.advance(seconds=STEP_PERSISTS.total_seconds())
    monotonic.now += STEP_PERSISTS.total_seconds()
    await logged("incident clock(s) moved by the step")
    daemon.request_stop("test")
    assert await running == 0

    with app.store.session() as session:
        moved = session.get(Incident, before)
        kept = session.get(Incident, meanwhile)
        assert moved is not None and kept is not None
        assert moved.notify_by == before_deadline + step  # opened on the clock before the step
        assert kept.notify_by == meanwhile_deadline
        assert [e["kind"] for e in timeline(session, meanwhile)] == ["opened"]
    assert "1 incident clock(s) moved by the step" in messages


async def test_a_store_error_gone_before_it_could_be_said_is_one_line_not_a_traceback(
    app: App,
) -> None:
    # PostgreSQL still starting after a restart failed a job, and answered again by the time
    # the daemon asked: the soak's log got a whole traceback for it.
    from sqlalchemy.exc import OperationalError

    records: list[tuple[str, str, bool]] = []
    handler = logger.add(
        lambda m: records.append(
            (
                m.record["level"].name,
                m.record["message"],
                # where the daemon's logging is set up, its patcher keeps the traceback in extra
                m.record["exception"] is not None or "traceback" in m.record["extra"],
            )
        ),
        level="INFO",
    )

    async def starting_up(app: App) -> None:
        raise OperationalError("select 1", {}, Exception("the database system is starting up"))

    async def broken(app: App) -> None:
        raise KeyError("a bug")

    daemon = Daemon(
        app,
        None,
        jobs=(Job("sync", starting_up, lambda s: 60.0), Job("bug", broken, lambda s: 60.0)),
    )
    running = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(20):
            while not any("job bug failed" in message for _, message, _ in records):
                await asyncio.sleep(0.05)
    finally:
        daemon.request_stop("test")
        await running
        logger.remove(handler)

    def said(words: str) -> list[tuple[str, bool]]:
        return [(level, traceback) for level, message, traceback in records if words in message]

    assert said(
        "job sync failed: the store did not answer (the database system is starting up)"
    ) == [("WARNING", False)]
    assert said("job bug failed") == [("ERROR", True)]  # a bug keeps its traceback


async def test_a_stop_cuts_short_a_job_that_stops_at_once_but_waits_for_the_others(
    app: App, messages: list[str]
) -> None:
    # A catalogue sync retrying a portal that did not answer held `systemctl stop` through its
    # backoff (2 + 4 + 8 s), then logged the sync failed.
    started: list[str] = []
    cancelled: list[str] = []

    def job(name: str, seconds: float, **flags: bool) -> Job:
        async def run(app: App) -> None:
            started.append(name)
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                cancelled.append(name)
                raise

        return Job(name, run, lambda s: 3600.0, **flags)

    daemon = Daemon(app, None, jobs=(job("sync", 60.0, stops_at_once=True), job("round", 0.5)))
    running = asyncio.create_task(daemon.run())
    async with asyncio.timeout(10):
        while len(started) < 2:
            await asyncio.sleep(0.02)
    stopped = asyncio.get_running_loop().time()
    daemon.request_stop("test")
    assert await running == 0
    assert asyncio.get_running_loop().time() - stopped < 2.0  # not the sync's minute
    assert cancelled == ["sync"]  # the round was let finish
    assert "job sync cancelled at shutdown" in messages
    assert "waiting up to 20 s for 1 running job(s)" in messages


async def test_a_reload_applies_a_shorter_interval_at_once(app: App, tmp_path: Path) -> None:
    # Between runs a job loop sleeps until the job is due: a reload must wake it, or a job
    # whose interval went from an hour to a second would wait out the hour.
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{app.settings.store.url}"\n[api]\nenabled = false\n'
        "[incidents]\ncheck_interval_seconds = 3600\n"
    )
    runs: list[float] = []

    async def tick(app: App) -> None:
        runs.append(asyncio.get_running_loop().time())

    job = Job("tick", tick, lambda s: s.incidents.check_interval_seconds, run_at_start=False)
    daemon = Daemon(app, config, jobs=(job,))
    running = asyncio.create_task(daemon.run())
    try:
        await asyncio.sleep(1.2)
        assert runs == []  # an hour away
        config.write_text(config.read_text().replace("3600", "1"))
        reloaded = asyncio.get_running_loop().time()
        daemon.reload()
        async with asyncio.timeout(10):
            while not runs:
                await asyncio.sleep(0.02)
        assert runs[0] - reloaded < 0.5  # a second since the start is past: due now
    finally:
        daemon.request_stop("test")
        assert await running == 0


async def test_a_reload_applies_logging_at_once_and_keeps_the_cluster_until_a_restart(
    app: App, tmp_path: Path, messages: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # "config reloaded" was logged while [logging] and [cluster] silently kept their old values.
    set_up: list[LoggingSettings] = []
    monkeypatch.setattr(daemon_module, "setup_logging", set_up.append)
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{app.settings.store.url}"\n[api]\nenabled = false\n'
        f'[logging]\nlevel = "WARNING"\nfile = "{tmp_path / "m.log.jsonl"}"\n'
        '[cluster]\nname = "renamed"\n'
    )
    daemon = Daemon(app, config, jobs=())
    before = app.settings.cluster
    daemon.reload()
    assert [s.level for s in set_up] == ["WARNING"]
    assert app.settings.logging.level == "WARNING"
    assert app.settings.cluster == before
    assert "[cluster] changed; it takes effect at the next restart" in messages


def test_a_reload_to_a_log_folder_behind_a_dangling_symlink_says_so(
    app: App, tmp_path: Path, messages: list[str]
) -> None:
    # Refused with "cannot write …/logdir (File exists)", which said nothing of the missing mount.
    link = tmp_path / "logdir"
    link.symlink_to(tmp_path / "not-mounted" / "logs")
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{app.settings.store.url}"\n[api]\nlisten = "127.0.0.1:0"\n'
        f'[logging]\nfile = "{link / "m.log.jsonl"}"\n'
    )
    Daemon(app, config, jobs=()).reload()
    assert messages[-1] == (
        f"reload refused, keeping the running config: logging.file = {link / 'm.log.jsonl'}: "
        f"cannot write {link} (a symbolic link to a folder that does not exist "
        f"({tmp_path / 'not-mounted' / 'logs'}))"
    )


def test_a_reload_that_changes_store_url_applies_the_rest_of_store(
    app: App, tmp_path: Path, messages: list[str]
) -> None:
    # A changed store.url kept the whole running [store]: retention_days stayed 400 until a
    # restart, with "config reloaded" said each time.
    url = app.settings.store.url
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "m2.db"}"\nretention_days = 200\n'
        f'files_dir = "{tmp_path / "files"}"\n[api]\nlisten = "127.0.0.1:0"\n'
    )
    Daemon(app, config, jobs=()).reload()
    assert app.settings.store.url == url
    assert app.settings.store.retention_days == 200
    assert app.settings.store.files_dir == str(tmp_path / "files")
    assert "store.url changed; it takes effect at the next restart" in messages


def test_a_reload_back_to_the_listen_address_in_use_says_nothing_of_a_restart(
    app: App, tmp_path: Path, messages: list[str]
) -> None:
    # listen changed, then restored to the address in use: the last reload warned that the
    # address in use "takes effect at the next restart", and the second one said nothing.
    config = tmp_path / "monitord.toml"
    listening = f'[store]\nurl = "{app.settings.store.url}"\n[api]\nlisten = "127.0.0.1:0"\n'
    daemon = Daemon(app, config, jobs=())
    warning = "api.listen or api.enabled changed; it takes effect at the next restart"
    config.write_text(listening.replace(":0", ":18422"))
    daemon.reload()
    daemon.reload()
    assert messages.count(warning) == 2  # the address in use is still not the file's
    config.write_text(listening)
    daemon.reload()
    assert messages.count(warning) == 2
    assert app.settings.api.listen == "127.0.0.1:0"


async def test_a_sighup_that_came_while_starting_is_a_reload_once_running(
    app: App, tmp_path: Path, messages: list[str]
) -> None:
    # Sent while the store was migrated, SIGHUP's default action ended the daemon without a word.
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{app.settings.store.url}"\n[api]\nenabled = false\n'
        "[incidents]\ncheck_interval_seconds = 7\n"
    )
    requested = threading.Event()
    requested.set()

    async def idle(app: App) -> None:
        return None

    job = Job("idle", idle, lambda s: 3600.0, run_at_start=False)
    daemon = Daemon(app, config, jobs=(job,), reload_requested=requested)
    running = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(10):
            while app.settings.incidents.check_interval_seconds != 7:
                await asyncio.sleep(0.02)
    finally:
        daemon.request_stop("test")
        assert await running == 0
    assert "SIGHUP came while starting: reloading the config now" in messages


def test_a_reload_to_a_log_file_it_cannot_write_is_refused_and_logging_goes_on(
    app: App, tmp_path: Path, messages: list[str]
) -> None:
    # A traceback, no "reload refused" line, and the JSON log file no longer written to.
    blocker = tmp_path / "a-file"
    blocker.write_text("where the log's folder would go", encoding="utf-8")
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{app.settings.store.url}"\n[api]\nenabled = false\n'
        f'[logging]\nfile = "{blocker / "m.log.jsonl"}"\n[incidents]\ncheck_interval_seconds = 7\n'
    )
    before = app.settings
    Daemon(app, config, jobs=()).reload()
    assert app.settings is before  # nothing of the new file applied
    refused = [m for m in messages if m.startswith("reload refused, keeping the running config")]
    assert refused and f"logging.file = {blocker / 'm.log.jsonl'}: cannot write" in refused[0]
    logger.info("still logged")
    assert messages[-1] == "still logged"
