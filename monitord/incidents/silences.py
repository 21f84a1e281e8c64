"""Silences, as Alertmanager's: by service, kind or rule, with a reason, an author and an end.

A silence keeps an incident's news out of chat while it lasts (the alert it held back is a line
in the incident's timeline, "silenced by #id"). It quiets the chat, never the duty: what the
clause 7.3.3 clock of a security incident sends (reminders, escalations, the warning of an
undelivered notification, the late mark, the notification to the management unit) goes out
whatever silence matches. Silences are kept after they end, for the quarterly report.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

import rules
from monitord.config import IncidentSettings
from monitord.errors import Refused
from monitord.redact import printable
from monitord.store import audit
from monitord.store.models import Finding, Incident, Service, Silence
from monitord.textable import storable
from monitord.timeutil import local_text

CHAT_NEWS = frozenset({"opened", "resolved"})
"""Alerts any silence may hold back: an incident's news in chat."""
AVAILABILITY_ONLY = frozenset({"escalation"})
"""Alerts a silence holds back for an availability incident only: for a security incident an
escalation is how the two-hour clock reaches somebody when nobody acknowledged."""
MAX_REASON = 500
_DURATION = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?")
_MAX_DIGITS = 9
"""More digits than any duration up to LONGEST needs; int() refuses a string past 4,300."""


def may_silence(incident: Incident, alert_kind: str) -> bool:
    """Whether a silence may hold back an alert of this kind about this incident."""
    if alert_kind in CHAT_NEWS:
        return True
    return alert_kind in AVAILABILITY_ONLY and incident.klass != "security"


LONGEST = dt.timedelta(days=3650)
"""The longest silence: ten years (a longer one ran past the dates a clock can show)."""


def parse_duration(text: str) -> dt.timedelta:
    """A duration such as 90m, 2h, 1d or 1h30m; raises UsageError naming it otherwise."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or found is None or not any(found.groups()):
        raise Refused(
            f"duration {text!r}: expected minutes, hours or days such as 90m, 2h, 1d",
            reason="not_a_duration",
            field="for",
        )
    numbers = [(g or "").lstrip("0") for g in found.groups()]
    # Counted in whole minutes before any timedelta: a huge one overflows timedelta itself.
    if any(len(n) > _MAX_DIGITS for n in numbers):
        raise _too_long(text)
    days, hours, minutes = (int(n or 0) for n in numbers)
    total = days * 24 * 60 + hours * 60 + minutes
    if total == 0:
        raise Refused(
            f"duration {text!r}: must be longer than nothing", reason="no_duration", field="for"
        )
    if total > LONGEST // dt.timedelta(minutes=1):
        raise _too_long(text)
    return dt.timedelta(minutes=total)


def _too_long(text: str) -> Refused:
    return Refused(
        f"duration {text!r}: at most {LONGEST.days} days",
        reason="too_long_a_silence",
        field="for",
        days=LONGEST.days,
    )


def _rule_is_declared(pattern: str, declared: Sequence[str]) -> bool:
    """A rule (or glob) names a declared rule, or a rule of a declared family such as zap:*."""
    return any(
        fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(pattern, name)
        for name in declared
    )


def _once(values: Sequence[str]) -> list[str]:
    """Each value once, stripped, in the order given: `--service a --service a` is one."""
    return list(dict.fromkeys(value.strip() for value in values))


def _check(
    session: Session,
    settings: IncidentSettings,
    services: list[str],
    kinds: list[str],
    rule_names: list[str],
    reason: str,
    ends_at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Raise UsageError naming the first thing wrong with a silence about to be added."""
    if not (services or kinds or rule_names):
        raise Refused(
            "a silence needs at least one service, kind or rule: one that matched every alert "
            "would hide the next outage",
            reason="matches_everything",
        )
    for service_id in services:
        if not service_id.strip() or session.get(Service, service_id) is None:
            raise Refused(
                f"service {service_id!r}: not in the store (see `monitord services`)",
                reason="no_such_service",
                field="services",
                value=service_id,
            )
    known = [*settings.availability_kinds, *settings.security_kinds]
    for kind in kinds:
        if kind not in known:
            raise Refused(
                f"kind {kind!r}: expected one of {', '.join(sorted(known))}",
                reason="no_such_kind",
                field="kinds",
                value=kind,
            )
    declared = list(rules.declared_rule_kinds())
    for rule in rule_names:
        if not rule.strip() or not _rule_is_declared(rule, declared):
            raise Refused(
                f"rule {rule!r}: no rule of rules/*.toml has this name",
                reason="no_such_rule",
                field="rules",
                value=rule,
            )
    if not reason.strip():
        raise Refused(
            "reason: say why alerts are silenced (the report shows it)",
            reason="missing",
            fields=("reason",),
        )
    if len(reason) > MAX_REASON:
        raise Refused(
            f"reason: {len(reason)} characters, at most {MAX_REASON}",
            reason="too_long",
            field="reason",
            length=len(reason),
            limit=MAX_REASON,
        )
    if ends_at <= now:
        raise Refused(
            f"end {local_text(ends_at)} (CST): is not in the future",
            reason="not_in_the_future",
            field="ends_at",
            at=ends_at,
        )
    if ends_at - now > LONGEST:
        # As --for is capped: an --until or an API end date must not outrun the same cap.
        raise Refused(
            f"end {local_text(ends_at)} (CST): more than {LONGEST.days} days away, "
            "the longest silence",
            reason="too_long_a_silence",
            field="ends_at",
            days=LONGEST.days,
        )


def add_silence(
    session: Session,
    settings: IncidentSettings,
    *,
    services: Sequence[str] = (),
    kinds: Sequence[str] = (),
    rule_names: Sequence[str] = (),
    reason: str,
    ends_at: dt.datetime,
    actor: str,
    now: dt.datetime,
) -> Silence:
    """Add a silence from now until `ends_at`, audited under `actor`.

    Raises UsageError naming what is wrong: nothing to match, a service not in the store, an
    unknown kind or rule, no reason, an end not in the future or further than `LONGEST`.
    """
    service_ids, kind_names, patterns = _once(services), _once(kinds), _once(rule_names)
    reason = storable(printable(reason.strip()))  # a non-UTF-8 argument's bytes: U+FFFD
    _check(session, settings, service_ids, kind_names, patterns, reason, ends_at, now)
    silence = Silence(
        services=service_ids,
        kinds=kind_names,
        rules=patterns,
        reason=reason,
        created_by=actor,
        created_at=now,
        starts_at=now,
        ends_at=ends_at,
    )
    session.add(silence)
    session.flush()
    audit(session, now, actor, "silence.add", f"silence {silence.id}", silence_dict(silence, now))
    return silence


def get_silence(session: Session, silence_id: int) -> Silence:
    """The silence with this id, or a UsageError naming it."""
    silence = session.get(Silence, silence_id)
    if silence is None:
        raise Refused(
            f"no silence {silence_id}: see `monitord silence list --all`",
            reason="no_such_silence",
            id=str(silence_id),
        )
    return silence


def expire_silence(session: Session, silence_id: int, actor: str, now: dt.datetime) -> Silence:
    """End a silence now, audited under `actor`; one that already ended is refused."""
    silence = get_silence(session, silence_id)
    if not is_active(silence, now):
        raise Refused(
            f"silence {silence_id} already ended at {local_text(ended_at(silence))}",
            reason="silence_ended",
            id=str(silence_id),
            at=ended_at(silence),
        )
    silence.expired_at = now
    silence.expired_by = actor
    audit(session, now, actor, "silence.expire", f"silence {silence_id}", {})
    return silence


def ended_at(silence: Silence) -> dt.datetime:
    """When a silence ended or will end: expired by hand, else its planned end."""
    return silence.expired_at or silence.ends_at


def is_active(silence: Silence, now: dt.datetime) -> bool:
    """Whether a silence holds alerts back at `now`."""
    return silence.starts_at <= now < ended_at(silence)


def active_silences(session: Session, now: dt.datetime) -> list[Silence]:
    """The silences in force at `now`, oldest first."""
    return list(
        session.scalars(
            select(Silence)
            .where(
                Silence.starts_at <= now,
                Silence.ends_at > now,
                or_(Silence.expired_at.is_(None), Silence.expired_at > now),
            )
            .order_by(Silence.id)
        )
    )


def list_silences(
    session: Session, now: dt.datetime, *, include_ended: bool = False
) -> list[Silence]:
    """The silences in force at `now`; with `include_ended`, every one ever added, newest
    first."""
    if not include_ended:
        return active_silences(session, now)
    return list(session.scalars(select(Silence).order_by(Silence.id.desc())))


def matches(silence: Silence, incident: Incident, incident_rules: Sequence[str]) -> bool:
    """Whether a silence covers an incident: each list it fills must match (empty: any)."""
    if silence.services and not set(silence.services) & set(incident.services):
        return False
    if silence.kinds and incident.kind not in silence.kinds:
        return False
    return not silence.rules or any(
        fnmatch.fnmatchcase(rule, pattern) for pattern in silence.rules for rule in incident_rules
    )


def incident_rules(session: Session, incident: Incident) -> list[str]:
    """The rules of the findings an incident gathered."""
    return list(
        session.scalars(select(Finding.rule).where(Finding.incident_id == incident.id).distinct())
    )


def silenced(
    session: Session,
    incident: Incident,
    now: dt.datetime,
    in_force: Sequence[Silence] | None = None,
) -> Silence | None:
    """The first silence in force at `now` that covers this incident, or None.

    `in_force`: the silences in force, when the caller already read them for many incidents.
    """
    candidates = active_silences(session, now) if in_force is None else in_force
    if not candidates:
        return None
    found_rules = incident_rules(session, incident) if any(s.rules for s in candidates) else []
    for silence in candidates:
        if matches(silence, incident, found_rules):
            return silence
    return None


def silence_dict(silence: Silence, now: dt.datetime) -> dict[str, Any]:
    """A silence as plain JSON-ready values (the CLI's and the API's shape)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": silence.id,
        "services": list(silence.services),
        "kinds": list(silence.kinds),
        "rules": list(silence.rules),
        "reason": silence.reason,
        "created_by": silence.created_by,
        "created_at": iso(silence.created_at),
        "starts_at": iso(silence.starts_at),
        "ends_at": iso(silence.ends_at),
        "expired_at": iso(silence.expired_at),
        "expired_by": silence.expired_by,
        "active": is_active(silence, now),
    }
