"""Running probes within a round's limits: the global and per-service concurrency, the deadline."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence

from loguru import logger

import probes
from monitord.config import ProbeSettings
from monitord.probing.targets import ServiceTarget, per_service_limit, spec_for_target
from monitord.types import ProbeContext, ProbeResult, Target


class ProbeLimits:
    """The limits every probe of a process shares: probes in flight over all services, and
    connections open at once to each service.

    The daemon's availability rounds and its deep probes, which run beside them, take their
    slots from one ProbeLimits: a service never has more connections open than its share, and
    the probes in flight never exceed `probes.concurrency`, whatever runs them. A changed
    limit (a reload, a new filing) takes effect for the probes that start after it.
    """

    def __init__(self) -> None:
        self._overall: tuple[int, asyncio.Semaphore] | None = None
        self._connections: dict[str, tuple[int, asyncio.Semaphore]] = {}

    def overall(self, concurrency: int) -> asyncio.Semaphore:
        """The slots of the probes in flight over all services."""
        if self._overall is None or self._overall[0] != concurrency:
            self._overall = (concurrency, asyncio.Semaphore(concurrency))
        return self._overall[1]

    def connections(self, key: str, limit: int) -> asyncio.Semaphore:
        """The slots of the connections open at once to one service (or URL)."""
        held = self._connections.get(key)
        if held is None or held[0] != limit:
            held = self._connections[key] = (limit, asyncio.Semaphore(limit))
        return held[1]


class _ServiceLimit:
    """One service's share of a round: how many connections may be open to it at once (shared
    with every probe of the process, `ProbeLimits`), and how many of the round's probes may run
    at once (as many: a probe starts, and its deadline runs, only when the service has room
    for it)."""

    def __init__(self, limit: int, connections: asyncio.Semaphore) -> None:
        self.probes = asyncio.Semaphore(limit)
        self.connections = connections


class _ConnectionSlot:
    """One slot of a service's connections, for one probe (`ProbeContext.connection`).

    Taking a slot moves the probe's deadline to `grace_s` from then (never earlier): a probe
    whose connections go one after another, each within its own timeout, is not abandoned for
    the time it waited for slots; one stuck past a connection's timeout still is. A class, not
    a generator: every probe of a round takes one, and a generator costs several times more.
    """

    def __init__(
        self, connections: asyncio.Semaphore, deadline: asyncio.Timeout, grace_s: float
    ) -> None:
        self._connections = connections
        self._deadline = deadline
        self._grace_s = grace_s

    def __call__(self) -> _ConnectionSlot:
        return self

    async def __aenter__(self) -> None:
        await self._connections.acquire()
        deadline = self._deadline
        if not deadline.expired():
            later = asyncio.get_running_loop().time() + self._grace_s
            when = deadline.when()
            if when is None or when < later:
                deadline.reschedule(later)

    async def __aexit__(self, *_exc: object) -> None:
        self._connections.release()


class Prober:
    """Runs one probe at a time on demand, all of a round's probes sharing its limits (and
    `limits`, when given, with every other Prober that has them)."""

    def __init__(
        self, ctx: ProbeContext, settings: ProbeSettings, limits: ProbeLimits | None = None
    ) -> None:
        self.ctx = ctx
        self.settings = settings
        self._limits = limits or ProbeLimits()
        self._overall = self._limits.overall(settings.concurrency)
        self._per_service: dict[str, _ServiceLimit] = {}

    async def probe(self, target: ServiceTarget | None, kind: str, url: str) -> ProbeResult:
        """Probe url (of target, if any) with the kind's probe; never raises.

        The per-service limit counts connections: every connection any probe of the service
        opens takes one of its slots (`ProbeContext.connection`). The deadline is enforced
        here, not in the probe: a probe that overruns its timeout by more than five seconds,
        counted from its start or from the last connection slot it got, is abandoned and
        recorded as failed.
        """
        settings = self.settings
        key = target.id if target else url
        if key not in self._per_service:
            limit = per_service_limit(target, settings) if target else 1
            connections = self._limits.connections(key, limit)
            self._per_service[key] = _ServiceLimit(limit, connections)
        service = self._per_service[key]
        spec = spec_for_target(kind, target, settings)
        started = self.ctx.clock()
        began = time.perf_counter()
        grace_s = settings.timeout_seconds + 5
        async with self._overall, service.probes:
            try:
                # The probe runs in this task (asyncio.timeout, not wait_for): cancelling the
                # round cancels the probe itself, so no probe outlives the session it uses.
                async with asyncio.timeout(grace_s) as deadline:
                    ctx = dataclasses.replace(
                        self.ctx,
                        connection=_ConnectionSlot(service.connections, deadline, grace_s),
                    )
                    return await probes.PROBES[kind].probe(
                        Target(url, target.id if target else None, target.name if target else None),
                        spec,
                        ctx,
                    )
            except TimeoutError:
                error = f"no result within {grace_s:g} s (deadline)"
            except Exception as exc:  # a probe bug must not end the round
                logger.opt(exception=exc).error("probe {} of {} crashed", kind, url)
                error = f"probe crashed: {exc.__class__.__name__}: {exc}"
        return ProbeResult(
            kind=kind,
            target=url,
            success=False,
            duration_ms=(time.perf_counter() - began) * 1000,
            started_at=started,
            error=error,
            service_id=target.id if target else None,
        )


async def run_probes(
    ctx: ProbeContext,
    settings: ProbeSettings,
    jobs: Sequence[tuple[ServiceTarget | None, str, str]],
    progress: Callable[[int, int], None] | None = None,
    *,
    limits: ProbeLimits | None = None,
    most_at_once: int | None = None,
) -> list[ProbeResult]:
    """Run (target, kind, url) probes at once, within the limits; results in the jobs' order.

    `progress`, when given, is told (probes done, probes in all) as each one ends. `limits`:
    the limits shared with other probes running meanwhile; `most_at_once`: how many of these
    probes may be in flight at once (within the overall limit).
    """
    prober = Prober(ctx, settings, limits)
    share = asyncio.Semaphore(most_at_once or settings.concurrency)
    done = 0

    async def one(target: ServiceTarget | None, kind: str, url: str) -> ProbeResult:
        nonlocal done
        async with share:
            result = await prober.probe(target, kind, url)
        done += 1
        if progress is not None:
            progress(done, len(jobs))
        return result

    return list(await asyncio.gather(*(one(t, k, u) for t, k, u in jobs)))
