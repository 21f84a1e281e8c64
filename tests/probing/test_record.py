"""The round's finding book keeps findings and their episodes exactly as the one-finding-at-a-time
functions do: opened, seen again, resolved, reopened after their incident ended, and opened and
resolved in one round."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.store import Store, open_store
from monitord.store.findings import FindingBook, resolve_findings, upsert_finding
from monitord.store.models import Finding, FindingEpisode, Incident
from monitord.types import FindingDraft
from tests.conftest import FakeClock

RULES = ("service_down", "unannounced_outage")
SERVICES = ("svc-1", "svc-2")


def draft(rule: str, subject: str) -> FindingDraft:
    return FindingDraft(
        rule=rule,
        clause="6.4 a",
        severity="high",
        subject_kind="service",
        subject=subject,
        summary=f"{rule} {subject}",
        service_id=subject,
    )


# One round's work on the findings: (upsert or resolve, rule, subject).
Step = tuple[str, str, str]
ROUNDS: list[list[Step]] = [
    [("upsert", "service_down", "svc-1"), ("upsert", "unannounced_outage", "svc-1")],
    [("upsert", "service_down", "svc-1"), ("resolve", "unannounced_outage", "svc-1")],
    # svc-2's finding is opened and resolved in the same round.
    [("upsert", "service_down", "svc-2"), ("resolve", "service_down", "svc-2")],
    # svc-1's incident ends (below) before this round: the finding starts its next episode.
    [("upsert", "service_down", "svc-1"), ("upsert", "unannounced_outage", "svc-1")],
    [("resolve", "service_down", "svc-1"), ("resolve", "unannounced_outage", "svc-1")],
]


def by_functions(session: Session, steps: list[Step], now: dt.datetime) -> None:
    for action, rule, subject in steps:
        if action == "upsert":
            upsert_finding(session, draft(rule, subject), now)
        else:
            resolve_findings(session, [rule], "service", set(), now, subjects={subject})


def by_book(session: Session, steps: list[Step], now: dt.datetime) -> None:
    book = FindingBook(session, RULES, "service", SERVICES)
    for action, rule, subject in steps:
        if action == "upsert":
            book.upsert(draft(rule, subject), now)
        else:
            book.resolve([rule], subject, now)
    book.finish()


def history(
    store: Store, clock: FakeClock, apply: Callable[[Session, list[Step], dt.datetime], None]
) -> list[Any]:
    """Play the rounds, then the findings and episodes they left."""
    for number, steps in enumerate(ROUNDS):
        clock.advance(minutes=1)
        with store.session() as session:
            if number == 3:  # svc-1's down finding had an incident, resolved since
                row = session.scalars(select(Finding).where(Finding.subject == "svc-1")).first()
                assert row is not None
                incident = Incident(
                    kind="service_down",
                    klass="availability",
                    severity="high",
                    state="resolved",
                    group_key="svc-1",
                    detected_at=clock(),
                )
                session.add(incident)
                session.flush()
                row.incident_id = incident.id
            apply(session, steps, clock())
    with store.session() as session:
        findings = [
            (f.rule, f.subject, f.state, f.episode, f.count, f.first_seen, f.resolved_at)
            for f in session.scalars(select(Finding).order_by(Finding.rule, Finding.subject))
        ]
        rule_of = {f.id: (f.rule, f.subject) for f in session.scalars(select(Finding))}
        episodes = sorted(
            (
                rule_of[e.finding_id],
                e.number,
                e.opened_at,
                e.closed_at,
                e.close_reason,
                e.count,
                e.observed_at,
            )
            for e in session.scalars(select(FindingEpisode))
        )
    return [findings, episodes]


def test_the_book_leaves_the_findings_and_episodes_the_functions_leave(
    store: Store, tmp_path: Path
) -> None:
    """Done by the book on SQLite, the same rounds leave what the functions leave on each
    backend."""
    expected = history(store, FakeClock(), by_functions)
    other = open_store(f"sqlite:///{tmp_path / 'book.db'}")
    try:
        got = history(other, FakeClock(), by_book)
    finally:
        other.dispose()
    assert got == expected
    _, episodes = got
    reasons = [e[4] for e in episodes if e[0] == ("service_down", "svc-1")]
    assert reasons == ["incident_ended", "resolved"]
    assert [e[4] for e in episodes if e[0] == ("service_down", "svc-2")] == ["resolved"]
