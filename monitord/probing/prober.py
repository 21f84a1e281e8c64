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


class _ServiceLimit:
    """One service's share of a round: how many connections may be open to it at once, and
    how many of its probes may run at once (as many: a probe starts, and its deadline runs,
    only when the service has room for it)."""

    def __init__(self, limit: int) -> None:
        self.probes = asyncio.Semaphore(limit)
        self.connections = asyncio.Semaphore(limit)


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
    """Runs one probe at a time on demand, all of a round's probes sharing its limits."""

    def __init__(self, ctx: ProbeContext, settings: ProbeSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self._overall = asyncio.Semaphore(settings.concurrency)
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
            self._per_service[key] = _ServiceLimit(limit)
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
) -> list[ProbeResult]:
    """Run (target, kind, url) probes at once, within the limits; results in the jobs' order.

    `progress`, when given, is told (probes done, probes in all) as each one ends.
    """
    prober = Prober(ctx, settings)
    done = 0

    async def one(target: ServiceTarget | None, kind: str, url: str) -> ProbeResult:
        nonlocal done
        result = await prober.probe(target, kind, url)
        done += 1
        if progress is not None:
            progress(done, len(jobs))
        return result

    return list(await asyncio.gather(*(one(t, k, u) for t, k, u in jobs)))
