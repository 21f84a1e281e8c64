"""Storing findings: one row per rule and subject, opened, updated while it lasts, resolved."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.models import Finding
from monitord.types import FindingDraft


def upsert_finding(session: Session, draft: FindingDraft, now: dt.datetime) -> Finding:
    """Open a finding, or update the open one with the same rule and subject.

    A resolved finding that comes back is reopened (its first_seen kept) rather than duplicated.
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
        row = Finding(
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
        )
        session.add(row)
        return row
    if row.state == "resolved":
        row.state = "open"
        row.resolved_at = None
        row.incident_id = None  # back for the incident intake to judge afresh
    row.clause = draft.clause
    row.severity = draft.severity
    row.summary = draft.summary
    row.evidence = draft.evidence
    row.service_id = draft.service_id
    row.last_seen = now
    row.count += 1
    return row


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
    every open finding of the rules is. Returns how many were resolved.
    """
    query = select(Finding).where(
        Finding.rule.in_(list(rules)),
        Finding.subject_kind == subject_kind,
        Finding.state == "open",
    )
    resolved = 0
    for row in session.scalars(query):
        if row.subject in still_present:
            continue
        if subjects is not None and row.subject not in subjects:
            continue
        row.state = "resolved"
        row.resolved_at = now
        resolved += 1
    return resolved
