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
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import apprise
from loguru import logger
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from alerts import pacing
from alerts.robots import answers_recorded, fits, in_parts, robot_refusal, text_budget
from alerts.routing import (
    MAIL_SCHEMES,
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
    page_link,
    render_digest,
    render_for_provider,
    render_incident,
    render_notification,
    render_report,
    render_storm,
    short_name,
)
from monitord.config import Settings
from monitord.netguard import DeniedTargetError, lookups_checked, resolve_checked
from monitord.redact import mask_url, mask_urls, one_line
from monitord.store import Store, audit
from monitord.store.models import AuditEntry, Finding, Incident, OutboxAlert, Service
from monitord.timeutil import Clock

Sender = Callable[[Channel, Message, str], Awaitable[str | None]]
"""Send one message to one channel with its key; None on success, else the error."""

CONNECT_TIMEOUT_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 30.0
"""How long a send waits to connect, and then for each answer, before it counts as failed."""

HEADER_SCHEMES = ("json", "jsons", "form", "forms", "xml", "xmls")


def channel_label(channel: Channel) -> str:
    """A channel as logs may show it: its name and its URL with every secret masked."""
    if channel.trusted:
        return f"{channel.name} ({mask_url(channel.url)})"
    return channel.name  # a catalogue contact's name already shows its masked URL


class _ThreadWarnings(logging.Handler):
    """The messages of apprise's warnings logged on one thread."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


@contextmanager
def apprise_warnings() -> Iterator[list[str]]:
    """Within the block, the warnings apprise logs on this thread: why a send failed. apprise
    has one logger for every send, and sends to several channels run at once, each on a
    thread of its own."""
    handler = _ThreadWarnings()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(handler)
    try:
        yield handler.messages
    finally:
        apprise_log.removeHandler(handler)


def send_failure(warnings: list[str], waited: float) -> str:
    """Why a send failed: that the channel did not answer, when the send waited out the read
    timeout (apprise calls that "a connection error", as it does a refused connection), else
    apprise's last warning."""
    if waited >= READ_TIMEOUT_SECONDS:
        return f"no answer within {READ_TIMEOUT_SECONDS:g} s"
    return warnings[-1] if warnings else "delivery failed"


def make_apprise_sender(smtp_password: str | None) -> Sender:
    """A Sender that delivers through apprise, filling in {smtp_password} at the last moment.

    Only into a URL from the config: a URL a service provider wrote in the catalogue is sent as
    written, so it can never ask for the password. apprise runs in a worker thread that carries
    the caller's context, so `deliver_due`'s `lookups_checked` applies to its name lookups.
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
        # Not async_mode: the plugin then runs on the thread below (asyncio.to_thread carries
        # the context, and with it `lookups_checked`), not on one of apprise's own.
        notifier = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
        if not notifier.add(real):
            return "apprise cannot use this URL (check its scheme and parameters)"
        for service in notifier:
            # A redirect would lead past the deny list checked before sending.
            service.redirects = False
            # apprise waits 4 s for an answer: a webhook slower than that got the alert and
            # was sent it again at every retry. Each wait is still bounded, so a channel
            # that hangs fails rather than holding the pass.
            service.socket_connect_timeout = CONNECT_TIMEOUT_SECONDS
            service.socket_read_timeout = READ_TIMEOUT_SECONDS

        scheme = urlsplit(real).scheme.lower()
        parts = in_parts(message, text_budget(scheme))

        def notify(part: Message) -> str | None:
            """Send one part on this thread: None, or why apprise could not."""
            started = time.monotonic()
            with apprise_warnings() as warnings:
                # Told that the message is text, apprise escapes it for each channel's format:
                # HTML for e-mail, Markdown where the plugin sends Markdown (DingTalk and Feishu
                # with ?format=markdown), nothing for text (WeCom, webhooks).
                ok = notifier.notify(
                    body=part.body,
                    title=part.title,
                    body_format=apprise.NotifyFormat.TEXT,
                    attach=list(part.attachments) or None,
                )
            return None if ok else send_failure(warnings, time.monotonic() - started)

        for part in parts:  # a message past the channel's size goes in numbered parts
            with answers_recorded() as answers:
                error = await asyncio.to_thread(notify, part)
            if error is not None:
                return error
            refused = robot_refusal(scheme, answers)
            if refused is not None:
                return refused
        return None

    return send


def _services(session: Session, incident: Incident | None) -> list[Service]:
    if incident is None:
        return []
    found = [session.get(Service, sid) for sid in incident.services]
    return [s for s in found if s is not None]


def _render(
    session: Session,
    parent: OutboxAlert,
    now: dt.datetime,
    key: str,
    public_url: str | None,
    channel: Channel | None = None,
) -> Message:
    """An alert's text; for an incident's alert to a service provider's own contact
    (`channel`'s services), the provider's copy (render_for_provider)."""
    incident = session.get(Incident, parent.incident_id) if parent.incident_id else None
    services = _services(session, incident)
    if parent.kind in ("notification", "update") and incident is not None:
        return render_notification(parent.payload, incident, services, key)
    if parent.kind == "report":
        return render_report(parent.payload, key, attached=False)
    if parent.kind == "storm":
        labels: dict[str, str] = {}
        for incident_id in parent.payload.get("incidents", [])[:5]:
            grouped = session.get(Incident, incident_id)
            if grouped is not None:
                names = [s.name for s in _services(session, grouped)]
                label = " ".join(
                    [*map(catalogue_text, grouped.services[:1]), *map(short_name, names[:1])]
                )
                labels[str(incident_id)] = label
        return render_storm(parent.payload, labels, key, page_link(public_url))
    if incident is not None and channel is not None and channel.services:
        own = [s for s in services if s.id in channel.services]
        findings = _findings_on(session, incident, channel.services)
        return render_for_provider(parent.kind, parent.payload, incident, own, findings, key)
    if incident is not None:
        link = page_link(public_url, incident.id)
        return render_incident(parent.kind, parent.payload, incident, services, now, key, link)
    return Message(title=parent.title or "monitord", body=f"{parent.body}\n编号 {key}")


PROVIDER_SUBJECTS = ("service", "web_path")
"""The findings a provider's copy shows: what a probe, the catalogue or a scan found on the
service itself. A log finding names a visitor (an address, an account): on-call's alone."""


def _findings_on(session: Session, incident: Incident, service_ids: Collection[str]) -> list[str]:
    """The summaries of an incident's findings about these services themselves, oldest first."""
    return list(
        session.scalars(
            select(Finding.summary)
            .where(
                Finding.incident_id == incident.id,
                Finding.service_id.in_(list(service_ids)),
                Finding.subject_kind.in_(PROVIDER_SUBJECTS),
            )
            .order_by(Finding.id)
        )
    )


INCIDENT_EVENTS = ("opened", "reminder", "escalation", "late", "resolved", "undelivered")
"""Alerts about an incident whose text tells its state now: rendered again when sent."""

ATTACHING_KINDS = ("report",)
"""Alerts whose e-mail copies carry a file (payload "path", checked against "sha256")."""


def is_mail(channel: Channel) -> bool:
    """Whether a channel is e-mail, the one kind of channel that gets attachments."""
    return urlsplit(channel.url).scheme.lower() in MAIL_SCHEMES


def _copy_of(
    parent: OutboxAlert, channel: Channel, message: Message
) -> tuple[Message, dict[str, str]]:
    """A copy's message and payload: an attaching alert's e-mail copy names its file (sent
    with it) and the file's SHA-256 (checked before it goes); every other copy is the message."""
    if parent.kind not in ATTACHING_KINDS or not is_mail(channel):
        return message, {}
    copy = render_report(parent.payload, parent.idempotency_key, attached=True)
    return copy, {"attach": parent.payload["path"], "sha256": parent.payload["sha256"]}


def attachment_error(payload: dict[str, str]) -> str | None:
    """Why a copy's attachment cannot be sent as recorded (the file is gone, unreadable, or
    not the one recorded), or None: what is sent must be what the record's hash names."""
    path = payload.get("attach")
    if path is None:
        return None
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        return f"the attachment {path} cannot be read ({exc.strerror})"
    if digest.hexdigest() != payload.get("sha256"):
        return (
            f"the attachment {path} is not the file recorded (SHA-256 "
            f"{digest.hexdigest()[:12]}…, recorded {str(payload.get('sha256'))[:12]}…): "
            "write the report again"
        )
    return None


def _incident(session: Session, row: OutboxAlert) -> Incident | None:
    return session.get(Incident, row.incident_id) if row.incident_id else None


def expand(store: Store, settings: Settings, now: dt.datetime) -> int:
    """Turn pending audience rows into one rendered row per channel; returns rows made.

    Each audience row is taken in its own transaction that starts by moving it from pending to
    expanded, so two passes at once never both expand it. A channel that already has its copy
    of the alert (an alert expanded again after a reload withdrew one of its copies) gets none.
    """
    with store.session() as session:
        parent_ids = session.scalars(
            select(OutboxAlert.id)
            .where(
                OutboxAlert.parent_id.is_(None),
                OutboxAlert.state == "pending",
                OutboxAlert.channel.not_like("%://%"),  # rows of the first schema
            )
            .order_by(OutboxAlert.id)
        ).all()
    return sum(_expand_one(store, settings, parent_id, now) for parent_id in parent_ids)


def _expand_one(store: Store, settings: Settings, parent_id: int, now: dt.datetime) -> int:
    with store.session() as session:
        taken = session.execute(
            update(OutboxAlert)
            .where(OutboxAlert.id == parent_id, OutboxAlert.state == "pending")
            .values(state="expanded")
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return 0  # another pass expanded it
        parent = session.get(OutboxAlert, parent_id)
        assert parent is not None
        incident = _incident(session, parent)
        services = _services(session, incident)
        channels = audience_channels(settings, parent.channel, incident, services, parent.kind)
        if parent.channel == "oncall":
            _note_refusals(session, refused_contacts(settings, services), now)
        if not channels:
            # It stays pending: a reload that adds a channel sends it (never dropped).
            parent.state = "pending"
            key = missing_channel(parent.channel)
            error = f"no channel for {parent.channel}: configure {key}"
            if parent.last_error != error:  # said once, not at every pass
                logger.warning("alert {} waits: {}", parent.idempotency_key, error)
            parent.last_error = error
            return 0
        parent.last_error = None
        return _add_copies(session, parent, channels, now, settings.api.public_url)


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
    session: Session,
    parent: OutboxAlert,
    channels: list[Channel],
    now: dt.datetime,
    public_url: str | None,
) -> int:
    existing = set(
        session.scalars(
            select(OutboxAlert.idempotency_key).where(OutboxAlert.parent_id == parent.id)
        )
    )
    message = _render(session, parent, now, parent.idempotency_key, public_url)
    made = 0
    for channel in channels:
        key = f"{parent.idempotency_key}#{channel.ident}"
        if key in existing:
            continue
        own = message
        if channel.services:  # a provider's contact: a copy of its own (render_for_provider)
            own = _render(session, parent, now, parent.idempotency_key, public_url, channel)
        copy, payload = _copy_of(parent, channel, own)
        due = _queue_end(session, channel, now)
        session.add(
            OutboxAlert(
                idempotency_key=key,
                channel=channel.name,
                kind=parent.kind,
                payload=payload,
                title=copy.title,
                body=copy.body,
                incident_id=parent.incident_id,
                parent_id=parent.id,
                created_at=now,
                next_attempt_at=due,
                state="pending",
            )
        )
        made += 1
    return made


def _as_sent(
    store: Store, copies: list[OutboxAlert], now: dt.datetime, settings: Settings
) -> list[Message]:
    """The copies' texts as they go now: an incident's alert is rendered again at send time, so
    what depends on the time or the incident's state (minutes left to notify, whether the
    notification was received) is true when it arrives, not when it was queued; a provider's
    contact again gets its own copy. The key, and every other copy's text (a notification, a
    report's e-mail, a copy whose channel is no longer its alert's), are as recorded."""
    texts = []
    with store.session() as session:
        for copy in copies:
            parent = session.get(OutboxAlert, copy.parent_id) if copy.parent_id else None
            if parent is None or parent.kind not in INCIDENT_EVENTS or parent.incident_id is None:
                texts.append(Message(copy.title, copy.body))
                continue
            channel = _copy_channel(session, settings, parent, copy)
            if channel is None:
                texts.append(Message(copy.title, copy.body))
                continue
            key = parent.idempotency_key
            texts.append(_render(session, parent, now, key, settings.api.public_url, channel))
    return texts


def copy_ident(copy: OutboxAlert) -> str:
    """The ident of the channel a copy goes to: its key ends in it (`…#ident`)."""
    return copy.idempotency_key.rpartition("#")[2]


def _copy_channel(
    session: Session, settings: Settings, parent: OutboxAlert, copy: OutboxAlert
) -> Channel | None:
    """The channel of a copy (its key ends in the channel's ident) among its alert's audience
    as the settings and catalogue are now, or None when it is no longer one of them."""
    incident = _incident(session, parent)
    ident = copy_ident(copy)
    channels = audience_channels(
        settings, parent.channel, incident, _services(session, incident), parent.kind
    )
    return next((channel for channel in channels if channel.ident == ident), None)


def _queue_end(session: Session, channel: Channel, now: dt.datetime) -> dt.datetime:
    """When a copy queued now to a channel is first due: now, or when the channel's older copies
    are retried if it failed, so that it never overtakes them (an 已恢复 before its opening, a
    续报 before its 通报)."""
    waiting = session.scalar(
        select(func.max(OutboxAlert.next_attempt_at)).where(
            _same_channel(channel),
            OutboxAlert.parent_id.is_not(None),
            OutboxAlert.state == "pending",
        )
    )
    return max(now, waiting) if waiting is not None else now


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
            channel = _copy_channel(session, settings, parent, row)
            if channel is not None:
                row.channel = channel.name  # a reload may have moved it (oncall[1] → [0])
                return channel
            parent.state = "pending"
        row.state = "withdrawn"
        row.claimed_by = row.claimed_until = None
        row.last_error = (
            f"{row.channel} is no longer configured: the alert goes to the "
            "audience's current channels instead"
        )
        logger.warning("alert {}: {}", row.idempotency_key, row.last_error)
        return None


DNS_TIMEOUT_SECONDS = 10.0


async def refused_target(channel: Channel, networks: list[str]) -> str | None:
    """Why monitord must not contact this channel (its host is in a denied network), or None.

    Applied to every channel, from the config or the catalogue alike. A name that does not
    resolve is left to apprise, which reports it as the delivery's error; apprise's own lookups
    are checked again as it connects (`lookups_checked`).
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
    except ValueError as exc:  # UnicodeError: a label longer than 63 characters, an empty one
        return f"the host of {channel_label(channel)} is not a valid name ({exc})"
    return None


@dataclass(frozen=True)
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int
    failed: int
    waiting: int


CLAIM_LEASE = dt.timedelta(minutes=5)
"""How long a claimed copy is left to its sender: far above apprise's own timeouts."""
_RUN = secrets.token_hex(4)  # tells this process from an earlier one that had the same pid


def claimant() -> str:
    """Who claims copies from this process: host, pid and run."""
    return f"{socket.gethostname()}:{os.getpid()}:{_RUN}"


def _gone(holder: str) -> bool:
    """Whether the process that holds a claim is known to have died (it ran on this host)."""
    host, _, rest = holder.partition(":")
    pid_text, _, run = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another host's: its lease tells
    pid = int(pid_text)
    if pid == os.getpid():
        return run != _RUN  # a restarted daemon with the pid of the one that died (pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _release_dead_claims(store: Store) -> None:
    """Put back the copies whose sender died on this host, so they need not wait for the lease."""
    with store.session() as session:
        claims = session.execute(
            select(OutboxAlert.id, OutboxAlert.claimed_by).where(OutboxAlert.state == "sending")
        ).all()
    for alert_id, holder in claims:
        if holder is None or not _gone(holder):
            continue
        with store.session() as session:
            session.execute(
                update(OutboxAlert)
                .where(
                    OutboxAlert.id == alert_id,
                    OutboxAlert.state == "sending",
                    OutboxAlert.claimed_by == holder,
                )
                .values(state="pending", claimed_by=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )


EXPAND_EVERY_SECONDS = 5.0
"""How often a delivery pass that lasts (channels slow to answer) takes in the alerts queued
since it began."""


def _due(
    table: type[OutboxAlert],
    now: dt.datetime,
    incident_id: int | None,
    kinds: tuple[str, ...] | None,
) -> list[ColumnElement[bool]]:
    """The conditions of a copy due now: pending and its time come, or its claim lapsed."""
    due = [
        table.parent_id.is_not(None),
        or_(
            and_(table.state == "pending", table.next_attempt_at <= now),
            and_(table.state == "sending", table.claimed_until < now),
        ),
    ]
    if incident_id is not None:
        due.append(table.incident_id == incident_id)
    if kinds is not None:
        due.append(table.kind.in_(kinds))
    return due


def _claim_next(
    store: Store,
    now: dt.datetime,
    incident_id: int | None,
    kinds: tuple[str, ...] | None,
    skipped: Collection[str] = (),
) -> OutboxAlert | None:
    """Claim the oldest due copy for this process, or None when none is due; copies to the
    channels `skipped` (their idents) are left for a later pass.

    One statement: UPDATE … WHERE id = (the oldest due copy, FOR UPDATE SKIP LOCKED on
    PostgreSQL) AND it is still due. SQLite runs it holding its write lock, PostgreSQL skips
    rows another pass has locked, so no copy is ever claimed twice. A copy whose claim lapsed
    (its sender died) is due again.
    """
    candidate = aliased(OutboxAlert)
    elsewhere = [~candidate.idempotency_key.endswith(f"#{ident}") for ident in sorted(skipped)]
    oldest = (
        select(candidate.id)
        .where(*_due(candidate, now, incident_id, kinds), *elsewhere)
        .order_by(candidate.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    with store.session() as session:
        claimed = session.execute(
            update(OutboxAlert)
            .where(OutboxAlert.id == oldest, *_due(OutboxAlert, now, incident_id, kinds))
            .values(state="sending", claimed_by=claimant(), claimed_until=now + CLAIM_LEASE)
            .returning(OutboxAlert.id)
            .execution_options(synchronize_session=False)
        ).scalar()
        return None if claimed is None else session.get(OutboxAlert, claimed)


def _per_minute(settings: Settings, channel: Channel) -> int | None:
    """The rate of a paced chat channel (alerts.rate_per_minute by scheme), None if unpaced."""
    return settings.alerts.rate_per_minute.get(urlsplit(channel.url).scheme.lower())


def _same_channel(channel: Channel) -> ColumnElement[bool]:
    # Every copy's key ends in its channel's identity (the hash of where it goes).
    return OutboxAlert.idempotency_key.endswith(f"#{channel.ident}")


def _sent_times(session: Session, channel: Channel, now: dt.datetime) -> list[dt.datetime]:
    """When the channel was sent a message in the last pacing window (a digest counts once)."""
    rows = session.execute(
        select(OutboxAlert.delivered_at, OutboxAlert.sent_in).where(
            OutboxAlert.parent_id.is_not(None),
            OutboxAlert.state == "delivered",
            OutboxAlert.delivered_at > now - pacing.WINDOW,
            _same_channel(channel),
        )
    ).all()
    singles = [at for at, digest in rows if digest is None and at is not None]
    digests = {digest: at for at, digest in rows if digest is not None and at is not None}
    return singles + list(digests.values())


def _delivered_lately(session: Session, channel: Channel, now: dt.datetime) -> int:
    """How many alerts the channel was sent in the last pacing window (a digest's each)."""
    count = session.scalar(
        select(func.count())
        .select_from(OutboxAlert)
        .where(
            OutboxAlert.parent_id.is_not(None),
            OutboxAlert.state == "delivered",
            OutboxAlert.delivered_at > now - pacing.WINDOW,
            _same_channel(channel),
        )
    )
    return int(count or 0)


def _batch(
    store: Store,
    alert: OutboxAlert,
    channel: Channel,
    per_minute: int | None,
    flood: int,
    now: dt.datetime,
) -> list[OutboxAlert]:
    """The copies the next message to a channel carries: the claimed one alone, or with more of
    the channel's due copies (claimed too) as a digest, when a paced channel's minute has no
    room for each or a `flood` is due; none when the minute is full (the claimed copy is then
    put back until the channel has room)."""
    with store.session() as session:
        due = [*_due(OutboxAlert, now, None, None), _same_channel(channel)]
        backlog = 1 + int(
            session.scalar(
                select(func.count())
                .select_from(OutboxAlert)
                .where(*due, OutboxAlert.id != alert.id)
            )
            or 0
        )
        sent = [] if per_minute is None else _sent_times(session, channel, now)
        room_left = backlog if per_minute is None else pacing.room(sent, per_minute, now)
        # One copy due alone goes alone whatever came before: the count of the minute's
        # deliveries (a scan of the channel's copies by key) is read only when a digest could be.
        lately = _delivered_lately(session, channel, now) if backlog > 1 else 0
        size = pacing.batch_size(backlog, room_left, flood, lately)
        if size == 0 and per_minute is not None:
            session.execute(
                update(OutboxAlert)
                .where(OutboxAlert.id == alert.id)
                .values(
                    state="pending",
                    claimed_by=None,
                    claimed_until=None,
                    next_attempt_at=pacing.room_again(sent, per_minute, now),
                )
                .execution_options(synchronize_session=False)
            )
            return []
        if size == 1 or alert.kind in ATTACHING_KINDS:  # its e-mail carries a file: alone
            return [alert]
        candidate = aliased(OutboxAlert)
        more = (
            select(candidate.id)
            .where(
                *_due(candidate, now, None, None),
                candidate.idempotency_key.endswith(f"#{channel.ident}"),
                candidate.id != alert.id,
                candidate.kind.not_in(ATTACHING_KINDS),  # its e-mail carries a file: never folded
            )
            .order_by(candidate.id)
            .limit(size - 1)
            .with_for_update(skip_locked=True)
        )
        claimed = session.scalars(
            update(OutboxAlert)
            .where(OutboxAlert.id.in_(more), *_due(OutboxAlert, now, None, None))
            .values(state="sending", claimed_by=claimant(), claimed_until=now + CLAIM_LEASE)
            .returning(OutboxAlert.id)
            .execution_options(synchronize_session=False)
        ).all()
        others = session.scalars(
            select(OutboxAlert).where(OutboxAlert.id.in_(claimed)).order_by(OutboxAlert.id)
        ).all()
        return [alert, *others]


def digest_size(messages: list[Message], key: str, budget: int | None) -> int:
    """How many of the messages, from the first, one digest within the budget carries: at least
    one (a message alone that does not fit goes in parts), all when there is no budget."""
    size = len(messages)
    while size > 1 and not fits(render_digest(messages[:size], key), budget):
        size -= 1
    return size


def digest_key(copies: list[OutboxAlert]) -> str:
    """A digest's key, naming all it carries: a retry rebuilt with other copies (those queued
    since) is another message, which a receiver dropping repeats by the key must not drop."""
    contents = hashlib.sha256("\n".join(c.idempotency_key for c in copies).encode())
    return f"digest:{copies[0].idempotency_key}:{contents.hexdigest()[:10]}"


def _within_budget(store: Store, batch: list[OutboxAlert], channel: Channel) -> list[OutboxAlert]:
    """The copies of a batch whose digest fits the channel's message size; the others are
    put back, due, for the next digest (never dropped)."""
    budget = text_budget(urlsplit(channel.url).scheme)
    key = digest_key(batch)  # as long as the key of any part of the batch
    size = digest_size([Message(a.title, a.body) for a in batch], key, budget)
    left = [copy.id for copy in batch[size:]]
    if left:
        with store.session() as session:
            session.execute(
                update(OutboxAlert)
                .where(OutboxAlert.id.in_(left), OutboxAlert.state == "sending")
                .values(state="pending", claimed_by=None, claimed_until=None)
                .execution_options(synchronize_session=False)
            )
    return batch[:size]


def _record(
    store: Store,
    alert_id: int,
    error: str | None,
    now: dt.datetime,
    settings: Settings,
    sent_in: str | None = None,
    channel: Channel | None = None,
) -> None:
    """Record a copy's delivery or failure. A failure defers the channel's other due copies to
    its retry, and the copy itself to the latest retry of the channel's older copies: they go
    together once the channel answers, in the order they were queued (tried one by one, each
    with a backoff of its own, they arrived out of order; a digest's copies, recorded one after
    another, each with its own count of attempts, too)."""
    with store.session() as session:
        row = session.get(OutboxAlert, alert_id)
        assert row is not None
        row.attempts += 1
        row.state = "pending"
        row.claimed_by = row.claimed_until = None
        if error is None:
            row.state = "delivered"
            row.delivered_at = now
            row.sent_in = sent_in
            row.last_error = None
            return
        # Whatever apprise said, no secret of a URL goes into the store.
        row.last_error = mask_urls(one_line(error))[:300]
        wait = min(
            settings.alerts.retry_seconds * 2 ** (row.attempts - 1),
            settings.alerts.retry_max_seconds,
        )
        row.next_attempt_at = now + dt.timedelta(seconds=wait)
        if channel is not None:
            older = session.scalar(
                select(func.max(OutboxAlert.next_attempt_at)).where(
                    _same_channel(channel),
                    OutboxAlert.parent_id.is_not(None),
                    OutboxAlert.state == "pending",
                    OutboxAlert.id < row.id,
                )
            )
            if older is not None and older > row.next_attempt_at:
                row.next_attempt_at = older
            session.execute(
                update(OutboxAlert)
                .where(
                    _same_channel(channel),
                    OutboxAlert.parent_id.is_not(None),
                    OutboxAlert.state == "pending",
                    OutboxAlert.next_attempt_at < row.next_attempt_at,
                    OutboxAlert.id != row.id,
                )
                .values(next_attempt_at=row.next_attempt_at)
                .execution_options(synchronize_session=False)
            )


SENDS_AT_ONCE = 4
"""How many channels a pass sends to at once. Each send holds a worker thread (apprise blocks)
of the pool the other jobs' store work shares: a few webhooks that hang must not take it all."""


async def deliver_due(
    store: Store,
    settings: Settings,
    clock: Clock,
    send: Sender,
    incident_id: int | None = None,
    kinds: tuple[str, ...] | None = None,
    limit: int = 200,
) -> DeliveryReport:
    """Deliver every due alert (oldest first, up to `limit`), recording each result as it comes.

    Channels do not wait for each other: up to SENDS_AT_ONCE channels are sent to at once, each
    one copy (or digest) at a time, in the order its copies were queued. Each copy is claimed
    before it is sent, so passes may run at once (in one process or several, on SQLite or
    PostgreSQL) and none sends a copy another has. `incident_id` and `kinds` narrow the pass,
    e.g. to one notification sent from the CLI.
    """
    await asyncio.to_thread(expand, store, settings, clock())
    expanded_at = time.monotonic()
    await asyncio.to_thread(_release_dead_claims, store)
    delivered = failed = claimed = 0
    # A channel that failed in this pass is not tried again in it: its retries, due again within
    # the pass, came back ahead of every newer copy.
    failing: set[str] = set()
    sending: dict[str, asyncio.Task[Outcome]] = {}  # by channel ident: one send each at a time
    try:
        while True:
            if time.monotonic() - expanded_at >= EXPAND_EVERY_SECONDS:
                # Alerts queued while a long pass runs (a notification submitted now) join it.
                await asyncio.to_thread(expand, store, settings, clock())
                expanded_at = time.monotonic()
            alert = None
            if claimed < limit and len(sending) < SENDS_AT_ONCE:
                busy = failing | sending.keys()
                alert = await asyncio.to_thread(
                    _claim_next, store, clock(), incident_id, kinds, busy
                )
            if alert is not None:
                claimed += 1
                sending[copy_ident(alert)] = asyncio.create_task(
                    _deliver_copy(store, settings, clock, send, alert)
                )
                continue
            if not sending:
                break
            # Every send slot is taken, or every due copy's channel is busy: wait for a send to
            # end, or for the time to take in the alerts queued meanwhile.
            await asyncio.wait(
                sending.values(), timeout=EXPAND_EVERY_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
            for ident, task in list(sending.items()):
                if task.done():
                    del sending[ident]
                    outcome = task.result()
                    delivered += outcome.delivered
                    failed += outcome.failed
                    if outcome.failed:
                        failing.add(ident)
    except BaseException:
        # A store error in one send, or the pass cancelled: the other sends stop too (their
        # copies go out again when their claims lapse), as one send's error stopped the pass.
        for task in sending.values():
            task.cancel()
        await asyncio.gather(*sending.values(), return_exceptions=True)
        raise
    waiting = await asyncio.to_thread(_count_pending, store)
    return DeliveryReport(delivered=delivered, failed=failed, waiting=waiting)


@dataclass(frozen=True)
class Outcome:
    """What sending one message to a channel did: how many copies it delivered or failed."""

    delivered: int = 0
    failed: int = 0


async def _deliver_copy(
    store: Store, settings: Settings, clock: Clock, send: Sender, alert: OutboxAlert
) -> Outcome:
    """Send a claimed copy to its channel, with the channel's other due copies as a digest
    when they are many (_batch), and record the result of each."""
    channel = await asyncio.to_thread(_channel_of, store, settings, alert.id)
    if channel is None:
        return Outcome()
    per_minute = _per_minute(settings, channel)
    batch = await asyncio.to_thread(
        _batch, store, alert, channel, per_minute, settings.alerts.storm_threshold, clock()
    )
    if not batch:
        return Outcome()  # the channel's minute is full: it goes when there is room
    if len(batch) > 1:
        batch = await asyncio.to_thread(_within_budget, store, batch, channel)
    key = alert.idempotency_key if len(batch) == 1 else digest_key(batch)
    texts = await asyncio.to_thread(_as_sent, store, batch, clock(), settings)
    attach = alert.payload.get("attach")
    message = (
        Message(texts[0].title, texts[0].body, (attach,) if attach else ())
        if len(batch) == 1
        else render_digest(texts, key, paced=per_minute is not None)
    )
    error = await refused_target(channel, settings.probes.denied_networks)
    if error is None:
        error = await asyncio.to_thread(attachment_error, alert.payload)
    if error is None:
        # The check above is a lookup of its own: the sender's lookups are checked too.
        with lookups_checked(settings.probes.denied_networks) as refusals:
            error = await send(channel, message, key)
        if error is not None and refusals:
            error = refusals[-1]  # apprise says only that it could not connect
    sent_in = key if len(batch) > 1 else None
    for copy in batch:
        await asyncio.to_thread(_record, store, copy.id, error, clock(), settings, sent_in, channel)
    if error is None:
        logger.info("alert {} delivered to {}", key, channel_label(channel))
        return Outcome(delivered=len(batch))
    logger.warning(
        "alert {} to {} failed (attempt {}): {}",
        key,
        channel_label(channel),
        alert.attempts + 1,
        mask_urls(one_line(error)),
    )
    return Outcome(failed=len(batch))


def _count_pending(store: Store) -> int:
    """Alerts not delivered yet: messages due later, and alerts that wait for a channel."""
    with store.session() as session:
        count = session.scalar(
            select(func.count())
            .select_from(OutboxAlert)
            .where(OutboxAlert.state.in_(("pending", "sending")))
        )
        return int(count or 0)
