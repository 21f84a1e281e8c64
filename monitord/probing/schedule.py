"""When each service is probed: rounds aligned to the clock, and a fixed slot per service.

Rounds start at whole multiples of the interval on the wall clock (every daemon of a cluster
starts its round at the same moment), and each service has a slot in the round fixed by a hash of
its id, within the first 80 % of the interval. Whoever probes a service, it is probed at the same
moment of every round: when the probe split moves a service to another daemon (one joined or
died), the service keeps its slot and no round goes without it.

Within a round the daemon looks, once a second, at the slots that came due and at who probes
what now (the cluster's split): a service whose owner went away in the middle of a round, and
whose slot had already passed, is probed at once by its new owner. Results are recorded every
few seconds, not at the round's end, so that a daemon killed mid-round loses seconds of results,
not a round.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import math
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from monitord.probing.prober import Prober
from monitord.probing.targets import CHEAP_KIND, ServiceTarget
from monitord.types import ProbeResult

SPREAD_SHARE = 0.8
"""The share of the interval over which a round's slots lie (the rest leaves room for the last
probes' timeouts before the next round)."""
TICK_SECONDS = 1.0
"""A round starts its probes in batches, one batch a second: 2,000 probes started one by one
every 24 ms cost more than twice the CPU of the same probes started a second's worth at a time
(each lone start wakes the loop, and finds the caches cold, on its own)."""
FLUSH_SECONDS = 10.0
"""How often a round records what it measured so far."""
AT_ONCE_FLUSH_SECONDS = 0.5
"""How often a round probing every service at once (`probe_at_once`) records what has come."""
EARLY_SECONDS = TICK_SECONDS
"""A round started this close before a window's start belongs to that window (timers fire a
little early or late)."""


class ProbeSplit(Protocol):
    """Who probes what (monitord.cluster.Split)."""

    @property
    def names(self) -> frozenset[str]:
        """The members the services are shared among."""
        ...

    def mine(self, service_id: str) -> bool:
        """Whether this daemon probes service_id."""
        ...


def slot(service_id: str) -> float:
    """The service's place in every round, in [0, 1): the same on every daemon."""
    digest = hashlib.blake2b(service_id.encode(), digest_size=8, person=b"probe-slot").digest()
    return int.from_bytes(digest) / 2**64


def window_start(at: float, interval: float) -> float:
    """The start (epoch seconds) of the round window that `at` belongs to."""
    return math.floor((at + EARLY_SECONDS) / interval) * interval


def next_window(last: float | None, now: float, interval: float) -> tuple[float, bool]:
    """The window the next round probes, and whether slots already past are left out.

    The first round of a process starts in the middle of a window: it leaves the slots already
    past (the next round has them). A later round that starts late (the previous one overran)
    probes its passed slots at once; one that starts a little early waits for its window.
    After `interval` changed (a reload), the next window is the first of the new interval's
    whole multiples after `last`: the same on every daemon, reloaded whenever.
    """
    current = window_start(now, interval)
    if last is None:
        return current, True
    return max(current, window_start(last, interval) + interval), False


@dataclass(frozen=True)
class Schedule:
    """Where a spread round sits in time, and who probes what."""

    start: float
    """The window's start, epoch seconds on the round's clock."""
    interval: float
    skip_passed: bool = False
    """Leave the slots already past when the round starts (a process's first round)."""
    split: Callable[[], ProbeSplit] | None = None
    """Who probes what now (None: this process probes every service)."""
    watch_seconds: float = 0.0
    """After the last slot, how long a member's departure is still looked for (its passed
    slots then probed at once): the time the cluster takes to see a member gone."""
    flush_seconds: float = FLUSH_SECONDS
    """How often what was measured is recorded."""
    counted: Callable[[], bool] | None = None
    """Whether the other daemons count this one alive now (None: no others). What it
    measures while they do not (it is cut off from the store, and they probe its share) is
    recorded late: evidence, but no verdict."""


Record = Callable[[list[ProbeResult], bool], Coroutine[Any, Any, None]]
"""Records a batch of results, late or not (run one at a time; what it raises ends the
round)."""


_STRAYS: set[asyncio.Task[None]] = set()
"""Recordings that outlived their round (see spread_round); kept until they end."""


def _let_run(task: asyncio.Task[None]) -> None:
    """Keep a task that outlived its round until it ends; what it raises is the round's
    recording error, already handled by `record` (kept in memory, said by the daemon)."""
    _STRAYS.add(task)
    task.add_done_callback(_STRAYS.discard)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _flush(record: Record, live: list[ProbeResult], late: list[ProbeResult]) -> None:
    if late:
        await record(late, True)
    if live:
        await record(live, False)


async def probe_at_once(prober: Prober, targets: Sequence[ServiceTarget], record: Record) -> None:
    """Probe every target's availability at once (`monitord probe --all`), recording what has
    come in every AT_ONCE_FLUSH_SECONDS while the rest are measured: the store's work runs
    beside the probes, and a round cancelled (Ctrl-C, the daemon stopping) records what it
    measured before it ends. Batches are recorded one at a time, in the order their results
    came."""
    running = {asyncio.create_task(prober.probe(t, CHEAP_KIND, t.url)) for t in targets}
    recording: asyncio.Task[None] | None = None
    try:
        while running:
            done, running = await asyncio.wait(running, timeout=AT_ONCE_FLUSH_SECONDS)
            if done:
                if recording is not None:
                    await recording
                recording = asyncio.create_task(record([task.result() for task in done], False))
        if recording is not None:
            await recording
    except asyncio.CancelledError:
        finished = [task.result() for task in running if task.done() and not task.cancelled()]
        for task in running:
            task.cancel()
        if recording is not None:
            await asyncio.wait({recording})  # a batch being written is written whole
        if finished:
            await asyncio.shield(record(finished, False))
        raise
    except BaseException:
        for task in running:  # the recording failed: no probe outlives the round
            task.cancel()
        raise


async def spread_round(
    prober: Prober,
    targets: Sequence[ServiceTarget],
    schedule: Schedule,
    record: Record,
) -> None:
    """Probe the targets' availability each at its slot of the window; record as it goes.

    Cancelled (the daemon stops), the round records what it has measured before it ends.
    """
    loop = asyncio.get_running_loop()
    spread = schedule.interval * SPREAD_SHARE
    plan = sorted(((slot(t.id) * spread, t) for t in targets), key=lambda p: p[0])
    began = loop.time()
    offset = prober.ctx.clock().timestamp() - schedule.start

    def position() -> float:
        return offset + loop.time() - began

    first = bisect.bisect_right([due for due, _ in plan], position()) if schedule.skip_passed else 0
    upcoming = first
    watch_until = min(spread + schedule.watch_seconds, schedule.interval - TICK_SECONDS)
    split = schedule.split() if schedule.split else None
    running: set[asyncio.Task[tuple[ProbeResult, bool]]] = set()
    finished: list[ProbeResult] = []
    finished_late: list[ProbeResult] = []
    flushing: asyncio.Task[None] | None = None
    flushed_at = loop.time()

    async def measure(target: ServiceTarget) -> tuple[ProbeResult, bool]:
        """The result, and whether the others counted this daemon alive when it came."""
        result = await prober.probe(target, CHEAP_KIND, target.url)
        return result, schedule.counted is None or schedule.counted()

    def launch(target: ServiceTarget) -> None:
        running.add(asyncio.create_task(measure(target)))

    def collect(tasks: Iterable[asyncio.Task[tuple[ProbeResult, bool]]]) -> None:
        for task in tasks:
            result, counted = task.result()
            (finished if counted else finished_late).append(result)

    try:
        while True:
            now = position()
            if schedule.split is not None:
                latest = schedule.split()
                if split is not None and latest.names != split.names:
                    for _, target in plan[first:upcoming]:
                        if latest.mine(target.id) and not split.mine(target.id):
                            launch(target)  # its prober went away: its slot had passed
                split = latest
            while upcoming < len(plan) and plan[upcoming][0] <= now:
                target = plan[upcoming][1]
                upcoming += 1
                if split is None or split.mine(target.id):
                    launch(target)
            done = {task for task in running if task.done()}
            running -= done
            collect(done)
            if flushing is not None and flushing.done():
                flushing.result()  # what the recording raised ends the round
                flushing = None
            over = upcoming == len(plan) and not (split is not None and now < watch_until)
            if over and not running:
                break
            due_now = loop.time() - flushed_at >= schedule.flush_seconds
            if (finished or finished_late) and flushing is None and due_now:
                flushing = asyncio.create_task(_flush(record, finished, finished_late))
                finished, finished_late, flushed_at = [], [], loop.time()
            if over:
                await asyncio.wait(running, timeout=TICK_SECONDS)
                continue
            # Alone, sleep until the tick of the next slot; in a cluster, look at the split
            # every tick, to take over at once the slots of a member that went away.
            then = now if split is not None or upcoming == len(plan) else plan[upcoming][0]
            await asyncio.sleep(
                (math.floor(max(now, then) / TICK_SECONDS) + 1) * TICK_SECONDS - now
            )
        if flushing is not None:
            # A recording that hangs (a cut network holds a query until the kernel gives up)
            # is waited for until the window ends, not longer: the next round probes on.
            left = max(schedule.interval - position(), TICK_SECONDS)
            if (await asyncio.wait({flushing}, timeout=left))[0]:
                flushing.result()
            else:
                _let_run(flushing)
        await _flush(record, finished, finished_late)
    except asyncio.CancelledError:
        collect(task for task in running if task.done() and not task.cancelled())
        for task in running:
            task.cancel()
        if flushing is not None:
            await asyncio.wait({flushing})
        await asyncio.shield(_flush(record, finished, finished_late))
        raise
    except BaseException:
        for task in running:  # the recording failed: no probe outlives the round
            task.cancel()
        raise
