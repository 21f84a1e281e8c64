"""Writing alerts to the outbox: the core's only way to tell people anything.

A row names an audience ("oncall", "escalation:2", "top", "management", "storm"), what happened
and its facts; the alert worker (alerts/) turns it into messages and delivers them. The
idempotency key makes enqueueing safe to repeat: a key already written is not written again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.store.models import OutboxAlert

AUDIENCES = ("oncall", "top", "management", "storm")
"""Plus "escalation:N" for the N-th level of the escalation chain."""


def enqueue(
    session: Session,
    key: str,
    audience: str,
    kind: str,
    now: dt.datetime,
    incident_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Write one alert for an audience unless its key exists; True when it was written."""
    exists = session.scalar(select(OutboxAlert.id).where(OutboxAlert.idempotency_key == key))
    if exists is not None:
        return False
    session.add(
        OutboxAlert(
            idempotency_key=key,
            channel=audience,
            kind=kind,
            payload=payload or {},
            title="",
            body="",
            incident_id=incident_id,
            created_at=now,
            next_attempt_at=now,
            state="pending",
        )
    )
    session.flush()
    return True
