"""Which channels an audience means for an incident, from the config and the catalogue.

A channel is where one copy of an alert goes. The outbox keeps its name (`alerts.oncall[0]`,
`alerts.escalation[1].urls[0]`, `contact:svc-0042:…`) and its identity (a short hash of the
destination, the suffix of the copy's idempotency key), never its URL: the URL is looked up in
the current settings and catalogue when the copy is sent, so no credential sits in the store and
a reload that moves a channel still finds it. Secrets are filled only into URLs that come from
the config (`Channel.trusted`), never into one a service provider wrote in the catalogue.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode, urlsplit

from monitord.config import AlertSettings, Route, Settings
from monitord.redact import TOKEN_HOST_SCHEMES, mask_url, one_line
from monitord.store.models import Incident, Service

MAIL_SCHEMES = ("mailto", "mailtos")
HOSTED_SCHEMES = TOKEN_HOST_SCHEMES
"""Services whose API host is fixed inside apprise: the host part of their URL is a token."""
# An e-mail address and nothing else: no braces ({smtp_password}), commas (a second
# recipient), blanks or line breaks (a forged header) can get through into the SMTP URL.
_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


@dataclass(frozen=True)
class Channel:
    """One destination of an alert, as the current settings and catalogue define it."""

    name: str
    """Where it goes, as the outbox keeps it and logs show it; never a secret."""
    url: str
    """The apprise URL, {smtp_password} still a placeholder."""
    trusted: bool
    """The URL comes from the config: only then is {smtp_password} filled in."""
    ident: str
    """A short hash of the destination: the same channel across reloads and restarts."""
    services: tuple[str, ...] = ()
    """For a catalogue contact, the services (of the incident's) whose filings list it: its
    alerts tell of these alone. Empty for a channel of the config."""


def identity(destination: str) -> str:
    """The short hash that names a destination in an idempotency key (never the URL itself)."""
    return hashlib.sha256(destination.encode()).hexdigest()[:10]


def _configured(name: str, urls: list[str]) -> list[Channel]:
    return [
        Channel(name=f"{name}[{i}]", url=url, trusted=True, ident=identity(url))
        for i, url in enumerate(urls)
    ]


def _route_matches(route: Route, incident: Incident) -> bool:
    return (
        (not route.severities or incident.severity in route.severities)
        and (not route.kinds or incident.kind in route.kinds)
        and (not route.services or bool(set(route.services) & set(incident.services)))
    )


@dataclass(frozen=True)
class Refusal:
    """A catalogue contact that is not alerted, and why."""

    service_id: str
    contact: str
    """Its URL, masked and on one line: fit for a log."""
    reason: str


def _allowed(patterns: list[str], scheme: str, host: str) -> bool:
    for pattern in patterns:
        allowed_scheme, _, allowed_host = pattern.partition("://")
        if allowed_scheme != scheme:
            continue
        if allowed_host in ("*", host):
            return True
        if allowed_host.startswith("*.") and host.endswith(allowed_host[1:]):
            return True
    return False


def _mail_address(url: str) -> str | None:
    """The address of a mailto:ops@example.cn or mailto://ops@example.cn contact, else None."""
    rest = url.partition(":")[2].removeprefix("//").removesuffix("/")
    if not _ADDRESS.fullmatch(rest):
        return None
    local, _, domain = rest.rpartition("@")
    return f"{local}@{domain.lower()}"


def _mail_url(smtp_url: str, address: str) -> str:
    """smtp_url with `address` as its only recipient."""
    base, _, query = smtp_url.partition("?")
    params = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "to"]
    return f"{base}?{urlencode([*params, ('to', address)], safe='@')}"


def _contact_channel(alerts: AlertSettings, service_id: str, url: str) -> Channel | Refusal | None:
    shown = one_line(mask_url(url))
    scheme = url.partition(":")[0].lower()
    if scheme in MAIL_SCHEMES:
        address = _mail_address(url)
        if address is None:
            return Refusal(
                service_id,
                shown,
                "expected an e-mail address such as mailto://ops@example.gov.cn (e-mail goes "
                "through alerts.smtp_url, never a server the catalogue names)",
            )
        if not _allowed(alerts.contact_allow, "mailto", address.rpartition("@")[2]):
            return Refusal(service_id, shown, "its domain is not in alerts.contact_allow")
        if alerts.smtp_url is None:
            return None  # the daemon says at start that alerts.smtp_url is not set
        return Channel(
            name=f"contact:{service_id}:mail:{address}",
            url=_mail_url(alerts.smtp_url, address),
            trusted=True,  # the config's SMTP URL; the address cannot hold a placeholder
            ident=identity(f"mailto://{address}"),
            services=(service_id,),
        )
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        host = ""
    if not _allowed(alerts.contact_allow, scheme, host):
        return Refusal(service_id, shown, "its scheme and host are not in alerts.contact_allow")
    return Channel(
        name=f"contact:{service_id}:{shown}",
        url=url,
        trusted=False,
        ident=identity(url),
        services=(service_id,),
    )


def contact_channels(
    alerts: AlertSettings, service: Service
) -> tuple[list[Channel], list[Refusal]]:
    """The channels of the contacts the catalogue lists for a service, and those refused.

    A provider writes the catalogue, so a contact is alerted only as alerts.contact_allow
    allows, and an e-mail address only through alerts.smtp_url.
    """
    channels: list[Channel] = []
    refused: list[Refusal] = []
    for contact in service.contacts:
        url = contact.get("apprise") if isinstance(contact, dict) else None
        if not isinstance(url, str) or ":" not in url:
            continue  # a contact without an address: a name to show, not a channel
        found = _contact_channel(alerts, one_line(service.id), url.strip())
        if isinstance(found, Channel):
            channels.append(found)
        elif isinstance(found, Refusal):
            refused.append(found)
    return channels, refused


def refused_contacts(settings: Settings, services: list[Service]) -> list[Refusal]:
    """The catalogue contacts of these services that are not alerted, and why."""
    if not settings.alerts.service_contacts:
        return []
    return [r for s in services for r in contact_channels(settings.alerts, s)[1]]


def _config_channels(
    alerts: AlertSettings, audience: str, incident: Incident | None
) -> list[Channel]:
    if audience in ("oncall", "storm"):
        channels = _configured("alerts.oncall", alerts.oncall)
        if incident is not None and audience == "oncall":
            for i, route in enumerate(alerts.routes):
                if _route_matches(route, incident):
                    channels += _configured(f"alerts.routes[{i}].urls", route.urls)
        return channels
    if audience.startswith("escalation:"):
        chain = alerts.escalation
        if not chain:
            return []
        level = min(int(audience.split(":", 1)[1]), len(chain))
        return _configured(f"alerts.escalation[{level - 1}].urls", chain[level - 1].urls)
    if audience == "top":
        if alerts.escalation:
            last = len(alerts.escalation) - 1
            return _configured(f"alerts.escalation[{last}].urls", alerts.escalation[last].urls)
        return _configured("alerts.oncall", alerts.oncall)
    if audience == "management":
        return _configured("alerts.management", alerts.management)
    return []


CONTACT_EVENTS = ("opened", "resolved")
"""The alerts of an incident its services' own contacts get: that it began and that it ended.
Reminders and undelivered warnings are on-call's duties (7.3.3), not the providers'."""


def audience_channels(
    settings: Settings,
    audience: str,
    incident: Incident | None,
    services: list[Service],
    kind: str,
) -> list[Channel]:
    """The channels of an audience for an alert of this kind, each destination once, in a
    stable order.

    oncall: the on-call channels, matching routes, and, for an incident's CONTACT_EVENTS, the
    services' own on-call and owner contacts from the catalogue; escalation:N: level N of the
    chain; top: the last level (or on-call when there is no chain); management: the management
    unit; storm: on-call.
    """
    channels = _config_channels(settings.alerts, audience, incident)
    if (
        audience == "oncall"
        and kind in CONTACT_EVENTS
        and incident is not None
        and settings.alerts.service_contacts
    ):
        for service in services:
            channels += contact_channels(settings.alerts, service)[0]
    unique: dict[str, Channel] = {}
    for channel in channels:
        known = unique.setdefault(channel.ident, channel)
        if known is not channel and known.services and channel.services:
            # One address filed for several of the incident's services: it hears of each.
            unique[channel.ident] = replace(known, services=known.services + channel.services)
    return list(unique.values())


def connect_host(url: str) -> str | None:
    """The host apprise connects to for this URL; None for a hosted service (fixed API host).

    For e-mail, the SMTP server: apprise's `smtp=` parameter when given, else the URL's host.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None  # apprise refuses it too
    scheme = parts.scheme.lower()
    if scheme in HOSTED_SCHEMES:
        return None
    if scheme in MAIL_SCHEMES:
        smtp = dict(parse_qsl(parts.query)).get("smtp")
        if smtp:
            return smtp.strip().lower() or None
    return parts.hostname


def missing_channel(audience: str) -> str:
    """Which config key to fill so that an audience with no channel gets its alerts."""
    if audience.startswith("escalation:"):
        return "[[alerts.escalation]]"
    keys = {
        "oncall": "alerts.oncall",
        "storm": "alerts.oncall",
        "top": "[[alerts.escalation]] or alerts.oncall",
        "management": "alerts.management",
    }
    return keys.get(audience, "[alerts]")
