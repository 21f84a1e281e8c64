"""The alert worker: expand outbox rows into messages per channel, then deliver them by apprise.

Expansion and each delivery are separate transactions, so the worker can die at any moment: an
alert is either still pending (and goes out on the next run, with the same idempotency key) or
recorded as delivered. A channel that is down delays its alerts with exponential backoff; it
never drops them.

A copy's row names its channel, never its URL (see alerts.routing): the URL is looked up when the
copy is sent. A copy whose channel a reload removed is withdrawn, and its alert goes to the
audience's channels as they are now; copies to channels that already have one are not made again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import apprise
from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from alerts.routing import (
    Channel,
    Refusal,
    audience_channels,
    connect_host,
    missing_channel,
    refused_contacts,
)
from alerts.templates import (
    Message,
    catalogue_text,
    render_incident,
    render_notification,
    render_storm,
)
from monitord.config import Settings
from monitord.models import AuditEntry, Incident, OutboxAlert, Service
from monitord.netguard import DeniedTargetError, resolve_checked
from monitord.redact import mask_url, mask_urls, one_line
from monitord.store import Store, audit
from monitord.timeutil import Clock

Sender = Callable[[Channel, Message, str], Awaitable[str | None]]
"""Send one message to one channel with its key; None on success, else the error."""

HEADER_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")


def channel_label(channel: Channel) -> str:
    """A channel as logs may show it: its name and its URL with every secret masked."""
    if channel.trusted:
        return f"{channel.name} ({mask_url(channel.url)})"
    return channel.name  # a catalogue contact's name already shows its masked URL


def make_apprise_sender(smtp_password: str | None) -> Sender:
    """A Sender that delivers through apprise, filling in {smtp_password} at the last moment.

    Only into a URL from the config: a URL a service provider wrote in the catalogue is sent as
    written, so it can never ask for the password.
    """

    async def send(channel: Channel, message: Message, key: str) -> str | None:
        real = channel.url
        if channel.trusted and "{smtp_password}" in real:
            if smtp_password is None:
                return "the URL needs {smtp_password} but MONITORD_SMTP_PASSWORD is not set"
            real = real.replace("{smtp_password}", quote(smtp_password, safe=""))
        if urlsplit(real).scheme in HEADER_SCHEMES:
            # Webhook receivers can drop a repeat by this header.
            real += ("&" if "?" in real else "?") + "+X-Monitord-Key=" + quote(key, safe="")
        with apprise.LogCapture(level=apprise.logging.WARNING) as captured:  # type: ignore[no-untyped-call]
            notifier = apprise.Apprise()
            if not notifier.add(real):
                return "apprise cannot use this URL (check its scheme and parameters)"
            for service in notifier:
                # A redirect would lead past the deny list checked before sending.
                service.redirects = False
            # Told that the message is text, apprise escapes it for each channel's format:
            # HTML for e-mail, Markdown where the plugin sends Markdown (DingTalk and Feishu
            # with ?format=markdown), nothing for text (WeCom, webhooks).
            ok = bool(
                await notifier.async_notify(
                    body=message.body, title=message.title, body_format=apprise.NotifyFormat.TEXT
                )
            )
        if ok:
            return None
        text = captured.getvalue().strip().splitlines()
        return text[-1].split(" - ", 2)[-1] if text else "delivery failed"

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
                label = " ".join([*grouped.services[:1], *names[:1]])
                labels[str(incident_id)] = catalogue_text(label)
        return render_storm(parent.payload, labels, key)
    if incident is not None:
        return render_incident(parent.kind, parent.payload, incident, services, now, key)
    return Message(title=parent.title or "monitord", body=f"{parent.body}\n编号 {key}")


def _incident(session: Session, row: OutboxAlert) -> Incident | None:
    return session.get(Incident, row.incident_id) if row.incident_id else None


def expand(store: Store, settings: Settings, now: dt.datetime) -> int:
    """Turn pending audience rows into one rendered row per channel; returns rows made.

    A channel that already has its copy of the alert (an alert expanded again after a reload
    withdrew one of its copies) gets none again.
    """
    made = 0
    with store.session() as session:
        parents = session.scalars(
            select(OutboxAlert)
            .where(OutboxAlert.parent_id.is_(None), OutboxAlert.state == "pending")
            .order_by(OutboxAlert.id)
        ).all()
        for parent in parents:
            if "://" in parent.channel:
                continue  # a row of the first schema, written before audiences
            incident = _incident(session, parent)
            services = _services(session, incident)
            channels = audience_channels(settings, parent.channel, incident, services)
            if parent.channel == "oncall":
                _note_refusals(session, refused_contacts(settings, services), now)
            if not channels:
                # It stays pending: a reload that adds a channel sends it (never dropped).
                key = missing_channel(parent.channel)
                error = f"no channel for {parent.channel}: configure {key}"
                if parent.last_error != error:  # said once, not at every pass
                    logger.warning("alert {} waits: {}", parent.idempotency_key, error)
                parent.last_error = error
                continue
            made += _add_copies(session, parent, channels, now)
            parent.state = "expanded"
            parent.last_error = None
    return made


REFUSED = "alerts.contact_refused"


def _note_refusals(session: Session, refusals: list[Refusal], now: dt.datetime) -> None:
    """Log and audit each refused catalogue contact once, not at every alert."""
    for refusal in refusals:
        subject = f"{refusal.service_id} {refusal.contact}"
        seen = session.scalar(
            select(AuditEntry.id)
            .where(AuditEntry.action == REFUSED, AuditEntry.subject == subject)
            .limit(1)
        )
        if seen is not None:
            continue
        audit(session, now, "monitord", REFUSED, subject, {"reason": refusal.reason})
        logger.warning(
            "catalogue contact {} of {} is not alerted: {}",
            refusal.contact,
            refusal.service_id,
            refusal.reason,
        )


def _add_copies(
    session: Session, parent: OutboxAlert, channels: list[Channel], now: dt.datetime
) -> int:
    existing = set(
        session.scalars(
            select(OutboxAlert.idempotency_key).where(OutboxAlert.parent_id == parent.id)
        )
    )
    message = _render(session, parent, now, parent.idempotency_key)
    made = 0
    for channel in channels:
        key = f"{parent.idempotency_key}#{channel.ident}"
        if key in existing:
            continue
        session.add(
            OutboxAlert(
                idempotency_key=key,
                channel=channel.name,
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
    return made


def _channel_of(store: Store, settings: Settings, alert_id: int) -> Channel | None:
    """The channel a copy goes to, from the settings and catalogue as they are now.

    None when its channel is no longer one of the audience's (a reload removed it): the copy is
    withdrawn and its alert expanded again, so the audience's current channels get it.
    """
    with store.session() as session:
        row = session.get(OutboxAlert, alert_id)
        assert row is not None
        parent = session.get(OutboxAlert, row.parent_id) if row.parent_id else None
        if parent is not None:
            incident = _incident(session, parent)
            ident = row.idempotency_key.rpartition("#")[2]
            for channel in audience_channels(
                settings, parent.channel, incident, _services(session, incident)
            ):
                if channel.ident == ident:
                    row.channel = channel.name  # a reload may have moved it (oncall[1] → [0])
                    return channel
            parent.state = "pending"
        row.state = "withdrawn"
        row.last_error = (
            f"{mask_url(row.channel)} is no longer configured: the alert goes to the "
            "audience's current channels instead"
        )
        logger.warning("alert {}: {}", row.idempotency_key, row.last_error)
        return None


DNS_TIMEOUT_SECONDS = 10.0


async def refused_target(channel: Channel, networks: list[str]) -> str | None:
    """Why monitord must not contact this channel (its host is in a denied network), or None.

    Applied to every channel, from the config or the catalogue alike. A name that does not
    resolve is left to apprise, which reports it as the delivery's error.
    """
    host = connect_host(channel.url)
    if host is None:
        return None
    try:
        await resolve_checked(host, 0, networks, DNS_TIMEOUT_SECONDS)
    except DeniedTargetError as exc:
        return str(exc)
    except (OSError, TimeoutError):
        return None
    return None


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
        # Whatever apprise said, no secret of a URL goes into the store.
        row.last_error = mask_urls(one_line(error))[:300]
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
        channel = await asyncio.to_thread(_channel_of, store, settings, alert.id)
        if channel is None:
            continue
        error = await refused_target(channel, settings.probes.denied_networks)
        if error is None:
            error = await send(channel, Message(alert.title, alert.body), alert.idempotency_key)
        await asyncio.to_thread(_record, store, alert.id, error, clock(), settings)
        if error is None:
            delivered += 1
            logger.info("alert {} delivered to {}", alert.idempotency_key, channel_label(channel))
        else:
            failed += 1
            logger.warning(
                "alert {} to {} failed (attempt {}): {}",
                alert.idempotency_key,
                channel_label(channel),
                alert.attempts + 1,
                mask_urls(one_line(error)),
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
