"""The daemon: one asyncio process running the jobs on an APScheduler AsyncIOScheduler.

SIGTERM/SIGINT stop it within the grace period (running jobs finish or are cancelled cleanly);
SIGHUP re-reads the config and swaps it whole, keeping the old one when the new one is bad.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from loguru import logger

from monitord import sdnotify
from monitord.app import App
from monitord.config import Settings, check_daemon_secrets, load_config
from monitord.errors import ConfigError
from monitord.jobs import JOBS, Job
from monitord.logwork import reader_warning
from monitord.timeutil import UTC

CLAIM_CHECK_SECONDS = 5.0
"""How often the daemon checks that it still holds the store (see store.DaemonClaim)."""


class Daemon:
    """Runs the jobs of monitord.jobs.JOBS until told to stop."""

    def __init__(self, app: App, config_path: Path | None, jobs: tuple[Job, ...] = JOBS) -> None:
        self.app = app
        self.config_path = config_path
        self.jobs = jobs
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self._stop = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self.status = 0

    def _job_runner(self, job: Job) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            task = asyncio.current_task()
            assert task is not None
            self._running.add(task)
            try:
                with logger.contextualize(job=job.name):
                    await job.run(self.app)
            except asyncio.CancelledError:
                # Cancelled by our own shutdown: end quietly, the store is consistent (every job
                # writes in transactions) and the next start picks up from it.
                logger.warning("job {} cancelled at shutdown", job.name)
            except Exception:
                # A failing job must never take the daemon down; the next run tries again.
                logger.exception("job {} failed", job.name)
            finally:
                self._running.discard(task)

        return run

    def _schedule(self, settings: Settings, first: bool) -> None:
        now = dt.datetime.now(UTC)
        for job in self.jobs:
            seconds = job.interval_seconds(settings)
            if first:
                # APScheduler reads an explicit next_run_time=None as "paused": only pass it to
                # start at once; otherwise the first run comes one interval from now.
                start = {"next_run_time": now} if job.run_at_start else {}
                self.scheduler.add_job(
                    self._job_runner(job),
                    "interval",
                    seconds=seconds,
                    id=job.name,
                    name=job.name,
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=max(1, int(seconds)),
                    **start,
                )
            else:
                self.scheduler.reschedule_job(job.name, trigger="interval", seconds=seconds)

    def request_stop(self, why: str) -> None:
        """Ask the daemon to stop after the current work (or the grace period)."""
        if not self._stop.is_set():
            logger.info("stopping ({})", why)
            self._stop.set()

    def reload(self) -> None:
        """Re-read the config file; a bad one is refused and the running config kept.

        The new config passes the same checks as at start (check_daemon_secrets included).
        """
        try:
            new = load_config(self.config_path)
            check_daemon_secrets(new)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running config: {}", exc)
            return
        if new.store.url != self.app.settings.store.url:
            logger.warning("store.url changed; it takes effect at the next restart")
            new = new.model_copy(update={"store": self.app.settings.store})
        self.app.settings = new
        self._schedule(new, first=False)
        logger.info("config reloaded from {}", new.source)

    async def _stopping_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the daemon is asked to stop."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _keep_claim(self) -> None:
        """Check every few seconds that this daemon still holds the store; stop when it lost it.

        PostgreSQL drops an advisory lock with its connection (a restart, a network cut): the
        claim is taken again once the store answers, unless another daemon took it meanwhile.
        """
        claim = self.app.store.claim
        if claim is None:
            return
        while not await self._stopping_within(CLAIM_CHECK_SECONDS):
            state = await asyncio.to_thread(claim.keep)
            if state == "taken again":
                logger.warning("the store's daemon lock was lost with its connection; taken again")
            elif state == "lost":
                logger.error(
                    "another monitord daemon took the store at {} while its connection was "
                    "down: stopping",
                    self.app.store.display_url,
                )
                self.status = 1
                self.request_stop("store taken by another daemon")
                return

    async def _watchdog(self, interval: float) -> None:
        while True:
            sdnotify.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT; return the process exit status."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.app.start()
        self._schedule(self.app.settings, first=True)
        self.scheduler.start()
        claim = asyncio.create_task(self._keep_claim())
        watchdog: asyncio.Task[None] | None = None
        interval = sdnotify.watchdog_seconds()
        if interval and self.app.settings.daemon.watchdog:
            watchdog = asyncio.create_task(self._watchdog(interval / 2))
        sdnotify.notify("READY=1")
        logger.info(
            "monitord running: store {}, jobs {}",
            self.app.store.display_url,
            ", ".join(j.name for j in self.jobs),
        )
        slower = reader_warning(self.app.settings)
        if slower is not None:
            logger.warning(slower)
        await self._stop.wait()
        sdnotify.notify("STOPPING=1")
        await claim  # it ends at the stop, after the check it may be making
        await self._shutdown()
        if watchdog is not None:
            watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        logger.info("monitord stopped")
        return self.status

    async def _shutdown(self) -> None:
        # Pause, not shut down, first: APScheduler's executor cancels running jobs at once on
        # shutdown, which would skip the grace period and cancel each job a second time.
        self.scheduler.pause()
        grace = self.app.settings.daemon.grace_seconds
        running = set(self._running)
        if running:
            logger.info("waiting up to {:g} s for {} running job(s)", grace, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        self.scheduler.shutdown(wait=False)
        await self.app.close()
