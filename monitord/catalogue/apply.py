"""Applying a whole, valid catalogue in one transaction: services, lifecycle events, the
catalogue's findings (filing, unknown values, plain HTTP, short take-down notices), the sync run."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from monitord.catalogue.validate import ENUMS, Catalogue, ServiceRecord, notice_time
from monitord.errors import SyncError
from monitord.redact import mask_url
from monitord.store import Store, hold_alone
from monitord.store.findings import resolve_findings, upsert_finding
from monitord.store.history import service_record
from monitord.store.models import QuietWindow, Service, ServiceEvent, ServiceRevision, SyncRun
from monitord.timeutil import SHANGHAI, Clock
from monitord.types import IN_SERVICE, FindingDraft, Severity
from monitord.workcalendar import WorkCalendar


@dataclass(frozen=True)
class SyncOutcome:
    """What a sync did, as recorded in its sync run."""

    outcome: str
    reason: str | None = None
    services_seen: int = 0
    added: int = 0
    changed: int = 0
    gone: int = 0
    events: int = 0
    event_lines: tuple[str, ...] = ()
    """Readable lines for the lifecycle events other than "added", for the log."""
    warnings: tuple[str, ...] = ()
    """What the sync could not check or let pass (a 'total' that is no count, an id listed
    twice), as recorded in its sync run."""


RULE_FILING = "appendix_a_incomplete"
RULE_UNKNOWN_VALUE = "catalogue_unknown_value"
RULE_PLAIN_HTTP = "plain_http_access"
RULE_SHORT_NOTICE = "offline_notice_short"
CATALOGUE_RULES = (RULE_FILING, RULE_UNKNOWN_VALUE, RULE_PLAIN_HTTP, RULE_SHORT_NOTICE)
NOTICE_WORKING_DAYS = 10
"""Clause 7.2.4: a take-down is reported ten working days ahead (the Chinese working days after
the filing day and before the take-down day)."""


def _notice_working_days(record: ServiceRecord, calendar: WorkCalendar) -> int | None:
    """The working days a take-down notice gave (7.2.4), up to 60 days' worth, when it gives
    both of its times."""
    notice = record.raw.get("offline_notice")
    if not isinstance(notice, dict):
        return None
    filed, planned = notice_time(notice, "filed_at"), notice_time(notice, "planned_offline")
    if filed is None or planned is None:
        return None
    first, last = filed.astimezone(SHANGHAI).date(), planned.astimezone(SHANGHAI).date()
    # Ten working days always fit in 60 days (the longest holiday is about a week): counting no
    # further keeps a notice for the year 9999 from walking the calendar day by day.
    return calendar.working_days_between(first, min(last, first + dt.timedelta(days=60)))


def _record_findings(
    session: Session, record: ServiceRecord, now: dt.datetime, calendar: WorkCalendar
) -> set[str]:
    """Upsert the catalogue findings of one record; returns the rules it raised."""
    drafts: list[FindingDraft] = []

    def found(rule: str, clause: str, severity: Severity, summary: str, **evidence: Any) -> None:
        drafts.append(
            FindingDraft(
                rule=rule,
                clause=clause,
                severity=severity,
                subject_kind="service",
                subject=record.id,
                service_id=record.id,
                summary=summary,
                evidence=evidence,
            )
        )

    notice_days = _notice_working_days(record, calendar)
    if notice_days is not None and notice_days < NOTICE_WORKING_DAYS:
        notice = record.raw["offline_notice"]
        found(
            RULE_SHORT_NOTICE,
            "7.2.4",
            "low",
            f"下线通知仅提前 {notice_days} 个工作日（应提前 {NOTICE_WORKING_DAYS} 个工作日）",
            filed_at=notice.get("filed_at"),
            planned_offline=notice.get("planned_offline"),
            working_days=notice_days,
        )
    if record.filing_problems:
        summary = f"备案信息不完整：{len(record.filing_problems)} 项问题"
        found(RULE_FILING, "6.2.2", "low", summary, problems=record.filing_problems)
    if record.unknown_values:
        summary = "目录中含未知取值：" + "，".join(record.unknown_values)
        found(RULE_UNKNOWN_VALUE, "6.2.2", "low", summary, unknown_values=record.unknown_values)
    url = record.columns.get("url") or ""
    if record.columns.get("access_method") == "http" or url.startswith("http://"):
        method = record.columns.get("access_method")
        found(
            RULE_PLAIN_HTTP,
            "6.3.2 b",
            "high",
            "服务接口未使用 HTTPS",
            access_method=method,
            url=mask_url(url),
        )
    for draft in drafts:
        upsert_finding(session, draft, now)
    return {draft.rule for draft in drafts}


NOT_YET_LIVE = ("pending", "approved")
"""The statuses of a service that has not gone online yet."""


def _status_event(old: str | None, new: str) -> str:
    if new == "online":
        return "resumed" if old == "suspended" else "went_online"
    if new == "offline" and old not in IN_SERVICE:
        # Withdrawn before monitord saw it in service: no take-down to give notice of.
        return "status_changed"
    return {"suspended": "suspended", "offline": "went_offline", "approved": "approved"}.get(
        new, "status_changed"
    )


def _lifecycle_events(
    old: Service | None, record: ServiceRecord, *, first_sync: bool
) -> list[dict[str, Any]]:
    """The service events that a record's arrival implies, compared with what the store held.

    On the store's first sync a service is only added, in the status it has: it went online
    (or was suspended) before monitord watched, so that is no go-live of this quarter to judge
    under 7.2.1. A service new on a later sync in service did go online between the two; one
    new as offline was never seen in service, and is only added.
    """
    cols = record.columns
    events: list[dict[str, Any]] = []
    if old is None:
        events.append({"kind": "added", "to_status": cols["status"]})
        if not first_sync and cols["status"] in IN_SERVICE:
            events.append(
                {"kind": _status_event(None, cols["status"]), "to_status": cols["status"]}
            )
        return events
    if old.gone:
        events.append({"kind": "returned", "to_status": cols["status"]})
    if old.status != cols["status"]:
        events.append(
            {
                "kind": _status_event(old.status, cols["status"]),
                "from_status": old.status,
                "to_status": cols["status"],
            }
        )
    if cols["suspension"] and cols["suspension"] != old.suspension:
        events.append({"kind": "suspension_filed", "detail": cols["suspension"]})
    if cols["offline_notice"] and cols["offline_notice"] != old.offline_notice:
        events.append({"kind": "offline_notice_filed", "detail": cols["offline_notice"]})
    # The first valid time after a missing or invalid one is an update too: the service may
    # have changed unseen meanwhile, and an update is scanned (8.3 b).
    if cols["updated_at"] and cols["updated_at"] != old.updated_at:
        before = old.updated_at.isoformat() if old.updated_at else None
        events.append(
            {"kind": "updated", "detail": {"from": before, "to": cols["updated_at"].isoformat()}}
        )
    return events


def _revised(current: ServiceRevision | None, service: Service) -> bool:
    """Whether `service` as just applied differs from its revision in force (or has none)."""
    if current is None or current.gone or current.fingerprint != service.fingerprint:
        return True
    now = service_record(service)
    return any(
        current.record.get(name) != now[name] for name in ("status", "suspension", "offline_notice")
    )


def _revise(
    session: Session,
    current: ServiceRevision | None,
    service: Service,
    now: dt.datetime,
    *,
    gone: bool = False,
) -> None:
    """Close the revision in force and open one with the service as it is now, so that the
    catalogue as of any past moment can be rebuilt (monitord.store.history)."""
    if current is not None:
        current.valid_to = now
    session.add(
        ServiceRevision(
            service_id=service.id,
            valid_from=now,
            valid_to=None,
            fingerprint=service.fingerprint,
            record=service_record(service),
            gone=gone,
        )
    )


SUSPENSION_REASON = "已报备暂停服务 (7.2.2)"


def _suspension_start(service: Service, now: dt.datetime) -> dt.datetime | None:
    """When the suspension filed for `service` starts, if one is filed and not over: the
    service is suspended, or the suspension is still ahead. One left in the record after the
    service resumed is over."""
    suspension = service.suspension
    if service.gone or not isinstance(suspension, dict) or not suspension:
        return None
    starts = notice_time(suspension, "from") or notice_time(suspension, "filed_at") or now
    return starts if service.status == "suspended" or starts > now else None


def _record_suspension(
    session: Session, open_windows: list[QuietWindow], service: Service, now: dt.datetime
) -> None:
    """Keep `service`'s filed suspension as a quiet window (7.2.2): recorded when filed, its
    planned resume kept up to date, ended when the service resumes or the filing goes."""
    starts = _suspension_start(service, now)
    for window in open_windows:
        if window.starts_at != starts:
            window.ended_at = now
    if starts is None:
        return
    planned = notice_time(service.suspension or {}, "planned_resume")
    found = session.scalars(
        select(QuietWindow).where(
            QuietWindow.kind == "suspension",
            QuietWindow.service_id == service.id,
            QuietWindow.starts_at == starts,
        )
    ).one_or_none()
    if found is None:
        session.add(
            QuietWindow(
                kind="suspension",
                service_id=service.id,
                starts_at=starts,
                ends_at=planned,
                reason=SUSPENSION_REASON,
                recorded_at=now,
            )
        )
    else:  # the same suspension, seen again (or filed again after a glitch)
        found.ends_at = planned
        found.ended_at = None


def apply_catalogue(
    session: Session,
    catalogue: Catalogue,
    source: str,
    started_at: dt.datetime,
    now: dt.datetime,
    max_gone_fraction: float,
    calendar: WorkCalendar | None = None,
) -> SyncOutcome:
    """Apply a whole catalogue to the store inside the caller's transaction; `calendar` (the
    statutory one by default) counts a take-down notice's working days.

    Raises SyncError, before changing anything, when the catalogue would empty the store or mark
    more than max_gone_fraction of the known services gone.
    """
    calendar = calendar or WorkCalendar()
    existing = {s.id: s for s in session.scalars(select(Service))}
    in_force = {
        r.service_id: r
        for r in session.scalars(select(ServiceRevision).where(ServiceRevision.valid_to.is_(None)))
    }
    suspensions: dict[str, list[QuietWindow]] = defaultdict(list)
    for window in session.scalars(
        select(QuietWindow).where(QuietWindow.kind == "suspension", QuietWindow.ended_at.is_(None))
    ):
        suspensions[window.service_id].append(window)
    present = {r.id for r in catalogue.records}
    active = [s for s in existing.values() if not s.gone]
    vanishing = [s for s in active if s.id not in present]
    if active and not catalogue.records:
        raise SyncError(
            f"the catalogue is empty but {len(active)} services are known; refusing it "
            "(the portal may be deploying)"
        )
    if len(vanishing) > max(1, max_gone_fraction * len(active)):
        raise SyncError(
            f"the catalogue would mark {len(vanishing)} of {len(active)} services gone, more "
            f"than the allowed share of {max_gone_fraction:.0%}; refusing it"
        )
    run = SyncRun(started_at=started_at, finished_at=now, source=source, outcome="ok")
    session.add(run)
    session.flush()
    added = changed = events = 0
    lines: list[str] = []
    raised: dict[str, set[str]] = {}
    for record in catalogue.records:
        old = existing.get(record.id)
        if record.columns["status"] not in ENUMS["status"]:
            # A record without a usable status (none, or one the standard does not know) says
            # nothing about the lifecycle: the stored status stands (a glitch must not look like
            # a suspension, then a go-live that triggers scans); a new service waits as pending.
            # An unknown value is still flagged on the service (unknown_values).
            status = old.status if old is not None else "pending"
            record = replace(record, columns={**record.columns, "status": status})
        new_events = _lifecycle_events(old, record, first_sync=not existing)
        if old is None:
            old = Service(id=record.id, first_seen=now)
            session.add(old)
            added += 1
        elif old.fingerprint != record.fingerprint or old.gone:
            changed += 1
        for name, value in record.columns.items():
            setattr(old, name, value)
        old.raw = record.raw
        old.filing_problems = record.filing_problems
        old.unknown_values = record.unknown_values
        old.fingerprint = record.fingerprint
        old.gone = False
        old.gone_at = None
        old.last_seen = now
        if _revised(in_force.get(record.id), old):
            _revise(session, in_force.get(record.id), old, now)
        if old.suspension or suspensions.get(record.id):
            _record_suspension(session, suspensions.get(record.id, []), old, now)
        for event in new_events:
            session.add(
                ServiceEvent(
                    service_id=record.id,
                    at=now,
                    kind=event["kind"],
                    from_status=event.get("from_status"),
                    to_status=event.get("to_status"),
                    detail=event.get("detail", {}),
                    sync_run_id=run.id,
                )
            )
            events += 1
            if event["kind"] != "added":
                lines.append(_event_line(record.id, record.columns["name"], event))
        raised[record.id] = _record_findings(session, record, now, calendar)
    for service in vanishing:
        service.gone = True
        service.gone_at = now
        _revise(session, in_force.get(service.id), service, now, gone=True)
        _record_suspension(session, suspensions.get(service.id, []), service, now)
        if service.status in NOT_YET_LIVE:
            # Withdrawn before it went online: its gone revision records it, and a "gone"
            # event would be judged a take-down without notice (7.2.4).
            withdrawn = {"kind": "gone, withdrawn before going online"}
            lines.append(_event_line(service.id, service.name, withdrawn))
            continue
        session.add(
            ServiceEvent(
                service_id=service.id,
                at=now,
                kind="gone",
                from_status=service.status,
                to_status=None,
                detail={},
                sync_run_id=run.id,
            )
        )
        events += 1
        lines.append(_event_line(service.id, service.name, {"kind": "gone"}))
    session.flush()
    for rule in CATALOGUE_RULES:
        still = {service_id for service_id, rules in raised.items() if rule in rules}
        resolve_findings(session, [rule], "service", still, now)
    run.etag = catalogue.etag
    run.services_seen = len(catalogue.records)
    run.added = added
    run.changed = changed
    run.gone = len(vanishing)
    run.warnings = catalogue.warnings[:50]
    return SyncOutcome(
        outcome="ok",
        services_seen=len(catalogue.records),
        added=added,
        changed=changed,
        gone=len(vanishing),
        events=events,
        event_lines=tuple(lines),
        warnings=tuple(catalogue.warnings),
    )


def _event_line(service_id: str, name: str | None, event: dict[str, Any]) -> str:
    move = ""
    if event.get("from_status") and event.get("to_status"):
        move = f" ({event['from_status']} → {event['to_status']})"
    return f"{service_id} {name or ''}: {event['kind']}{move}"


def last_etag(store: Store) -> str | None:
    """The ETag of the newest successful sync, to send back as If-None-Match."""
    with store.session() as session:
        run = session.scalars(
            select(SyncRun)
            .where(SyncRun.outcome.in_(("ok", "unchanged")))
            .order_by(SyncRun.id.desc())
            .limit(1)
        ).first()
        return run.etag if run else None


def record_run(
    store: Store,
    source: str,
    started_at: dt.datetime,
    now: dt.datetime,
    outcome: str,
    reason: str | None = None,
    etag: str | None = None,
) -> None:
    with store.session() as session:
        session.add(
            SyncRun(
                started_at=started_at,
                finished_at=now,
                source=source,
                outcome=outcome,
                reason=reason,
                etag=etag,
            )
        )


SYNC_LOCK_KEY = int.from_bytes(b"mon-sync", "big")
"""The PostgreSQL advisory lock a sync holds while it applies its catalogue."""


def _take_the_catalogue(session: Session) -> None:
    """Begin the session's transaction holding the store's catalogue for this sync alone.

    Two syncs at once (`monitord sync` while the daemon syncs) each read the services and then
    wrote them: every change and event was recorded twice, and a new service made one of them
    fail on its duplicate id. Held from before the read, the second applies its catalogue to
    what the first wrote. SQLite: the write lock, taken at once (BEGIN IMMEDIATE), waits as
    the store's busy timeout says; PostgreSQL: a lock held until the transaction ends.

    Raises SyncError when the other sync holds the store longer than SQLite waits.
    """
    try:
        hold_alone(session, SYNC_LOCK_KEY)
    except OperationalError as exc:
        raise SyncError(
            f"the store stayed busy with other work (another sync?) and was not free to apply "
            f"the catalogue: {str(exc.orig).splitlines()[0]}"
        ) from None


def apply_sync(
    store: Store,
    catalogue: Catalogue,
    source: str,
    started_at: dt.datetime,
    clock: Clock,
    max_gone_fraction: float,
    calendar: WorkCalendar | None,
) -> SyncOutcome:
    """Apply `catalogue` in one transaction of its own, one sync at a time on the store
    (see _take_the_catalogue), and record its sync run; `clock` is read once the store is
    held."""
    with store.session() as session:
        _take_the_catalogue(session)
        return apply_catalogue(
            session, catalogue, source, started_at, clock(), max_gone_fraction, calendar
        )
