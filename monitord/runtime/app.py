"""Wiring in one place: the store, the HTTP client, the clock and the settings, handed down."""

from __future__ import annotations

from dataclasses import dataclass, field

import aiohttp

from monitord.cluster import Coordinator
from monitord.config import Settings
from monitord.probing import DeepQueue, ProbeBacklog, ProbeLimits
from monitord.store import Store, open_store
from monitord.store.models import set_writer
from monitord.timeutil import Clock, SteadyClock, system_clock


@dataclass
class App:
    """What every job gets. `settings` is swapped whole on reload; nothing else holds state.

    A context manager: `with app:` closes the store's connections on the way out, whatever
    happened; `async with app:` also opens and closes the shared HTTP client.
    """

    settings: Settings
    store: Store
    clock: Clock = system_clock
    http: aiohttp.ClientSession | None = field(default=None)
    cluster: Coordinator | None = None
    """The daemon's place among the daemons on the store (None outside `monitord run`)."""
    probe_backlog: ProbeBacklog = field(default_factory=ProbeBacklog)
    """What the probe job keeps while the store does not answer."""
    probe_window: float | None = None
    """The start (epoch seconds) of the probe job's last round window."""
    probe_limits: ProbeLimits = field(default_factory=ProbeLimits)
    """The limits the probe rounds and the deep probes share (connections per service, probes
    in flight)."""
    deep_due: DeepQueue = field(default_factory=DeepQueue)
    """The services the probe rounds found due for their deep probes."""

    async def start(self) -> None:
        """Open what needs an event loop: the shared HTTP client."""
        if self.http is None:
            self.http = aiohttp.ClientSession()

    async def close(self) -> None:
        """Close the HTTP client and the store's connections."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        self.store.dispose()

    def __enter__(self) -> App:
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.dispose()

    async def __aenter__(self) -> App:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def build_app(settings: Settings, *, clock: Clock | None = None, for_daemon: bool = False) -> App:
    """Open the store (applying migrations) and assemble the App.

    for_daemon: the store is opened for `monitord run` (see open_store), and the clock, unless
    given, is a SteadyClock (see monitord.timeutil); otherwise the system clock.
    """
    set_writer(settings.cluster.member_name())
    store = open_store(settings.store.url, for_daemon=for_daemon)
    if clock is None:
        clock = SteadyClock() if for_daemon else system_clock
    return App(settings=settings, store=store, clock=clock)
