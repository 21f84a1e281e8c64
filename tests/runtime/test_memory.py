"""The daemon's resident memory after a probe round: what the round freed goes back to the
system, instead of staying in malloc's arenas round after round (issue 19's soak measured
+32 to +38 MiB an hour with no Python object growing)."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitord import cli
from monitord.config import parse_config
from monitord.runtime.app import App
from monitord.runtime.daemon import Daemon
from monitord.runtime.heap import DAEMON_ARENAS, _malloc_trim
from monitord.runtime.jobs import JOBS, Job
from monitord.store import open_store
from monitord.timeutil import system_clock

MIB = 1024 * 1024
BLOCK = 1024
"""Above pymalloc's 512 bytes: each block is malloc's, as a round's C buffers are."""
BURST_MIB = 64

pytestmark = pytest.mark.skipif(_malloc_trim() is None, reason="not glibc: no malloc_trim")


def rss_mib() -> float:
    """This process's resident memory, from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    settings = parse_config({"store": {"url": f"sqlite:///{tmp_path / 'm.db'}"}}, "test", {})
    made = App(settings=settings, store=open_store(settings.store.url), clock=system_clock)
    yield made
    made.store.dispose()


async def resident_after_burst(app: App, release_memory: bool) -> tuple[float, float]:
    """Run, in the daemon, a job that allocates BURST_MIB in small blocks and frees all but
    one in 64 (as a round leaves a few long-lived objects among its garbage): the RSS the job
    saw once it had freed them, and the RSS once the daemon was done with the run."""
    kept: list[bytes] = []
    seen: list[float] = []

    async def burst(_app: App) -> None:
        blocks = [bytes(BLOCK) for _ in range(BURST_MIB * MIB // BLOCK)]
        kept.extend(blocks[::64])
        del blocks
        seen.append(rss_mib())

    job = Job("probes", burst, lambda s: 3600.0, release_memory=release_memory)
    daemon = Daemon(app, None, jobs=(job,))
    running = asyncio.create_task(daemon.run())
    while not seen:
        await asyncio.sleep(0.01)
    after_run = rss_mib()
    daemon.request_stop("test")
    assert await running == 0
    assert len(kept) == BURST_MIB * 16  # still held: what malloc keeps around them is the point
    return seen[0], after_run


async def test_what_a_probe_round_frees_goes_back_to_the_system(app: App) -> None:
    freed, after = await resident_after_burst(app, release_memory=True)
    # Without the release, the 63 MiB freed stayed resident (the control below).
    assert freed - after > BURST_MIB / 2, (freed, after)


async def test_without_the_release_malloc_keeps_what_was_freed(app: App) -> None:
    # The control: the memory the test above sees released is really held by malloc until
    # released, so that test would fail if the daemon stopped releasing it.
    freed, after = await resident_after_burst(app, release_memory=False)
    assert freed - after < BURST_MIB / 4, (freed, after)


def test_the_probe_job_releases_memory_after_each_round() -> None:
    released = {job.name for job in JOBS if job.release_memory}
    assert released == {"probes"}


ARENAS_CHILD = """
import ctypes, ctypes.util, sys, threading
from monitord.runtime.heap import limit_arenas

if sys.argv[1] == "capped":
    assert limit_arenas()
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
together = threading.Barrier(8)


def allocate() -> None:
    libc.malloc(4096)
    together.wait()  # all alive at once, as the daemon's workers are: no arena handed on


threads = [threading.Thread(target=allocate) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc.malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


def arenas_after_eight_threads(mode: str) -> int:
    """How many malloc arenas a fresh process has once eight live threads have each allocated."""
    done = subprocess.run(
        [sys.executable, "-c", ARENAS_CHILD, mode], capture_output=True, text=True, check=True
    )
    return done.stderr.count("Arena ")


def test_the_daemon_caps_malloc_at_two_arenas_however_many_threads_it_runs() -> None:
    # Uncapped, glibc gives each new thread an arena of its own (the control): the daemon's
    # memory then rose with each worker thread its jobs started.
    assert arenas_after_eight_threads("uncapped") >= 8
    assert arenas_after_eight_threads("capped") == DAEMON_ARENAS


def test_monitord_run_caps_the_arenas_before_anything_else() -> None:
    source = inspect.getsource(cli.cmd_run)
    assert source.index("limit_arenas()") < source.index("import aio")
