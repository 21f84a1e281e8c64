"""The round clock: rounds aligned to whole intervals, a fixed slot per service, services whose
prober went away taken over mid-round, and results recorded as the round goes."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from monitord.cluster import Split
from monitord.config import parse_config
from monitord.probing import ServiceTarget, probe_context
from monitord.probing.prober import Prober
from monitord.probing.schedule import (
    SPREAD_SHARE,
    Schedule,
    next_window,
    slot,
    spread_round,
    window_start,
)
from monitord.timeutil import system_clock
from monitord.types import ProbeResult
from tests.probes.helpers import Serve

pytestmark = pytest.mark.timeout(60)


@dataclass
class Portal:
    """Services on loopback, each under its own path; when each was asked, on the loop's clock."""

    url: str = ""
    arrivals: dict[str, list[float]] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        now = asyncio.get_running_loop().time()
        self.arrivals.setdefault(request.match_info["service"], []).append(now)
        return web.json_response({"code": "0"})


@pytest.fixture
async def portal(serve: Serve) -> Portal:
    portal = Portal()
    app = web.Application()
    app.router.add_get("/{service}", portal.handle)
    portal.url = f"http://127.0.0.1:{await serve(app, None)}"
    return portal


def services(portal: Portal, count: int) -> list[ServiceTarget]:
    return [
        ServiceTarget(
            id=f"svc-{n:04d}",
            name=f"服务{n}",
            url=f"{portal.url}/svc-{n:04d}",
            status="online",
            probe=None,
            return_codes=None,
            max_concurrency=None,
            suspension=None,
        )
        for n in range(count)
    ]


@dataclass
class Recorder:
    """The round's record step: what it was handed, batch by batch."""

    batches: list[list[ProbeResult]] = field(default_factory=list)
    late: list[ProbeResult] = field(default_factory=list)

    async def __call__(self, results: list[ProbeResult], late: bool) -> None:
        if late:
            self.late += results
        else:
            self.batches.append(results)

    def services(self) -> Counter[str]:
        return Counter(r.service_id or "" for batch in self.batches for r in batch)


async def run_round(
    targets: list[ServiceTarget], record: Recorder, *, lead: float = 0.0, **schedule: Any
) -> float:
    """Run a spread round whose window started `lead` seconds ago; the loop's time then."""
    settings = parse_config({"probes": {"timeout_seconds": 2.0}}, "test", env={}).probes
    loop = asyncio.get_running_loop()
    start = system_clock().timestamp() - lead
    async with probe_context(settings, system_clock) as ctx:
        began = loop.time() - lead
        prober = Prober(ctx, settings)
        await spread_round(prober, targets, Schedule(start=start, **schedule), record)
    return began


def due(target: ServiceTarget, interval: float) -> float:
    return slot(target.id) * interval * SPREAD_SHARE


def test_every_daemon_gives_a_service_the_same_slot_and_the_slots_fill_the_round() -> None:
    assert slot("svc-0001") == slot("svc-0001") != slot("svc-0002")
    deciles = Counter(int(slot(f"svc-{n}") * 10) for n in range(5000))
    assert set(deciles) == set(range(10))
    assert all(400 < count < 600 for count in deciles.values()), deciles


def test_rounds_start_at_whole_intervals_and_a_late_round_keeps_its_window() -> None:
    window = window_start(1_000_000_000.0, 60.0)
    assert window % 60 == 0 and window <= 1_000_000_000.0 < window + 60
    # The first round of a process starts in the window under way, leaving its passed slots.
    assert next_window(None, window + 25, 60) == (window, True)
    # A round woken a little early belongs to the window about to start.
    assert next_window(window, window + 60 - 0.2, 60) == (window + 60, False)
    # A round that starts late (the last one overran) keeps its window: its passed slots at once.
    assert next_window(window, window + 60 + 30, 60) == (window + 60, False)
    # A round that woke early twice waits for the next window rather than repeating one.
    assert next_window(window + 60, window + 60 + 0.5, 60) == (window + 120, False)


def test_after_a_new_interval_rounds_fall_on_its_whole_multiples() -> None:
    # 10 s → 40 s at a reload: the rounds fell on the old window plus 40 s, 10 s off the
    # windows of a daemon started with 40 s, until a restart.
    last = window_start(1_000_000_000.0, 40.0) + 10  # a window of the old 10 s interval
    start, skip_passed = next_window(last, last + 5, 40)
    assert (start % 40, start - last, skip_passed) == (0, 30, False)
    # A round late on the new grid still keeps its window.
    assert next_window(last, start + 15, 40) == (start, False)


async def test_each_service_is_probed_once_at_the_tick_of_its_slot(portal: Portal) -> None:
    targets = services(portal, 12)
    record = Recorder()
    began = await run_round(targets, record, interval=3.0)
    assert record.services() == Counter({t.id: 1 for t in targets})
    batches = set()
    for target in targets:
        (arrival,) = portal.arrivals[target.id]
        late = arrival - began - due(target, 3.0)
        assert -0.05 < late < 1.3, (target.id, late)  # started at the first tick after its slot
        batches.add(round(arrival - began))
    assert len(batches) <= math.ceil(3.0 * SPREAD_SHARE) + 1  # a second's worth at a time


async def test_a_first_round_leaves_the_slots_already_past(portal: Portal) -> None:
    targets = services(portal, 20)
    record = Recorder()
    await run_round(targets, record, interval=3.0, skip_passed=True, lead=1.2)
    passed = {t.id for t in targets if due(t, 3.0) <= 1.2}
    ahead = {t.id for t in targets if due(t, 3.0) > 1.5}  # the round takes a moment to start
    assert passed and ahead
    assert ahead <= set(record.services()) and not passed & set(record.services())


async def test_a_late_round_probes_its_passed_slots_at_once(portal: Portal) -> None:
    targets = services(portal, 20)
    record = Recorder()
    began = await run_round(targets, record, interval=3.0, lead=1.2)
    assert record.services() == Counter({t.id: 1 for t in targets})
    for target in targets:
        if due(target, 3.0) <= 1.2:
            assert portal.arrivals[target.id][0] - began < 1.2 + 0.5


async def test_a_service_whose_prober_went_away_is_probed_at_once_by_its_new_owner(
    portal: Portal,
) -> None:
    """Daemon b dies 1.5 s into a 4-s round: a probes b's services whose slots had passed at
    once, b's later ones at their slots, and its own as ever; each exactly once."""
    targets = services(portal, 40)
    loop = asyncio.get_running_loop()
    began = loop.time()
    both, alone = Split("a", frozenset({"a", "b"})), Split("a", frozenset({"a"}))

    def split() -> Split:
        return both if loop.time() - began < 1.5 else alone

    record = Recorder()
    await run_round(targets, record, interval=4.0, split=split, watch_seconds=0.5)
    assert record.services() == Counter({t.id: 1 for t in targets})
    taken_over = [t for t in targets if not both.mine(t.id) and due(t, 4.0) < 1.5]
    assert taken_over
    for target in taken_over:
        assert 1.5 <= portal.arrivals[target.id][0] - began < 1.5 + 1.3


async def test_a_member_that_goes_away_after_the_last_slot_is_still_taken_over(
    portal: Portal,
) -> None:
    targets = services(portal, 20)
    loop = asyncio.get_running_loop()
    began = loop.time()
    both, alone = Split("a", frozenset({"a", "b"})), Split("a", frozenset({"a"}))
    spread = 3.0 * SPREAD_SHARE

    def split() -> Split:
        return both if loop.time() - began < spread + 0.3 else alone

    record = Recorder()
    await run_round(targets, record, interval=3.0, split=split, watch_seconds=0.5)
    assert record.services() == Counter({t.id: 1 for t in targets})


async def test_a_round_records_as_it_goes_and_keeps_what_it_measured_when_stopped(
    portal: Portal,
) -> None:
    targets = services(portal, 60)
    record = Recorder()
    round_ = asyncio.create_task(
        run_round(targets, record, interval=8.0, flush_seconds=0.5)  # slots over 6.4 s
    )
    await asyncio.sleep(3.5)
    recorded_while_running = len(record.batches)
    round_.cancel()
    with pytest.raises(asyncio.CancelledError):
        await round_
    assert recorded_while_running >= 2  # not only at the round's end
    asked = {sid for sid, times in portal.arrivals.items() if times}
    assert 0 < len(asked) < len(targets)
    assert set(record.services()) == asked  # nothing measured was lost at the stop


async def test_what_a_daemon_measures_while_the_others_do_not_count_it_is_recorded_late(
    portal: Portal,
) -> None:
    """Cut off from the store, a daemon's heartbeat lapses and the others take its share: what
    it measures meanwhile is evidence (late), never a verdict."""
    targets = services(portal, 40)
    loop = asyncio.get_running_loop()
    began = loop.time()

    def counted() -> bool:
        return not 1.0 <= loop.time() - began < 2.0

    record = Recorder()
    await run_round(targets, record, interval=3.0, counted=counted)
    late = {r.service_id for r in record.late}
    live = set(record.services())
    assert late and live and not late & live and late | live == {t.id for t in targets}
    for result in record.late:
        assert 1.0 <= portal.arrivals[result.service_id or ""][0] - began < 2.1


async def test_a_recording_that_hangs_does_not_hold_up_the_next_round(portal: Portal) -> None:
    """A cut network holds a query until the kernel gives up: the round waits for it until its
    window ends, not longer, and what it measured since is handed on to be recorded."""
    targets = services(portal, 30)
    never = asyncio.Event()
    handed: list[ProbeResult] = []

    async def record(results: list[ProbeResult], late: bool) -> None:
        if not handed:
            handed.extend(results)
            await never.wait()  # the first recording hangs
        else:
            handed.extend(results)

    loop = asyncio.get_running_loop()
    began = loop.time()
    settings = parse_config({"probes": {"timeout_seconds": 2.0}}, "test", env={}).probes
    async with probe_context(settings, system_clock) as ctx:
        schedule = Schedule(start=system_clock().timestamp(), interval=4.0, flush_seconds=0.5)
        await spread_round(Prober(ctx, settings), targets, schedule, record)
    assert loop.time() - began < 4.0 + 1.5
    assert sorted(r.service_id or "" for r in handed) == [t.id for t in targets]
    never.set()
    await asyncio.sleep(0)
