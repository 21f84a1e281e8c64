"""Running probes within a round's limits: the global and per-service concurrency, the deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from loguru import logger

import probes
from monitord.config import ProbeSettings
from monitord.probing.targets import ServiceTarget, per_service_limit, spec_for_target
from monitord.types import ProbeContext, ProbeResult, Target


class Prober:
    """Runs one probe at a time on demand, all of a round's probes sharing its limits."""

    def __init__(self, ctx: ProbeContext, settings: ProbeSettings) -> None:
        self.ctx = ctx
        self.settings = settings
        self._overall = asyncio.Semaphore(settings.concurrency)
        self._per_service: dict[str, asyncio.Semaphore] = {}

    async def probe(self, target: ServiceTarget | None, kind: str, url: str) -> ProbeResult:
        """Probe url (of target, if any) with the kind's probe; never raises.

        The deadline is enforced here, not in the probe: a probe that overruns its timeout by
        more than five seconds is abandoned and recorded as failed.
        """
        settings = self.settings
        key = target.id if target else url
        if key not in self._per_service:
            limit = per_service_limit(target, settings) if target else 1
            self._per_service[key] = asyncio.Semaphore(limit)
        spec = spec_for_target(kind, target, settings)
        started = self.ctx.clock()
        began = time.perf_counter()
        async with self._overall, self._per_service[key]:
            try:
                # The probe runs in this task (asyncio.timeout, not wait_for): cancelling the
                # round cancels the probe itself, so no probe outlives the session it uses.
                async with asyncio.timeout(settings.timeout_seconds + 5):
                    return await probes.PROBES[kind].probe(
                        Target(url, target.id if target else None, target.name if target else None),
                        spec,
                        self.ctx,
                    )
            except TimeoutError:
                error = f"no result within {settings.timeout_seconds + 5:g} s (deadline)"
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
