"""Reading the past back: the catalogue as of a moment, each service's lifecycle periods, a
quarter's probe figures, the quiet windows and state changes of a period.

Read-only functions over a Session (they read what it has flushed), for the compliance rules
and the quarterly report. Every time given and returned is timezone-aware UTC; periods are
half-open, [start, end). They read what lasts (revisions, roll-ups, stored windows), so a report
on a past quarter written today shows what one written the day after the quarter ended showed.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, cast, func, select
from sqlalchemy.orm import Session

from monitord.store import histogram
from monitord.store.models import (
    ProbeResultRow,
    ProbeRollup,
    QuietWindow,
    Service,
    ServiceRevision,
    ServiceStateChange,
    SyncRun,
)

AVAILABILITY = "availability"
"""The cheap probe kind, run every round: the one uptime and latency are measured by."""

RECORD_FIELDS = (
    "name",
    "type",
    "permission",
    "source",
    "provider",
    "developer",
    "coverage",
    "access_method",
    "max_concurrency",
    "url",
    "probe",
    "return_codes",
    "manual_url",
    "flowchart_url",
    "security_plan_url",
    "faq_url",
    "emergency_plan_url",
    "description",
    "planned_release",
    "review",
    "status",
    "suspension",
    "offline_notice",
    "updated_at",
    "contacts",
    "filing_problems",
    "unknown_values",
    "first_seen",
)
"""The service columns a revision's record keeps (times as ISO 8601 text): everything but the
raw record (which these columns are read from) and the sync's own bookkeeping."""


def service_record(service: Service) -> dict[str, Any]:
    """The record a ServiceRevision keeps of `service` as it is now (JSON-ready)."""
    record: dict[str, Any] = {"id": service.id}
    for name in RECORD_FIELDS:
        value = getattr(service, name)
        record[name] = value.isoformat() if isinstance(value, dt.datetime) else value
    # The targets the service files for itself (clause 6.4 a/b) live only in its raw record.
    slo = (service.raw or {}).get("slo")
    record["slo"] = slo if isinstance(slo, dict) else None
    return record


def catalogue_as_of(
    session: Session, moment: dt.datetime, services: Collection[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Every service the catalogue held at `moment` (or those of `services`), id -> its record
    then (`service_record`'s keys); services already gone or not yet seen then are absent."""
    query = (
        select(ServiceRevision.service_id, ServiceRevision.gone, ServiceRevision.record)
        .where(
            ServiceRevision.valid_from <= moment,
            (ServiceRevision.valid_to.is_(None)) | (ServiceRevision.valid_to > moment),
        )
        .order_by(ServiceRevision.valid_from, ServiceRevision.id)
    )
    if services is not None:
        query = query.where(ServiceRevision.service_id.in_(list(services)))
    catalogue: dict[str, dict[str, Any]] = {}
    # Plain rows, not ORM objects: a report reads the catalogue of thousands of services often.
    for service_id, gone, record in session.connection().execute(query):
        if gone:  # the latest revision wins, should two ever overlap
            catalogue.pop(service_id, None)
        else:
            catalogue[service_id] = record
    return catalogue


TICK = dt.timedelta(microseconds=1)
"""The smallest step of a stored time: the moment just before another."""

Period = tuple[dt.datetime, dt.datetime, str]
"""[from, to) and the lifecycle status a service had then (online, suspended, offline, pending,
approved, or gone)."""


def service_periods(
    session: Session, start: dt.datetime, end: dt.datetime
) -> dict[str, list[Period]]:
    """Per service, the periods within [start, end) and the lifecycle status it had in each, in
    time order, neighbours with the same status joined. Before a service was first seen it has
    no period."""
    rows = session.scalars(
        select(ServiceRevision)
        .where(
            ServiceRevision.valid_from < end,
            (ServiceRevision.valid_to.is_(None)) | (ServiceRevision.valid_to > start),
        )
        .order_by(ServiceRevision.service_id, ServiceRevision.valid_from, ServiceRevision.id)
    )
    periods: dict[str, list[Period]] = defaultdict(list)
    for revision in rows:
        since = max(revision.valid_from, start)
        until = min(revision.valid_to or end, end)
        if until <= since:
            continue
        status = "gone" if revision.gone else str(revision.record.get("status") or "pending")
        mine = periods[revision.service_id]
        if mine and mine[-1][2] == status and mine[-1][1] >= since:
            mine[-1] = (mine[-1][0], max(until, mine[-1][1]), status)
        else:
            mine.append((since, until, status))
    return dict(periods)


def online_services(periods: Mapping[str, list[Period]]) -> list[str]:
    """The services online at some moment of `periods` (`service_periods`), by id: those the
    compliance verdicts judge as online in the quarter."""
    return sorted(
        service_id
        for service_id, spans in periods.items()
        if any(status == "online" for _a, _b, status in spans)
    )


def last_records(
    session: Session, periods: Mapping[str, list[Period]]
) -> dict[str, dict[str, Any]]:
    """Each service the catalogue held at some moment of `periods` (`service_periods`), id ->
    its record when it was last in it then: at their end, or just before it went gone. A
    service gone throughout is absent."""
    moments: dict[dt.datetime, list[str]] = defaultdict(list)
    for service_id, spans in periods.items():
        present = [b for _a, b, status in spans if status != "gone"]
        if present:
            moments[present[-1] - TICK].append(service_id)
    records: dict[str, dict[str, Any]] = {}
    for moment, ids in moments.items():
        catalogue = catalogue_as_of(session, moment, services=ids)
        records.update(
            (service_id, catalogue[service_id]) for service_id in ids if service_id in catalogue
        )
    return records


@dataclass(frozen=True)
class ProbeStats:
    """A service's availability probes over a period, blind results apart."""

    service_id: str
    count: int
    """Results that count: measured while monitord could see (not blind)."""
    failures: int
    blind: int
    """Results measured in blind rounds: no evidence either way, left out of the rest."""
    hours_probed: int
    """Hours with at least one result that counts."""
    uptime: float | None
    """(count − failures) / count; None when nothing counts."""
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    """Latency percentiles of the successful results, as `histogram.percentile` gives them."""
    buckets: dict[str, int] = field(default_factory=dict)
    """The successful results' latencies as a histogram (monitord.store.histogram)."""


@dataclass
class Tally:
    """One service's probes as they are counted: its roll-ups' sums, then its raw results one
    by one (`add_result`); `stats` gives the figures."""

    count: int = 0
    failures: int = 0
    blind: int = 0
    rolled_hours: int = 0
    hours: set[dt.datetime] = field(default_factory=set)
    """The hours probed among those not rolled up yet."""
    buckets: dict[str, int] = field(default_factory=dict)

    def take_rollups(
        self, count: int, failures: int, blind: int | None, hours: int, texts: str | None
    ) -> None:
        """The sums of the service's roll-ups, a row of `rollup_sums`."""
        self.count, self.failures, self.blind = int(count), int(failures), int(blind or 0)
        self.rolled_hours = int(hours)
        self.buckets = histogram.sum_stored(texts or "")

    def add_result(self, at: dt.datetime, success: bool, duration_ms: float, blind: bool) -> None:
        """One raw result of an hour not rolled up yet; a blind one counts only as blind."""
        if blind:
            self.blind += 1
            return
        self.count += 1
        self.hours.add(at.replace(minute=0, second=0, microsecond=0))
        if success:
            histogram.add(self.buckets, duration_ms)
        else:
            self.failures += 1

    def stats(self, service_id: str) -> ProbeStats:
        """The service's figures from what was counted."""
        return ProbeStats(
            service_id=service_id,
            count=self.count,
            failures=self.failures,
            blind=self.blind,
            hours_probed=self.rolled_hours + len(self.hours),
            uptime=(self.count - self.failures) / self.count if self.count else None,
            p50_ms=histogram.percentile(self.buckets, 0.50),
            p95_ms=histogram.percentile(self.buckets, 0.95),
            p99_ms=histogram.percentile(self.buckets, 0.99),
            buckets=dict(self.buckets),
        )


def rollup_sums(
    *where: ColumnElement[bool],
) -> Select[str, int, int, int, int, str]:
    """Per service, the sums of the roll-ups `where` picks, for Tally.take_rollups: summed by
    the database, the histograms joined as text (a quarter of 2,000 services is millions of
    hours)."""
    return (
        select(
            ProbeRollup.service_id,
            func.sum(ProbeRollup.count),
            func.sum(ProbeRollup.failures),
            func.sum(ProbeRollup.blind),
            func.count().filter(ProbeRollup.count > 0),  # one roll-up per service and hour
            func.aggregate_strings(cast(ProbeRollup.latency_buckets, Text), " "),
        )
        .where(*where)
        .group_by(ProbeRollup.service_id)
    )


def raw_results(
    kind: str, since: dt.datetime, until: dt.datetime
) -> Select[str | None, dt.datetime, bool, float, bool]:
    """The raw `kind` results of services in [since, until), for Tally.add_result."""
    return (
        select(
            ProbeResultRow.service_id,
            ProbeResultRow.at,
            ProbeResultRow.success,
            ProbeResultRow.duration_ms,
            ProbeResultRow.blind,
        )
        .where(
            ProbeResultRow.kind == kind,
            ProbeResultRow.service_id.is_not(None),
            ProbeResultRow.at >= since,
            ProbeResultRow.at < until,
        )
        .execution_options(yield_per=10_000)
    )


def at_work_before(session: Session, end: dt.datetime) -> bool:
    """Whether monitord was at work before `end` (a catalogue sync began before it): a store
    installed later holds nothing of the time before, which is no gap to report."""
    return session.scalar(select(SyncRun.id).where(SyncRun.started_at < end).limit(1)) is not None


def rolled_up_until(session: Session) -> dt.datetime | None:
    """Raw results before this moment are in the roll-ups (the hour after the last rolled one)."""
    last: dt.datetime | None = session.scalar(select(func.max(ProbeRollup.hour)))
    return None if last is None else last + dt.timedelta(hours=1)


SERVICES_PER_QUERY = 100
"""A quarter of a hundred services' hourly histograms is about 20 MB of text."""


def probe_quarter(
    session: Session, start: dt.datetime, end: dt.datetime, kind: str = AVAILABILITY
) -> dict[str, ProbeStats]:
    """Per service, its `kind` probes in [start, end) (whole hours, such as a quarter's
    bounds): the hourly roll-ups, and the raw results of the hours not rolled up yet, so that a
    report on the running quarter counts every probe."""
    tallies: dict[str, Tally] = defaultdict(Tally)
    in_period = (ProbeRollup.kind == kind, ProbeRollup.hour >= start, ProbeRollup.hour < end)
    # Asked for a hundred services at a time, the database walks each one's hours along the
    # roll-ups' key; asked for all at once, SQLite sorted the whole quarter first (14 s
    # against 2 s).
    services = list(session.scalars(select(ProbeRollup.service_id).distinct()))
    for batch in range(0, len(services), SERVICES_PER_QUERY):
        picked = ProbeRollup.service_id.in_(services[batch : batch + SERVICES_PER_QUERY])
        for service_id, count, failures, blind, hours, texts in session.connection().execute(
            rollup_sums(picked, *in_period)
        ):
            tallies[service_id].take_rollups(count, failures, blind, hours, texts)
    raw_from = max(start, rolled_up_until(session) or start)
    if raw_from < end:
        for raw_service, at, success, duration_ms, blind in session.execute(
            raw_results(kind, raw_from, end)
        ):
            tallies[str(raw_service)].add_result(at, success, duration_ms, blind)
    return {service_id: tally.stats(service_id) for service_id, tally in sorted(tallies.items())}


def window_end(window: QuietWindow) -> dt.datetime | None:
    """When a quiet window stopped applying: when it ended (a suspension resumed), else a
    maintenance window's planned end; None while a suspension lasts or a window has no end."""
    if window.ended_at is not None:
        return window.ended_at
    return window.ends_at if window.kind == "maintenance" else None


def quiet_windows(session: Session, start: dt.datetime, end: dt.datetime) -> list[QuietWindow]:
    """The maintenance windows and suspensions in force at some moment of [start, end), in the
    order they started (a suspension withdrawn before it began never was)."""
    rows = session.scalars(
        select(QuietWindow)
        .where(QuietWindow.starts_at < end)
        .order_by(QuietWindow.starts_at, QuietWindow.id)
    )
    return [
        window
        for window in rows
        if ((stop := window_end(window)) is None or stop > start)
        and (window.ended_at is None or window.ended_at > window.starts_at)  # withdrawn before
    ]


def state_changes(
    session: Session, start: dt.datetime, end: dt.datetime
) -> list[ServiceStateChange]:
    """Every probe state change (up, degraded, down...) in [start, end), in time order."""
    return list(
        session.scalars(
            select(ServiceStateChange)
            .where(ServiceStateChange.at >= start, ServiceStateChange.at < end)
            .order_by(ServiceStateChange.at, ServiceStateChange.id)
        )
    )
