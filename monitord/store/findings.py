"""Storing findings: one row per rule and subject, episode after episode.

A finding is open while what it reports lasts. When it stops — resolved by the check that
raised it, quiet for its rule's quiet period, or handled (its incident resolved or closed) —
and then happens again, that is a new episode: the row starts afresh (first_seen, count, no
incident, so the intake opens a new incident with a new two-hour clock), and the episode before
is kept in `finding_episodes` for the quarterly report.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import Session

from monitord.store.bulk import among, insert_rows
from monitord.store.models import Base, Finding, FindingEpisode, Incident
from monitord.types import SEVERITY_RANK, FindingDraft

ENDED_INCIDENT_STATES = ("resolved", "closed")


def _episode_values(row: Finding, now: dt.datetime) -> dict[str, Any]:
    """The record of the episode a finding opens now."""
    return {
        "finding_id": row.id,
        "number": row.episode,
        "severity": row.severity,
        "summary": row.summary,
        "opened_at": now,
        "occurred_at": row.occurred_at or now,
    }


def _open_episode(session: Session, row: Finding, now: dt.datetime) -> None:
    session.add(FindingEpisode(**_episode_values(row, now)))


class NewRows:
    """Rows that are only added, never read back: written at the end in one insert per table
    (`bulk.insert_rows`), whatever their number (the ORM would insert each row that has an
    autoincrement key on its own to read that key back)."""

    def __init__(self) -> None:
        self._rows: dict[type[Base], list[dict[str, Any]]] = {}

    def add(self, model: type[Base], values: dict[str, Any]) -> None:
        """A row of `model` to insert."""
        self._rows.setdefault(model, []).append(values)

    def write(self, session: Session) -> None:
        """Insert the rows, one statement per table."""
        for model, rows in self._rows.items():
            insert_rows(session, model, rows)
        self._rows = {}


def _close_episode(session: Session, row: Finding, closed_at: dt.datetime, reason: str) -> None:
    """Complete the current episode's record from the finding's live values."""
    episode = session.scalars(
        select(FindingEpisode).where(
            FindingEpisode.finding_id == row.id, FindingEpisode.number == row.episode
        )
    ).one_or_none()
    _complete_episode(session, episode, row, closed_at, reason)


def _complete_episode(
    session: Session,
    episode: FindingEpisode | None,
    row: Finding,
    closed_at: dt.datetime,
    reason: str,
) -> None:
    """Complete `episode`, the finding's current one (None: it has no record yet)."""
    if episode is None:  # a finding stored before episodes were kept and never migrated
        episode = FindingEpisode(
            finding_id=row.id,
            number=row.episode,
            severity=row.severity,
            opened_at=row.first_seen,
            occurred_at=row.occurred_at or row.first_seen,
        )
        session.add(episode)
    if SEVERITY_RANK.get(row.severity, 0) > SEVERITY_RANK.get(episode.severity, 0):
        episode.severity = row.severity
    episode.summary = row.summary
    episode.closed_at = closed_at
    episode.observed_at = row.observed_at or row.last_seen
    episode.count = row.count
    episode.incident_id = row.incident_id
    episode.close_reason = reason


def _ended_by(
    row: Finding, draft: FindingDraft, observed: dt.datetime, incident_state: str | None
) -> str | None:
    """Why the finding's current episode is over, so that `draft` starts the next one.

    incident_state: the state of the finding's incident, if it has one."""
    if row.state == "resolved":
        return "resolved"
    if row.state == "accepted":
        return None  # an accepted risk stays one episode until its acceptance expires
    last = row.observed_at or row.last_seen
    if draft.quiet_minutes is not None and observed - last > dt.timedelta(
        minutes=draft.quiet_minutes
    ):
        return "quiet"
    if incident_state in ENDED_INCIDENT_STATES:
        return "incident_ended"
    return None


def _new_finding(draft: FindingDraft, now: dt.datetime) -> Finding:
    """A finding's first episode, not yet added to any session."""
    return Finding(
        rule=draft.rule,
        clause=draft.clause,
        severity=draft.severity,
        subject_kind=draft.subject_kind,
        subject=draft.subject,
        service_id=draft.service_id,
        summary=draft.summary,
        evidence=draft.evidence,
        first_seen=now,
        last_seen=now,
        count=1,
        state="open",
        episode=1,
        occurred_at=draft.occurred_at or now,
        observed_at=draft.observed_at or now,
        resolved_at=None,
        incident_id=None,
    )


def _update_finding(
    session: Session,
    row: Finding,
    draft: FindingDraft,
    now: dt.datetime,
    incident_state: str | None,
) -> Finding:
    """Update a stored finding's current episode, or start its next one."""
    occurred = draft.occurred_at or now
    observed = draft.observed_at or now
    ended = _ended_by(row, draft, observed, incident_state)
    if ended is not None:
        _close_episode(session, row, row.resolved_at or row.last_seen, ended)
        row.episode += 1
        row.state = "open"
        row.resolved_at = None
        row.incident_id = None  # for the incident intake to judge afresh: a new clock
        row.first_seen = now
        row.count = 0
        row.occurred_at = occurred
        row.observed_at = observed
        row.severity = draft.severity
        row.summary = draft.summary
        _open_episode(session, row, now)
    row.clause = draft.clause
    row.severity = draft.severity
    row.summary = draft.summary
    row.evidence = draft.evidence
    row.service_id = draft.service_id
    row.last_seen = now
    row.observed_at = max(row.observed_at or observed, observed)
    row.count += 1
    return row


def upsert_finding(session: Session, draft: FindingDraft, now: dt.datetime) -> Finding:
    """Open a finding, update its current episode, or start its next episode.

    An accepted finding stays accepted; its evidence and last_seen still move on.
    """
    row = session.scalars(
        select(Finding).where(
            Finding.rule == draft.rule,
            Finding.subject_kind == draft.subject_kind,
            Finding.subject == draft.subject,
        )
    ).one_or_none()
    if row is None:
        row = _new_finding(draft, now)
        session.add(row)
        session.flush()
        _open_episode(session, row, now)
        return row
    incident_state = None
    if row.incident_id is not None:
        incident_state = session.scalar(
            select(Incident.state).where(Incident.id == row.incident_id)
        )
    return _update_finding(session, row, draft, now, incident_state)


def resolve_findings(
    session: Session,
    rules: Iterable[str],
    subject_kind: str,
    still_present: set[str],
    now: dt.datetime,
    subjects: set[str] | None = None,
) -> int:
    """Resolve open findings of these rules whose subject is no longer present.

    When `subjects` is given only those subjects are considered (a partial re-check); otherwise
    every open finding of the rules is. Each resolved finding's episode is closed. Returns how
    many were resolved.
    """
    query = select(Finding).where(
        Finding.rule.in_(list(rules)),
        Finding.subject_kind == subject_kind,
        Finding.state == "open",
    )
    if subjects is not None:
        query = query.where(among(session, Finding.subject, sorted(subjects)))
    resolved = 0
    for row in session.scalars(query):
        if row.subject in still_present:
            continue
        resolve_finding(session, row, now)
        resolved += 1
    return resolved


def resolve_finding(session: Session, row: Finding, now: dt.datetime) -> None:
    """Resolve one finding now and close its current episode (an acceptance ends with it)."""
    row.state = "resolved"
    row.resolved_at = now
    _close_episode(session, row, now, "resolved")


class FindingBook:
    """The findings of some rules on some subjects, read in one query, so that a probe round
    upserts and resolves them for thousands of services without a query per service.

    Behaves as `upsert_finding` and `resolve_findings` do; call `finish` once at the end: it
    closes the episodes of the findings resolved and writes the findings created, each with its
    first episode, in a few statements whatever their number.
    """

    def __init__(
        self, session: Session, rules: Iterable[str], subject_kind: str, subjects: Iterable[str]
    ) -> None:
        self._session = session
        self._subject_kind = subject_kind
        self._rules = set(rules)
        self._subjects = set(subjects)
        wanted = sorted(self._subjects)
        rows = (
            session.scalars(
                select(Finding).where(
                    Finding.rule.in_(sorted(self._rules)),
                    Finding.subject_kind == subject_kind,
                    among(session, Finding.subject, wanted),
                )
            ).all()
            if wanted
            else []
        )
        self._rows = {(row.rule, row.subject): row for row in rows}
        incident_ids = sorted({row.incident_id for row in rows if row.incident_id is not None})
        self._incident_states: dict[int, str] = (
            {
                incident_id: state
                for incident_id, state in session.execute(
                    select(Incident.id, Incident.state).where(Incident.id.in_(incident_ids))
                )
            }
            if incident_ids
            else {}
        )
        self._created: list[Finding] = []
        self._resolved: list[Finding] = []

    def upsert(self, draft: FindingDraft, now: dt.datetime) -> Finding:
        """`upsert_finding`, without a query when the book was opened for the draft's rule and
        subject."""
        if not self._covers(draft.rule, draft.subject_kind, draft.subject):
            return upsert_finding(self._session, draft, now)
        row = self._rows.get((draft.rule, draft.subject))
        if row is None:  # written by `finish`, with every other new one
            row = _new_finding(draft, now)
            self._rows[(draft.rule, draft.subject)] = row
            self._created.append(row)
            return row
        state = self._incident_states.get(row.incident_id) if row.incident_id else None
        return _update_finding(self._session, row, draft, now, state)

    def resolve(self, rules: Iterable[str], subject: str, now: dt.datetime) -> int:
        """Resolve the open findings of these rules on `subject`; returns how many."""
        resolved = 0
        for rule in rules:
            if rule not in self._rules or subject not in self._subjects:
                raise ValueError(f"finding book: {rule} on {subject} was not read")
            row = self._rows.get((rule, subject))
            if row is None or row.state != "open":
                continue
            # The episode is closed by `finish`, with every other one the round ends.
            row.state, row.resolved_at = "resolved", now
            if row.id is not None:  # one the book created is written by `finish` as resolved
                self._resolved.append(row)
            resolved += 1
        return resolved

    def _covers(self, rule: str, subject_kind: str, subject: str) -> bool:
        return (
            rule in self._rules and subject_kind == self._subject_kind and subject in self._subjects
        )

    def finish(self) -> None:
        """Close the episodes of the findings the book resolved, and write the findings it
        created with their first episodes: a few statements, whatever their number."""
        self._close_resolved()
        self._write_created()

    def _close_resolved(self) -> None:
        # A finding resolved and then seen again in the round had its episode closed then.
        rows = [row for row in self._resolved if row.state == "resolved"]
        self._resolved = []
        if not rows:
            return
        keys = [(row.id, row.episode) for row in rows]
        query = select(FindingEpisode).where(
            tuple_(FindingEpisode.finding_id, FindingEpisode.number).in_(keys)
        )
        episodes = {(e.finding_id, e.number): e for e in self._session.scalars(query)}
        for row in rows:
            episode = episodes.get((row.id, row.episode))
            _complete_episode(
                self._session, episode, row, row.resolved_at or row.last_seen, "resolved"
            )

    def _write_created(self) -> None:
        if not self._created:
            return
        values = [{key: getattr(row, key) for key in sa_inspect(row).dict} for row in self._created]
        self._session.execute(insert(Finding), values)
        ids = {
            (rule, subject): finding_id
            for finding_id, rule, subject in self._session.execute(
                select(Finding.id, Finding.rule, Finding.subject).where(
                    Finding.rule.in_(sorted({row.rule for row in self._created})),
                    Finding.subject_kind == self._subject_kind,
                    Finding.subject.in_(sorted({row.subject for row in self._created})),
                )
            )
        }
        episodes = NewRows()
        for row in self._created:
            row.id = ids[(row.rule, row.subject)]
            episode = _episode_values(row, row.first_seen)
            resolved = row.resolved_at is not None  # in the very round that opened it
            episode.update(
                closed_at=row.resolved_at,
                observed_at=(row.observed_at or row.last_seen) if resolved else None,
                count=row.count if resolved else None,
                incident_id=None,
                close_reason="resolved" if resolved else None,
            )
            episodes.add(FindingEpisode, episode)
        episodes.write(self._session)
        self._created = []


def finding_dict(finding: Finding) -> dict[str, Any]:
    """A finding as plain JSON-ready values (the CLI's and the API's shape)."""

    def iso(value: dt.datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": finding.id,
        "rule": finding.rule,
        "clause": finding.clause,
        "severity": finding.severity,
        "state": finding.state,
        "service_id": finding.service_id,
        "subject": finding.subject,
        "summary": finding.summary,
        "first_seen": finding.first_seen.isoformat(),
        "last_seen": finding.last_seen.isoformat(),
        "count": finding.count,
        "evidence": finding.evidence,
        "incident_id": finding.incident_id,
        "accepted_reason": finding.accepted_reason,
        "accepted_by": finding.accepted_by,
        "accepted_until": iso(finding.accepted_until),
        "resolved_at": iso(finding.resolved_at),
    }
