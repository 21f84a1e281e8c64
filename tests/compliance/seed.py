"""Small stores for the compliance tests, written row by row: services with their catalogue
revisions, events, probe roll-ups, scans, findings and their episodes, windows, incidents."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy.orm import Session

from monitord.store import histogram
from monitord.store.models import (
    Finding,
    FindingEpisode,
    ProbeRollup,
    Scan,
    Service,
    ServiceEvent,
    ServiceRevision,
)
from monitord.timeutil import SHANGHAI, quarter_bounds

Q3 = "2026q3"
START, END = quarter_bounds(Q3)
NOW = dt.datetime(2026, 11, 2, 9, 0, tzinfo=SHANGHAI)
HOUR = dt.timedelta(hours=1)


def t(text: str) -> dt.datetime:
    """A local (Asia/Shanghai) time such as "2026-08-10 10:00"."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


def service(
    session: Session,
    service_id: str,
    periods: list[tuple[dt.datetime, dt.datetime | None, str]],
    **record: Any,
) -> None:
    """A service with one catalogue revision per (from, to, status) period; `record` adds to
    every revision's record (filing_problems, review, offline_notice, source...)."""
    first = periods[0][0]
    session.add(
        Service(
            id=service_id,
            name=f"服务 {service_id}",
            status=periods[-1][2],
            first_seen=first,
            last_seen=periods[-1][1] or NOW,
        )
    )
    session.flush()
    for valid_from, valid_to, status in periods:
        body = {
            "id": service_id,
            "name": f"服务 {service_id}",
            "source": "bureau",
            "status": status,
            "filing_problems": [],
            "review": {"opinion": "同意上线", "signed_by": "审核人"},
            **record,
        }
        session.add(
            ServiceRevision(
                service_id=service_id,
                valid_from=valid_from,
                valid_to=valid_to,
                record=body,
                gone=status == "gone",
            )
        )


def online_all_quarter(session: Session, service_id: str, **record: Any) -> None:
    """A service online from before the quarter until after it."""
    service(session, service_id, [(START - 30 * 24 * HOUR, None, "online")], **record)


def event(
    session: Session,
    service_id: str,
    kind: str,
    at: dt.datetime,
    from_status: str | None = None,
    to_status: str | None = None,
    **detail: Any,
) -> None:
    """A service event."""
    session.add(
        ServiceEvent(
            service_id=service_id,
            kind=kind,
            at=at,
            from_status=from_status,
            to_status=to_status,
            detail=detail,
        )
    )


def rollups(
    session: Session,
    service_id: str,
    start: dt.datetime = START,
    end: dt.datetime = END,
    *,
    count: int = 60,
    failures: int = 0,
    latency_ms: float = 200.0,
    skip: tuple[dt.datetime, ...] = (),
) -> None:
    """An availability roll-up for every hour of [start, end) but those in `skip`."""
    buckets: dict[str, int] = {}
    for _ in range(count - failures):
        histogram.add(buckets, latency_ms)
    hour = start
    while hour < end:
        if hour not in skip:
            session.add(
                ProbeRollup(
                    service_id=service_id,
                    kind="availability",
                    hour=hour,
                    count=count,
                    failures=failures,
                    blind=0,
                    latency_buckets=dict(buckets),
                )
            )
        hour += HOUR


def scan(
    session: Session,
    service_id: str,
    finished_at: dt.datetime,
    *,
    high: int = 0,
    medium: int = 0,
    state: str = "finished",
) -> None:
    """A scan of the service that ran from an hour before `finished_at`."""
    session.add(
        Scan(
            service_id=service_id,
            scan_key=f"{service_id}-{finished_at.isoformat()}",
            trigger="manual",
            state=state,
            queued_at=finished_at - 2 * HOUR,
            next_attempt_at=finished_at - 2 * HOUR,
            started_at=finished_at - HOUR,
            finished_at=finished_at,
            high=high,
            medium=medium,
        )
    )


def finding(
    session: Session,
    service_id: str,
    rule: str,
    clause: str,
    severity: str,
    began: dt.datetime,
    ended: dt.datetime | None,
) -> None:
    """A finding of the service with one episode from `began` to `ended` (None: still open)."""
    row = Finding(
        rule=rule,
        clause=clause,
        severity=severity,
        subject_kind="service",
        subject=service_id,
        service_id=service_id,
        first_seen=began,
        last_seen=ended or NOW,
        occurred_at=began,
        state="open" if ended is None else "resolved",
        resolved_at=ended,
    )
    session.add(row)
    session.flush()
    session.add(
        FindingEpisode(
            finding_id=row.id,
            number=1,
            severity=severity,
            opened_at=began,
            occurred_at=began,
            closed_at=ended,
        )
    )
