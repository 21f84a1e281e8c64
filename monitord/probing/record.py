"""Recording a round: its results, their findings and the state machines, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

import rules
from monitord.config import ProbeSettings
from monitord.probing.schedule import FLUSH_SECONDS
from monitord.probing.state import (
    OWNED_RULES,
    STATE_RULES,
    MachineState,
    advance_state,
    mark_deep,
    round_states,
    seen_again,
    state_findings,
    suspension_overdue,
    unknown_state,
    write_states,
)
from monitord.probing.targets import CHEAP_KIND, ServiceTarget, not_probed
from monitord.store import Store, bound_lock_wait
from monitord.store.bulk import among, insert_rows
from monitord.store.findings import FindingBook, NewRows
from monitord.store.models import ProbeResultRow, ProbeRound, Service
from monitord.types import FindingDraft, ProbeResult

RECORD_ATTEMPTS = 5
"""Tries at recording a batch that meets rows other daemons inserted meanwhile."""
CONFLICT_STATES = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure: the transaction met another's and
was given up, with nothing written; run again, it lands."""


def met_another_transaction(exc: DBAPIError) -> bool:
    """Whether the store gave up a transaction because it met another one (a deadlock): the
    store answers, and the work is safe to run again."""
    return getattr(exc.orig, "sqlstate", None) in CONFLICT_STATES


@dataclass
class RoundReport:
    """What one round did."""

    round_id: int = 0
    services: int = 0
    probes: int = 0
    failures: int = 0
    blind: bool = False
    # Left out of the repr: a round's thousands of results and findings, which asyncio writes
    # out whole whenever it shows the task that returned the report (asyncio.run does, at
    # its end, for the task its Ctrl-C handler names: 50 ms for 2,000 results).
    changes: list[str] = field(default_factory=list, repr=False)
    deep_due: list[str] = field(default_factory=list, repr=False)
    results: list[ProbeResult] = field(default_factory=list, repr=False)
    findings: dict[int, list[FindingDraft]] = field(default_factory=dict, repr=False)
    """Findings per index into `results`, for the CLI."""


def _round_rules(results: Sequence[ProbeResult]) -> tuple[dict[str, list[str]], list[str]]:
    """The probe rules a round's results resolve, per kind (less those the state machine owns),
    and every rule whose findings the round may touch."""
    per_kind = {
        kind: [n for n in rules.probe_rule_names(kind) if n not in STATE_RULES]
        for kind in {r.kind for r in results}
    }
    touched = {name for names in per_kind.values() for name in names} | set(OWNED_RULES)
    return per_kind, sorted(touched)


def _withdrawn(session: Session, service_ids: Sequence[str]) -> set[str]:
    """Of the services a round probed, those taken out of the probes since it began (gone,
    offline, without a URL): the catalogue sync has let their findings go, and a result from
    the round's start must not bring them back (one query a batch)."""
    if not service_ids:
        return set()
    return set(
        session.scalars(
            select(Service.id).where(among(session, Service.id, service_ids), not_probed())
        )
    )


def _as_catalogued(session: Session, targets: Sequence[ServiceTarget]) -> dict[str, ServiceTarget]:
    """The targets going down, with their status and suspension as the catalogue holds them
    now (one query): a round lasts most of an interval, and a suspension filed while it ran
    must count for the outage it sees."""
    if not targets:
        return {}
    ids = [t.id for t in targets]
    now = {
        row.id: (row.status, row.suspension)
        for row in session.execute(
            select(Service.id, Service.status, Service.suspension).where(
                among(session, Service.id, ids)
            )
        )
    }
    return {
        t.id: replace(t, status=now[t.id][0], suspension=now[t.id][1]) if t.id in now else t
        for t in targets
    }


def result_row(
    result: ProbeResult, blind: bool, zone: str | None = None, *, late: bool = False
) -> dict[str, Any]:
    """The probe_results row of one result."""
    return {
        "service_id": result.service_id,
        "kind": result.kind,
        "target": result.target,
        "at": result.started_at,
        "success": result.success,
        "duration_ms": round(result.duration_ms, 2),
        "facts": result.facts,
        "error": result.error,
        "blind": blind,
        "zone": zone,
        "late": late,
    }


def write_results(
    session: Session,
    results: Sequence[ProbeResult],
    blind: bool,
    zone: str | None = None,
    *,
    late: bool = False,
) -> None:
    """Insert the results' probe_results rows in one statement."""
    insert_rows(session, ProbeResultRow, [result_row(r, blind, zone, late=late) for r in results])


def _seen_up_elsewhere(
    session: Session, zone: str, probed: Sequence[str], since: dt.datetime
) -> set[str]:
    """The services whose latest availability result from another zone since `since` passed."""
    latest: dict[str, bool] = {}
    rows = session.execute(
        select(ProbeResultRow.service_id, ProbeResultRow.success)
        .where(
            ProbeResultRow.kind == CHEAP_KIND,
            ProbeResultRow.zone != zone,
            ProbeResultRow.at >= since,
            among(session, ProbeResultRow.service_id, probed),
        )
        .order_by(ProbeResultRow.at)
    )
    for service_id, success in rows:
        if service_id is not None:
            latest[service_id] = success
    return {service_id for service_id, success in latest.items() if success}


def _other_zone_since(settings: ProbeSettings, now: dt.datetime) -> dt.datetime:
    """How far back the other zone's latest result is looked for: its last round and a half,
    and the FLUSH_SECONDS its daemon may hold a result before writing it (the other zone's
    result of this very slot is often not written yet)."""
    return now - dt.timedelta(seconds=1.5 * settings.interval_seconds + FLUSH_SECONDS)


def _judged_lately(state: MachineState, once_within: dt.timedelta | None, now: dt.datetime) -> bool:
    last = state.last_probe_at
    return once_within is not None and last is not None and now - last < once_within


def _clear_failures(state: MachineState) -> None:
    """A success judged too soon after another result to count as a round of its own still
    ends the run of failures: a service is down only when every zone keeps failing."""
    state.failures = 0
    state.failing_since = None


def unjudged_rules(result: ProbeResult) -> set[str]:
    """The rules a result cannot judge. An availability probe that resumed a TLS session
    checked no certificate: its certificate facts are those of the session's full handshake,
    minutes old, and maybe older than one recorded since (a deep tls probe, `monitord probe`
    in another process), which they would undo. Its certificate rules (those the tls kind
    shares) open and end nothing; the next full handshake judges them."""
    if result.kind == CHEAP_KIND and result.facts.get("tls_resumed") is True:
        return set(rules.probe_rule_names("tls"))
    return set()


def judged_anything(result: ProbeResult) -> bool:
    """Whether a result can end its kind's findings that it no longer draws. A deep kind (tls,
    contract, compatibility) that failed could not judge the service (it was not reached, or
    refused): what its findings say still stands, whatever else it drew. Availability always
    judges: its failures are the outage, which the state machine follows."""
    return result.success or result.kind == CHEAP_KIND


def record_results(
    store: Store,
    targets: dict[str, ServiceTarget],
    results: Sequence[ProbeResult],
    settings: ProbeSettings,
    now: dt.datetime,
    *,
    blind: bool = False,
    deep: bool = False,
    zone: str | None = None,
    once_within: dt.timedelta | None = None,
) -> RoundReport:
    """Store a round's results, judge them, and move the state machines, in one transaction
    (see _record_once).

    In a cluster several daemons may record the same service at once while the probe split
    changes hands (at a cold start every daemon probes every service for a few seconds), and
    each inserts its new state or finding: a transaction then fails on the unique key. It is
    run again, and finds the others' rows to update; each try meets at most the rows of
    daemons that committed since the last, so a few tries always land. A transaction that
    PostgreSQL gave up for a deadlock with another daemon's is run again too.
    """
    for attempt in range(RECORD_ATTEMPTS):
        try:
            return _record_once(
                store,
                targets,
                results,
                settings,
                now,
                blind=blind,
                deep=deep,
                zone=zone,
                once_within=once_within,
            )
        except (IntegrityError, OperationalError) as exc:
            conflict = isinstance(exc, IntegrityError) or met_another_transaction(exc)
            if not conflict or attempt == RECORD_ATTEMPTS - 1:
                raise
            logger.debug("a round's record met another daemon's rows: recorded again")
    raise AssertionError("unreachable")


def _record_once(
    store: Store,
    targets: dict[str, ServiceTarget],
    results: Sequence[ProbeResult],
    settings: ProbeSettings,
    now: dt.datetime,
    *,
    blind: bool = False,
    deep: bool = False,
    zone: str | None = None,
    once_within: dt.timedelta | None = None,
) -> RoundReport:
    """One attempt at recording a round.

    Whatever the number of services, this is a handful of statements: the results in one
    insert; the services' states and the open findings of the round's rules each read in one
    query; the states the round moved written in one insert (the new) and one update by key,
    the findings in one flush. Only a finding whose episode ends reads more.

    In a cluster, `zone` is the probing daemon's zone; with `probes.zones = 2` a failure moves
    a state machine only when the other zone's latest result failed too. `once_within`: a
    state machine another daemon moved this recently is not moved again (a service probed
    twice while the members rebalance, or by both zones, is judged once), except that a
    success still ends a run of failures.
    """
    report = RoundReport(
        services=len(targets), probes=len(results), blind=blind, results=list(results)
    )
    rule_names, touched = _round_rules(results)
    probed = sorted({r.service_id for r in results if r.service_id in targets})
    with store.session() as session, session.no_autoflush:
        bound_lock_wait(session)
        probe_round = ProbeRound(
            started_at=min((r.started_at for r in results), default=now),
            finished_at=now,
            kinds=sorted({r.kind for r in results}),
            services=len(targets),
            probes=len(results),
            blind=blind,
            failures=sum(1 for r in results if not r.success),
        )
        session.add(probe_round)
        write_results(session, results, blind, zone)
        report.failures = probe_round.failures
        withdrawn = _withdrawn(session, probed)
        states = round_states(session, probed)
        up_elsewhere: set[str] = set()
        if settings.zones > 1 and zone is not None and probed:
            since = _other_zone_since(settings, now)
            up_elsewhere = _seen_up_elsewhere(session, zone, probed, since)
        book = FindingBook(session, touched, "service", probed)
        written = NewRows()
        moved: dict[str, MachineState] = {}
        changed: list[tuple[MachineState, ServiceTarget, str, ProbeResult]] = []
        for index, result in enumerate(results):
            target = targets.get(result.service_id or "")
            drafts = [d for d in rules.probe_findings(result) if d.rule not in STATE_RULES]
            unjudged = unjudged_rules(result)
            drafts = [d for d in drafts if d.rule not in unjudged]
            report.findings[index] = drafts
            if target is None or target.id in withdrawn:
                continue  # withdrawn while the round ran: nothing of it is judged any more
            if blind and not result.success:
                continue  # what a blind round saw of a service is no evidence against it
            for draft in drafts:
                book.upsert(draft, now)
            if judged_anything(result):
                # Each rule on its own: a weak cipher fixed ends its finding even while the
                # same result still draws no_hsts.
                drew = {d.rule for d in drafts if d.subject == target.id} | unjudged
                ended = [rule for rule in rule_names[result.kind] if rule not in drew]
                book.resolve(ended, target.id, now)
            if result.kind == CHEAP_KIND:
                state = states.get(target.id)
                if state is None:
                    state = states[target.id] = unknown_state(target.id, now)
                elif _judged_lately(state, once_within, now):
                    if result.success and state.failures:
                        _clear_failures(state)
                        moved[target.id] = state
                    continue
                elif not result.success and target.id in up_elsewhere:
                    continue
                new_state, deep_due = advance_state(
                    written, state, target, result, settings, now, blind=blind
                )
                moved[target.id] = state
                if new_state is not None:
                    changed.append((state, target, new_state, result))
                    report.changes.append(f"{target.id} {target.name}: {new_state}")
                elif seen_again(state, result, settings):
                    changed.append((state, target, state.state, result))
                if deep_due and not deep:
                    report.deep_due.append(target.id)
                suspension_overdue(book, target, now)
        catalogued = _as_catalogued(session, [c[1] for c in changed if c[2] == "down"])
        for state, target, new_state, result in changed:
            target = catalogued.get(target.id, target)
            state_findings(book, state, target, new_state, result, now)
        if deep:
            mark_deep(session, states.keys(), now)
        book.finish()
        write_states(session, moved.values())
        written.write(session)
        session.flush()
        report.round_id = probe_round.id
    return report
