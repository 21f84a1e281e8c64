"""Keeping the store bounded: hourly roll-ups of probe results, and purges past retention.

Raw probe results are kept `probes.raw_retention_days`; their hourly roll-ups (count, failures,
latency p50/p95/p99) `probes.rollup_retention_days` (at least 400), so a quarter's report and a
year's trend read roll-ups only. Nothing monitord records for clause 7.3.1 is purged before
`store.retention_days` (at least 180).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, delete, func, select
from sqlalchemy.orm import Session

from monitord.config import Settings
from monitord.models import ProbeResultRow, ProbeRollup, ProbeRound, SyncRun
from monitord.store import Store


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def roll_up(store: Store, now: dt.datetime) -> int:
    """Roll every complete hour of raw results not yet rolled up; returns roll-ups written.

    Idempotent: an hour is rolled from whatever raw results it has and replaces its earlier
    roll-up, so a crash in the middle leaves nothing half-counted.
    """
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    written = 0
    with store.session() as session:
        last = session.scalar(select(func.max(ProbeRollup.hour)))
        start = (
            last + dt.timedelta(hours=1)
            if last
            else session.scalar(select(func.min(ProbeResultRow.at)))
        )
        if start is None:
            return 0
        start = start.replace(minute=0, second=0, microsecond=0)
        rows = session.execute(
            select(
                ProbeResultRow.service_id,
                ProbeResultRow.kind,
                ProbeResultRow.at,
                ProbeResultRow.success,
                ProbeResultRow.duration_ms,
            ).where(
                ProbeResultRow.at >= start,
                ProbeResultRow.at < this_hour,
                ProbeResultRow.service_id.is_not(None),
            )
        ).all()
        groups: dict[tuple[str, str, dt.datetime], list[tuple[bool, float]]] = defaultdict(list)
        for service_id, kind, at, success, duration in rows:
            hour = at.replace(minute=0, second=0, microsecond=0)
            groups[(str(service_id), kind, hour)].append((success, duration))
        for (service_id, kind, hour), values in groups.items():
            latencies = sorted(d for ok, d in values if ok)
            session.execute(
                delete(ProbeRollup).where(
                    ProbeRollup.service_id == service_id,
                    ProbeRollup.kind == kind,
                    ProbeRollup.hour == hour,
                )
            )
            session.add(
                ProbeRollup(
                    service_id=service_id,
                    kind=kind,
                    hour=hour,
                    count=len(values),
                    failures=sum(1 for ok, _ in values if not ok),
                    p50_ms=_percentile(latencies, 0.50) if latencies else None,
                    p95_ms=_percentile(latencies, 0.95) if latencies else None,
                    p99_ms=_percentile(latencies, 0.99) if latencies else None,
                )
            )
            written += 1
    return written


def _deleted(session: Session, statement: Delete) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount


def purge(store: Store, settings: Settings, now: dt.datetime) -> dict[str, int]:
    """Delete what is past its retention; returns rows deleted per table."""
    raw_cutoff = now - dt.timedelta(days=settings.probes.raw_retention_days)
    rollup_cutoff = now - dt.timedelta(days=settings.probes.rollup_retention_days)
    record_cutoff = now - dt.timedelta(days=settings.store.retention_days)
    deleted: dict[str, int] = {}
    with store.session() as session:
        # Raw results go only once their hour is rolled up.
        last_rolled = session.scalar(select(func.max(ProbeRollup.hour)))
        if last_rolled is not None:
            cutoff = min(raw_cutoff, last_rolled + dt.timedelta(hours=1))
            deleted["probe_results"] = _deleted(
                session, delete(ProbeResultRow).where(ProbeResultRow.at < cutoff)
            )
        deleted["probe_rollups"] = _deleted(
            session, delete(ProbeRollup).where(ProbeRollup.hour < rollup_cutoff)
        )
        deleted["probe_rounds"] = _deleted(
            session, delete(ProbeRound).where(ProbeRound.started_at < record_cutoff)
        )
        deleted["sync_runs"] = _deleted(
            session, delete(SyncRun).where(SyncRun.started_at < record_cutoff)
        )
    return deleted
