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
from dataclasses import dataclass

from monitord.config import AlertSettings, Route, Settings
from monitord.models import Incident, Service
from monitord.redact import mask_url


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


def contact_channels(service: Service) -> list[Channel]:
    """The channels of the contacts that the catalogue lists for a service."""
    urls = [
        c["apprise"]
        for c in service.contacts
        if isinstance(c, dict) and isinstance(c.get("apprise"), str) and "://" in c["apprise"]
    ]
    return [
        Channel(
            name=f"contact:{service.id}:{mask_url(url)}",
            url=url,
            trusted=False,
            ident=identity(url),
        )
        for url in urls
    ]


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


def audience_channels(
    settings: Settings,
    audience: str,
    incident: Incident | None,
    services: list[Service],
) -> list[Channel]:
    """The channels of an audience, each destination once, in a stable order.

    oncall: the on-call channels, matching routes, and the services' own on-call and owner
    contacts from the catalogue; escalation:N: level N of the chain; top: the last level (or
    on-call when there is no chain); management: the management unit; storm: on-call.
    """
    channels = _config_channels(settings.alerts, audience, incident)
    if audience == "oncall" and incident is not None and settings.alerts.service_contacts:
        for service in services:
            channels += contact_channels(service)
    unique: dict[str, Channel] = {}
    for channel in channels:
        unique.setdefault(channel.ident, channel)
    return list(unique.values())


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
