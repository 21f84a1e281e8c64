"""Which apprise URLs an audience means for an incident, from the config and the catalogue."""

from __future__ import annotations

from monitord.config import AlertSettings, Route
from monitord.models import Incident, Service


def _route_matches(route: Route, incident: Incident) -> bool:
    return (
        (not route.severities or incident.severity in route.severities)
        and (not route.kinds or incident.kind in route.kinds)
        and (not route.services or bool(set(route.services) & set(incident.services)))
    )


def audience_urls(
    settings: AlertSettings,
    audience: str,
    incident: Incident | None,
    services: list[Service],
) -> list[str]:
    """The apprise URLs of an audience, without duplicates, in a stable order.

    oncall: the on-call channels, matching routes, and the services' own on-call and owner
    contacts from the catalogue; escalation:N: level N of the chain; top: the last level (or
    on-call when there is no chain); management: the management unit; storm: on-call.
    """
    urls: list[str] = []
    if audience in ("oncall", "storm"):
        urls += settings.oncall
        if incident is not None and audience == "oncall":
            for route in settings.routes:
                if _route_matches(route, incident):
                    urls += route.urls
            if settings.service_contacts:
                for service in services:
                    urls += [
                        c["apprise"]
                        for c in service.contacts
                        if isinstance(c, dict)
                        and isinstance(c.get("apprise"), str)
                        and "://" in c["apprise"]
                    ]
    elif audience.startswith("escalation:"):
        level = int(audience.split(":", 1)[1])
        chain = settings.escalation
        if chain:
            urls += chain[min(level, len(chain)) - 1].urls
    elif audience == "top":
        urls += settings.escalation[-1].urls if settings.escalation else settings.oncall
    elif audience == "management":
        urls += settings.management
    return list(dict.fromkeys(urls))


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
