"""The alert worker: expand outbox rows into messages per channel, then deliver them by apprise.

Expansion and each delivery are separate transactions, so the worker can die at any moment: an
alert is either still pending (and goes out on the next run, with the same idempotency key) or
recorded as delivered. A channel that is down delays its alerts with exponential backoff; it
never drops them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import apprise
from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts.routing import audience_urls, missing_channel
from alerts.templates import Message, render_incident, render_notification, render_storm
from monitord.config import Settings
from monitord.models import Incident, OutboxAlert, Service
from monitord.store import Store
from monitord.timeutil import Clock

Sender = Callable[[str, Message, str], Awaitable[str | None]]
"""Send one message to one apprise URL with its key; None on success, else the error."""

HEADER_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")


def channel_label(url: str) -> str:
    """A channel as logs may show it: the scheme and a short hash, never its token."""
    scheme = urlsplit(url).scheme or "?"
    return f"{scheme}://…#{hashlib.sha256(url.encode()).hexdigest()[:6]}"


def make_apprise_sender(smtp_password: str | None) -> Sender:
    """A Sender that delivers through apprise, filling in {smtp_password} at the last moment."""

    async def send(url: str, message: Message, key: str) -> str | None:
        real = url
        if "{smtp_password}" in url:
            if smtp_password is None:
                return "the URL needs {smtp_password} but MONITORD_SMTP_PASSWORD is not set"
            real = url.replace("{smtp_password}", quote(smtp_password, safe=""))
        if urlsplit(real).scheme in HEADER_SCHEMES:
            # Webhook receivers can drop a repeat by this header.
            real += ("&" if "?" in real else "?") + "+X-Monitord-Key=" + quote(key, safe="")
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            notifier = apprise.Apprise()
            if not notifier.add(real):
                return "apprise cannot use this URL (check its scheme and parameters)"
            ok = bool(await notifier.async_notify(body=message.body, title=message.title))
        if ok:
            return None
        text = captured.getvalue().strip().splitlines()
        return (text[-1].split(" - ", 2)[-1] if text else "delivery failed")[:300]

    return send


def _services(session: Session, incident: Incident | None) -> list[Service]:
    if incident is None:
        return []
    found = [session.get(Service, sid) for sid in incident.services]
    return [s for s in found if s is not None]


def _render(session: Session, parent: OutboxAlert, now: dt.datetime, key: str) -> Message:
    incident = session.get(Incident, parent.incident_id) if parent.incident_id else None
    services = _services(session, incident)
    if parent.kind in ("notification", "update") and incident is not None:
        return render_notification(parent.payload, incident, services, key)
    if parent.kind == "storm":
        labels: dict[str, str] = {}
        for incident_id in parent.payload.get("incidents", [])[:5]:
            grouped = session.get(Incident, incident_id)
            if grouped is not None:
                names = [s.name for s in _services(session, grouped)]
                labels[str(incident_id)] = " ".join([*grouped.services[:1], *names[:1]])
        return render_storm(parent.payload, labels, key)
    if incident is not None:
        return render_incident(parent.kind, parent.payload, incident, services, now, key)
    return Message(title=parent.title or "monitord", body=f"{parent.body}\n编号 {key}")


def expand(store: Store, settings: Settings, now: dt.datetime) -> int:
    """Turn pending audience rows into one rendered row per apprise URL; returns rows made."""
    made = 0
    with store.session() as session:
        parents = session.scalars(
            select(OutboxAlert)
            .where(OutboxAlert.parent_id.is_(None), OutboxAlert.state == "pending")
            .order_by(OutboxAlert.id)
        ).all()
        for parent in parents:
            if "://" in parent.channel:
                continue  # already a concrete channel
            incident = session.get(Incident, parent.incident_id) if parent.incident_id else None
            urls = audience_urls(
                settings.alerts, parent.channel, incident, _services(session, incident)
            )
            if not urls:
                # It stays pending: a reload that adds a channel sends it (never dropped).
                key = missing_channel(parent.channel)
                error = f"no channel for {parent.channel}: configure {key}"
                if parent.last_error != error:  # said once, not at every pass
                    logger.warning("alert {} waits: {}", parent.idempotency_key, error)
                parent.last_error = error
                continue
            message = _render(session, parent, now, parent.idempotency_key)
            for url in urls:
                key = f"{parent.idempotency_key}#{hashlib.sha256(url.encode()).hexdigest()[:10]}"
                session.add(
                    OutboxAlert(
                        idempotency_key=key,
                        channel=url,
                        kind=parent.kind,
                        payload={},
                        title=message.title,
                        body=message.body,
                        incident_id=parent.incident_id,
                        parent_id=parent.id,
                        created_at=now,
                        next_attempt_at=now,
                        state="pending",
                    )
                )
                made += 1
            parent.state = "expanded"
    return made


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int
    failed: int
    waiting: int


def _due(
    store: Store,
    now: dt.datetime,
    incident_id: int | None,
    kinds: tuple[str, ...] | None,
    limit: int,
) -> list[OutboxAlert]:
    with store.session() as session:
        query = (
            select(OutboxAlert)
            .where(
                OutboxAlert.parent_id.is_not(None),
                OutboxAlert.state == "pending",
                OutboxAlert.next_attempt_at <= now,
            )
            .order_by(OutboxAlert.id)
            .limit(limit)
        )
        if incident_id is not None:
            query = query.where(OutboxAlert.incident_id == incident_id)
        if kinds is not None:
            query = query.where(OutboxAlert.kind.in_(kinds))
        return list(session.scalars(query).all())


def _record(
    store: Store, alert_id: int, error: str | None, now: dt.datetime, settings: Settings
) -> None:
    with store.session() as session:
        row = session.get(OutboxAlert, alert_id)
        assert row is not None
        row.attempts += 1
        if error is None:
            row.state = "delivered"
            row.delivered_at = now
            row.last_error = None
            return
        row.last_error = error
        wait = min(
            settings.alerts.retry_seconds * 2 ** (row.attempts - 1),
            settings.alerts.retry_max_seconds,
        )
        row.next_attempt_at = now + dt.timedelta(seconds=wait)


async def deliver_due(
    store: Store,
    settings: Settings,
    clock: Clock,
    send: Sender,
    incident_id: int | None = None,
    kinds: tuple[str, ...] | None = None,
    limit: int = 200,
) -> DeliveryReport:
    """Deliver every due alert (oldest first), recording each result as it comes.

    `incident_id` and `kinds` narrow the pass, e.g. to one notification sent from the CLI.
    """
    expand_now = clock()
    await asyncio.to_thread(expand, store, settings, expand_now)
    due = await asyncio.to_thread(_due, store, clock(), incident_id, kinds, limit)
    delivered = failed = 0
    for alert in due:
        error = await send(alert.channel, Message(alert.title, alert.body), alert.idempotency_key)
        await asyncio.to_thread(_record, store, alert.id, error, clock(), settings)
        if error is None:
            delivered += 1
            logger.info(
                "alert {} delivered to {}", alert.idempotency_key, channel_label(alert.channel)
            )
        else:
            failed += 1
            logger.warning(
                "alert {} to {} failed (attempt {}): {}",
                alert.idempotency_key,
                channel_label(alert.channel),
                alert.attempts + 1,
                error,
            )
    waiting = await asyncio.to_thread(_count_pending, store)
    return DeliveryReport(delivered=delivered, failed=failed, waiting=waiting)


def _count_pending(store: Store) -> int:
    """Alerts not delivered yet: messages due later, and alerts that wait for a channel."""
    with store.session() as session:
        count = session.scalar(
            select(func.count()).select_from(OutboxAlert).where(OutboxAlert.state == "pending")
        )
        return int(count or 0)
