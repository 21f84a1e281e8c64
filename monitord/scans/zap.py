"""Drive an OWASP ZAP instance through its Python client (`zaproxy`) to scan one service.

A scan is a fixed sequence of steps (`STEPS`): a fresh ZAP session, a context scoped to the
service URL, an optional bearer-token header, the spider, optionally the AJAX spider, waiting
for the passive scanner, making sure the URL is in ZAP's sites tree, the active scan, and
reading the alerts back. Every change of step or percentage is handed to the caller as a
`ScanState` — a small immutable value that the core stores as it is (`to_dict`/`from_dict`),
so a scan survives a daemon restart: `ZapScanner.reconcile` tells whether ZAP still knows it,
and `ZapScanner.scan(..., resume=state)` carries on from the last completed step.

ZAP's failures are expected, not exceptional; each becomes one `ZapError` subclass with a
one-line message and a `retryable` flag:

    ZapError                  (monitord.errors.MonitordError)
    ├── ZapUnavailable        nothing answers at the ZAP address (refused, DNS)       retry
    ├── ZapAuthRejected       ZAP closed the connection without an answer: wrong or
    │                         missing API key, or this address is not permitted       no retry
    ├── ZapTimeout            one API call took longer than the per-call timeout      retry
    ├── ZapBadAnswer          an answer of the wrong shape (not JSON, not a number,   retry
    │   │                     nested deeper than MAX_JSON_DEPTH)
    │   └── ZapAnswerTooLarge an answer over `max_answer_bytes` (zap.max_answer_mb);  no retry
    │                         an alerts page over it is read again in halves, so
    │                         only a single alert over it fails the scan
    ├── ZapApiError           ZAP refused a call with an error code (`.code`)         by code
    │   ├── ZapScanForgotten  a scan id or session ZAP no longer knows (restarted)    retry
    │   ├── ZapUrlNotFound    `url_not_found`: the URL is not in ZAP's sites tree     retry
    │   └── ZapBusy           `scan_in_progress`: the AJAX spider is already running  retry
    ├── ZapDeadline           the scan passed its deadline (stopped in ZAP)           retry
    ├── ZapScanStuck          the active scan stayed at one percentage too long       retry
    └── ZapTargetRefused      the service URL is not one ZAP may be pointed at: not
                              http(s), or it or a redirect lies in a denied network   no retry

`ZapDeadline` and `ZapScanStuck` are not raised: they are the `reason` of an outcome whose
status is "timed_out" and which still carries the findings read so far.

Before ZAP hears of a target, `check_target` refuses what it must not scan: a URL that is not
http(s) or has no host, a host in `denied_networks` (as the probes refuse it, see
`monitord.netguard`), or a service URL that redirects into one. ZAP itself is kept on the
service: its context includes only the service URL and what lies beneath it (`scope_regex`), the
spiders and the active scan run in that context (ZAP's spider and active scanner follow no
redirect out of it), `accessUrl` follows no redirect, and alerts outside it are dropped. The AJAX
spider drives a browser, which follows redirects itself: the check before the scan is what keeps
the service URL from sending it into a denied network.

The client is synchronous and sets no timeout, so every call runs in a worker thread
(`asyncio.to_thread`) under `asyncio.wait_for`, and the client's transport is given a socket
timeout too so that a hung ZAP cannot pin worker threads forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import requests
from loguru import logger as _logger

from monitord import aio
from monitord.errors import (
    ZapAnswerTooLarge,
    ZapApiError,
    ZapAuthRejected,
    ZapBadAnswer,
    ZapDeadline,
    ZapError,
    ZapScanForgotten,
    ZapScanStuck,
    ZapTimeout,
    ZapUnavailable,
)
from monitord.scans.alerts import group_alerts
from monitord.scans.client import (
    CallTimedOut,
    ClientFactory,
    coded_error,
    default_client,
    no_stop_iteration,
    read_count,
    require_ok,
    transport_error,
)
from monitord.scans.state import (
    STEPS,
    ProgressCallback,
    ScanState,
    ScanStatus,
    Step,
    ZapDriverSettings,
)
from monitord.scans.target import check_target, scope_regex
from monitord.timeutil import Clock, system_clock
from monitord.types import FindingDraft

SHUTDOWN_GRACE_SECONDS = 5.0
"""How long a scan cancelled by a shutdown or Ctrl-C waits for ZAP to stop it: an answering
ZAP stops a scan in well under a second, and one that does not answer must not hold the exit
for its whole call timeout."""


@dataclass(frozen=True)
class ScanOutcome:
    """The end of a scan that got as far as reading alerts: finished or timed out."""

    state: ScanState
    findings: tuple[FindingDraft, ...]
    alerts_read: int
    """Distinct alerts read from ZAP's pages."""
    alerts_expected: int
    """What ZAP's `numberOfAlerts` said before paging; differs only if ZAP changed meanwhile."""
    false_positives_dropped: int
    reason: ZapError | None = None
    """For a timed-out scan: `ZapDeadline` or `ZapScanStuck`."""

    @property
    def timed_out(self) -> bool:
        """True when the scan was stopped before ZAP finished it."""
        return self.state.status == "timed_out"


@dataclass(frozen=True)
class Reconciliation:
    """What ZAP says about a scan the store thought was running.

    verdict: "resumable" (ZAP still has the session and scan: `scan(resume=state)` carries on),
    "interrupted" (ZAP forgot it — restarted or another session: mark it and queue it again), or
    "unknown" (ZAP could not be asked; `error` says why: try again later).
    """

    verdict: Literal["resumable", "interrupted", "unknown"]
    reason: str
    error: ZapError | None = None


def session_file_name(location: str) -> str:
    """The session's name in the path `core/view/sessionLocation` gives: its file's name
    without ".session" (ZAP appends it), on a POSIX or a Windows host."""
    return re.split(r"[\\/]", location)[-1].removesuffix(".session")


class ZapScanner:
    """Runs scans of services in one ZAP instance; every dependency is passed in.

    `clock` and `sleep` are injectable so that tests move through a four-hour deadline in
    milliseconds; `client_factory` builds the zaproxy client (tests may pass plain `ZAPv2`);
    `shutdown_grace_seconds` bounds the stop in ZAP when a scan is cancelled.
    """

    def __init__(
        self,
        settings: ZapDriverSettings,
        *,
        clock: Clock = system_clock,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        logger: Any = _logger,
        client_factory: ClientFactory = default_client,
        shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS,
    ) -> None:
        self.settings = settings
        self.shutdown_grace_seconds = shutdown_grace_seconds
        self._clock = clock
        self._sleep = sleep
        self._log = logger
        self._client = client_factory(settings)
        self._key_accepted = False
        """ZAP has answered a call with this key, so a closed connection later is not the key."""

    # ---- one call -------------------------------------------------------------------------

    async def _percent(self, endpoint: str, call: Callable[[], Any]) -> int:
        """How far a spider or an active scan ZAP names by id has got, in percent."""
        answer = await self._call(endpoint, call, forgotten=True)
        return read_count(answer, endpoint, forgotten=True)

    async def _call(self, endpoint: str, fn: Callable[[], Any], *, forgotten: bool = False) -> Any:
        """Run one blocking client call in a worker thread, under the per-call timeout.

        `forgotten`: the call names a scan by id, so ZAP's `does_not_exist` means ZAP forgot
        the scan (it was restarted) and becomes `ZapScanForgotten`.
        """
        try:
            # The transport has its own socket timeout; this one (slightly longer) also covers
            # a call that makes several requests or a thread pool that is slow to start.
            value = await asyncio.wait_for(
                aio.in_own_thread(no_stop_iteration, fn, endpoint),
                timeout=self.settings.zap.call_timeout_seconds * 1.5 + 1.0,
            )
            self._key_accepted = True
            return value
        except ZapScanForgotten:
            self._key_accepted = True
            raise
        except ZapApiError as exc:
            self._key_accepted = True  # ZAP answered with one of its error codes
            if forgotten and exc.code == "does_not_exist":
                raise coded_error(exc.code, endpoint, forgotten=True) from None
            raise
        except ZapError:
            raise
        except TimeoutError:
            raise ZapTimeout(
                f"ZAP at {self.settings.zap.url} did not answer {endpoint} "
                f"within {self.settings.zap.call_timeout_seconds:g} s"
            ) from None
        except (requests.RequestException, OSError, ValueError) as exc:
            error = transport_error(exc, endpoint, self.settings)
            if isinstance(error, ZapAuthRejected) and self._key_accepted:
                # ZAP took this key before, so it did not refuse it now: it crashed, was
                # restarted or was cut off mid-call, and a later attempt may well succeed.
                error = ZapUnavailable(
                    f"ZAP at {self.settings.zap.url} closed the connection without answering "
                    f"{endpoint}, after accepting the API key earlier: ZAP probably crashed "
                    "or was restarted"
                )
            raise error from None

    async def version(self) -> str:
        """Ask ZAP for its version: a cheap check that ZAP is up and the key is right."""
        value = await self._call("core/view/version", lambda: self._client.core.version)
        if not isinstance(value, str) or not value:
            raise ZapBadAnswer(f"ZAP answered core/view/version with {value!r}")
        return value

    # ---- reading alerts -------------------------------------------------------------------

    async def read_alerts(self, base_url: str) -> tuple[list[dict[str, Any]], int]:
        """Page through ZAP's alerts whose URL starts with `base_url`.

        Returns the distinct alerts and the count `numberOfAlerts` gave beforehand. ZAP pages
        from 1: `start=0` and `start=1` both begin at the first alert (AlertAPI's
        PaginationConstraintsChecker), so pages start at 1, 1+N, 1+2N — never 0, N, 2N, which
        would read the N-th alert twice. A page over `zap.max_answer_mb` is read again from
        the same start at half the size, and the rest in pages of that size, so that a list
        of large alerts is still read whole; only one alert over the cap fails the scan.
        """
        expected = read_count(
            await self._call(
                "core/view/numberOfAlerts",
                lambda: self._client.core.number_of_alerts(baseurl=base_url),
            ),
            "core/view/numberOfAlerts",
        )
        size = self.settings.zap.page_size
        start = 1
        seen: set[str] = set()
        alerts: list[dict[str, Any]] = []
        while True:
            try:
                page = await self._alerts_page(base_url, start, size)
            except ZapAnswerTooLarge:
                size = self._smaller_page(base_url, start, size)
                continue
            fresh = 0
            for item in page:
                ident = str(item.get("id", len(alerts)))
                if ident not in seen:
                    seen.add(ident)
                    alerts.append(item)
                    fresh += 1
            # A short page is the last one; a page with nothing new means ZAP is repeating
            # itself, and going on would never end.
            if len(page) < size or fresh == 0:
                break
            start += size
        if len(alerts) != expected:
            self._log.warning(
                "ZAP listed {} alerts under {} but numberOfAlerts said {}",
                len(alerts),
                base_url,
                expected,
            )
        return alerts, expected

    async def _alerts_page(self, base_url: str, start: int, size: int) -> list[dict[str, Any]]:
        """One page of ZAP's alerts under `base_url`: `size` alerts from the `start`-th."""
        page = await self._call(
            "core/view/alerts",
            functools.partial(self._client.core.alerts, baseurl=base_url, start=start, count=size),
        )
        if isinstance(page, str):
            raise coded_error(page, "core/view/alerts")
        if not isinstance(page, list):
            raise ZapBadAnswer(f"ZAP answered core/view/alerts with {type(page).__name__}")
        if not all(isinstance(item, dict) for item in page):
            raise ZapBadAnswer("ZAP answered core/view/alerts with a non-object alert")
        return page

    def _smaller_page(self, base_url: str, start: int, size: int) -> int:
        """The page size to read alert `start` on with, after a page of `size` was over the
        answer cap; `ZapAnswerTooLarge` when that one alert alone is over it."""
        limit = f"zap.max_answer_mb ({self.settings.zap.max_answer_mb} MiB)"
        if size == 1:
            # Retrying reads the same alert: only a larger cap reads it.
            raise ZapAnswerTooLarge(
                f"ZAP's alert number {start} under {base_url} alone is larger than {limit}; "
                "raise zap.max_answer_mb to read it"
            )
        smaller = size // 2
        self._log.warning(
            "ZAP's page of {} alerts from number {} under {} is larger than {}; "
            "reading pages of {}",
            size,
            start,
            base_url,
            limit,
            smaller,
        )
        return smaller

    # ---- the scan -------------------------------------------------------------------------

    async def scan(
        self,
        target_url: str,
        *,
        scan_key: str,
        service_id: str | None = None,
        bearer_token: str | None = None,
        on_progress: ProgressCallback | None = None,
        resume: ScanState | None = None,
    ) -> ScanOutcome:
        """Scan `target_url` and return its findings, reporting progress through `on_progress`.

        Returns a finished or timed-out outcome. Raises a `ZapError` when ZAP fails (after
        reporting a "failed" or, for a forgotten scan, "interrupted" state), and re-raises
        cancellation after stopping the scan in ZAP and reporting "interrupted". `resume` is a
        state from `reconcile` → "resumable": completed steps are skipped and the running
        ZAP scan is polled again. `bearer_token` is never logged nor put in the state.
        """
        run = _Run(self, target_url, scan_key, service_id, bearer_token, on_progress, resume)
        return await run.execute()

    async def stop(self, state: ScanState) -> None:
        """Stop in ZAP whatever `state` has running (spider, AJAX spider, active scan).

        Best effort: used on shutdown and after a deadline; errors are logged, not raised.
        """
        client = self._client
        if state.step is Step.SPIDER and state.spider_scan_id is not None:
            sid = state.spider_scan_id
            await self._quiet("spider/action/stop", lambda: client.spider.stop(scanid=sid))
        elif state.step is Step.AJAX_SPIDER:
            await self._quiet("ajaxSpider/action/stop", lambda: client.ajaxSpider.stop())
        elif state.step is Step.ACTIVE and state.active_scan_id is not None:
            aid = state.active_scan_id
            await self._quiet("ascan/action/stop", lambda: client.ascan.stop(aid))

    async def _quiet(self, endpoint: str, fn: Callable[[], Any]) -> None:
        try:
            await self._call(endpoint, fn)
        except ZapError as exc:
            self._log.warning("could not {} in ZAP: {}", endpoint, exc)

    async def reconcile(self, state: ScanState) -> Reconciliation:
        """Tell whether ZAP still knows a scan that the store says is running.

        ZAP forgets everything on restart and on a new session (scan ids restart at "0"), so
        both the session and the scan id are checked: the session name is monitord's own
        (`monitord-<scan_key>`), which a restarted ZAP does not have.
        """
        try:
            location = await self._call(
                "core/view/sessionLocation", lambda: self._client.core.session_location
            )
            if not state.session_name or not isinstance(location, str):
                return Reconciliation("interrupted", "the scan had no ZAP session yet")
            if session_file_name(location) != state.session_name:
                return Reconciliation(
                    "interrupted",
                    f"ZAP's session is {location!r}, not {state.session_name!r}: "
                    "ZAP was restarted or another session was started",
                )
            if state.step is Step.ACTIVE and state.active_scan_id is not None:
                aid = state.active_scan_id
                percent = await self._percent(
                    "ascan/view/status", lambda: self._client.ascan.status(scanid=aid)
                )
                return Reconciliation("resumable", f"ZAP's active scan {aid} is at {percent}%")
            if state.step is Step.SPIDER and state.spider_scan_id is not None:
                sid = state.spider_scan_id
                percent = await self._percent(
                    "spider/view/status", lambda: self._client.spider.status(scanid=sid)
                )
                return Reconciliation("resumable", f"ZAP's spider {sid} is at {percent}%")
            return Reconciliation("resumable", f"ZAP still has session {state.session_name!r}")
        except ZapScanForgotten as exc:
            return Reconciliation("interrupted", str(exc), exc)
        except ZapError as exc:
            return Reconciliation("unknown", str(exc), exc)


class _Run:
    """One scan in progress: its state, its deadline and the steps that move it on."""

    def __init__(
        self,
        scanner: ZapScanner,
        target_url: str,
        scan_key: str,
        service_id: str | None,
        bearer_token: str | None,
        on_progress: ProgressCallback | None,
        resume: ScanState | None,
    ) -> None:
        self.s = scanner
        self.cfg = scanner.settings.zap
        self.client = scanner._client
        self.target = target_url
        self.service_id = service_id
        self.token = bearer_token
        self.on_progress = on_progress
        now = scanner._clock()
        safe_key = re.sub(r"[^A-Za-z0-9_.-]", "_", scan_key)
        self.state = resume or ScanState(
            scan_key=scan_key,
            target_url=target_url,
            session_name=f"monitord-{safe_key}",
            context_name=f"monitord-{safe_key}",
            started_at=now,
            updated_at=now,
        )
        self.resuming = resume is not None
        started = self.state.started_at or now
        self.deadline = started + dt.timedelta(seconds=self.cfg.scan_deadline_minutes * 60)
        self.scope = re.compile(scope_regex(target_url))
        self.rule_name = f"monitord-auth-{safe_key}"
        self.notes: list[str] = []

    # ---- state ----------------------------------------------------------------------------

    async def publish(self, **changes: Any) -> None:
        """Apply `changes` to the state and hand it to the caller if anything changed."""
        new = dataclasses.replace(self.state, **changes)
        if new == self.state:
            return
        self.state = dataclasses.replace(new, updated_at=self.s._clock())
        if self.on_progress is not None:
            await self.on_progress(self.state)

    async def progress(self, endpoint: str, call: Callable[[], Any]) -> int:
        """Ask ZAP how far a spider or scan is (a percentage), and publish it."""
        percent = await self.s._percent(endpoint, call)
        await self.publish(percent=min(percent, 100))
        return percent

    async def finish_step(self, step: Step) -> None:
        await self.publish(steps_done=(*self.state.steps_done, step), percent=0)

    def check_deadline(self) -> None:
        if self.s._clock() >= self.deadline:
            raise CallTimedOut(
                ZapDeadline(
                    f"scan passed its deadline of {self.cfg.scan_deadline_minutes * 60:g} s "
                    f"during the {self.state.step.value} step and was stopped in ZAP"
                )
            )

    # ---- the whole run --------------------------------------------------------------------

    async def execute(self) -> ScanOutcome:
        handlers: dict[Step, Callable[[], Awaitable[None]]] = {
            Step.SESSION: self.step_session,
            Step.CONTEXT: self.step_context,
            Step.AUTH: self.step_auth,
            Step.SPIDER: self.step_spider,
            Step.AJAX_SPIDER: self.step_ajax,
            Step.PASSIVE: self.step_passive,
            Step.ACCESS: self.step_access,
            Step.ACTIVE: self.step_active,
        }
        log = self.s._log
        try:
            # Checked on every start, a resumed one too: the catalogue or DNS may have changed.
            for note in await check_target(
                self.target, self.s.settings.denied_networks, self.cfg.call_timeout_seconds
            ):
                log.warning("ZAP scan {} of {}: {}", self.state.scan_key, self.target, note)
                self.notes.append(note)
            status: ScanStatus = "finished"
            reason: ZapError | None = None
            try:
                if self.resuming:
                    await self.check_session()
                for step in STEPS:
                    if step in self.state.steps_done or step not in handlers:
                        continue
                    await self.publish(step=step, percent=0)
                    self.check_deadline()
                    await handlers[step]()
                    await self.finish_step(step)
            except CallTimedOut as timed_out:
                log.warning("ZAP scan {} of {}: {}", self.state.scan_key, self.target, timed_out)
                await self.s.stop(self.state)
                status, reason = "timed_out", timed_out.reason
            # Outside the inner try so that a failure while reading alerts is reported below.
            return await self.harvest(status, reason)
        except asyncio.CancelledError:
            # Shutdown: ZAP must not go on attacking the service unsupervised; a ZAP that does
            # not answer within the grace cannot be told, and must not hold the exit.
            with contextlib.suppress(TimeoutError):
                await asyncio.shield(
                    asyncio.wait_for(self.interrupt(), self.s.shutdown_grace_seconds)
                )
            # Removed, or left for the next run of this scan, whose auth step removes it first.
            self.token = None
            raise
        except ZapError as exc:
            ended: ScanStatus = "interrupted" if isinstance(exc, ZapScanForgotten) else "failed"
            log.error("ZAP scan {} of {} {}: {}", self.state.scan_key, self.target, ended, exc)
            with contextlib.suppress(ZapError):
                await self.s.stop(self.state)
            await self.publish(status=ended, message=str(exc), retryable=exc.retryable)
            raise
        except Exception:
            # Not ZAP's fault but monitord's: ZAP must not go on attacking unsupervised; the
            # caller records the failure.
            with contextlib.suppress(Exception):
                await self.s.stop(self.state)
            raise
        finally:
            if self.token is not None:
                # The token must not stay in ZAP's replacer rules, which outlive the session.
                await asyncio.shield(self.remove_auth_rule())

    async def interrupt(self) -> None:
        await self.s.stop(self.state)
        if self.token is not None:
            await self.remove_auth_rule()
        with contextlib.suppress(Exception):
            await self.publish(
                status="interrupted",
                message="scan stopped in ZAP because monitord shut down",
                retryable=True,
            )

    async def harvest(self, status: ScanStatus, reason: ZapError | None) -> ScanOutcome:
        """Read the alerts found so far and turn them into findings."""
        await self.publish(step=Step.ALERTS, percent=0)
        alerts, expected = await self.read_alerts()
        grouping = group_alerts(
            alerts,
            service_id=self.service_id,
            in_scope=lambda u: bool(self.scope.fullmatch(u)),
            max_field_bytes=self.cfg.max_field_kb << 10,
        )
        message = str(reason) if reason is not None else ("; ".join(self.notes) or None)
        await self.publish(
            step=Step.DONE,
            steps_done=(*self.state.steps_done, Step.ALERTS),
            status=status,
            percent=100 if status == "finished" else self.state.percent,
            message=message,
            retryable=None if reason is None else reason.retryable,
        )
        self.s._log.info(
            "ZAP scan {} of {} {}: {} alerts, {} findings",
            self.state.scan_key,
            self.target,
            status,
            len(alerts),
            len(grouping.findings),
        )
        return ScanOutcome(
            state=self.state,
            findings=grouping.findings,
            alerts_read=len(alerts),
            alerts_expected=expected,
            false_positives_dropped=grouping.false_positives_dropped,
            reason=reason,
        )

    async def read_alerts(self) -> tuple[list[dict[str, Any]], int]:
        """Read the alerts, trying again after a passing failure: they are the scan's result.

        ZAP's session is checked before and after: a ZAP restarted meanwhile has a new, empty
        session, whose "no alerts" would have marked every finding of the service fixed.
        """
        tries = 3
        for attempt in range(1, tries + 1):
            await self.check_session()
            try:
                alerts, expected = await self.s.read_alerts(self.target)
            except ZapError as exc:
                if not exc.retryable or attempt == tries:
                    raise
                self.s._log.warning(
                    "ZAP scan {}: reading alerts failed ({}); trying again",
                    self.state.scan_key,
                    exc,
                )
                await self.s._sleep(self.cfg.poll_interval_seconds)
                continue
            await self.check_session()
            return alerts, expected
        raise AssertionError("unreachable")  # the last try returns or raises

    async def check_session(self) -> None:
        verdict = await self.s.reconcile(self.state)
        if verdict.verdict == "interrupted":
            raise ZapScanForgotten(
                f"ZAP no longer has this scan ({self.state.step.value} step): {verdict.reason}",
                code="does_not_exist",
            )
        if verdict.error is not None:
            raise verdict.error

    # ---- steps ----------------------------------------------------------------------------

    async def step_session(self) -> None:
        # A new session per scan: ZAP grows in memory over long runs, and a fresh session
        # keeps one service's alerts apart from the next one's.
        name = self.state.session_name
        value = await self.s._call(
            "core/action/newSession",
            lambda: self.client.core.new_session(name=name, overwrite=True),
        )
        require_ok(value, "core/action/newSession")

    async def step_context(self) -> None:
        name = self.state.context_name
        cid = read_count(
            await self.s._call(
                "context/action/newContext", lambda: self.client.context.new_context(name)
            ),
            "context/action/newContext",
        )
        regex = scope_regex(self.target)
        require_ok(
            await self.s._call(
                "context/action/includeInContext",
                lambda: self.client.context.include_in_context(name, regex),
            ),
            "context/action/includeInContext",
        )
        await self.publish(context_id=str(cid))

    async def step_auth(self) -> None:
        if self.token is None:
            return
        token = self.token
        await self.remove_auth_rule()
        # REQ_HEADER sets (or replaces) the header on every request ZAP sends; `url` limits
        # the rule to the service so the token never goes to another host.
        value = await self.s._call(
            "replacer/action/addRule",
            lambda: self.client.replacer.add_rule(
                description=self.rule_name,
                enabled="true",
                matchtype="REQ_HEADER",
                matchregex="false",
                matchstring="Authorization",
                replacement=f"Bearer {token}",
                url=scope_regex(self.target),
            ),
        )
        require_ok(value, "replacer/action/addRule")

    async def remove_auth_rule(self) -> None:
        name = self.rule_name
        try:
            await self.s._call(
                "replacer/action/removeRule", lambda: self.client.replacer.remove_rule(name)
            )
        except ZapError as exc:
            # does_not_exist is the normal answer when there is no rule yet.
            if not (isinstance(exc, ZapApiError) and exc.code == "does_not_exist"):
                self.s._log.warning("could not remove the auth rule from ZAP: {}", exc)

    async def step_spider(self) -> None:
        client, cfg = self.client, self.cfg
        if self.state.spider_scan_id is None:
            depth, minutes = cfg.spider_max_depth, cfg.spider_minutes
            require_ok(
                await self.s._call(
                    "spider/action/setOptionMaxDepth",
                    lambda: client.spider.set_option_max_depth(depth),
                ),
                "spider/action/setOptionMaxDepth",
            )
            require_ok(
                await self.s._call(
                    "spider/action/setOptionMaxDuration",
                    lambda: client.spider.set_option_max_duration(minutes),
                ),
                "spider/action/setOptionMaxDuration",
            )
            name, target = self.state.context_name, self.target
            children = cfg.spider_max_children or None
            sid = read_count(
                await self.s._call(
                    "spider/action/scan",
                    lambda: client.spider.scan(
                        url=target, maxchildren=children, contextname=name, subtreeonly="true"
                    ),
                ),
                "spider/action/scan",
            )
            await self.publish(spider_scan_id=str(sid))
        sid_text = self.state.spider_scan_id
        assert sid_text is not None
        # ZAP bounds the spider by setOptionMaxDuration; this bound (with a minute's grace)
        # covers a spider that ignores it.
        bound = self.s._clock() + dt.timedelta(minutes=cfg.spider_minutes + 1)
        while True:
            percent = await self.progress(
                "spider/view/status", lambda: client.spider.status(scanid=sid_text)
            )
            if percent >= 100:
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(f"spider stopped after {cfg.spider_minutes} min")
                await self.s.stop(self.state)
                return
            await self.s._sleep(cfg.poll_interval_seconds)

    async def step_ajax(self) -> None:
        if not self.cfg.ajax_spider:
            return
        client, cfg = self.client, self.cfg
        minutes, target, name = cfg.ajax_spider_minutes, self.target, self.state.context_name
        require_ok(
            await self.s._call(
                "ajaxSpider/action/setOptionMaxDuration",
                lambda: client.ajaxSpider.set_option_max_duration(minutes),
            ),
            "ajaxSpider/action/setOptionMaxDuration",
        )
        require_ok(
            await self.s._call(
                "ajaxSpider/action/scan",
                lambda: client.ajaxSpider.scan(url=target, contextname=name, subtreeonly="true"),
            ),
            "ajaxSpider/action/scan",
        )
        bound = self.s._clock() + dt.timedelta(minutes=minutes + 1)
        while True:
            status = await self.s._call("ajaxSpider/view/status", lambda: client.ajaxSpider.status)
            if not isinstance(status, str):
                raise ZapBadAnswer(f"ZAP answered ajaxSpider/view/status with {status!r}")
            if status.lower() != "running":
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(f"AJAX spider stopped after {minutes} min")
                await self.s.stop(self.state)
                return
            await self.s._sleep(cfg.poll_interval_seconds)

    async def step_passive(self) -> None:
        # Passive alerts are raised from the queue of recorded messages; reading alerts
        # before it drains would miss them.
        client, cfg = self.client, self.cfg
        bound = self.s._clock() + dt.timedelta(seconds=cfg.passive_deadline_seconds)
        while True:
            left = read_count(
                await self.s._call(
                    "pscan/view/recordsToScan", lambda: client.pscan.records_to_scan
                ),
                "pscan/view/recordsToScan",
            )
            if left == 0:
                return
            self.check_deadline()
            if self.s._clock() >= bound:
                self.notes.append(
                    f"passive scanner still had {left} records after "
                    f"{cfg.passive_deadline_seconds:g} s"
                )
                self.s._log.warning("ZAP scan {}: {}", self.state.scan_key, self.notes[-1])
                return
            await self.s._sleep(cfg.poll_interval_seconds)

    async def step_access(self) -> None:
        # The active scan refuses a URL that is not in the sites tree (url_not_found); the
        # spider may have recorded only children, so ZAP is asked to fetch the URL itself.
        target = self.target
        value = await self.s._call(
            "core/action/accessUrl",
            # ZAP's default, said out loud: a redirect is for the spider, in the context, to follow.
            lambda: self.client.core.access_url(target, followredirects="false"),
        )
        if isinstance(value, str):
            raise coded_error(value, "core/action/accessUrl")

    async def step_active(self) -> None:
        client, cfg = self.client, self.cfg
        if self.state.active_scan_id is None:
            target, cid, policy = self.target, self.state.context_id, cfg.scan_policy
            try:
                aid = read_count(
                    await self.s._call(
                        "ascan/action/scan",
                        lambda: client.ascan.scan(
                            url=target, recurse="true", scanpolicyname=policy, contextid=cid
                        ),
                    ),
                    "ascan/action/scan",
                )
            except ZapApiError as exc:
                # ActiveScanAPI: an unknown scanPolicyName is does_not_exist; that is a
                # configuration mistake a retry will not mend.
                if policy and exc.code == "does_not_exist":
                    raise ZapApiError(
                        f"ZAP has no scan policy named {policy!r} (zap.scan_policy)",
                        code=exc.code,
                        http_status=exc.http_status,
                        retryable=False,
                    ) from None
                raise
            await self.publish(active_scan_id=str(aid))
        aid_text = self.state.active_scan_id
        assert aid_text is not None
        last, same = -1, 0
        while True:
            percent = await self.progress(
                "ascan/view/status", lambda: client.ascan.status(scanid=aid_text)
            )
            if percent >= 100:
                return
            same = same + 1 if percent == last else 1
            last = percent
            if same >= cfg.stuck_polls:
                raise CallTimedOut(
                    ZapScanStuck(
                        f"active scan {aid_text} stayed at {percent}% for {same} polls "
                        f"({same * cfg.poll_interval_seconds:g} s) and was stopped in ZAP"
                    )
                )
            self.check_deadline()
            await self.s._sleep(cfg.poll_interval_seconds)
