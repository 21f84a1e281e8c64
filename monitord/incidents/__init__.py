"""Incidents: findings grouped by service and kind, and the clause 7.3.3 two-hour clock.

States: open → acknowledged → notified → resolved → closed. A security incident must be notified
to the management unit by `notify_by` (detected + 2 h by default); reminders go to on-call at the
configured minutes, an unacknowledged incident climbs the escalation chain, and at the deadline an
unnotified one is marked late (for ever) and sent to the top of the chain. A silence
(monitord.incidents.silences) keeps an incident's news out of chat, never what that clock sends.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session

import rules
from monitord.config import IncidentSettings, Settings
from monitord.errors import Outdated, Refused, UsageError
from monitord.incidents.silences import active_silences, may_silence, silenced
from monitord.store import audit
from monitord.store.bulk import among
from monitord.store.models import (
    Finding,
    FindingEpisode,
    Incident,
    IncidentEvent,
    OutboxAlert,
    QuietWindow,
    Service,
    ServiceState,
    Silence,
)
from monitord.store.outbox import enqueue
from monitord.textable import written_text
from monitord.timeutil import local_text
from monitord.types import MAX_ID, MAX_LONG_TEXT, MAX_NAME, SEVERITY_RANK

ACTIVE_STATES = ("open", "acknowledged", "notified")


def still_due() -> ColumnElement[bool]:
    """Which incidents on-call still has to act on: the active ones, and the security incidents
    resolved before the management unit received their notification (the 7.3.3 duty stays until
    notified, and so do its reminders and the late mark)."""
    return or_(Incident.state.in_(ACTIVE_STATES), awaiting_notification())


def awaiting_notification() -> ColumnElement[bool]:
    """A resolved security incident whose notification the management unit has not received."""
    return and_(
        Incident.state == "resolved",
        Incident.klass == "security",
        Incident.notified_at.is_(None),
    )


MANUAL_KEY = "manual:"
"""How the group key of an incident opened by hand (open_manual) begins."""
NOTIFICATION_PARTS = {
    "scope": "初步判定的影响范围 (--scope)",
    "harm": "初步判定的危害 (--harm)",
    "measures": "已采取的应急处置措施 (--measures)",
    "rectification": "整改措施 (--rectification)",
}


def kind_of_rule(rule: str, settings: IncidentSettings) -> str:
    """The incident kind of a finding's rule: the config's override (the first matching glob
    of incidents.rule_kinds), else the kind the rule declares in rules/*.toml, else "other" (a
    rule nobody declared is treated as a security event, never as quiet)."""
    for pattern, kind in settings.rule_kinds.items():
        if fnmatch.fnmatchcase(rule, pattern):
            return kind
    declared = rules.declared_rule_kinds()
    if rule in declared:
        return declared[rule]
    for pattern, kind in declared.items():
        if fnmatch.fnmatchcase(rule, pattern):
            return kind
    return "other"


def class_of_kind(kind: str, settings: IncidentSettings) -> str:
    """security, availability or quiet; a kind the config does not class counts as security."""
    if kind in settings.availability_kinds:
        return "availability"
    return "quiet" if kind in settings.quiet_kinds else "security"


def _event(
    session: Session,
    incident: Incident,
    at: dt.datetime,
    kind: str,
    actor: str = "monitord",
    **detail: Any,
) -> None:
    session.add(
        IncidentEvent(incident_id=incident.id, at=at, kind=kind, actor=actor, detail=detail)
    )


def _quiet_reason(
    session: Session, settings: Settings, incident: Incident, now: dt.datetime
) -> str | None:
    """Why an availability incident's alerts stay quiet: a filed suspension or maintenance."""
    if incident.klass != "availability":
        return None
    for service_id in incident.services:
        service = session.get(Service, service_id)
        if service is not None and service.status == "suspended" and service.suspension:
            return f"{service_id} 已报备暂停服务 (7.2.2)"
    for window in settings.alerts.maintenance:
        if window.start <= now < window.end and (
            not window.services or set(incident.services) & set(window.services)
        ):
            return f"维护窗口：{window.reason or '计划维护'}"
    return None


MAINTENANCE_REASON = "计划维护"


def record_maintenance(session: Session, settings: Settings, now: dt.datetime) -> int:
    """Keep the configured maintenance windows in force now as quiet windows (one per service
    they cover, "*" for all), so that a past quarter is judged against the windows that applied
    then, whatever the config says later. A window written into the config after it was over
    quieted nothing, and is not recorded. Idempotent: a window is stored once (its unique key);
    while it lasts, a changed end or reason is followed, and a window taken out of the config
    ends now. Returns how many were stored anew."""
    configured: dict[tuple[str, dt.datetime], tuple[dt.datetime, str]] = {}
    for window in settings.alerts.maintenance:
        if window.start <= now < window.end:
            for service_id in window.services or ["*"]:
                configured[(service_id, window.start)] = (
                    window.end,
                    window.reason or MAINTENANCE_REASON,
                )
    stored = {
        (w.service_id, w.starts_at): w
        for w in session.scalars(
            select(QuietWindow).where(
                QuietWindow.kind == "maintenance",
                QuietWindow.ended_at.is_(None),
                QuietWindow.ends_at > now,  # in force: a past window is history, left as it was
            )
        )
    }
    for key, kept in stored.items():
        if key in configured:
            kept.ends_at, kept.reason = configured[key]
        else:
            kept.ended_at = now
    added = 0
    for (service_id, starts_at), (ends_at, reason) in configured.items():
        if (service_id, starts_at) in stored:
            continue
        known = session.scalar(
            select(func.count()).where(
                QuietWindow.kind == "maintenance",
                QuietWindow.service_id == service_id,
                QuietWindow.starts_at == starts_at,
            )
        )
        if not known:
            session.add(
                QuietWindow(
                    kind="maintenance",
                    service_id=service_id,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    reason=reason,
                    recorded_at=now,
                )
            )
            added += 1
    return added


def _held_back(
    session: Session,
    incident: Incident,
    key: str,
    alert_kind: str,
    now: dt.datetime,
    in_force: list[Silence] | None = None,
) -> bool:
    """True when a silence holds back this alert about this incident; the first time, the
    timeline says so ("silenced by #id"). Never for what the 7.3.3 clock sends (may_silence)."""
    if not may_silence(incident, alert_kind):
        return False
    silence = silenced(session, incident, now, in_force)
    if silence is None:
        return False
    said = session.scalars(
        select(IncidentEvent.detail).where(
            IncidentEvent.incident_id == incident.id, IncidentEvent.kind == "silenced"
        )
    )
    if not any(detail.get("alert") == key for detail in said):
        _event(
            session,
            incident,
            now,
            "silenced",
            alert=key,
            silence=silence.id,
            note=f"silenced by #{silence.id}",
            reason=silence.reason,
        )
    return True


def _tell(
    session: Session,
    incident: Incident,
    key: str,
    audience: str,
    alert_kind: str,
    now: dt.datetime,
    payload: dict[str, Any] | None = None,
    in_force: list[Silence] | None = None,
) -> bool:
    """Queue an alert about an incident unless a silence holds it back; True when written."""
    if _held_back(session, incident, key, alert_kind, now, in_force):
        return False
    return enqueue(session, key, audience, alert_kind, now, incident.id, payload)


@dataclass
class IntakeReport:
    """What one intake pass did."""

    opened: list[int] = field(default_factory=list)
    joined: int = 0
    resolved: list[int] = field(default_factory=list)
    storm: bool = False


def _subject_label(finding: Finding) -> str:
    """What a finding is about, as an incident lists it: a service id, or "ip:203.0.113.7"."""
    if finding.subject_kind == "service":
        return finding.subject
    return f"{finding.subject_kind}:{finding.subject}"


def _subject_index(incidents: Sequence[Incident]) -> dict[tuple[str, str], Incident]:
    """Active incidents by (kind, subject), over every service and subject each one lists."""
    index: dict[tuple[str, str], Incident] = {}
    for incident in incidents:
        # Incidents opened before subjects were listed name their one subject in the group key.
        legacy = incident.group_key.partition(":")[2]
        for subject in (*incident.services, *(incident.subjects or []), legacy):
            index.setdefault((incident.kind, subject), incident)
    return index


def _new_incident(
    session: Session, settings: Settings, finding: Finding, kind: str, now: dt.datetime
) -> Incident:
    rules = settings.incidents
    klass = class_of_kind(kind, rules)
    incident = Incident(
        kind=kind,
        klass=klass,
        severity=finding.severity,
        state="open",
        group_key=f"{kind}:{_subject_label(finding)}",
        summary=finding.summary,
        services=[],
        subjects=[],
        detected_at=now,
        occurred_at=finding.occurred_at or finding.first_seen,
        notify_by=(
            now + dt.timedelta(minutes=rules.notify_within_minutes) if klass == "security" else None
        ),
    )
    session.add(incident)
    session.flush()
    _event(session, incident, now, "opened", finding=finding.id, rule=finding.rule)
    return incident


def _join(incident: Incident, finding: Finding) -> None:
    """Add a finding's service and subject to an incident; the worst finding heads it."""
    if finding.service_id and finding.service_id not in incident.services:
        incident.services = [*incident.services, finding.service_id]
    label = _subject_label(finding)
    if finding.subject_kind != "service" and label not in (incident.subjects or []):
        incident.subjects = [*(incident.subjects or []), label]
    if SEVERITY_RANK.get(finding.severity, 0) > SEVERITY_RANK.get(incident.severity, 0):
        incident.severity = finding.severity
        incident.summary = finding.summary
    occurred = finding.occurred_at or finding.first_seen
    if incident.occurred_at is None or occurred < incident.occurred_at:
        incident.occurred_at = occurred


def intake(session: Session, settings: Settings, now: dt.datetime) -> IntakeReport:
    """Turn new findings at or above the configured severity into incidents; resolve finished ones.

    An availability incident is one service's, and a service has one at a time: a finding of
    another availability kind (a burst of 5xx in its logs while it is down) joins it; a service
    that comes back and goes down again gets a new one (the first resolved). Security
    findings of one kind found in the same pass join one incident that lists their subjects (one
    batch of log analysis, one scan), with one two-hour clock and one notification; a finding
    whose subject already has an active incident of its kind joins that one. The worst finding
    heads an incident. When more availability incidents open at once than
    alerts.storm_threshold, on-call gets one grouped alert instead of one each. The
    maintenance windows that quiet alerts are recorded as they begin (`record_maintenance`).
    """
    record_maintenance(session, settings, now)
    rules = settings.incidents
    threshold = SEVERITY_RANK[rules.open_severity]
    report = IntakeReport()
    fresh = session.scalars(
        select(Finding)
        .where(
            Finding.incident_id.is_(None),
            Finding.state == "open",
            Finding.severity.in_([s for s, rank in SEVERITY_RANK.items() if rank >= threshold]),
        )
        .order_by(Finding.id)
    ).all()
    if not fresh:
        report.resolved = _resolve_finished(session, now)
        return report
    active = _subject_index(
        session.scalars(select(Incident).where(Incident.state.in_(ACTIVE_STATES))).all()
    )
    this_pass: dict[str, Incident] = {}  # new security incidents of this pass, by kind
    new_incidents: list[Incident] = []
    for finding in fresh:
        kind = kind_of_rule(finding.rule, rules)
        if kind in rules.quiet_kinds:
            continue
        subject = finding.service_id or _subject_label(finding)
        incident = active.get((kind, subject)) or active.get((kind, _subject_label(finding)))
        if incident is None and class_of_kind(kind, rules) == "availability":
            # One incident per outage: a burst of 5xx in the logs of a service already down
            # (or down while the logs already show it degraded) joins the incident it has.
            incident = next(
                (active[(k, subject)] for k in rules.availability_kinds if (k, subject) in active),
                None,
            )
        if incident is None and class_of_kind(kind, rules) == "security":
            incident = this_pass.get(kind)
        if incident is None:
            incident = _new_incident(session, settings, finding, kind, now)
            new_incidents.append(incident)
            report.opened.append(incident.id)
            if incident.klass == "security":
                this_pass[kind] = incident
        else:
            _event(session, incident, now, "finding_added", finding=finding.id, rule=finding.rule)
            report.joined += 1
        _join(incident, finding)
        active[(kind, subject)] = incident
        finding.incident_id = incident.id

    in_force = active_silences(session, now)
    quiet: dict[int, str] = {}
    loud: list[Incident] = []
    for incident in new_incidents:
        reason = _quiet_reason(session, settings, incident, now)
        if reason:
            quiet[incident.id] = reason
            _event(session, incident, now, "quiet", reason=reason)
        elif not _held_back(
            session, incident, f"incident:{incident.id}:opened", "opened", now, in_force
        ):
            loud.append(incident)
    # A silenced incident is no part of a storm: fifty silenced services down page nobody. A
    # quiet one (maintenance, a filed suspension) is, beside loud ones: a gateway down is news
    # however many of its services are in a window; quiet ones alone page nobody either.
    availability = [
        i for i in new_incidents if i.klass == "availability" and (i in loud or i.id in quiet)
    ]
    report.storm = len(availability) >= settings.alerts.storm_threshold and any(
        i in loud for i in availability
    )
    for incident in loud:
        if not (report.storm and incident.klass == "availability"):
            enqueue(session, f"incident:{incident.id}:opened", "oncall", "opened", now, incident.id)
    if report.storm:
        ids = [i.id for i in availability]
        enqueue(
            session,
            f"storm:{min(ids)}-{max(ids)}",
            "storm",
            "storm",
            now,
            payload={"count": len(ids), "incidents": ids},
        )
    report.resolved = _resolve_finished(session, now)
    return report


def _resolve_finished(session: Session, now: dt.datetime) -> list[int]:
    """Resolve open incidents all of whose findings were resolved (the service came back...)."""
    resolved: list[int] = []
    candidates = session.scalars(select(Incident).where(Incident.state.in_(ACTIVE_STATES))).all()
    # One query for the findings of every active incident, not one per incident.
    states: dict[int, list[str]] = defaultdict(list)
    for incident_id, state in session.execute(
        select(Finding.incident_id, Finding.state).where(
            Finding.incident_id.in_([i.id for i in candidates])
        )
    ):
        if incident_id is not None:
            states[incident_id].append(state)
    for incident in candidates:
        mine = states.get(incident.id, [])
        if mine and all(state != "open" for state in mine):
            incident.state = "resolved"
            incident.resolved_at = now
            ended = _ended_unrecovered(session, incident)
            _event(session, incident, now, "resolved", reason=ended or "所有相关发现已消除")
            if not _nobody_told(session, incident):  # nobody hears it ended of what was quiet
                key = f"incident:{incident.id}:resolved"
                payload = {"ended": ended} if ended else None
                _tell(session, incident, key, "oncall", "resolved", now, payload)
            resolved.append(incident.id)
    return resolved


def _mark_late(session: Session, incident: Incident, now: dt.datetime) -> bool:
    """Mark a security incident late for ever and tell the top of the chain; True if newly."""
    if incident.late:
        return False
    incident.late = True
    assert incident.notify_by is not None
    _event(session, incident, now, "late", notify_by=incident.notify_by.isoformat())
    enqueue(session, f"incident:{incident.id}:late", "top", "late", now, incident.id)
    return True


def work_clocks(session: Session, settings: Settings, now: dt.datetime) -> int:
    """Send due reminders and escalations, warn of undelivered notifications, and mark missed
    deadlines late; returns alerts written.

    Reminders stop once a notification is submitted; the deadline is met only when the
    management unit received it (a channel confirmed delivery, or it was made out of band). A
    notification not delivered within alerts.undelivered_minutes tells on-call and the top of
    the chain to phone it in. Only the latest due reminder and escalation level is sent, so a
    daemon that was down for an hour sends one catch-up message, not a burst. Safe to run as
    often as wanted.
    """
    rules = settings.incidents
    written = 0
    confirm_deliveries(session)
    incidents = session.scalars(
        select(Incident).where(Incident.state.in_(("open", "acknowledged", "notified", "resolved")))
    ).all()
    undelivered_after = dt.timedelta(minutes=settings.alerts.undelivered_minutes)
    in_force = active_silences(session, now)
    written += _release_silenced(session, now, in_force)
    written += _release_quiet(session, settings, now, in_force)
    kept_quiet, loud_since = _quiet_history(session, [i.id for i in incidents])
    for incident in incidents:
        elapsed = now - incident.detected_at
        on_the_clock = incident.klass == "security" and incident.notified_at is None
        if on_the_clock and incident.notification_sent_at is None:
            due = [m for m in rules.reminder_minutes if elapsed >= dt.timedelta(minutes=m)]
            if due:
                minute = max(due)
                if enqueue(
                    session,
                    f"incident:{incident.id}:reminder:{minute}",
                    "oncall",
                    "reminder",
                    now,
                    incident.id,
                    {"minute": minute},
                ):
                    _event(session, incident, now, "reminder", minute=minute)
                    written += 1
        if (
            on_the_clock
            and incident.notification_sent_at is not None
            and now - incident.notification_sent_at >= undelivered_after
        ):
            payload = {"sent_at": incident.notification_sent_at.isoformat()}
            key = f"incident:{incident.id}:undelivered"
            if enqueue(session, key, "oncall", "undelivered", now, incident.id, payload):
                enqueue(session, f"{key}:top", "top", "undelivered", now, incident.id, payload)
                _event(session, incident, now, "undelivered", **payload)
                written += 2
        if on_the_clock:
            assert incident.notify_by is not None
            if now >= incident.notify_by and _mark_late(session, incident, now):
                written += 1
        quiet_now = incident.id in kept_quiet and (
            _quiet_reason(session, settings, incident, now) is not None
        )
        if incident.state == "open" and incident.acknowledged_at is None and not quiet_now:
            levels = len(settings.alerts.escalation)
            # Counted from when on-call was first told: an outage that outlasts its maintenance
            # window goes to on-call first, not straight to the director.
            unanswered = now - loud_since.get(incident.id, incident.detected_at)
            step = dt.timedelta(minutes=rules.escalate_after_minutes)
            level = min(levels, int(unanswered / step))
            if level >= 1 and _tell(
                session,
                incident,
                f"incident:{incident.id}:escalation:{level}",
                f"escalation:{level}",
                "escalation",
                now,
                {"level": level, "name": settings.alerts.escalation[level - 1].name},
                in_force,
            ):
                _event(
                    session,
                    incident,
                    now,
                    "escalated",
                    level=level,
                    to=settings.alerts.escalation[level - 1].name,
                )
                written += 1
    return written


def _release_silenced(session: Session, now: dt.datetime, in_force: list[Silence]) -> int:
    """Send the held-back "opened" alert of an incident still active when its silence ended
    (as Alertmanager notifies of an alert still firing): a service down for longer than its
    silence is news. Returns the alerts written."""
    held = session.execute(
        select(Incident, IncidentEvent.detail)
        .join(IncidentEvent, IncidentEvent.incident_id == Incident.id)
        .where(IncidentEvent.kind == "silenced", Incident.state.in_(ACTIVE_STATES))
    ).all()
    written = 0
    for incident, detail in held:
        key = f"incident:{incident.id}:opened"
        if detail.get("alert") != key or silenced(session, incident, now, in_force) is not None:
            continue
        if enqueue(session, key, "oncall", "opened", now, incident.id):
            _event(session, incident, now, "silence_ended", silence=detail.get("silence"))
            written += 1
    return written


def _release_quiet(
    session: Session, settings: Settings, now: dt.datetime, in_force: list[Silence]
) -> int:
    """Send the "opened" alert of an availability incident kept quiet (a maintenance window,
    a filed suspension) that is still active once the reason ended: a service down past its
    window is news. Returns the alerts written."""
    kept = session.scalars(
        select(Incident)
        .join(IncidentEvent, IncidentEvent.incident_id == Incident.id)
        .where(IncidentEvent.kind == "quiet", Incident.state.in_(ACTIVE_STATES))
    ).all()
    written = 0
    for incident in kept:
        key = f"incident:{incident.id}:opened"
        if _quiet_reason(session, settings, incident, now) is not None:
            continue
        if _held_back(session, incident, key, "opened", now, in_force):
            continue
        if enqueue(session, key, "oncall", "opened", now, incident.id):
            _event(session, incident, now, "quiet_ended")
            written += 1
    return written


def _quiet_history(
    session: Session, incident_ids: list[int]
) -> tuple[set[int], dict[int, dt.datetime]]:
    """Of these incidents, those kept quiet when they opened, and when each that is no longer
    was first told to on-call (one query for all)."""
    if not incident_ids:
        return set(), {}
    events = session.execute(
        select(IncidentEvent.incident_id, IncidentEvent.kind, func.min(IncidentEvent.at))
        .where(
            among(session, IncidentEvent.incident_id, incident_ids),
            IncidentEvent.kind.in_(("quiet", "quiet_ended")),
        )
        .group_by(IncidentEvent.incident_id, IncidentEvent.kind)
    ).all()
    kept = {incident_id for incident_id, kind, _at in events if kind == "quiet"}
    told = {incident_id: at for incident_id, kind, at in events if kind == "quiet_ended"}
    return kept, told


def _ended_unrecovered(session: Session, incident: Incident) -> str | None:
    """Why an availability incident ended though its services did not come back (a suspension
    filed, the services taken offline or out of the catalogue), or None: they recovered. On-call
    must not read 已恢复 of a service still down."""
    if incident.klass != "availability":
        return None
    services = [session.get(Service, service_id) for service_id in incident.services]
    if not services or any(
        s is None or (s.status == "online" and not s.gone and s.url) for s in services
    ):
        return None
    if all(s is not None and s.status == "suspended" and not s.gone for s in services):
        return "服务已报备暂停（7.2.2），中断按计划进行，不再作为事件跟踪"
    return "服务已下线或移出目录，不再探测"


def _nobody_told(session: Session, incident: Incident) -> bool:
    """Whether an incident was kept quiet and no alert of it was ever queued."""
    quiet = session.scalar(
        select(IncidentEvent.id)
        .where(IncidentEvent.incident_id == incident.id, IncidentEvent.kind == "quiet")
        .limit(1)
    )
    told = session.scalar(
        select(OutboxAlert.id).where(OutboxAlert.incident_id == incident.id).limit(1)
    )
    return quiet is not None and told is None


def last_incident_id(session: Session) -> int:
    """The id of the last incident opened so far (0 before the first). The daemon takes it when
    it first sees a step of the system clock: the incidents opened after it, by hand, have the
    system clock's time (see follow_clock_step)."""
    return session.scalar(select(func.max(Incident.id))) or 0


def follow_clock_step(
    session: Session, step: dt.timedelta, now: dt.datetime, opened_before: int | None
) -> int:
    """Move the clocks of the incidents still on them by a step of the system clock that the
    daemon followed (it lasted: the clock was wrong before and is right now).

    Only times read from a clock that had not followed the step are moved, so that the two hours
    are counted in time that really passed and a clock put right by three hours does not make
    every open incident late: those of the incidents opened before the daemon saw the step
    (`opened_before`, their last id; whoever opened them, the system clock agreed then), and
    those the daemon opened since, on its own clock. An incident opened by hand since
    (`monitord incidents open`) has the system clock's time, right already, and keeps it.
    `opened_before` None (the daemon could not ask the store while the step lasted, nor could
    anybody open an incident in it): all are moved. Returns the incidents moved; each timeline
    says by how much.
    """
    moved = 0
    for incident in session.scalars(
        select(Incident).where(
            Incident.state.in_((*ACTIVE_STATES, "resolved")), Incident.notified_at.is_(None)
        )
    ):
        if incident.late:
            continue  # late is for ever
        if (
            opened_before is not None
            and incident.id > opened_before
            and incident.group_key.startswith(MANUAL_KEY)
        ):
            continue  # opened by hand on the system clock, after the step
        incident.detected_at += step
        if incident.notify_by is not None:
            incident.notify_by += step
        _event(session, incident, now, "clock_step", seconds=round(step.total_seconds()))
        moved += 1
    return moved


def get_incident(session: Session, incident_id: int) -> Incident:
    """The incident with this id, or a UsageError naming it."""
    incident = session.get(Incident, incident_id) if 0 < incident_id <= MAX_ID else None
    if incident is None:
        raise _no_incident(incident_id)
    return incident


def _no_incident(incident_id: int) -> UsageError:
    return UsageError(f"no incident {incident_id}: see `monitord incidents list`")


def held_incident(session: Session, incident_id: int) -> Incident:
    """The incident with this id read afresh and held until the session's transaction ends, or
    a UsageError naming it. Two people acting on it at once (the same ack sent twice) then act
    one after the other, and the second sees what the first did: without it, both read "open"
    and both acknowledged it. PostgreSQL: its row, SELECT … FOR UPDATE. SQLite ignores FOR
    UPDATE and reads outside a transaction until the first write: a write to the row takes the
    store's write lock first, waiting as its busy timeout says."""
    if not 0 < incident_id <= MAX_ID:
        raise _no_incident(incident_id)
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            update(Incident).where(Incident.id == incident_id).values(id=Incident.id),
            execution_options={"synchronize_session": False},
        )
    incident = session.get(Incident, incident_id, with_for_update=True, populate_existing=True)
    if incident is None:
        raise _no_incident(incident_id)
    return incident


def open_manual(
    session: Session,
    settings: Settings,
    kind: str,
    service_ids: list[str],
    summary: str,
    actor: str,
    now: dt.datetime,
    occurred_at: dt.datetime | None = None,
    severity: str = "high",
) -> Incident:
    """Register an incident monitord did not see itself (a phone call, a provider's report)."""
    rules = settings.incidents
    known = set(rules.security_kinds) | set(rules.availability_kinds)
    if kind not in known:
        raise UsageError(f"--kind {kind!r}: expected one of {', '.join(sorted(known))}")
    for service_id in service_ids:
        if session.get(Service, service_id) is None:
            raise UsageError(f"--service {service_id!r}: no such service in the store")
    summary = written_text("--summary", summary)
    if not summary:
        raise UsageError("--summary: describe what happened")
    if occurred_at is not None and occurred_at > now:
        raise UsageError(f"--occurred-at {local_text(occurred_at)} (CST): is in the future")
    klass = class_of_kind(kind, rules)
    incident = Incident(
        kind=kind,
        klass=klass,
        severity=severity,
        state="open",
        # Not the services: a gateway's outage lists hundreds, past what an index entry holds.
        group_key=f"{MANUAL_KEY}{kind}:{now.isoformat()}",
        summary=summary,
        services=service_ids,
        detected_at=now,
        occurred_at=occurred_at or now,
        notify_by=(
            now + dt.timedelta(minutes=rules.notify_within_minutes) if klass == "security" else None
        ),
    )
    session.add(incident)
    session.flush()
    _event(session, incident, now, "opened", actor=actor, manual=True)
    audit(session, now, actor, "incident.open", f"incident {incident.id}", {"kind": kind})
    enqueue(session, f"incident:{incident.id}:opened", "oncall", "opened", now, incident.id)
    return incident


def acknowledge(
    session: Session, incident_id: int, actor: str, now: dt.datetime, note: str = ""
) -> Incident:
    """Acknowledge an open incident: somebody is on it; escalation stops."""
    note = written_text("--note", note)
    incident = held_incident(session, incident_id)
    if incident.acknowledged_at is not None:
        raise Refused(
            f"incident {incident_id} was already acknowledged by {incident.acknowledged_by}",
            reason="already_acknowledged",
            by=incident.acknowledged_by,
        )
    if incident.state not in ("open",):
        raise Refused(
            f"incident {incident_id} is {incident.state}; nothing to acknowledge",
            reason="not_open",
            state=incident.state,
        )
    incident.state = "acknowledged"
    incident.acknowledged_at = now
    incident.acknowledged_by = actor
    _event(session, incident, now, "acknowledged", actor=actor, note=note)
    audit(session, now, actor, "incident.ack", f"incident {incident_id}", {"note": note})
    return incident


def notifications_made(session: Session, incident_id: int) -> int:
    """How many notifications of an incident were submitted (queued or made by phone): the
    next one is the follow-up (续报) number this + 1."""
    made = session.scalar(
        select(func.count())
        .select_from(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id, IncidentEvent.kind == "notified")
    )
    return int(made or 0)


def _typed(
    field: str, label: str, text: str, limit: int = MAX_LONG_TEXT, *, one_line_only: bool = False
) -> str:
    """written_text, its refusal a Refused naming the form's `field`: "too_long" (with the
    `length` and the `limit`) or "control_character", the two things written_text refuses."""
    try:
        return written_text(label, text, limit, one_line_only=one_line_only)
    except UsageError as exc:
        length = len(text.strip())
        reason = "too_long" if length > limit else "control_character"
        raise Refused(str(exc), reason=reason, field=field, length=length, limit=limit) from None


def notify_management(
    session: Session,
    settings: Settings,
    incident_id: int,
    parts: dict[str, str | None],
    actor: str,
    now: dt.datetime,
    out_of_band: str | None = None,
    at: dt.datetime | None = None,
    number: int | None = None,
) -> OutboxAlert | None:
    """Queue the clause 7.3.3 notification (or a follow-up) to the management unit, or record
    one made by phone or in person (`out_of_band` says how and to whom, `at` when).

    Refused (a Refused: its reason and the field at fault, for the status page to word),
    naming the part, when scope, harm, measures or rectification is missing; refused when no
    management channel is configured (unless out of band). With `number` (1 for the
    first notification, 2 for the first follow-up…, as the sender saw it), Outdated when that
    is not the one this would be: a form sent twice, or after someone else's, must not go out
    again as a follow-up. Notifying after the deadline marks the incident late at once.
    Returns the outbox row written (None out of band).
    """
    missing = [name for name in NOTIFICATION_PARTS if not (parts.get(name) or "").strip()]
    if missing:
        labels = [NOTIFICATION_PARTS[name] for name in missing]
        raise Refused(
            "the notification is missing: " + "; ".join(labels), reason="missing", fields=missing
        )
    for name, label in NOTIFICATION_PARTS.items():
        _typed(name, label, parts.get(name) or "")
    if out_of_band is not None:
        out_of_band = _typed(
            "out_of_band", "--out-of-band", out_of_band, MAX_NAME, one_line_only=True
        )
        if not out_of_band:
            raise Refused(
                '--out-of-band: say how and to whom, e.g. "电话：市数据局 王科长"',
                reason="empty",
                field="out_of_band",
            )
    if at is not None and out_of_band is None:
        raise Refused(
            "--at is the time of a notification made --out-of-band",
            reason="at_without_out_of_band",
            field="at",
        )
    if out_of_band is None and not settings.alerts.management:
        raise Refused(
            "alerts.management lists no channel: configure the management unit's apprise URLs, "
            "or record a notification made by phone (`--out-of-band`; in the API, "
            "POST /api/v1/incidents/{id}/out-of-band)",
            reason="no_management_channel",
        )
    incident = held_incident(session, incident_id)
    if incident.state == "closed":
        raise Refused(f"incident {incident_id} is closed", reason="closed")
    when = at or now
    if when > now:
        raise Refused(
            f"--at {local_text(when)}: is in the future", reason="future", field="at", at=when
        )
    happened = incident.occurred_at or incident.detected_at
    if when < happened:
        raise Refused(
            f"--at {local_text(when)}: is before the incident happened ({local_text(happened)})",
            reason="before_incident",
            field="at",
            at=when,
            happened=happened,
        )
    previous = notifications_made(session, incident_id)
    if number is not None and number != previous + 1:
        raise Outdated(
            f"incident {incident_id}: notification {number} was to be sent, but {previous} "
            "already were: read the incident again before sending"
        )
    number = previous + 1
    kind = "notification" if number == 1 else "update"
    payload: dict[str, Any] = {name: (parts[name] or "").strip() for name in NOTIFICATION_PARTS}
    payload["number"] = number
    payload["draft"] = draft_facts(session, incident)
    payload["management_unit"] = settings.report.management_unit
    payload["operation_unit"] = settings.report.operation_unit
    row = None
    if out_of_band is None:
        key = f"incident:{incident_id}:notification:{number}"
        enqueue(session, key, "management", kind, now, incident_id, payload)
        row = session.scalars(select(OutboxAlert).where(OutboxAlert.idempotency_key == key)).one()
    else:
        payload["out_of_band"] = out_of_band
        payload["made_at"] = when.isoformat()
    if incident.notification_sent_at is None:
        incident.notification_sent_at = when
        if incident.acknowledged_at is None:
            incident.acknowledged_at = now
            incident.acknowledged_by = actor
        if incident.state in ("open", "acknowledged"):
            incident.state = "notified"
    _event(session, incident, now, "notified", actor=actor, **payload)
    audit(
        session,
        now,
        actor,
        "incident.notify",
        f"incident {incident_id}",
        {"number": number, "out_of_band": payload.get("out_of_band"), "at": when.isoformat()},
    )
    if out_of_band is not None:
        notification_delivered(
            session, incident_id, when, f"out of band: {out_of_band}", (actor, now)
        )
    elif incident.klass == "security" and incident.notify_by and now >= incident.notify_by:
        # It cannot be delivered before it was submitted: late at once, not at the next pass.
        _mark_late(session, incident, now)
    return row


NOTIFICATION_KINDS = ("notification", "update")
"""Outbox kinds that carry a 7.3.3 notification to the management unit."""


def confirm_deliveries(session: Session) -> list[int]:
    """Record the notifications a management channel confirmed (the alert worker marks a copy
    delivered when apprise succeeds): each incident's first delivered one, at its delivery time,
    which decides on time or late. Returns the incidents newly notified."""
    rows = session.execute(
        select(OutboxAlert.incident_id, OutboxAlert.delivered_at, OutboxAlert.channel)
        .join(Incident, Incident.id == OutboxAlert.incident_id)
        .where(
            OutboxAlert.parent_id.is_not(None),
            OutboxAlert.kind.in_(NOTIFICATION_KINDS),
            OutboxAlert.state == "delivered",
            Incident.notified_at.is_(None),
        )
        .order_by(OutboxAlert.delivered_at)
    ).all()
    notified: list[int] = []
    for incident_id, delivered_at, channel in rows:
        if incident_id is None or delivered_at is None:
            continue  # excluded by the query; said again for the types
        if notification_delivered(session, incident_id, delivered_at, channel):
            notified.append(incident_id)
    return notified


def notification_delivered(
    session: Session,
    incident_id: int,
    at: dt.datetime,
    via: str,
    recorded: tuple[str, dt.datetime] | None = None,
) -> bool:
    """Record that the management unit received an incident's notification at `at` (a
    management channel confirmed delivery, or it was made out of band, `recorded` by whom and
    when); on time or late is decided here. The earliest receipt counts: a phone call made
    before a stuck notification was delivered, recorded after it, moves the receipt back to the
    call. Returns True when this receipt is now the incident's (the first, or an earlier one)."""
    incident = session.get(Incident, incident_id)
    if incident is None or (incident.notified_at is not None and incident.notified_at <= at):
        return False
    earlier_than = incident.notified_at
    incident.notified_at = at
    incident.notified_via = via
    if earlier_than is None:
        _event(session, incident, at, "delivered", via=via)
    else:
        # The timeline keeps the later receipt it replaces, and who recorded the earlier one.
        actor, when = recorded or ("monitord", at)
        _event(
            session,
            incident,
            when,
            "delivered",
            actor,
            via=via,
            received_at=at.isoformat(),
            replaces=earlier_than.isoformat(),
        )
    if incident.klass == "security" and incident.notify_by and at > incident.notify_by:
        _mark_late(session, incident, at)
    elif incident.late:
        # Received in time (a phone call made before the deadline, recorded after the clock
        # marked it late): the outcome is the call's time, not when the daemon's pass ran. The
        # timeline says who withdrew the mark, and when, with the call's time.
        incident.late = False
        actor, when = recorded or ("monitord", at)
        _event(
            session, incident, when, "late_withdrawn", actor, via=via, received_at=at.isoformat()
        )
    return True


def resolve(
    session: Session, incident_id: int, actor: str, now: dt.datetime, note: str = ""
) -> Incident:
    """Mark an incident resolved; a security incident's notification duty stays until notified.

    On-call hears 已恢复 only of an availability incident whose services are all up now; else
    已结束, resolved by hand, with the note (a service still down is no recovery)."""
    note = written_text("--note", note)
    incident = held_incident(session, incident_id)
    if incident.state in ("resolved", "closed"):
        raise Refused(
            f"incident {incident_id} is already {incident.state}",
            reason="already_ended",
            state=incident.state,
        )
    incident.state = "resolved"
    incident.resolved_at = now
    _event(session, incident, now, "resolved", actor=actor, note=note)
    audit(session, now, actor, "incident.resolve", f"incident {incident_id}", {"note": note})
    payload = None
    if not (incident.klass == "availability" and _services_up(session, incident)):
        ended = f"值班员 {actor} 处理" + (f"：{note}" if note else "")
        payload = {"ended": ended, "unrecovered": incident.klass == "availability"}
    key = f"incident:{incident_id}:resolved"
    _tell(session, incident, key, "oncall", "resolved", now, payload)
    return incident


def _services_up(session: Session, incident: Incident) -> bool:
    """Whether an incident names services and the probes find every one of them up now."""
    if not incident.services:
        return False
    states = session.scalars(
        select(ServiceState.state).where(ServiceState.service_id.in_(incident.services))
    ).all()
    return len(states) == len(incident.services) and all(state == "up" for state in states)


def close(
    session: Session, incident_id: int, actor: str, now: dt.datetime, note: str = ""
) -> Incident:
    """Close a resolved incident. A security incident must have been notified first (7.3.3)."""
    note = written_text("--note", note)
    incident = held_incident(session, incident_id)
    if incident.state != "resolved":
        raise UsageError(f"incident {incident_id} is {incident.state}: resolve it before closing")
    if incident.klass == "security" and incident.notified_at is None:
        if incident.notification_sent_at is not None:
            raise UsageError(
                f"incident {incident_id}: its notification was never delivered to the management "
                f"unit (7.3.3): phone it in and record it with `monitord incidents notify "
                f"{incident_id} --out-of-band …`"
            )
        raise UsageError(
            f"incident {incident_id} is a security incident never notified to the management "
            f"unit (7.3.3): run `monitord incidents notify {incident_id} …` first"
        )
    incident.state = "closed"
    incident.closed_at = now
    _event(session, incident, now, "closed", actor=actor, note=note)
    audit(session, now, actor, "incident.close", f"incident {incident_id}", {"note": note})
    return incident


def of_incident(incident_id: int) -> ColumnElement[bool]:
    """The condition on Finding for the findings that opened or joined an incident, in any of
    their episodes (a finding whose later episode belongs to a newer incident still belongs to
    this one)."""
    joined = select(FindingEpisode.finding_id).where(FindingEpisode.incident_id == incident_id)
    return or_(Finding.incident_id == incident_id, Finding.id.in_(joined))


def incident_findings(
    session: Session, incident_id: int, limit: int | None = None
) -> list[Finding]:
    """The findings of an incident (see of_incident), by id."""
    query = select(Finding).where(of_incident(incident_id)).order_by(Finding.id).limit(limit)
    return list(session.scalars(query))


def draft_facts(session: Session, incident: Incident) -> dict[str, Any]:
    """What monitord knows for the notification: times, services and coverage, findings."""
    services = []
    for service_id in incident.services:
        service = session.get(Service, service_id)
        if service is None:
            services.append({"id": service_id})
            continue
        services.append(
            {
                "id": service.id,
                "name": service.name,
                "provider": service.provider,
                "coverage": service.coverage,
                "permission": service.permission,
                "users": (service.raw or {}).get("users"),
            }
        )
    findings = incident_findings(session, incident.id, limit=20)
    return {
        "detected_at": incident.detected_at.isoformat(),
        "occurred_at": (incident.occurred_at or incident.detected_at).isoformat(),
        "services": services,
        "findings": [
            {"rule": f.rule, "clause": f.clause, "severity": f.severity, "summary": f.summary}
            for f in findings
        ],
    }


def incident_dict(incident: Incident, now: dt.datetime | None = None) -> dict[str, Any]:
    """An incident as plain JSON-ready values (the CLI's and the API's shape)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    minutes_left = None
    if now is not None and incident.notify_by is not None and incident.notified_at is None:
        minutes_left = int((incident.notify_by - now).total_seconds() // 60)
    return {
        "id": incident.id,
        "kind": incident.kind,
        "class": incident.klass,
        "severity": incident.severity,
        "state": incident.state,
        "summary": incident.summary,
        "services": incident.services,
        "subjects": incident.subjects or [],
        "detected_at": iso(incident.detected_at),
        "occurred_at": iso(incident.occurred_at),
        "notify_by": iso(incident.notify_by),
        "minutes_left": minutes_left,
        "notification_sent_at": iso(incident.notification_sent_at),
        "notified_at": iso(incident.notified_at),
        "notified_via": incident.notified_via,
        "late": incident.late,
        "acknowledged_at": iso(incident.acknowledged_at),
        "acknowledged_by": incident.acknowledged_by,
        "resolved_at": iso(incident.resolved_at),
        "closed_at": iso(incident.closed_at),
    }


def timeline(session: Session, incident_id: int) -> list[dict[str, Any]]:
    """Everything that happened to an incident, oldest first."""
    events = session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident_id)
        .order_by(IncidentEvent.id)
    ).all()
    return [
        {"at": e.at.isoformat(), "kind": e.kind, "actor": e.actor, "detail": e.detail}
        for e in events
    ]
