"""The daemon: one asyncio process running each job in a loop of its own.

Jobs are scheduled on the monotonic clock (the event loop's time): a step of the system clock
neither stalls them nor runs them early. The App's clock is a SteadyClock, which follows a step
only once it has lasted (see monitord.timeutil). SIGTERM/SIGINT stop the daemon within the
grace period (running jobs finish or are cancelled cleanly); SIGHUP re-reads the config and
swaps it whole, keeping the old one when the new one is bad. When the store stops answering,
jobs wait for it quietly (one warning when it goes, one line when it is back).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loguru import logger

from monitord.accesslog.work import reader_warning
from monitord.cluster import (
    BeatReport,
    Coordinator,
    LeaseTerm,
    SharedCoordinator,
    make_coordinator,
    running_under,
)
from monitord.config import (
    Settings,
    alert_warnings,
    check_daemon_secrets,
    secret_file_warnings,
)
from monitord.errors import ConfigError, LeaseLost, Replaced
from monitord.incidents import follow_clock_step, last_incident_id
from monitord.probing.record import met_another_transaction
from monitord.probing.schedule import window_start
from monitord.redact import error_line
from monitord.runtime import sdnotify
from monitord.runtime.app import App
from monitord.runtime.heap import release_free_memory
from monitord.runtime.jobs import JOBS, Job
from monitord.runtime.logsetup import setup_logging
from monitord.runtime.settings import load_settings
from monitord.runtime.web import WebServer, serve
from monitord.store import STORE_GONE_ERRORS, DaemonClaim
from monitord.timeutil import SteadyClock
from monitord.workcalendar import CalendarWatch, WorkCalendar

STATUS_SECONDS = 30.0
"""How often the line `systemctl status` shows is brought up to date."""
TICK_SECONDS = 1.0
"""How often the daemon's clock is compared with the system clock."""
CALENDAR_CHECK_SECONDS = 3600.0
"""How often the daemon looks whether a statutory calendar is missing (it says so once a day)."""
STORE_FILE_CHECK_SECONDS = 5.0
"""How often the daemon looks that its SQLite store's path still names the file it holds."""
STORE_RETRY_SECONDS = (1.0, 60.0)
"""While the store does not answer, the cheap check is retried after 1 s, doubling to 60 s."""


STOP_MARGIN_SECONDS = 10.0
"""How long past its grace period a stop may wait on the store (a job's query, the last
heartbeat, giving the leases back) before the process exits without it; with the default grace
(20 s) that is within systemd's TimeoutStopSec (45 s)."""


class Daemon:
    """Runs the jobs of monitord.runtime.jobs.JOBS until told to stop."""

    def __init__(
        self,
        app: App,
        config_path: Path | None,
        jobs: tuple[Job, ...] = JOBS,
        reload_requested: threading.Event | None = None,
        hard_exit: Callable[[int], None] | None = None,
    ) -> None:
        """`reload_requested`: set by a SIGHUP that came while the store was opened, before
        the daemon's own handler: the config is re-read once it runs. `hard_exit` (the
        process's os._exit): called when a stop is still waiting on the store STOP_MARGIN_SECONDS
        after its grace period (see `disarm_stop_deadline`); None: a stop waits as long as it
        takes."""
        self.app = app
        self.config_path = config_path
        self.jobs = jobs
        self._reload_requested = reload_requested
        self._hard_exit = hard_exit
        self._stop_deadline: threading.Timer | None = None
        self._cancelled: list[str] = []  # the jobs a stop cancelled: their threads may run on
        self._store_closed = False  # the stop is past the store: nothing more to write
        self.status = 0
        self._stop = asyncio.Event()
        # Set (and replaced by a fresh one) to wake every sleeping job loop: at the stop, at a
        # reload (new intervals) and when a heartbeat took a lease (a job to run here now).
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._beat = 0.0  # the event loop's time when a job last started or ended
        self._store_down_since: float | None = None
        self._store_retry_at = 0.0
        self._store_retry_after = STORE_RETRY_SECONDS[0]
        self._store_check = asyncio.Lock()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    async def _stopping_within(self, seconds: float) -> bool:
        """Wait up to `seconds`; True as soon as the daemon is asked to stop."""
        try:
            await asyncio.wait_for(self._stop.wait(), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    def _wake_loops(self) -> None:
        """Wake every job loop now (each looks again at its due time and its lease)."""
        woken, self._wake = self._wake, asyncio.Event()
        woken.set()

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`, less when the job loops are woken (see _wake_loops)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))

    async def _job_loop(self, job: Job) -> None:
        """Run job every interval (of the current settings), on the monotonic clock.

        A run that overruns its interval is followed at once by the next, never by a backlog.
        Between runs the loop sleeps until the job is due: an idle daemon wakes only for work
        (a reload, the stop and a lease taken wake it sooner).
        """
        last_start = self._now()
        last_wall: float | None = None  # the wall clock at last_start, for an aligned job
        if job.run_at_start:
            last_start -= job.interval_seconds(self.app.settings)
        while not self._stop.is_set():
            interval = job.interval_seconds(self.app.settings)
            due = last_start + interval
            if job.aligned and last_wall is not None:
                due = last_start + window_start(last_wall, interval) + interval - last_wall
            if self._now() < due:
                await self._nap(due - self._now())
                continue
            if job.once and not self._cluster().holds(job.name):
                # Another daemon holds it; look again at each heartbeat (one that takes the
                # lease wakes the loop at once). The loop is alive: the watchdog may count it.
                self._beat = self._now()
                await self._nap(self._cluster().settings.heartbeat_seconds)
                continue
            last_start, last_wall = self._now(), self.app.clock().timestamp()
            term = self._cluster().term(job.name) if job.once else None
            task = asyncio.create_task(self._run(job, term), name=job.name)
            self._running.add(task)
            await asyncio.wait({task})  # never raises: _run ends quietly, even when cancelled
            self._running.discard(task)

    async def _run(self, job: Job, term: LeaseTerm | None = None) -> None:
        """One run of job; a failure is logged and never ends the loop. `term`: the lease a
        once-only job runs under; each of its commits is refused once another daemon took it."""
        self._beat = self._now()
        try:
            if not await self._store_answers() and not job.without_store:
                return  # the store is down: wait quietly, the warning was given
            with logger.contextualize(job=job.name), running_under(term):
                await job.run(self.app)
        except LeaseLost as exc:
            logger.warning("cluster: job {} stopped: {}", job.name, exc)
        except asyncio.CancelledError:
            # Cancelled by our own shutdown: end quietly, the store is consistent (every job
            # writes in transactions) and the next start picks up from it. Only a job that
            # overran its grace period is worth a warning.
            level = "INFO" if job.stops_at_once else "WARNING"
            logger.log(level, "job {} cancelled at shutdown", job.name)
        except Exception as exc:
            # A failing job must never take the daemon down; the next run tries again. When
            # the store stopped answering, that is said once, without a traceback per job.
            if not await self._store_lost():
                _log_failure(f"job {job.name}", exc)
        finally:
            if job.release_memory:
                release_free_memory()  # milliseconds, once the run's garbage is freed
            self._beat = self._now()

    async def _store_lost(self, hung: bool = False) -> bool:
        """After a job failed (or a heartbeat `hung`): whether the store does not answer
        (then say so, once)."""
        async with self._store_check:
            if self._store_down_since is not None:
                return True
            if hung:
                reason: str | None = "a heartbeat got no answer within the lease"
            else:
                reason = await asyncio.to_thread(self.app.store.unreachable_reason)
            if reason is None:
                return False
            logger.warning(
                "the store at {} does not answer ({}): the probes go on and keep their "
                "results, the other jobs wait until it does",
                self.app.store.display_url,
                reason,
            )
            self._store_down_since = self._now()
            self._store_retry_after = STORE_RETRY_SECONDS[0]
            self._store_retry_at = self._now() + self._store_retry_after
            return True

    async def _store_answers(self) -> bool:
        """Before a job runs: False while the store is down (checked again with backoff)."""
        async with self._store_check:
            if self._store_down_since is None:
                return True
            if self._now() < self._store_retry_at:
                return False
            if await asyncio.to_thread(self.app.store.unreachable_reason) is not None:
                self._store_retry_after = min(2 * self._store_retry_after, STORE_RETRY_SECONDS[1])
                self._store_retry_at = self._now() + self._store_retry_after
                return False
            self._say_store_back()
            return True

    async def _store_back(self) -> None:
        """After a heartbeat went through: the store answers (say so if it did not, and takes
        a write now: a heartbeat's small one may fit on a disk too full for the jobs')."""
        async with self._store_check:
            if self._store_down_since is None:
                return
            if await asyncio.to_thread(self.app.store.unreachable_reason) is None:
                self._say_store_back()

    def _say_store_back(self) -> None:
        assert self._store_down_since is not None
        logger.info(
            "the store at {} answers again, after {:.0f} s",
            self.app.store.display_url,
            self._now() - self._store_down_since,
        )
        self._store_down_since = None

    def request_stop(self, why: str) -> None:
        """Ask the daemon to stop after the current work (or the grace period)."""
        if not self._stop.is_set():
            logger.info("stopping ({})", why)
            self._stop.set()
            self._wake_loops()

    def reload(self) -> None:
        """Re-read the config file; a bad one is refused and the running config kept.

        The new config passes the same checks as at start (check_daemon_secrets included).
        Each job's new interval applies at once (the job loops are woken to read it), and
        [logging] and daemon.watchdog at once; store.url, [api]'s address and switch and
        [cluster] at the next restart (the rest of [store] and [api] at once).
        """
        try:
            new = load_settings(self.config_path)
            check_daemon_secrets(new)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running config: {}", exc)
            return
        new = self._restart_only_kept(new)
        if new.logging != self.app.settings.logging:
            try:
                setup_logging(new.logging)
            except OSError as exc:
                logger.error(
                    "reload refused, keeping the running config: logging.file = {}: cannot "
                    "write {} ({})",
                    new.logging.file,
                    exc.filename,
                    exc.strerror,
                )
                return
        self.app.settings = new
        self._wake_loops()
        logger.info("config reloaded from {}", new.source)

    def _restart_only_kept(self, new: Settings) -> Settings:
        """`new` with the keys that take effect only at the next restart as they run:
        store.url, api.listen and api.enabled, and [cluster]; each one changed is said once."""
        running = self.app.settings
        if (new.api.listen, new.api.enabled) != (running.api.listen, running.api.enabled):
            logger.warning("api.listen or api.enabled changed; it takes effect at the next restart")
            api = new.api.model_copy(
                update={"listen": running.api.listen, "enabled": running.api.enabled}
            )
            new = new.model_copy(update={"api": api})
        if new.store.url != running.store.url:
            logger.warning("store.url changed; it takes effect at the next restart")
            store = new.store.model_copy(update={"url": running.store.url})
            new = new.model_copy(update={"store": store})
        if new.cluster != running.cluster:
            # The daemon is known to the others by its name and beats at its interval from
            # its start; the running ones stay what the cluster sees, for both to agree.
            logger.warning("[cluster] changed; it takes effect at the next restart")
            new = new.model_copy(update={"cluster": running.cluster})
        return new

    def _cluster(self) -> Coordinator:
        assert self.app.cluster is not None, "the daemon joined its cluster"
        return self.app.cluster

    async def _heartbeat(self) -> None:
        """Say this daemon is alive, and renew or take the leases of the once-only jobs.

        When the store does not answer, the leases are not renewed: this daemon stops running
        those jobs as they lapse, and the others take them over.
        """
        cluster = self._cluster()
        shared = isinstance(cluster, SharedCoordinator)
        every = cluster.settings.heartbeat_seconds if shared else STATUS_SECONDS
        once = tuple(job.name for job in self.jobs if job.once)
        beats = ThreadPoolExecutor(1, thread_name_prefix="heartbeat")
        try:
            await self._beat_until_stopped(cluster, once, every, beats)
        finally:
            beats.shutdown(wait=False)

    async def _beat_until_stopped(
        self,
        cluster: Coordinator,
        once: tuple[str, ...],
        every: float,
        beats: ThreadPoolExecutor,
    ) -> None:
        """Beat every `every` seconds (on the `beats` thread) until the daemon stops."""
        beating: asyncio.Future[BeatReport] | None = None
        while True:
            if beating is None:
                # A thread of its own: on a busy machine the shared pool's threads are all
                # taken by the jobs' store work, and a beat queued behind them let the lease
                # lapse with nothing wrong.
                beating = asyncio.ensure_future(
                    asyncio.get_running_loop().run_in_executor(beats, cluster.beat, once)
                )
            # A beat that does not come back within a lease is a store that does not answer
            # (a cut network holds a query for minutes): said so, and no second beat is
            # started beside the one that hangs.
            done, _ = await asyncio.wait({beating}, timeout=cluster.settings.lease_seconds)
            if not done:
                await self._store_lost(hung=True)
            elif isinstance(failure := beating.exception(), Replaced):
                # Another process runs under this daemon's name: it holds nothing any more.
                logger.error("cluster: {}", failure)
                self.status = 1
                self.request_stop("replaced by another daemon of the same name")
                return
            elif failure is not None:
                beating = None
                if not await self._store_lost():  # the store down is said once, with why
                    _log_failure("cluster: the heartbeat", failure)
            else:
                report = beating.result()
                beating = None
                await self._store_back()
                _log_beat(cluster.name, report)
                if report.taken:
                    self._wake_loops()  # the jobs just taken run here now
            if await self._stopping_within(every):
                return

    async def _watch_calendar(self) -> None:
        """At start and then once a day: warn when this year's statutory calendar, or in
        December next year's, is missing (working days would fall back to Monday-Friday)."""
        watch = CalendarWatch()
        while True:
            # Built afresh each time: a reload may have brought the year in by overrides.
            calendar = WorkCalendar.from_settings(self.app.settings.logs)
            advice = watch.check(calendar, self.app.clock())
            if advice is not None:
                logger.warning(advice)
            if await self._stopping_within(CALENDAR_CHECK_SECONDS):
                return

    async def _watch_clock(self, clock: SteadyClock) -> None:
        """Compare the daemon's clock with the system clock every tick; log what changed."""
        opened_before: int | None = None  # the last incident opened before the step was seen
        while not await self._stopping_within(TICK_SECONDS):
            event = clock.check()
            if event is not None and event.kind == "stepped":
                opened_before = None
            if clock.stepped and opened_before is None:  # at once, retried while the store fails
                opened_before = await asyncio.to_thread(self._last_incident)
            if event is not None:  # said once the incidents it will move are known
                log = logger.warning if event.kind == "stepped" else logger.info
                log(event.describe())
            if event is not None and event.kind == "followed":
                # The deadlines move first, then the clock: an incident pass in between reads
                # the old time against the moved deadline, never the new time against the old.
                try:
                    moved = await asyncio.to_thread(self._follow_step, event.step, opened_before)
                except Exception:
                    clock.defer_follow()  # the store does not answer: the jobs say so
                    continue
                clock.follow()
                if moved:
                    logger.info("{} incident clock(s) moved by the step", moved)

    async def _watch_store_file(self, claim: DaemonClaim) -> None:
        """Stop, with status 1, once the SQLite file the daemon holds is no longer the one at
        the store's path (removed, or replaced): it would go on writing into a file nobody can
        open, lose it all at its stop, and let a second daemon start on the path. The restart
        (systemd's Restart=on-failure) opens the store at its path again."""
        while not await self._stopping_within(STORE_FILE_CHECK_SECONDS):
            lost = claim.lost_reason()
            if lost is not None:
                logger.error(
                    "{}: stopping, since what the daemon writes now would be lost; a restart "
                    "opens the store at its path (a new, empty one if nothing is there)",
                    lost,
                )
                self.status = 1
                self.request_stop("the store file is gone")
                return

    def _last_incident(self) -> int | None:
        try:
            with self.app.store.session() as session:
                return last_incident_id(session)
        except Exception:
            return None  # the store does not answer: the jobs say so

    def _follow_step(self, step: dt.timedelta, opened_before: int | None) -> int:
        with self.app.store.session() as session:
            return follow_clock_step(session, step, self.app.clock() + step, opened_before)

    def _status_text(self) -> str:
        """One line for `systemctl status`: services, how many are down, incidents open."""
        from sqlalchemy import func, select

        from monitord.store.models import Incident, Service, ServiceState

        with self.app.store.session() as session:
            online = session.scalar(
                select(func.count()).select_from(Service).where(Service.status == "online")
            )
            states = dict(
                session.execute(
                    select(ServiceState.state, func.count()).group_by(ServiceState.state)
                ).all()
            )
            incidents = session.scalar(
                select(func.count())
                .select_from(Incident)
                .where(Incident.state.in_(("open", "acknowledged", "notified")))
            )
        text = (
            f"{online:,} services online, {states.get('down', 0)} down, "
            f"{states.get('degraded', 0)} degraded, {incidents} incident(s) open"
        )
        cluster = self.app.cluster
        if isinstance(cluster, SharedCoordinator):
            held = sum(cluster.holds(job.name) for job in self.jobs if job.once)
            text += f"; {len(cluster.live_names())} daemon(s) alive, {held} job(s) run here"
        return text

    async def _report_status(self) -> None:
        """Keep systemd's STATUS= line current (what `systemctl status monitord` shows)."""
        while True:
            try:
                text = await asyncio.to_thread(self._status_text)
            except Exception:  # the store is down: the jobs say so; the line says it too
                text = "waiting for the store"
            sdnotify.notify(f"STATUS={text}")
            if await self._stopping_within(STATUS_SECONDS):
                return

    def _jobs_alive(self, interval: float) -> bool:
        """Whether some job started or ended within max(interval, 3 × the shortest job interval).

        interval is systemd's WatchdogSec: how long the operator lets the daemon look hung.
        """
        shortest = min(job.interval_seconds(self.app.settings) for job in self.jobs)
        return self._now() - self._beat <= max(interval, 3 * shortest)

    async def _watchdog(self, interval: float) -> None:
        # Fed only while the jobs are really running: a live event loop whose jobs have all
        # stopped (or hung) is a daemon that systemd should restart. daemon.watchdog is read
        # each time: a reload turns the feeding on or off.
        while not await self._stopping_within(interval / 2):
            if self.app.settings.daemon.watchdog and self._jobs_alive(interval):
                sdnotify.notify("WATCHDOG=1")

    async def run(self) -> int:
        """Run until SIGTERM or SIGINT; return the process exit status."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self.request_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        if self._reload_requested is not None and self._reload_requested.is_set():
            logger.info("SIGHUP came while starting: reloading the config now")
            self.reload()
        await self.app.start()
        self._beat = self._now()
        await self._join()
        helpers = [
            asyncio.create_task(self._heartbeat()),
            asyncio.create_task(self._watch_calendar()),
        ]
        if isinstance(self.app.clock, SteadyClock):
            helpers.append(asyncio.create_task(self._watch_clock(self.app.clock)))
        if self.app.store.claim is not None:
            helpers.append(asyncio.create_task(self._watch_store_file(self.app.store.claim)))
        if sdnotify.notify("STATUS=starting"):
            helpers.append(asyncio.create_task(self._report_status()))
        interval = sdnotify.watchdog_seconds()
        if interval:
            helpers.append(asyncio.create_task(self._watchdog(interval)))
        loops = [asyncio.create_task(self._job_loop(job)) for job in self.jobs]
        web_server = await self._serve_web()
        sdnotify.notify("READY=1")
        logger.info(
            "monitord running: store {}, jobs {}",
            self.app.store.display_url,
            ", ".join(j.name for j in self.jobs),
        )
        slower = reader_warning(self.app.settings)
        if slower is not None:
            logger.warning(slower)
        for missing in alert_warnings(self.app.settings):
            logger.warning(missing)
        for exposed in secret_file_warnings(self.app.settings):
            logger.warning(exposed)
        await self._stop.wait()
        # Until the process ends (closing the loop waits for the worker threads: seconds, a
        # hung send), a SIGHUP must not end it with "Hangup", a status systemd does not restart.
        loop.add_signal_handler(signal.SIGHUP, logger.info, "SIGHUP ignored: the daemon stops")
        self._arm_stop_deadline()
        sdnotify.notify("STOPPING=1\nSTATUS=stopping: finishing the running jobs")
        if web_server is not None:
            await web_server.stop()
        await self._shutdown(loops)
        await asyncio.gather(*helpers)  # each ends at the stop, after what it was doing
        await self._leave()
        await self.app.close()
        self._store_closed = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        logger.info("monitord stopped")
        return self.status

    def _arm_stop_deadline(self) -> None:
        """Exit without the store if the stop still waits on it STOP_MARGIN_SECONDS after the
        grace period: a query held by a lock, or a server stopped, would otherwise hold the
        process until systemd kills it, with nothing said."""
        if self._hard_exit is None:
            return
        hard_exit = self._hard_exit
        seconds = self.app.settings.daemon.grace_seconds + STOP_MARGIN_SECONDS

        def give_up() -> None:
            if self._store_closed:
                # Only the worker thread of a cancelled job is left (a send, a request without
                # an answer): the store is closed whole, and what the job did not finish (an
                # alert stays claimed by this process) is taken up again after the restart.
                logger.warning(
                    "stopping took over {:g} s: {} still waiting in a worker thread (a send or "
                    "a request that gets no answer); exiting without it, the restart takes it up "
                    "again",
                    seconds,
                    _jobs_text(self._cancelled),
                )
                status = self.status
            else:
                logger.error(
                    "stopping took over {:g} s: the store did not answer (a lock held, or its "
                    "server stopped); exiting without it (what was not committed is not written)",
                    seconds,
                )
                status = 1
            logger.remove()  # flushes and closes the log file before the process ends
            hard_exit(status)

        self._stop_deadline = threading.Timer(seconds, give_up)
        self._stop_deadline.daemon = True
        self._stop_deadline.start()

    def disarm_stop_deadline(self) -> None:
        """The process is ending on its own: no hard exit. Called once the event loop has
        closed, since closing it waits for the worker threads and their queries too."""
        if self._stop_deadline is not None:
            self._stop_deadline.cancel()

    async def _join(self) -> None:
        """Take this daemon's place among the daemons on the store (raises StoreError when its
        name is taken by a live one)."""
        settings = self.app.settings
        cluster = make_coordinator(self.app.store, settings.cluster, self.app.clock)
        try:
            await asyncio.to_thread(cluster.join)
        except BaseException:
            await self.app.close()
            raise
        self.app.cluster = cluster
        if isinstance(cluster, SharedCoordinator):
            alive = cluster.live_names()
            logger.info(
                "cluster: joined as {} (zone {}); {} member(s) alive: {}",
                cluster.name,
                cluster.zone,
                len(alive),
                ", ".join(sorted(alive)),
            )

    async def _leave(self) -> None:
        """Give the once-only jobs back at a clean stop, so the others take them at once."""
        try:
            await asyncio.to_thread(self._cluster().leave)
        except Exception as exc:  # the store is down: the leases lapse by themselves
            logger.warning(
                "cluster: could not say this daemon stopped ({})", exc.__class__.__name__
            )

    async def _serve_web(self) -> WebServer | None:
        """Start the page, the API and /metrics; monitoring goes on if they cannot listen."""
        api = self.app.settings.api
        if not api.enabled:
            return None
        try:
            server = await serve(self.app, daemon=self)
        except OSError as exc:
            logger.error(
                "the status page and API cannot listen on {} ({}): monitoring goes on without "
                "them; free the address or change api.listen, then restart",
                api.listen,
                exc.strerror or exc,
            )
            return None
        logger.info("status page, API and /metrics at {}", server.address)
        if not api.tokens:
            logger.warning(
                "api.tokens lists no token: only /healthz and /readyz answer; "
                "`monitord token new NAME --role oncall` makes one"
            )
        return server

    def readiness(self) -> dict[str, object]:
        """For /readyz: whether the jobs run and the store answers, as the daemon sees it."""
        return {
            "jobs_running": not self._stop.is_set() and self._jobs_alive(0.0),
            "store_answering": self._store_down_since is None,
        }

    def _cancel(self, task: asyncio.Task[None]) -> None:
        """Cancel a job's run at the stop; a thread it started may still run on."""
        self._cancelled.append(task.get_name())
        task.cancel()

    async def _shutdown(self, loops: list[asyncio.Task[None]]) -> None:
        # The loops start no new run once the stop is set; running jobs get the grace period,
        # but for those that stop at once (Job.stops_at_once).
        grace = self.app.settings.daemon.grace_seconds
        at_once = {job.name for job in self.jobs if job.stops_at_once}
        cut = {task for task in self._running if task.get_name() in at_once}
        for task in cut:
            self._cancel(task)
        if cut:
            await asyncio.wait(cut, timeout=5)
        running = set(self._running) - cut
        if running:
            logger.info("waiting up to {:g} s for {} running job(s)", grace, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace)
            for task in pending:
                self._cancel(task)
            if pending:
                await asyncio.wait(pending, timeout=5)
        await asyncio.wait(loops, timeout=5)


def _jobs_text(names: list[str]) -> str:
    """`job a` or `jobs a, b` (cancelled at the stop), for the stop's last line."""
    if not names:
        return "a job's work"
    return f"job{'s' if len(names) > 1 else ''} {', '.join(names)} (cancelled at the stop)"


def _log_failure(what: str, exc: BaseException) -> None:
    """A job or heartbeat that failed: the store's error in one line (it came back before it
    could be said lost, e.g. PostgreSQL still starting), anything else with its traceback."""
    if isinstance(exc, STORE_GONE_ERRORS):
        why = (
            "it met another daemon's transaction"
            if met_another_transaction(exc)
            else "the store did not answer"
        )
        logger.warning("{} failed: {} ({})", what, why, error_line(exc))
    else:
        logger.opt(exception=exc).error("{} failed", what)


def _log_beat(name: str, report: BeatReport) -> None:
    """Say what a heartbeat changed: jobs taken or lost, members come or gone."""
    if report.taken:
        logger.info("cluster: {} now runs {}", name, ", ".join(report.taken))
    if report.lost:
        logger.warning("cluster: {} no longer runs {}", name, ", ".join(report.lost))
    for member in report.joined:
        logger.info("cluster: member {} joined; the probes are split again", member)
    for member in report.gone:
        logger.warning("cluster: member {} is gone; its share of the probes is split again", member)
