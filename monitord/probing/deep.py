"""The services due for their deep probes, between the round that found them due and the deep
round that runs them (the daemon runs its deep rounds beside its availability rounds)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable

from monitord.probing.targets import ServiceTarget


class DeepQueue:
    """Services waiting for their deep probes, each once.

    A round reads when a service's deep probes last ran before it records the service, so a
    round that began before a deep round recorded them finds it due again: that finding is
    stale, and is dropped, as is one for a service whose deep probes are running.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, ServiceTarget] = {}
        self._running: set[str] = set()
        self._recorded: dict[str, dt.datetime] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, targets: Iterable[ServiceTarget], round_began: dt.datetime) -> None:
        """Queue the services a round that began at `round_began` found due."""
        for target in targets:
            recorded = self._recorded.get(target.id)
            if target.id in self._running or (recorded is not None and recorded >= round_began):
                continue
            self._waiting[target.id] = target

    def take(self, mine: Callable[[str], bool] | None = None) -> list[ServiceTarget]:
        """Every waiting service, now running; `mine`: whether this daemon probes a service
        (the others are dropped: their daemon's rounds find them due)."""
        taken = [t for t in self._waiting.values() if mine is None or mine(t.id)]
        self._waiting.clear()
        self._running.update(t.id for t in taken)
        return taken

    def done(self, taken: Iterable[ServiceTarget], recorded_at: dt.datetime | None) -> None:
        """The deep round of `taken` ended: recorded at `recorded_at`, or (None) not recorded,
        and they wait again."""
        for target in taken:
            self._running.discard(target.id)
            if recorded_at is None:
                self._waiting.setdefault(target.id, target)
            else:
                self._recorded[target.id] = recorded_at
