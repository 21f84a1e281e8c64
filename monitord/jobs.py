"""The daemon's jobs, listed in one place. Each is a small async function of the App."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from monitord.app import App
from monitord.catalogue import sync_catalogue
from monitord.config import Settings


@dataclass(frozen=True)
class Job:
    """A scheduled job: its name, what it does, and how often (from the settings)."""

    name: str
    run: Callable[[App], Awaitable[None]]
    interval_seconds: Callable[[Settings], float]
    run_at_start: bool = True


async def catalogue_sync(app: App) -> None:
    """Sync the service catalogue from the portal."""
    await sync_catalogue(
        app.store,
        app.settings.portal,
        app.settings.secrets.portal_token,
        app.clock,
        session=app.http,
    )


JOBS: tuple[Job, ...] = (
    Job("catalogue-sync", catalogue_sync, lambda s: s.portal.sync_interval_seconds),
)
