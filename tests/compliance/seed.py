"""Small stores for the compliance tests, written row by row: services with their catalogue
revisions, events, probe roll-ups, scans, findings and their episodes, windows, incidents."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from monitord.store import Store, histogram
from monitord.store.models import (
    AdminReview,
    EvidenceDocument,
    Finding,
    FindingEpisode,
    Incident,
    IncidentEvent,
    LogAudit,
    ProbeResultRow,
    ProbeRollup,
    QuietWindow,
    Scan,
    Service,
    ServiceEvent,
    ServiceRevision,
    ServiceStateChange,
    SyncRun,
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
    kind: str = "availability",
) -> None:
    """A roll-up of `kind` (availability) for every hour of [start, end) but those in `skip`."""
    buckets: dict[str, int] = {}
    for _ in range(count - failures):
        histogram.add(buckets, latency_ms)
    rows = []
    hour = start
    while hour < end:
        if hour not in skip:
            rows.append(
                {
                    "service_id": service_id,
                    "kind": kind,
                    "hour": hour,
                    "count": count,
                    "failures": failures,
                    "blind": 0,
                    "latency_buckets": buckets,
                }
            )
        hour += HOUR
    if rows:  # an insert without rows would write one row of defaults
        session.execute(insert(ProbeRollup), rows)


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


def seed_services(store: Store) -> None:
    """Services built to pass or fail each service rule of 2026q3."""
    with store.session() as s:
        # good: everything in order all quarter.
        online_all_quarter(s, "good")
        rollups(s, "good")
        for kind in ("tls", "contract"):  # the daily probes: once measures 6.3.2 a and c
            rollups(s, "good", START, START + HOUR, count=1, kind=kind)
        scan(s, "good", t("2026-08-05 10:00"))
        # own-target: 96 % up and p95 of 4 s, within the targets its catalogue record files.
        online_all_quarter(s, "own-target")
        s.flush()
        own = s.get(Service, "own-target")
        assert own is not None
        own.raw = {"slo": {"uptime_percent": 95.0, "p95_ms": 5000}}
        rollups(s, "own-target", failures=2, latency_ms=4000.0)
        scan(s, "own-target", t("2026-08-05 10:00"))
        # bad: every duty missed.
        online_all_quarter(s, "bad", filing_problems=["faq_url: missing (常见问答知识库)"])
        gap = (t("2026-08-10 10:00"), t("2026-08-10 11:00"), t("2026-08-10 12:00"))
        rollups(s, "bad", failures=6, latency_ms=5000.0, skip=gap)
        for kind in ("tls", "contract"):
            rollups(s, "bad", START, START + HOUR, count=1, kind=kind)
        finding(
            s,
            "bad",
            "legacy_protocol",
            "6.3.2 a",
            "medium",
            t("2026-08-01 00:00"),
            t("2026-08-03 00:00"),
        )
        finding(s, "bad", "plain_http_access", "6.3.2 b", "high", t("2026-07-05 00:00"), None)
        finding(s, "bad", "zap:40012", "8.3 b", "high", t("2026-09-01 00:00"), None)
        finding(s, "bad", "zap:10021", "8.3 b", "low", t("2026-09-01 00:00"), None)
        s.add(
            ServiceStateChange(
                service_id="bad", at=t("2026-08-20 03:00"), from_state="up", to_state="down"
            )
        )
        # A finding of the quarter before, closed before it began, is not this quarter's.
        finding(
            s,
            "good",
            "legacy_protocol",
            "6.3.2 a",
            "medium",
            t("2026-06-01 00:00"),
            t("2026-06-02 00:00"),
        )
        # golive: approved, scanned clean, then online on 2026-08-01.
        service(
            s,
            "golive",
            [
                (t("2026-06-01 00:00"), t("2026-08-01 10:00"), "approved"),
                (t("2026-08-01 10:00"), None, "online"),
            ],
        )
        scan(s, "golive", t("2026-07-30 10:00"))
        event(s, "golive", "went_online", t("2026-08-01 10:00"), "approved", "online")
        # golive-bad: online straight from pending, no review, its scan found a High.
        service(
            s,
            "golive-bad",
            [
                (t("2026-06-01 00:00"), t("2026-08-01 10:00"), "pending"),
                (t("2026-08-01 10:00"), None, "online"),
            ],
            review=None,
        )
        scan(s, "golive-bad", t("2026-07-30 10:00"), high=1)
        event(s, "golive-bad", "went_online", t("2026-08-01 10:00"), "pending", "online")
        # paused: suspended 08-10 to 08-12 as filed; down inside the window; re-tested.
        online_all_quarter(s, "paused")
        s.add(
            QuietWindow(
                kind="suspension",
                service_id="paused",
                starts_at=t("2026-08-10 00:00"),
                ends_at=t("2026-08-12 00:00"),
                recorded_at=t("2026-08-05 09:00"),
                ended_at=t("2026-08-11 20:00"),
            )
        )
        s.add(
            ServiceStateChange(
                service_id="paused", at=t("2026-08-10 10:00"), from_state="up", to_state="down"
            )
        )
        event(s, "paused", "resumed", t("2026-08-11 20:00"), "suspended", "online")
        s.add(
            ProbeResultRow(
                service_id="paused",
                kind="availability",
                target="x",
                at=t("2026-08-11 20:05"),
                success=True,
                duration_ms=100.0,
            )
        )
        scan(s, "paused", t("2026-08-12 08:00"))
        # down-while-suspended: its catalogue status was suspended for two days, during which
        # every probe failed; its uptime counts the hours it was online.
        service(
            s,
            "down-while-suspended",
            [
                (START - 30 * 24 * HOUR, t("2026-08-10 00:00"), "online"),
                (t("2026-08-10 00:00"), t("2026-08-12 00:00"), "suspended"),
                (t("2026-08-12 00:00"), None, "online"),
            ],
        )
        rollups(s, "down-while-suspended", START, t("2026-08-10 00:00"))
        rollups(
            s, "down-while-suspended", t("2026-08-10 00:00"), t("2026-08-12 00:00"), failures=60
        )
        rollups(s, "down-while-suspended", t("2026-08-12 00:00"), END)
        # paused-bad: resumed five days late, and not scanned after.
        online_all_quarter(s, "paused-bad")
        s.add(
            QuietWindow(
                kind="suspension",
                service_id="paused-bad",
                starts_at=t("2026-08-10 00:00"),
                ends_at=t("2026-08-20 00:00"),
                recorded_at=t("2026-08-05 09:00"),
                ended_at=t("2026-08-25 00:00"),
            )
        )
        event(s, "paused-bad", "resumed", t("2026-08-25 00:00"), "suspended", "online")
        scan(s, "paused-bad", t("2026-08-01 00:00"))
        # leaving: a notice 12 working days ahead, then offline as announced.
        notice = {
            "filed_at": "2026-09-10T10:00:00+08:00",
            "planned_offline": "2026-09-28T00:00:00+08:00",
        }
        service(
            s,
            "leaving",
            [
                (START - 30 * 24 * HOUR, t("2026-09-10 10:00"), "online"),
                (t("2026-09-10 10:00"), t("2026-09-28 00:00"), "online"),
                (t("2026-09-28 00:00"), None, "offline"),
            ],
        )
        s.flush()
        for row in s.scalars(
            select(ServiceRevision).where(
                ServiceRevision.service_id == "leaving",
                ServiceRevision.valid_from >= t("2026-09-10 10:00"),
            )
        ):
            row.record = {**row.record, "offline_notice": notice}
        event(s, "leaving", "offline_notice_filed", t("2026-09-10 10:00"), **notice)
        event(s, "leaving", "went_offline", t("2026-09-28 00:00"), "online", "offline")
        # national-day: filed Friday 09-25 for Monday 10-12. Ten weekdays lie between, but the
        # National Day holiday (10-01..10-07) leaves six working days (10-10 is a make-up day).
        online_all_quarter(s, "national-day")
        event(
            s,
            "national-day",
            "offline_notice_filed",
            t("2026-09-25 10:00"),
            filed_at="2026-09-25T10:00:00+08:00",
            planned_offline="2026-10-12T00:00:00+08:00",
        )
        # vanished: dropped from the catalogue on 09-15 without a word.
        service(
            s,
            "vanished",
            [
                (START - 30 * 24 * HOUR, t("2026-09-15 00:00"), "online"),
                (t("2026-09-15 00:00"), None, "gone"),
            ],
        )
        event(s, "vanished", "gone", t("2026-09-15 00:00"), "online")


def seed_platform(store: Store, *, good: bool) -> None:
    """The platform's records for 2026q3: all in order, or each duty missed."""
    with store.session() as s:
        began = START - dt.timedelta(days=200) if good else START + dt.timedelta(days=10)
        s.add(SyncRun(started_at=began, finished_at=began, source="test", outcome="ok"))
        online_all_quarter(s, "svc")
        rollups(s, "svc", began if good else START + dt.timedelta(days=100), END)
        s.add(
            LogAudit(
                quarter=Q3,
                created_at=t("2026-10-08 06:00"),
                period_start=START,
                period_end=END,
                lines=1000,
                empty_days=[] if good else ["2026-08-10"],
                vendor_operations=[{"subject": "user:vendor-7", "summary": "", "evidence": {}}],
                complete=True,
            )
        )
        date = dt.date(2026, 9, 20) if good else dt.date(2026, 6, 20)
        for kind in ("pentest", "risk_assessment"):
            s.add(
                EvidenceDocument(
                    clause="7.3.2",
                    kind=kind,
                    document_date=date
                    if kind == "pentest"
                    else date.replace(year=2026 - (not good)),
                    filed_by="张三",
                    filed_at=t("2026-09-21 10:00"),
                    file_name=f"{kind}.pdf",
                    stored_as=f"{kind}.pdf",
                    sha256="0" * 64,
                    size=10,
                )
            )
        s.add(
            AdminReview(
                quarter=Q3 if good else "2026q2",
                reviewed_at=t("2026-09-01 10:00"),
                reviewed_by="李四",
                file_name="accounts.csv",
                sha256="1" * 64,
            )
        )
        detected = t("2026-08-01 10:00")
        incident = Incident(
            kind="vulnerability",
            klass="security",
            severity="high",
            group_key="k",
            detected_at=detected,
            notify_by=detected + 2 * HOUR,
            notified_at=detected + HOUR,
        )
        s.add(incident)
        s.flush()
        parts = {"scope": "全市", "harm": "低", "measures": "下线", "rectification": "修复"}
        if not good:
            parts["rectification"] = ""
        s.add(
            IncidentEvent(
                incident_id=incident.id, at=detected + HOUR, kind="notified", detail=parts
            )
        )
        late = Incident(
            kind="data_exposure",
            klass="security",
            severity="high",
            group_key="k2",
            detected_at=detected,
            notify_by=detected + 2 * HOUR,
            notified_at=detected + (1 if good else 3) * HOUR,
            late=not good,
        )
        s.add(late)
        s.flush()
        s.add(
            IncidentEvent(
                incident_id=late.id,
                at=detected + HOUR,
                kind="notified",
                detail={**parts, "rectification": "修复"},
            )
        )
        s.add(
            Incident(
                kind="outage",
                klass="availability",
                severity="high",
                group_key="k3",
                detected_at=detected,
            )
        )
