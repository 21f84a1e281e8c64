"""What is wrong now: the services down or degraded, the open incidents with their two-hour
clocks, the active silences and the alerts stuck in the outbox.

One reading of the store for the status page (monitord.runtime.web.page) and `monitord status`,
so the terminal and the browser never disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from monitord.incidents import incident_dict, still_due
from monitord.incidents.silences import active_silences, silence_dict
from monitord.redact import mask_urls, one_line
from monitord.store.models import Incident, OutboxAlert, Service, ServiceState
from monitord.types import IN_SERVICE

STUCK_AFTER = dt.timedelta(minutes=5)
"""An alert still undelivered this long after it was queued is shown as stuck."""
STUCK_SHOWN = 20
"""The stuck alerts listed (the oldest first); the rest are counted."""


@dataclass(frozen=True)
class Status:
    """What is wrong at `now`, ready to show."""

    now: dt.datetime
    counts: dict[str, int]
    """Online services per probe state (up, degraded, down, unknown), and the suspended ones
    (whose outage is filed: expected, not counted down); gone ones left out."""
    troubled: list[dict[str, Any]]
    """Online services down, then degraded: id, name, state, since, last_error."""
    incidents: list[dict[str, Any]]
    """Active incidents, and those resolved with their 7.3.3 notification still due
    (incident_dict), the nearest two-hour deadline first."""
    silences: list[dict[str, Any]]
    """Silences in force: id, services, kinds, rules, reason, created_by, ends_at."""
    stuck: list[dict[str, Any]]
    """The oldest alerts undelivered for STUCK_AFTER: channel, kind, incident, attempts, error."""
    stuck_total: int

    @property
    def anything_down(self) -> bool:
        """Whether a service is down (what `monitord status` exits 1 for)."""
        return self.counts.get("down", 0) > 0

    def as_json(self) -> dict[str, Any]:
        """JSON-ready values (times ISO 8601 with their offset)."""
        return {
            "now": self.now.isoformat(),
            "services": self.counts,
            "troubled": self.troubled,
            "incidents": self.incidents,
            "silences": self.silences,
            "stuck_alerts": self.stuck,
            "stuck_alerts_total": self.stuck_total,
        }


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _counts(session: Session) -> dict[str, int]:
    state = case(
        (Service.status == "suspended", "suspended"),
        else_=func.coalesce(ServiceState.state, "unknown"),
    )
    rows = session.execute(
        select(state, func.count())
        .select_from(Service)
        .outerjoin(ServiceState, ServiceState.service_id == Service.id)
        .where(Service.gone.is_(False), Service.status.in_(IN_SERVICE))
        .group_by(state)
    ).all()
    counts = {"up": 0, "degraded": 0, "down": 0, "unknown": 0, "suspended": 0}
    for name, count in rows:
        counts[str(name)] = counts.get(str(name), 0) + int(count)
    return counts


def _troubled(session: Session) -> list[dict[str, Any]]:
    order = case({"down": 0}, value=ServiceState.state, else_=1)
    rows = session.execute(
        select(ServiceState, Service.name, Service.status)
        .join(Service, Service.id == ServiceState.service_id)
        .where(
            ServiceState.state.in_(("down", "degraded")),
            Service.gone.is_(False),
            Service.status == "online",  # a suspended service's outage is filed: expected
        )
        .order_by(order, ServiceState.since)
    ).all()
    return [
        {
            "id": state.service_id,
            "name": name,
            "status": status,
            "state": state.state,
            "since": _iso(state.since),
            "last_error": one_line(mask_urls(state.last_error)) if state.last_error else None,
        }
        for state, name, status in rows
    ]


def _incidents(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    # A running two-hour clock first (the nearest deadline leading), then the rest, newest first.
    running = case((Incident.notify_by.is_not(None) & Incident.notified_at.is_(None), 0), else_=1)
    rows = session.scalars(
        select(Incident)
        .where(still_due())
        .order_by(running, Incident.notify_by, Incident.id.desc())
    )
    return [incident_dict(incident, now) for incident in rows]


def _silences(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    # The silences in force at `now`, ending first.
    in_force = sorted(active_silences(session, now), key=lambda silence: silence.ends_at)
    return [silence_dict(silence, now) for silence in in_force]


def _stuck(session: Session, now: dt.datetime) -> tuple[list[dict[str, Any]], int]:
    # A copy waiting for or failing at its channel, or an alert not yet expanded into copies
    # (its audience has no channel, or no alert worker runs).
    waiting = (
        OutboxAlert.state.in_(("pending", "sending")),
        OutboxAlert.created_at < now - STUCK_AFTER,
    )
    total = session.scalar(select(func.count()).select_from(OutboxAlert).where(*waiting)) or 0
    rows = session.scalars(
        select(OutboxAlert).where(*waiting).order_by(OutboxAlert.created_at).limit(STUCK_SHOWN)
    )
    shown = [
        {
            "id": row.id,
            "channel": row.channel,
            "kind": row.kind,
            "incident_id": row.incident_id,
            "created_at": row.created_at.isoformat(),
            "attempts": row.attempts,
            "last_error": one_line(mask_urls(row.last_error)) if row.last_error else None,
        }
        for row in rows
    ]
    return shown, int(total)


def read_status(session: Session, now: dt.datetime) -> Status:
    """What is wrong at `now`, read from the store in one session."""
    stuck, stuck_total = _stuck(session, now)
    return Status(
        now=now,
        counts=_counts(session),
        troubled=_troubled(session),
        incidents=_incidents(session, now),
        silences=_silences(session, now),
        stuck=stuck,
        stuck_total=stuck_total,
    )
