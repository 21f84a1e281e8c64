"""Keeping the store bounded: hourly roll-ups of probe results, and purges past retention.

Successful raw probe results are kept `probes.raw_retention_days`; their hourly roll-ups
(count, failures, blind results, a latency histogram and p50/p95/p99)
`probes.rollup_retention_days` (at least 400), so a quarter's report and a year's trend read
roll-ups only. Nothing monitord records for clause 7.3.1 is purged before
`store.retention_days` (at least 184): failed probe results and probe rounds go then. The
state changes and sync runs a quarter is judged from (its outages, when monitoring began) go
with the roll-ups, so that a quarter is judged alike as long as its roll-ups are kept. The
service events a sync run recorded stay (without their reference to it).
Each table is purged in its own transactions, so that one that cannot be purged keeps no other
from it.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from loguru import logger
from sqlalchemy import ColumnElement, Row, and_, delete, false, func, or_, select, true, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstrumentedAttribute, Session

from monitord.config import Settings
from monitord.store import STORE_GONE_ERRORS, Store, audit, histogram
from monitord.store.history import rolled_up_until
from monitord.store.models import (
    AuditEntry,
    ProbeResultRow,
    ProbeRollup,
    ProbeRound,
    ServiceEvent,
    ServiceStateChange,
    SyncRun,
)
from monitord.textable import shortened


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _rollup(
    service_id: str,
    kind: str,
    hour: dt.datetime,
    values: list[tuple[bool, float, bool]],
    through_id: int,
) -> ProbeRollup:
    """One hour's roll-up of (success, duration, blind) results. A blind result is counted
    apart: what monitord measured while it could not see is no evidence about the service."""
    seen = [(ok, duration) for ok, duration, blind in values if not blind]
    latencies = sorted(duration for ok, duration in seen if ok)
    buckets: dict[str, int] = {}
    for latency in latencies:
        histogram.add(buckets, latency)
    return ProbeRollup(
        service_id=service_id,
        kind=kind,
        hour=hour,
        count=len(seen),
        failures=sum(1 for ok, _ in seen if not ok),
        blind=len(values) - len(seen),
        p50_ms=_percentile(latencies, 0.50) if latencies else None,
        p95_ms=_percentile(latencies, 0.95) if latencies else None,
        p99_ms=_percentile(latencies, 0.99) if latencies else None,
        latency_buckets=buckets,
        through_id=through_id,
    )


def _add_late(rollup: ProbeRollup, late: ProbeRollup) -> None:
    """Count the results of `late` (of the same service, kind and hour) into `rollup`. Their
    raw neighbours may be purged already, so the percentiles come from the merged histogram."""
    buckets = dict(rollup.latency_buckets or {})
    histogram.merge(buckets, late.latency_buckets)
    rollup.count += late.count
    rollup.failures += late.failures
    rollup.blind = (rollup.blind or 0) + late.blind
    rollup.latency_buckets = buckets
    rollup.p50_ms = histogram.percentile(buckets, 0.50)
    rollup.p95_ms = histogram.percentile(buckets, 0.95)
    rollup.p99_ms = histogram.percentile(buckets, 0.99)
    rollup.through_id = late.through_id


SETTLE = dt.timedelta(minutes=10)
"""How long after an hour ends it is rolled up: a result is recorded when its probe ends (at
most 300 s after the `at` it is stamped with) and flushed 10 s later, so an hour is whole by
then. What comes later still (a daemon cut off from the store writes what it measured once it
is back) is added to its hour's roll-up at the next run."""

_Key = tuple[str, str, dt.datetime]
_Result = Row[str | None, str, dt.datetime, bool, float, bool]
_RESULT_COLUMNS = (
    ProbeResultRow.service_id,
    ProbeResultRow.kind,
    ProbeResultRow.at,
    ProbeResultRow.success,
    ProbeResultRow.duration_ms,
    ProbeResultRow.blind,
)


def _by_hour(rows: Iterable[_Result]) -> dict[_Key, list[tuple[bool, float, bool]]]:
    """Raw results (_RESULT_COLUMNS) grouped by service, kind and hour."""
    groups: dict[_Key, list[tuple[bool, float, bool]]] = defaultdict(list)
    for service_id, kind, at, success, duration, blind in rows:
        hour = at.replace(minute=0, second=0, microsecond=0)
        groups[(str(service_id), kind, hour)].append((success, duration, bool(blind)))
    return groups


def _count_late(session: Session, seen: int, newest: int, rolled: dt.datetime) -> int:
    """Add the results written after their hour was rolled up (ids past `seen`, the newest
    id the roll-ups had counted) to their hours' roll-ups; returns roll-ups changed."""
    rows = session.execute(
        select(*_RESULT_COLUMNS).where(
            ProbeResultRow.id > seen,
            ProbeResultRow.id <= newest,
            ProbeResultRow.at < rolled,
            ProbeResultRow.service_id.is_not(None),
        )
    ).all()
    groups = _by_hour(rows)
    for (service_id, kind, hour), values in groups.items():
        late = _rollup(service_id, kind, hour, values, newest)
        rollup = session.scalar(
            select(ProbeRollup).where(
                ProbeRollup.service_id == service_id,
                ProbeRollup.kind == kind,
                ProbeRollup.hour == hour,
            )
        )
        if rollup is None:
            session.add(late)
        else:
            _add_late(rollup, late)
    return len(groups)


def roll_up(store: Store, now: dt.datetime) -> int:
    """Roll every hour ended SETTLE ago and not rolled up yet, and add the results written
    since to the hours already rolled; returns roll-ups written or changed.

    Each roll-up notes the newest raw result id its run counted (`through_id`), in the same
    transaction: a result is counted once, however late it is written, and a crash in the
    middle leaves nothing half-counted.
    """
    done = (now - SETTLE).replace(minute=0, second=0, microsecond=0)
    with store.session() as session:
        newest = session.scalar(select(func.max(ProbeResultRow.id)))
        if newest is None:
            return 0
        rolled = rolled_up_until(session)
        written = 0
        if rolled is not None:
            seen = session.scalar(select(func.max(ProbeRollup.through_id))) or 0
            written += _count_late(session, seen, newest, rolled)
        start = rolled or session.scalar(select(func.min(ProbeResultRow.at)))
        if start is None:
            return written
        start = start.replace(minute=0, second=0, microsecond=0)
        rows = session.execute(
            select(*_RESULT_COLUMNS).where(
                ProbeResultRow.at >= start,
                ProbeResultRow.at < done,
                ProbeResultRow.id <= newest,  # the rest is counted at the next run
                ProbeResultRow.service_id.is_not(None),
            )
        ).all()
        for (service_id, kind, hour), values in _by_hour(rows).items():
            session.add(_rollup(service_id, kind, hour, values, newest))
            written += 1
    return written


BATCH = 5_000
"""Rows deleted per transaction. A backlog of months (after a purge that could not run) goes in
steps, so that no transaction holds the store's write lock while the probes wait to record."""

Moment = InstrumentedAttribute[dt.datetime]
"""The time column a table is purged by, oldest first."""

Purged = (
    type[ProbeResultRow]
    | type[ProbeRollup]
    | type[ProbeRound]
    | type[SyncRun]
    | type[ServiceStateChange]
)


def _delete_batch(
    session: Session, model: Purged, older: ColumnElement[bool], moment: Moment
) -> int:
    """Delete up to BATCH of the oldest rows of `model` matching `older`; returns how many.

    Oldest by `moment`, the indexed time `older` bounds: ordered by id, SQLite read the whole
    table for each batch (a store of months of probe results, every hour)."""
    ids = list(session.scalars(select(model.id).where(older).order_by(moment).limit(BATCH)))
    if not ids:
        return 0
    if model is SyncRun:
        # A lifecycle event outlives the sync run that saw it (the store's foreign key would
        # refuse the delete): it keeps everything but the reference.
        session.execute(
            update(ServiceEvent).where(ServiceEvent.sync_run_id.in_(ids)).values(sync_run_id=None)
        )
    session.execute(delete(model).where(model.id.in_(ids)))
    return len(ids)


def _failed(what: str, exc: SQLAlchemyError) -> None:
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    # The store gone for a moment (or a paused daemon's session ended) is no fault to page for.
    log = logger.warning if isinstance(exc, STORE_GONE_ERRORS) else logger.error
    log(
        "housekeeping: {} failed ({}: {}); the other tables are purged, this one at the next run",
        what,
        exc.__class__.__name__,
        shortened(reason, 300),
    )


def _purge_table(store: Store, model: Purged, older: ColumnElement[bool], moment: Moment) -> int:
    """Delete every row of `model` matching `older`, BATCH rows a transaction; returns how many.

    A failure is logged with the table and what was deleted before it, and that count returned:
    the other tables are purged all the same, and this one is tried again at the next run.
    """
    deleted = 0
    try:
        while True:
            with store.session() as session:
                done = _delete_batch(session, model, older, moment)
            deleted += done
            if done < BATCH:
                return deleted
    except SQLAlchemyError as exc:
        _failed(f"purging {model.__tablename__} after {deleted} rows", exc)
        return deleted


def _rolled_until(store: Store) -> dt.datetime | None:
    """Raw results before this are in the roll-ups; None when nothing is rolled up yet (or the
    store cannot say: then no raw result goes)."""
    try:
        with store.session() as session:
            return rolled_up_until(session)
    except SQLAlchemyError as exc:
        _failed("reading the last roll-up (raw results kept)", exc)
        return None


@dataclass(frozen=True)
class Cutoffs:
    """Before when each kind of row may go."""

    successful: dt.datetime | None
    """Successful raw probe results: past probes.raw_retention_days and rolled up (None: none
    is rolled up yet, none goes)."""
    failed: dt.datetime | None
    """Failed raw probe results (7.3.1 evidence of the running state): past both retentions,
    and rolled up."""
    rollups: dt.datetime
    """Roll-ups, and the state changes and sync runs a quarter is judged from with them: the
    longer of probes.rollup_retention_days and store.retention_days."""
    records: dt.datetime
    """Probe rounds: store.retention_days."""


def cutoffs(settings: Settings, now: dt.datetime, rolled_until: dt.datetime | None) -> Cutoffs:
    """What each retention setting means at `now`, raw results kept until rolled up."""
    raw = dt.timedelta(days=settings.probes.raw_retention_days)
    records = dt.timedelta(days=settings.store.retention_days)
    rollups = dt.timedelta(days=max(settings.probes.rollup_retention_days, records.days))
    return Cutoffs(
        successful=None if rolled_until is None else min(now - raw, rolled_until),
        failed=None if rolled_until is None else min(now - max(raw, records), rolled_until),
        rollups=now - rollups,
        records=now - records,
    )


def purge(store: Store, settings: Settings, now: dt.datetime) -> dict[str, int]:
    """Delete what is past its retention; returns rows deleted per table.

    Every failed probe result is kept at least store.retention_days (7.3.1), every state
    change and sync run as long as the roll-ups; successful raw results go after
    probes.raw_retention_days once rolled up. Findings
    and their episodes, incidents and their events, service events, catalogue revisions, quiet
    windows, alerts and the audit trail are never purged: the quarterly reports of past years
    are built from them, and they grow slowly. Each table is purged on its own
    (`_purge_table`): one that fails stops no other. What was removed is logged, a line per
    table, and written to the audit trail (action "purge").
    """
    cut = cutoffs(settings, now, _rolled_until(store))
    deleted: dict[str, int] = {}
    before: dict[str, dict[str, str]] = {}
    if cut.successful is not None and cut.failed is not None:
        # One purge each, along the index of (success, at): `= true`, as an index is read.
        deleted["probe_results"] = sum(
            _purge_table(
                store,
                ProbeResultRow,
                and_(ProbeResultRow.success == success, ProbeResultRow.at < before),
                ProbeResultRow.at,
            )
            for success, before in ((true(), cut.successful), (false(), cut.failed))
        )
        before["probe_results"] = {
            "successful": cut.successful.isoformat(),
            "failed": cut.failed.isoformat(),
        }
    for model, column, cutoff in (
        (ProbeRollup, ProbeRollup.hour, cut.rollups),
        (ProbeRound, ProbeRound.started_at, cut.records),
        (SyncRun, SyncRun.started_at, cut.rollups),
        (ServiceStateChange, ServiceStateChange.at, cut.rollups),
    ):
        deleted[model.__tablename__] = _purge_table(store, model, column < cutoff, column)
        before[model.__tablename__] = {"all": cutoff.isoformat()}
    _say_what_went(store, now, deleted, before)
    return deleted


def _say_what_went(
    store: Store, now: dt.datetime, deleted: dict[str, int], before: dict[str, dict[str, str]]
) -> None:
    """A log line per table that lost rows, and one audit trail entry for the whole purge."""
    gone = {table: count for table, count in deleted.items() if count}
    if not gone:
        return
    for table, count in gone.items():
        cutoff = ", ".join(
            f"{'' if kind == 'all' else kind + ' '}before {moment}"
            for kind, moment in before[table].items()
        )
        logger.info("housekeeping: purged {} rows of {} ({})", count, table, cutoff)
    detail = {"deleted": gone, "before": {table: before[table] for table in gone}}
    try:
        with store.session() as session:
            audit(session, now, "monitord", "purge", ", ".join(gone), detail)
    except SQLAlchemyError as exc:
        _failed("recording the purge in the audit trail", exc)


JUDGED_FROM = (ProbeRollup, SyncRun, ServiceStateChange)
"""The purged tables a quarter's compliance verdicts are judged from."""


def judged_records_purged_before(session: Session) -> dt.datetime | None:
    """The latest moment before which a purge (as the audit trail records it) removed records
    a quarter is judged from (JUDGED_FROM); None when none was ever purged."""
    tables = [model.__tablename__ for model in JUDGED_FROM]
    entries = session.scalars(
        select(AuditEntry.detail).where(
            AuditEntry.action == "purge",
            or_(*(AuditEntry.subject.contains(table) for table in tables)),
        )
    )
    cutoffs = [
        dt.datetime.fromisoformat(before[table]["all"])
        for detail in entries
        if isinstance(detail, dict) and isinstance(before := detail.get("before"), dict)
        for table in tables
        if isinstance(before.get(table), dict) and "all" in before[table]
    ]
    return max(cutoffs, default=None)
