"""Rounds probed while the store did not answer: kept in memory and written once it answers.

The daemon keeps probing through a store outage (a PostgreSQL restart, a cut network) with the
services it last read. What it measured then is written afterwards as late results: evidence of
availability, counted like any other result, but moving no state machine and opening no
finding, since the other daemons may have judged those services meanwhile. A backlog that
outgrows its bound drops its oldest round and says so; the rounds it dropped are written as
gaps (a probe round with no results), never silently lost.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from loguru import logger

from monitord.probing.record import write_results
from monitord.probing.targets import ServiceTarget
from monitord.store import Store, bound_lock_wait
from monitord.store.models import ProbeRound
from monitord.types import ProbeResult

MAX_RESULTS = 200_000
"""Results kept in memory at most (about 100 rounds of 2,000 services, under 100 MiB)."""


@dataclass
class UnrecordedRound:
    """One round's results that could not be written when it ended."""

    finished_at: dt.datetime
    results: list[ProbeResult]
    blind: bool
    zone: str | None


@dataclass
class ProbeBacklog:
    """The services last read from the store, and the rounds waiting to be written."""

    targets: list[ServiceTarget] = field(default_factory=list)
    rounds: deque[UnrecordedRound] = field(default_factory=deque)
    dropped: list[tuple[dt.datetime, int]] = field(default_factory=list)
    """(finished_at, results) of the rounds dropped for room: written as gaps."""
    limit: int = MAX_RESULTS
    """Results kept at most."""

    def remember(self, targets: Sequence[ServiceTarget]) -> None:
        """Keep the services as the store listed them, to probe through an outage."""
        self.targets = list(targets)

    def keep(self, round_: UnrecordedRound) -> None:
        """Keep a round that could not be written; the oldest go when over the limit."""
        self.rounds.append(round_)
        while sum(len(r.results) for r in self.rounds) > self.limit and len(self.rounds) > 1:
            oldest = self.rounds.popleft()
            self.dropped.append((oldest.finished_at, len(oldest.results)))
            logger.warning(
                "the store has not answered for a long time: the round of {} is dropped from "
                "memory and will be written as a gap",
                oldest.finished_at.isoformat(timespec="seconds"),
            )

    def __len__(self) -> int:
        return len(self.rounds)

    def write(self, store: Store) -> int:
        """Write what waits, oldest first, each round in its own transaction; returns the
        number of results written. A round stays kept until its transaction commits.

        What was written is said even when the store fails again partway: its rounds are
        in the store, and a count said only on success would leave them unaccounted."""
        written = 0
        try:
            self._write_gaps(store)
            while self.rounds:
                round_ = self.rounds[0]
                record_late(store, round_)
                written += len(round_.results)
                self.rounds.popleft()
        finally:
            if written:
                waiting = sum(len(r.results) for r in self.rounds)
                logger.info(
                    "{} probe results measured while the store did not answer are written (late){}",
                    written,
                    f"; {waiting} still wait for the store" if waiting else "",
                )
        return written

    def _write_gaps(self, store: Store) -> None:
        """Write the rounds dropped for room as gaps, oldest first."""
        while self.dropped:
            finished_at, count = self.dropped[0]
            with store.session() as session:
                bound_lock_wait(session)
                session.add(
                    ProbeRound(
                        started_at=finished_at,
                        finished_at=finished_at,
                        kinds=["gap"],
                        services=count,
                        probes=0,
                        blind=True,
                    )
                )
            self.dropped.pop(0)


def record_late(store: Store, round_: UnrecordedRound) -> None:
    """Write a round measured while the store was away: its results only, marked late."""
    results = round_.results
    with store.session() as session:
        bound_lock_wait(session)
        session.add(
            ProbeRound(
                started_at=min((r.started_at for r in results), default=round_.finished_at),
                finished_at=round_.finished_at,
                kinds=sorted({r.kind for r in results}),
                services=len({r.service_id for r in results}),
                probes=len(results),
                blind=round_.blind,
                failures=sum(1 for r in results if not r.success),
            )
        )
        write_results(session, results, round_.blind, round_.zone, late=True)
