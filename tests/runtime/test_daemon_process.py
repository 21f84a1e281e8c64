"""The daemon as a process: start it, see it sync, SIGTERM it, restart it, reload it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from monitord.catalogue import service_rows, sync_rows
from monitord.runtime.daemon import STOP_MARGIN_SECONDS
from monitord.store import Store, open_store
from tests.conftest import (
    STARTED,
    DaemonProcess,
    PostgresServer,
    free_port,
    postgres_bin,
    restart_postgres,
    start_daemon,
    table_locked,
    wait_for,
    wait_for_line,
)
from tests.fakeportal import TOKEN, FakePortal, make_service, serve_portal

pytestmark = pytest.mark.timeout(120)


def write_config(
    path: Path,
    portal_url: str,
    grace: float = 5.0,
    extra: str = "",
    store_url: str = "",
    api_listen: str = "127.0.0.1:0",
) -> None:
    path.write_text(
        f"""
[daemon]
grace_seconds = {grace}
[store]
url = "{store_url or f"sqlite:///{path.parent / 'monitord.db'}"}"
[portal]
url = "{portal_url}"
sync_interval_seconds = 1
page_size = 2
timeout_seconds = 20
retries = 0
[logging]
file = "{path.parent / "monitord.log.jsonl"}"
[api]
listen = "{api_listen}"
{extra}
""",
        encoding="utf-8",
    )


@pytest.fixture(autouse=True)
async def no_daemon_left_behind() -> AsyncIterator[None]:
    """Kill any daemon a failing test left running, so it cannot outlive the test session."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.fixture
async def portal() -> AsyncIterator[FakePortal]:
    async with serve_portal(FakePortal(services=[make_service(n) for n in range(1, 6)])) as p:
        yield p


def store_of(config: Path) -> Store:
    return Store(f"sqlite:///{config.parent / 'monitord.db'}")


async def test_daemon_syncs_stops_on_sigterm_and_restarts_on_the_same_store(
    tmp_path: Path, portal: FakePortal
) -> None:
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    daemon = await start_daemon(config)
    store = store_of(config)
    await wait_for(lambda: any(r["outcome"] == "ok" for r in sync_rows(store)), "a sync")
    took = await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    assert took < 5.0
    assert "Traceback" not in daemon.stderr
    assert "monitord stopped" in daemon.stderr
    runs_before = len(sync_rows(store, 1000))
    assert [r["id"] for r in service_rows(store)] == [f"svc-{n:04d}" for n in range(1, 6)]

    portal.services[0]["status"] = "suspended"
    daemon = await start_daemon(config)
    await wait_for(
        lambda: service_rows(store)[0]["status"] == "suspended", "the restarted daemon's sync"
    )
    await daemon.stop()
    assert daemon.process.returncode == 0
    assert len(sync_rows(store, 1000)) > runs_before
    assert len(service_rows(store)) == 5
    store.dispose()


async def test_the_daemon_answers_health_checks_while_it_works(
    tmp_path: Path, portal: FakePortal
) -> None:
    config = tmp_path / "monitord.toml"
    port = free_port()
    write_config(config, portal.url, api_listen=f"127.0.0.1:{port}")
    daemon = await start_daemon(config)

    async def ready() -> int:
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/readyz") as response,
            ):
                return response.status
        except aiohttp.ClientConnectionError:
            return 0

    deadline = time.monotonic() + 30
    while await ready() != 200:
        assert time.monotonic() < deadline, "the daemon never became ready"
        await asyncio.sleep(0.1)
    await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    assert f"status page, API and /metrics at http://127.0.0.1:{port}" in daemon.stderr
    assert await ready() == 0  # it stopped listening with the daemon


async def test_sigterm_during_a_slow_sync_exits_at_once_leaving_the_store_whole(
    tmp_path: Path, portal: FakePortal
) -> None:
    # The sync is all or nothing (Job.stops_at_once): a stop does not wait the grace period.
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url, grace=30.0)
    portal.delay = 30.0
    daemon = await start_daemon(config)
    await wait_for(lambda: len(portal.requests) > 0, "the daemon's first request")
    took = await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    assert took < 4.0
    assert "job catalogue-sync cancelled at shutdown" in daemon.stderr
    store = store_of(config)
    assert service_rows(store) == []
    assert sync_rows(store) == []  # nothing half-written
    store.dispose()


async def test_sighup_with_a_bad_config_keeps_the_running_one(
    tmp_path: Path, portal: FakePortal
) -> None:
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    daemon = await start_daemon(config)
    store = store_of(config)
    await wait_for(lambda: len(sync_rows(store)) > 0, "a sync")
    config.write_text(config.read_text().replace("retries = 0", "retries = -1"))
    daemon.process.send_signal(signal.SIGHUP)
    count = len(sync_rows(store, 1000))
    await wait_for(lambda: len(sync_rows(store, 1000)) > count + 1, "syncs after the reload")
    assert daemon.process.returncode is None
    await daemon.stop()
    assert daemon.process.returncode == 0
    assert "reload refused, keeping the running config" in daemon.stderr
    assert "portal.retries = -1: expected at least 0" in daemon.stderr
    store.dispose()


HUP_AS_IT_STARTS = """
import os, signal, sys
import monitord.cli as cli

build_parser = cli.build_parser


def hup_then_build():
    os.kill(os.getpid(), signal.SIGHUP)  # before the parser, the config and the logging load
    return build_parser()


cli.build_parser = hup_then_build
sys.exit(cli.main())
"""


async def test_a_sighup_as_monitord_run_starts_is_kept_for_a_reload(
    tmp_path: Path, portal: FakePortal
) -> None:
    # A SIGHUP in the first half second of `monitord run` ended the process ("Hangup", a
    # status systemd's Restart=on-failure does not restart).
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    env = dict(os.environ, MONITORD_PORTAL_TOKEN=TOKEN)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HUP_AS_IT_STARTS,
        "--config",
        str(config),
        "run",
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    STARTED.append(process)
    daemon = DaemonProcess(process)
    await wait_for_line(daemon, "SIGHUP came while starting: reloading the config now")
    await wait_for_line(daemon, "monitord running")
    await daemon.stop()
    assert process.returncode == 0, daemon.stderr


async def test_sighup_refuses_what_the_start_refuses_an_smtp_url_without_its_password(
    tmp_path: Path, portal: FakePortal
) -> None:
    # A reload skipped the start's secrets check: every e-mail alert then failed at delivery
    # and was retried for ever.
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    daemon = await start_daemon(config, {"MONITORD_SMTP_PASSWORD": ""})
    store = store_of(config)
    await wait_for(lambda: len(sync_rows(store)) > 0, "a sync")
    with config.open("a", encoding="utf-8") as handle:
        handle.write(
            '[alerts]\nmanagement = ["mailto://ops:{smtp_password}@smtp.example.gov.cn"]\n'
        )
    daemon.process.send_signal(signal.SIGHUP)
    count = len(sync_rows(store, 1000))
    await wait_for(lambda: len(sync_rows(store, 1000)) > count + 1, "syncs after the reload")
    await daemon.stop()
    store.dispose()
    assert daemon.process.returncode == 0
    [refused] = [line for line in daemon.stderr.splitlines() if "reload refused" in line]
    assert refused.endswith(
        "reload refused, keeping the running config: "
        f"{config}: alerts.management[0] uses {{smtp_password}}, but no SMTP password is set: "
        "set MONITORD_SMTP_PASSWORD in the environment or name a file with "
        "alerts.smtp_password_file"
    )
    assert "config reloaded" not in daemon.stderr


async def test_daemon_tells_systemd_it_is_ready(tmp_path: Path, portal: FakePortal) -> None:
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    daemon = await start_daemon(config, {"NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000"})
    loop = asyncio.get_running_loop()
    lines: list[str] = []

    def status_seen() -> bool:
        return any(line.endswith("incident(s) open") for line in lines)

    while "READY=1" not in lines or "WATCHDOG=1" not in lines or not status_seen():
        data = await asyncio.wait_for(loop.sock_recv(sock, 1024), 20)
        lines += data.decode().splitlines()
    await daemon.stop()
    while True:
        try:
            lines += sock.recv(1024).decode().splitlines()
        except BlockingIOError:
            break
    sock.close()
    assert daemon.process.returncode == 0
    assert "STOPPING=1" in lines
    # Migrations may take long: the start timeout is extended before the store is opened.
    assert lines[0] == "EXTEND_TIMEOUT_USEC=600000000"
    # `systemctl status` says what the daemon is doing.
    assert "STATUS=0 services online, 0 down, 0 degraded, 0 incident(s) open" in lines or any(
        line.startswith("STATUS=5 services online") for line in lines
    )


async def test_alerts_pending_when_the_daemon_is_killed_are_delivered_after_restart_once(
    tmp_path: Path, portal: FakePortal
) -> None:
    from monitord.cli import main
    from tests.receivers import serve_webhook

    async with serve_webhook() as hook:
        hook.failing = True
        config = tmp_path / "monitord.toml"
        write_config(
            config,
            portal.url,
            extra=f"""
[alerts]
oncall = ["{hook.apprise_url("oncall")}"]
service_contacts = false
delivery_interval_seconds = 0.2
retry_seconds = 0.2
retry_max_seconds = 0.4
[incidents]
check_interval_seconds = 0.2
""",
        )
        daemon = await start_daemon(config)
        store = store_of(config)
        await wait_for(lambda: len(service_rows(store)) == 5, "the first sync")
        for n in range(3):
            status = await asyncio.to_thread(
                main,
                [
                    "--config",
                    str(config),
                    "incidents",
                    "open",
                    "--kind",
                    "outage",
                    "--service",
                    "svc-0001",
                    "--summary",
                    f"电话报告故障 {n}",
                ],
            )
            assert status == 0
        await wait_for(lambda: hook.refused >= 6, "delivery attempts to the failing channel")
        daemon.process.kill()  # no goodbye: SIGKILL
        await daemon.process.wait()
        hook.failing = False
        daemon = await start_daemon(config)
        await wait_for(lambda: len(hook.received) >= 3, "the alerts after the restart")
        await daemon.stop()
        assert daemon.process.returncode == 0
        keys = [m["key"].split("#")[0] for m in hook.received]
        assert sorted(keys) == ["incident:1:opened", "incident:2:opened", "incident:3:opened"]
        store.dispose()


async def test_followed_log_lines_are_counted_once_across_a_sigterm_and_restart(
    tmp_path: Path, portal: FakePortal
) -> None:
    import datetime as dt

    from sqlalchemy import select

    from monitord.store.models import LogHourStat
    from tests.accesslog.test_work import START, nginx_line

    log = tmp_path / "access.log"
    config = tmp_path / "monitord.toml"
    write_config(
        config,
        portal.url,
        extra=f"""
[logs]
follow = [{{ path = "{log}", format = "nginx" }}]
follow_interval_seconds = 0.2
""",
    )

    def write(lines: list[str]) -> None:
        with log.open("a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))

    def requests() -> dict[str, int]:
        with store.session() as session:
            rows = session.scalars(select(LogHourStat)).all()
            return {row.hour.astimezone(START.tzinfo).strftime("%H"): row.requests for row in rows}

    minute = dt.timedelta(minutes=1)
    # 09:00-09:59, and one line at 11:30 that closes 09:00 but leaves 11:00 open.
    write([nginx_line(START + i * minute / 4, i) for i in range(200)])
    write([nginx_line(START + 150 * minute, 1000)])
    daemon = await start_daemon(config)
    store = store_of(config)
    await wait_for(lambda: requests().get("09") == 200, "the 09:00 statistics")
    await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr

    # The 11:00 hour was open at the stop: its first line must be counted once, not lost.
    write([nginx_line(START + 150 * minute + i * dt.timedelta(seconds=10), 2000 + i)
           for i in range(100)])  # fmt: skip
    write([nginx_line(START + 300 * minute, 3000)])  # 14:00 closes 11:00
    daemon = await start_daemon(config)
    await wait_for(lambda: "11" in requests(), "the 11:00 statistics")
    await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    assert requests() == {"09": 200, "11": 101}
    store.dispose()


@pytest.mark.parametrize(
    ("umask", "mode"),
    [(0o022, 0o600), (0o027, 0o640)],
    ids=["a shell's umask: owner only", "the unit's UMask=0027: the group reads"],
)
async def test_the_store_and_the_log_are_not_readable_by_other_users(
    tmp_path: Path, portal: FakePortal, umask: int, mode: int
) -> None:
    # Outside systemd the store (which holds webhook tokens) and the log were created 0644.
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    daemon = await start_daemon(config, umask=umask)
    log = tmp_path / "monitord.log.jsonl"
    # The daemon creates the store, not this test: opening it first would create it here.
    await wait_for(lambda: log.exists() and "monitord running" in log.read_text(), "the start")
    store = store_of(config)
    await wait_for(lambda: len(sync_rows(store)) > 0, "a sync")
    files = ["monitord.db", "monitord.db-wal", "monitord.db-shm", "monitord.log.jsonl"]
    modes = {name: (tmp_path / name).stat().st_mode & 0o777 for name in files}
    await daemon.stop()
    store.dispose()
    assert modes == dict.fromkeys(files, mode)


def run_once(config: Path, *wrapper: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`monitord run` as a process that is expected to exit by itself (a refused start)."""
    return subprocess.run(
        [*wrapper, sys.executable, "-m", "monitord.cli", "--config", str(config), "run"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, MONITORD_PORTAL_TOKEN=TOKEN),
    )


READ_ONLY_MOUNT = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec'
"""A shell script for `unshare -rm sh -c`: mount folder $1 read-only over itself, then run the
rest of its arguments (in a mount namespace of their own: nothing outside sees the mount)."""


def can_mount_read_only() -> bool:
    """Whether this machine lets a process see a folder through a read-only bind mount."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", READ_ONLY_MOUNT + " true", "sh", folder],
            capture_output=True,
            timeout=30,
        )
    return done.returncode == 0


@pytest.mark.skipif(
    not can_mount_read_only(), reason="needs unshare and a user namespace to mount read-only"
)
def test_a_store_on_a_read_only_mount_is_refused_at_start(tmp_path: Path) -> None:
    # The daemon said "monitord running" and then every job failed on every run.
    folder = tmp_path / "store"
    url = f"sqlite:///{folder / 'monitord.db'}"
    config = tmp_path / "monitord.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\n[logging]\nfile = "{tmp_path / "log" / "m.jsonl"}"\n',
        encoding="utf-8",
    )
    store = open_store(url)
    with store.engine.connect() as connection:  # open, as after a crash: -wal and -shm are there
        connection.exec_driver_sql("PRAGMA user_version")
        script = READ_ONLY_MOUNT + ' "$@"'
        done = run_once(config, "unshare", "-rm", "sh", "-c", script, "sh", str(folder))
    store.dispose()
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"monitord: the store at {url} cannot be written: OperationalError: attempt to write "
        "a readonly database\n"
    )


def test_a_read_only_postgresql_database_is_refused_at_start(
    tmp_path: Path, postgres: PostgresServer | None
) -> None:
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = postgres.new_database()
    open_store(url).dispose()
    admin = Store(url)
    with admin.engine.connect() as connection:
        name = connection.exec_driver_sql("select current_database()").scalar()
        connection.exec_driver_sql(f"alter database {name} set default_transaction_read_only = on")
        connection.commit()
    admin.dispose()
    config = tmp_path / "monitord.toml"
    config.write_text(f'[store]\nurl = "{url}"\n[logging]\nfile = "{tmp_path / "m.jsonl"}"\n')
    done = run_once(config)
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"monitord: the store at {Store(url).display_url} cannot be written: InternalError: "
        "cannot execute UPDATE in a read-only transaction\n"
    )


FULL_DISK_SCRIPT = """
mount -t tmpfs -o size=4m tmpfs "$1" || exit 9
store=$1 marks=$2
shift 2
"$@" &
daemon=$!
until [ -e "$marks/fill" ]; do sleep 0.1; done
dd if=/dev/zero of="$store/filler" bs=64k 2>/dev/null
touch "$marks/full"
until [ -e "$marks/free" ]; do sleep 0.1; done
rm "$store/filler"
until [ -e "$marks/stop" ]; do sleep 0.1; done
kill -TERM $daemon
wait $daemon
status=$?
cp "$store"/monitord.db* "$marks/"
exit $status
"""
"""A shell script for `unshare -rm sh -c`: mount a 4 MiB tmpfs on folder $1, run the rest of
its arguments but $2 (the daemon) on it; fill the disk when $2/fill appears, free it when
$2/free does, stop the daemon at $2/stop and copy the store to $2 (the mount ends with it)."""


def outage_said_once(lines: list[str]) -> str:
    """The daemon's line saying the store does not answer, after checking that the outage and
    the store's return were each said once."""
    gone = [line for line in lines if "does not answer" in line]
    back = [line for line in lines if "answers again" in line]
    assert len(gone) == 1 and len(back) == 1, "\n".join(lines)
    return gone[0]


LATE_WRITTEN = re.compile(
    r"(\d+) probe results measured while (?:the store did not answer|the cluster did not count "
    r"this daemon alive)"
)
"""A line saying results were written late: those kept through the store's outage, and those
measured in the moment after it, before the daemon's heartbeat counted it alive again."""


def can_mount_tmpfs() -> bool:
    """Whether this machine lets a process mount a tmpfs in a user namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        script = 'mount -t tmpfs -o size=1m tmpfs "$1"'
        done = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script, "sh", folder], capture_output=True, timeout=30
        )
    return done.returncode == 0


@pytest.mark.skipif(
    not can_mount_tmpfs(), reason="needs unshare and a user namespace to mount a tmpfs"
)
async def test_a_full_disk_is_an_outage_said_once_and_the_probes_keep_their_results(
    tmp_path: Path, portal: FakePortal
) -> None:
    # The store's disk full: the probes stopped after one round (writing the results kept
    # from before failed the job each time), every job said "the store did not answer" at
    # every run, and the daemon never saw an outage, since the store still answered a read.
    from sqlalchemy import func, select

    from monitord.store.models import ProbeResultRow

    store_folder, marks = tmp_path / "store", tmp_path / "marks"
    store_folder.mkdir()
    marks.mkdir()
    config = tmp_path / "monitord.toml"
    write_config(
        config,
        portal.url,
        store_url=f"sqlite:///{store_folder / 'monitord.db'}",
        extra="[probes]\ninterval_seconds = 1.0\n[incidents]\ncheck_interval_seconds = 0.2\n",
    )
    said = tmp_path / "stderr.txt"
    with said.open("w") as stderr:
        process = subprocess.Popen(
            [
                *("unshare", "-rm", "sh", "-c", FULL_DISK_SCRIPT, "sh", str(store_folder)),
                *(str(marks), sys.executable, "-m", "monitord.cli", "--config", str(config), "run"),
            ],
            stderr=stderr,
            env=dict(os.environ, MONITORD_PORTAL_TOKEN=TOKEN),
            start_new_session=True,  # the script and the daemon, killed together on a failure
        )
    try:
        await wait_for(lambda: "probe round: 5 services" in said.read_text(), "a round")
        (marks / "fill").touch()
        await wait_for(lambda: "does not answer" in said.read_text(), "the outage said")
        await asyncio.sleep(6)  # probe rounds on a full disk
        (marks / "free").touch()
        await wait_for(lambda: "written (late)" in said.read_text(), "the kept results written")
        await wait_for(lambda: "answers again" in said.read_text(), "the store's return")
        (marks / "stop").touch()
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    lines = said.read_text().splitlines()
    gone = outage_said_once(lines)
    assert "full" in gone
    assert not [line for line in lines if "WARNING job" in line or "Traceback" in line]
    # Every late row written is said: a write the store stopped partway in parts, and the
    # results measured after the outage before the heartbeat counted the daemon alive.
    late = sum(int(found[1]) for line in lines if (found := LATE_WRITTEN.search(line)))
    assert late >= 2 * 5  # more than one round of the 5 services
    copy = Store(f"sqlite:///{marks / 'monitord.db'}")
    with copy.session() as session:
        kept = session.scalar(
            select(func.count()).select_from(ProbeResultRow).where(ProbeResultRow.late)
        )
    copy.dispose()
    assert kept == late


async def test_a_second_daemon_on_the_same_sqlite_store_is_refused(
    tmp_path: Path, portal: FakePortal
) -> None:
    # Two daemons on one store sent every alert twice and probed every service twice.
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url)
    first = await start_daemon(config)
    await wait_for_line(first, "monitord running")
    done = await asyncio.to_thread(run_once, config)
    assert done.returncode == 1
    url = f"sqlite:///{tmp_path / 'monitord.db'}"
    assert done.stderr == (
        f"monitord: another monitord daemon is running on the store at {url}: stop it first "
        "(two daemons on one SQLite store would send every alert twice; several daemons share "
        "the work on a PostgreSQL store)\n"
    )
    # The command line still reads and writes the store the daemon holds.
    from monitord.cli import main

    assert await asyncio.to_thread(main, ["--config", str(config), "services"]) == 0
    await first.stop()
    assert first.process.returncode == 0, first.stderr


async def test_a_daemon_whose_store_file_is_removed_says_so_and_exits_for_a_restart(
    tmp_path: Path, portal: FakePortal
) -> None:
    # The store's folder removed under the daemon: it went on writing into the removed file
    # (all lost at its stop), said nothing, and a second daemon on the same config started
    # beside it, so that every alert was delivered twice.
    folder = tmp_path / "store"
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url, store_url=f"sqlite:///{folder / 'monitord.db'}")
    first = await start_daemon(config)
    await wait_for_line(first, "monitord running")
    shutil.rmtree(folder)
    _, err = await asyncio.wait_for(first.process.communicate(), 30)
    assert first.process.returncode == 1
    [said] = [line for line in err.decode().splitlines() if "ERROR" in line]
    assert said.endswith(
        f"the store file {folder / 'monitord.db'} was removed: stopping, since what the daemon "
        "writes now would be lost; a restart opens the store at its path (a new, empty one if "
        "nothing is there)"
    )
    # The restart opens the store at its path, and holds it.
    again = await start_daemon(config)
    await wait_for_line(again, "monitord running")
    assert (await asyncio.to_thread(run_once, config)).returncode == 1  # a second one refused
    await again.stop()
    assert again.process.returncode == 0, again.stderr


async def pg_daemon_config(
    tmp_path: Path, portal: FakePortal, postgres: PostgresServer | None
) -> tuple[Path, str]:
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = await asyncio.to_thread(postgres.new_database)
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url, store_url=url)
    return config, url


async def test_a_second_daemon_of_the_same_name_on_postgresql_is_refused(
    tmp_path: Path, portal: FakePortal, postgres: PostgresServer | None
) -> None:
    # Several daemons share a PostgreSQL store, each under its own [cluster] name; a second
    # one started by mistake with the first one's name would claim its share and its cursors.
    config, url = await pg_daemon_config(tmp_path, portal, postgres)
    first = await start_daemon(config)
    await wait_for_line(first, "monitord running")
    done = await asyncio.to_thread(run_once, config)
    assert done.returncode == 1
    host = socket.gethostname()
    assert done.stderr.startswith(
        f"monitord: a monitord daemon named '{host}' is already running on {host} (pid "
        f"{first.process.pid}) with the store at {Store(url).display_url}: give this one "
        "another [cluster] name, or, if that daemon was killed, start this one again in "
    ), done.stderr
    await first.stop()
    assert first.process.returncode == 0, first.stderr
    # Stopped cleanly, its name is free at once.
    again = await start_daemon(config)
    await wait_for_line(again, "monitord running")
    await again.stop()
    assert again.process.returncode == 0, again.stderr


async def test_a_store_outage_is_two_lines_not_a_traceback_per_job(
    tmp_path: Path, portal: FakePortal
) -> None:
    # PostgreSQL stopped for 60 s gave 352 tracebacks (8 MB of log), each showing its password.
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    # A cluster of its own: the session's is shared with other tests.
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="monitord-pg-")), bindir)
    await asyncio.to_thread(server.start)
    try:
        url = (await asyncio.to_thread(server.new_database)).replace(
            "monitord@", "monitord:pw-not-shown@"
        )
        config = tmp_path / "monitord.toml"
        extra = (
            "[incidents]\ncheck_interval_seconds = 0.2\n[alerts]\ndelivery_interval_seconds = 0.2\n"
        )
        write_config(config, portal.url, store_url=url, extra=extra)
        log = tmp_path / "monitord.log.jsonl"
        daemon = await start_daemon(config)
        await wait_for(lambda: log.exists() and "monitord running" in log.read_text(), "the start")
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(8)
        await asyncio.to_thread(restart_postgres, server)
        await wait_for(lambda: "answers again" in log.read_text(), "the store's return")
        store = Store(url)
        count = len(sync_rows(store, 1000))
        await wait_for(lambda: len(sync_rows(store, 1000)) > count, "a sync after the outage")
        store.dispose()
        await daemon.stop()
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            await asyncio.to_thread(server.stop)
        await asyncio.to_thread(shutil.rmtree, server.folder, True)
    assert daemon.process.returncode == 0, daemon.stderr
    assert "Traceback" not in daemon.stderr
    assert "pw-not-shown" not in daemon.stderr + log.read_text()
    lines = daemon.stderr.splitlines()
    [gone] = [i for i, line in enumerate(lines) if "does not answer" in line]
    [back] = [i for i, line in enumerate(lines) if "answers again" in line]
    assert lines[gone].endswith(
        ": the probes go on and keep their results, the other jobs wait until it does"
    )
    assert (
        f"the store at {Store(url).display_url} does not answer (OperationalError: "
        in (lines[gone])
    )
    assert back - gone <= 2, "\n".join(lines[gone : back + 1])


def set_read_only(url: str, read_only: bool) -> None:
    """Make the database at url read-only (as a hot standby after a failover is) or writable
    again, and end the sessions it has: the daemon's next ones take the new setting."""
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql("set default_transaction_read_only = off")
        name = connection.exec_driver_sql("select current_database()").scalar()
        value = "on" if read_only else "off"
        connection.exec_driver_sql(
            f"alter database {name} set default_transaction_read_only = {value}"
        )
        connection.exec_driver_sql(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid()"
        )
    engine.dispose()


async def test_a_read_only_postgresql_store_is_an_outage_and_the_probes_keep_their_results(
    tmp_path: Path, portal: FakePortal, postgres: PostgresServer | None
) -> None:
    # The store turned read-only (a hot standby after a failover): the outage was said once,
    # then no probe round ran at all and nothing measured meanwhile was ever written.
    from sqlalchemy import func

    from monitord.store.models import ProbeResultRow

    config, url = await pg_daemon_config(tmp_path, portal, postgres)
    extra = "[probes]\ninterval_seconds = 1.0\n[incidents]\ncheck_interval_seconds = 0.2\n"
    write_config(config, portal.url, store_url=url, extra=extra)
    log = tmp_path / "monitord.log.jsonl"
    daemon = await start_daemon(config)
    await wait_for(lambda: log.exists() and "probe round: 5 services" in log.read_text(), "a round")
    await asyncio.to_thread(set_read_only, url, True)
    await wait_for(lambda: "does not answer" in log.read_text(), "the outage said")
    await asyncio.sleep(4)  # probe rounds on a read-only store
    await asyncio.to_thread(set_read_only, url, False)
    await wait_for(lambda: "written (late)" in log.read_text(), "the kept results written")
    await wait_for(lambda: "answers again" in log.read_text(), "the store's return")
    await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    lines = daemon.stderr.splitlines()
    gone = outage_said_once(lines)
    assert "cannot execute UPDATE in a read-only transaction" in gone
    assert "Traceback" not in daemon.stderr
    # Every late row written is said: a write the store stopped partway in parts, and the
    # results measured after the outage before the heartbeat counted the daemon alive.
    late = sum(int(found[1]) for line in lines if (found := LATE_WRITTEN.search(line)))
    assert late >= 2 * 5  # more than one round of the 5 services
    store = Store(url)
    with store.session() as session:
        kept = session.scalar(
            select(func.count()).select_from(ProbeResultRow).where(ProbeResultRow.late)
        )
    store.dispose()
    assert kept == late, "\n".join(lines)


def as_admin(url: str, *statements: str) -> None:
    """Run statements on the database at url as the superuser, each committed at once."""
    engine = create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


async def test_a_store_with_no_connection_left_is_one_outage_not_one_every_two_seconds(
    tmp_path: Path, portal: FakePortal, postgres: PostgresServer | None
) -> None:
    # max_connections reached: the daemon said the store did not answer and then that it
    # answered again, every second or two (a pooled connection answered its check while the
    # jobs that needed a new one failed), with a warning per failed job in between.
    if postgres is None:
        pytest.skip("PostgreSQL (pg_ctl, initdb) is not installed: apt-get install postgresql")
    url = await asyncio.to_thread(postgres.new_database)
    name = url.rsplit("/", 1)[1]
    role = f"mon_{name}"  # a role of its own: a superuser is never refused a connection
    await asyncio.to_thread(
        as_admin, url, f"create role {role} login", f"alter database {name} owner to {role}"
    )
    config = tmp_path / "monitord.toml"
    extra = (
        "[probes]\ninterval_seconds = 1.0\n[incidents]\ncheck_interval_seconds = 0.2\n"
        "[alerts]\ndelivery_interval_seconds = 0.2\n"
    )
    write_config(config, portal.url, store_url=url.replace("monitord@", f"{role}@"), extra=extra)
    log = tmp_path / "monitord.log.jsonl"
    daemon = await start_daemon(config)
    await wait_for(lambda: log.exists() and "probe round: 5 services" in log.read_text(), "a round")
    # One of the daemon's connections is left, and no new one can be made.
    await asyncio.to_thread(
        as_admin,
        url,
        f"alter role {role} connection limit 1",
        "select pg_terminate_backend(pid) from pg_stat_activity "
        f"where usename = '{role}' and pid <> (select min(pid) from pg_stat_activity "
        f"where usename = '{role}')",
    )
    await wait_for(lambda: "does not answer" in log.read_text(), "the outage said")
    await asyncio.sleep(10)  # jobs and heartbeats, some on the connection left
    await asyncio.to_thread(as_admin, url, f"alter role {role} connection limit -1")
    await wait_for(lambda: "answers again" in log.read_text(), "the store's return")
    await daemon.stop()
    assert daemon.process.returncode == 0, daemon.stderr
    lines = daemon.stderr.splitlines()
    gone = outage_said_once(lines)
    assert "too many connections for role" in gone
    assert not [line for line in lines if "failed: the store did not answer" in line], lines


async def test_the_daemon_probes_each_service_at_its_slot_of_rounds_aligned_to_the_clock(
    tmp_path: Path, portal: FakePortal
) -> None:
    """Rounds start at whole multiples of the interval, and each service is probed at the slot
    its id gives it, in every round and across a restart: wherever a service is probed from,
    it is probed at the same moment of the round."""
    from sqlalchemy import select

    from monitord.probing.schedule import SPREAD_SHARE, TICK_SECONDS, slot
    from monitord.store.models import ProbeResultRow

    interval = 3.0
    config = tmp_path / "monitord.toml"
    write_config(config, portal.url, extra=f"[probes]\ninterval_seconds = {interval}\n")
    store = store_of(config)

    def phases() -> dict[str, list[float]]:
        with store.session() as session:
            rows = session.execute(
                select(ProbeResultRow.service_id, ProbeResultRow.at).where(
                    ProbeResultRow.kind == "availability"
                )
            ).all()
        found: dict[str, list[float]] = {}
        for service, at in rows:
            found.setdefault(service, []).append(at.timestamp() % interval)
        return found

    for _run in range(2):
        daemon = await start_daemon(config)
        before = sum(map(len, phases().values())) if _run else 0
        await wait_for(lambda b=before: sum(map(len, phases().values())) >= b + 15, "three rounds")
        await daemon.stop()
        assert daemon.process.returncode == 0, daemon.stderr
    found = phases()
    assert set(found) == {f"svc-{n:04d}" for n in range(1, 6)}
    for service, seen in found.items():
        due = slot(service) * interval * SPREAD_SHARE
        late = [(phase - due) % interval for phase in seen]
        # Started at the first tick after the slot (a loaded machine adds a little).
        assert all(lag < TICK_SECONDS + 0.8 for lag in late), (service, due, seen)
    store.dispose()


async def test_a_stop_that_waits_on_a_locked_store_ends_after_the_grace_and_its_margin(
    tmp_path: Path, portal: FakePortal, postgres: PostgresServer | None
) -> None:
    # A lock held on the store (or its server stopped) held SIGTERM until the lock went:
    # systemd's TimeoutStopSec killed the daemon, with nothing said.
    config, url = await pg_daemon_config(tmp_path, portal, postgres)
    write_config(
        config,
        portal.url,
        grace=1,
        store_url=url,
        extra="[cluster]\nheartbeat_seconds = 0.5\nlease_seconds = 2\n",
    )
    daemon = await start_daemon(config)
    await wait_for_line(daemon, "monitord running")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with table_locked(engine, "cluster_members"):
            await asyncio.sleep(1.5)  # a heartbeat now waits on the lock
            took = await daemon.stop(within=1 + STOP_MARGIN_SECONDS + 10)
    finally:
        engine.dispose()
    assert took < 1 + STOP_MARGIN_SECONDS + 5
    assert daemon.process.returncode == 1
    assert "the store did not answer (a lock held, or its server stopped); exiting" in (
        daemon.stderr
    )


async def test_a_stop_held_by_a_hung_alert_send_exits_cleanly_and_the_alert_goes_once_after(
    tmp_path: Path, portal: FakePortal
) -> None:
    # A send that got no answer held the stop past its margin: the daemon exited 1 blaming the
    # store, which was fine; a SIGHUP while it waited ended it with "Hangup".
    from monitord.cli import main
    from tests.receivers import Webhook, serve_webhook

    class HangingWebhook(Webhook):
        """Takes a request and answers nothing, recording nothing, until `released`."""

        released = asyncio.Event()

        async def handle(self, request: web.Request) -> web.Response:
            if not self.released.is_set():
                await self.released.wait()
                return web.Response(status=503)  # to a daemon long gone
            return await super().handle(request)

    async with serve_webhook(HangingWebhook()) as hook:
        config = tmp_path / "monitord.toml"
        write_config(
            config,
            portal.url,
            grace=1,
            extra=f"""
[alerts]
oncall = ["{hook.apprise_url("oncall")}"]
service_contacts = false
delivery_interval_seconds = 0.2
[incidents]
check_interval_seconds = 0.2
""",
        )
        daemon = await start_daemon(config)
        store = store_of(config)
        await wait_for(lambda: len(service_rows(store)) == 5, "the first sync")
        opened = [
            "--config",
            str(config),
            "incidents",
            "open",
            "--kind",
            "outage",
            "--service",
            "svc-0001",
            "--summary",
            "电话报告故障",
        ]
        assert await asyncio.to_thread(main, opened) == 0
        await wait_for(lambda: outbox_states(store) == ["sending"], "the send under way")
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        await wait_for_line(daemon, "monitord stopped")
        daemon.process.send_signal(signal.SIGHUP)  # the process waits for the send's thread
        _, err = await asyncio.wait_for(daemon.process.communicate(), STOP_MARGIN_SECONDS + 15)
        daemon.stderr = err.decode()
        assert time.monotonic() - started < 1 + STOP_MARGIN_SECONDS + 5
        assert daemon.process.returncode == 0, daemon.stderr
        assert "the store did not answer" not in daemon.stderr
        [last] = [line for line in daemon.stderr.splitlines() if "stopping took over" in line]
        assert "alert-delivery" in last
        assert "(cancelled at the stop) still waiting in a worker thread" in last

        hook.released.set()
        daemon = await start_daemon(config)
        await wait_for(lambda: outbox_states(store) == ["delivered"], "the alert after the restart")
        await daemon.stop()
        assert daemon.process.returncode == 0
        assert [m["key"].split("#")[0] for m in hook.received] == ["incident:1:opened"]
        store.dispose()


def outbox_states(store: Store) -> list[str]:
    """The state of each channel's copy in the alerts outbox."""
    from monitord.store.models import OutboxAlert

    with store.session() as session:
        copies = select(OutboxAlert.state).where(OutboxAlert.parent_id.is_not(None))
        return list(session.scalars(copies.order_by(OutboxAlert.id)))
