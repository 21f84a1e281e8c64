"""Catalogue sync: read the portal's whole service catalogue, validate it, apply it atomically.

The contract is spec/catalogue-api.md. A sync either reads a whole, valid catalogue and applies
it in one transaction, or changes nothing and records a failed sync run with its reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from loguru import logger
from pydantic import SecretStr

from monitord.catalogue.apply import (
    CATALOGUE_RULES,
    SyncOutcome,
    apply_catalogue,
    apply_sync,
    last_etag,
    record_run,
)
from monitord.catalogue.fetch import Sleep, fetch_catalogue
from monitord.catalogue.validate import Catalogue, read_catalogue_file, validate_record
from monitord.catalogue.views import service_rows, sync_rows
from monitord.config import PortalSettings
from monitord.errors import SyncError
from monitord.store import Store
from monitord.timeutil import Clock
from monitord.workcalendar import WorkCalendar

__all__ = [
    "CATALOGUE_RULES",
    "Catalogue",
    "SyncOutcome",
    "apply_catalogue",
    "fetch_catalogue",
    "read_catalogue_file",
    "service_rows",
    "sync_catalogue",
    "sync_rows",
    "validate_record",
]


async def sync_catalogue(
    store: Store,
    settings: PortalSettings,
    token: SecretStr | None,
    clock: Clock,
    *,
    session: aiohttp.ClientSession,
    file: str | Path | None = None,
    sleep: Sleep = asyncio.sleep,
    calendar: WorkCalendar | None = None,
) -> SyncOutcome:
    """Run one sync from the portal (or from a file) and record it; never raises SyncError.

    `session` is the caller's HTTP client (the App's): the sync opens none of its own.

    The outcome is "ok", "unchanged" (HTTP 304) or "failed" with its reason.
    """
    started_at = clock()
    source = str(file) if file is not None else f"{settings.url}/api/v1/services"
    etag = None
    try:
        if file is not None:
            catalogue: Catalogue | None = read_catalogue_file(file, settings.max_field_kb)
        else:
            etag = await asyncio.to_thread(last_etag, store)
            catalogue = await fetch_catalogue(session, settings, token, etag, sleep)
        if catalogue is None:
            await asyncio.to_thread(
                record_run, store, source, started_at, clock(), "unchanged", None, etag
            )
            logger.info("catalogue unchanged (HTTP 304)")
            return SyncOutcome(outcome="unchanged")
        outcome = await asyncio.to_thread(
            apply_sync,
            store,
            catalogue,
            source,
            started_at,
            clock,
            settings.max_gone_fraction,
            calendar,
        )
    except SyncError as exc:
        reason = str(exc)
        await asyncio.to_thread(record_run, store, source, started_at, clock(), "failed", reason)
        logger.error("catalogue sync failed: {}", reason)
        return SyncOutcome(outcome="failed", reason=reason)
    for line in outcome.event_lines[:50]:
        logger.info("service event: {}", line)
    for warning in outcome.warnings[:50]:
        logger.warning("catalogue sync: {}", warning)
    logger.info(
        "catalogue synced: {} services, {} added, {} changed, {} gone, {} events",
        outcome.services_seen,
        outcome.added,
        outcome.changed,
        outcome.gone,
        outcome.events,
    )
    return outcome
