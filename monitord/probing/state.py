"""Each service's state machine (unknown → up / degraded / down, with hysteresis) and the
findings it owns: down, unannounced outage, slow, a suspension past its planned resume."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from monitord.config import ProbeSettings
from monitord.names import probe_error_text
from monitord.probing.targets import ServiceTarget
from monitord.redact import mask_url
from monitord.store.bulk import among, insert_rows, update_rows
from monitord.store.findings import FindingBook, NewRows
from monitord.store.models import ServiceEvent, ServiceState, ServiceStateChange
from monitord.timeutil import parse_time
from monitord.types import FindingDraft, ProbeResult

# The state machine owns these: a single failed or slow result is not yet a finding.
RULE_DOWN = "service_down"
RULE_UNANNOUNCED = "unannounced_outage"
RULE_SLOW = "service_slow"
STATE_RULES = (RULE_DOWN, RULE_SLOW)
"""Declared in rules/probes.toml, where they judge one result; a round leaves them to the state
machine, which needs probes.down_after failures in a row."""
RULE_OVERDUE = "suspension_overdue"
OWNED_RULES = (RULE_DOWN, RULE_UNANNOUNCED, RULE_SLOW, RULE_OVERDUE)
"""The rules whose findings the state machine opens and resolves."""


@dataclass(slots=True)
class MachineState:
    """A service's state machine as a round reads and moves it: its `service_states` row as
    plain values. A round moves thousands of them; as ORM objects, loading and flushing them
    cost more than judging them."""

    service_id: str
    state: str
    since: dt.datetime
    failures: int = 0
    successes: int = 0
    last_probe_at: dt.datetime | None = None
    last_error: str | None = None
    cert_fingerprint: str | None = None
    last_deep_at: dt.datetime | None = None
    failing_since: dt.datetime | None = None
    read: tuple[Any, ...] = ()
    """The moved columns' values as read, to write only what changed (`write_states`); empty
    for a service never probed before, whose row is inserted."""


_STATE_COLUMNS = [f.name for f in dataclasses.fields(MachineState) if f.name != "read"]
_MOVED_COLUMNS = [c for c in _STATE_COLUMNS if c != "last_deep_at"]
"""What a probe moves: everything but when the deep probes last ran, which their own
rounds write (`mark_deep`), so neither overwrites the other's."""


_moved_values: Callable[[MachineState], tuple[Any, ...]] = operator.attrgetter(*_MOVED_COLUMNS)
"""A state's moved columns' values, in `_MOVED_COLUMNS` order."""


def _cert_fingerprint(facts: dict[str, Any]) -> str | None:
    parts = [facts.get(k) for k in ("cert_subject", "cert_issuer", "cert_not_after")]
    if not any(parts):
        return None
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _draft(
    rule: str,
    clause: str,
    severity: Any,
    target: ServiceTarget,
    summary: str,
    evidence: dict[str, Any],
    *,
    occurred_at: dt.datetime | None = None,
) -> FindingDraft:
    return FindingDraft(
        rule=rule,
        clause=clause,
        severity=severity,
        subject_kind="service",
        subject=target.id,
        summary=summary,
        evidence=evidence,
        service_id=target.id,
        occurred_at=occurred_at,
    )


def _judge(result: ProbeResult, settings: ProbeSettings) -> str:
    """What one availability result says on its own: fail, slow or ok."""
    if not result.success:
        return "fail"
    if result.duration_ms > settings.slo_ms:
        return "slow"
    return "ok"


def seen_again(state: MachineState, result: ProbeResult, settings: ProbeSettings) -> bool:
    """Whether a result that moved nothing shows the service as its state says (down and
    failing, degraded and slow): the state's finding was seen again, and its last seen and
    count move on (they stood at the moment the state changed)."""
    verdict = _judge(result, settings)
    return (state.state, verdict) in (("down", "fail"), ("degraded", "slow"))


def advance_state(
    written: NewRows,
    state: MachineState,
    target: ServiceTarget,
    result: ProbeResult,
    settings: ProbeSettings,
    now: dt.datetime,
    *,
    blind: bool,
) -> tuple[str | None, bool]:
    """Move one service's state machine (`state`, read with the round's others by
    `round_states`); returns (the new state if it changed, deep probe due). The event and
    state change it records go to `written`."""
    verdict = _judge(result, settings)
    state.last_probe_at = now
    state.last_error = result.error
    if verdict == "fail":
        if not blind:  # a blind round says nothing about the service
            if state.failures == 0:
                state.failing_since = result.started_at
            state.failures += 1
            state.successes = 0
    else:
        state.successes += 1
        state.failures = 0
        state.failing_since = None
    new = state.state
    if state.failures >= settings.down_after:
        new = "down"
    elif verdict != "fail":
        recovering = state.state == "down" and state.successes < settings.up_after
        if not recovering:
            new = "degraded" if verdict == "slow" else "up"
    # A resumed handshake's certificate is the one a full handshake saw minutes ago: not news.
    fingerprint = (
        None if result.facts.get("tls_resumed") is True else _cert_fingerprint(result.facts)
    )
    deep_due = (
        state.last_deep_at is None
        or now - state.last_deep_at >= dt.timedelta(hours=settings.deep_interval_hours)
        or (
            fingerprint is not None
            and fingerprint != state.cert_fingerprint
            and state.cert_fingerprint is not None
        )
    ) and verdict != "fail"
    if fingerprint is not None:
        state.cert_fingerprint = fingerprint
    if new == state.state:
        return None, deep_due
    written.add(
        ServiceEvent,
        {
            "service_id": target.id,
            "kind": new,
            "at": now,
            "from_status": state.state,
            "to_status": new,
            "detail": {"error": result.error, "duration_ms": round(result.duration_ms, 1)},
        },
    )
    # Kept at least store.retention_days (7.3.1), whatever becomes of the service events.
    written.add(
        ServiceStateChange,
        {
            "service_id": target.id,
            "at": now,
            "from_state": state.state,
            "to_state": new,
            "reason": result.error,
        },
    )
    state.state = new
    state.since = now
    return new, deep_due


def round_states(
    session: Session, service_ids: list[str], *, lock: bool = True
) -> dict[str, MachineState]:
    """The state machines these services have, read in one query and locked until the round's
    transaction ends (on PostgreSQL), in the order of their ids: two daemons recording the same
    services take the rows in the same order, so one waits for the other instead of both
    deadlocking halfway through their updates. `lock=False` reads without locking."""
    query = (
        select(*(getattr(ServiceState, name) for name in _STATE_COLUMNS))
        .where(among(session, ServiceState.service_id, sorted(set(service_ids))))
        .order_by(ServiceState.service_id)
    )
    if lock:
        query = query.with_for_update()
    states = {row.service_id: MachineState(*row) for row in session.execute(query).all()}
    for state in states.values():
        state.read = _moved_values(state)
    return states


def unknown_state(service_id: str, now: dt.datetime) -> MachineState:
    """The state machine of a service never probed before."""
    return MachineState(service_id=service_id, state="unknown", since=now)


def write_states(session: Session, moved: Iterable[MachineState]) -> None:
    """Write the state machines a round moved: one insert for the new, and one update by key
    for each set of columns that changed (a round of healthy services changes the same two
    in every row: one statement), whatever their number."""
    new: list[dict[str, Any]] = []
    changes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for state in moved:
        values = _moved_values(state)
        if not state.read:
            new.append(dict(zip(_MOVED_COLUMNS, values, strict=True)))
        else:
            changed = {
                name: value
                for name, before, value in zip(_MOVED_COLUMNS, state.read, values, strict=True)
                if value != before
            }
            if changed:
                changed["service_id"] = state.service_id
                changes.setdefault(tuple(changed), []).append(changed)
        state.read = values
    insert_rows(session, ServiceState, new)
    for rows in changes.values():
        update_rows(session, ServiceState, "service_id", rows)


def mark_deep(session: Session, service_ids: Iterable[str], now: dt.datetime) -> None:
    """Note that the deep probes of these services ran at `now`."""
    ids = sorted(set(service_ids))
    if ids:
        session.execute(
            update(ServiceState)
            .where(among(session, ServiceState.service_id, ids))
            .values(last_deep_at=now)
        )


def state_findings(
    book: FindingBook,
    state: MachineState,
    target: ServiceTarget,
    new_state: str,
    result: ProbeResult,
    now: dt.datetime,
) -> None:
    """Findings the state machine owns: down, unannounced outage, slow."""
    suspended = target.status == "suspended" and bool(target.suspension)
    evidence = {
        "error": result.error,
        "duration_ms": round(result.duration_ms, 1),
        "url": mask_url(result.target),
    }
    present: set[str] = set()
    began = state.failing_since
    if new_state == "down" and not suspended:
        book.upsert(
            _draft(
                RULE_DOWN,
                "6.4 a",
                "high",
                target,
                f"服务不可用：{probe_error_text(result.error or '探测失败')}",
                evidence,
                occurred_at=began,
            ),
            now,
        )
        book.upsert(
            _draft(
                RULE_UNANNOUNCED,
                "7.2.2",
                "medium",
                target,
                "服务中断且未报备暂停申请",
                evidence,
                occurred_at=began,
            ),
            now,
        )
        present = {RULE_DOWN, RULE_UNANNOUNCED}
    if new_state == "degraded":
        book.upsert(
            _draft(
                RULE_SLOW,
                "6.4 b",
                "medium",
                target,
                f"响应缓慢：{result.duration_ms:.0f} ms",
                evidence,
            ),
            now,
        )
        present = {RULE_SLOW}
    gone = [rule for rule in (RULE_DOWN, RULE_UNANNOUNCED, RULE_SLOW) if rule not in present]
    book.resolve(gone, target.id, now)


def suspension_overdue(book: FindingBook, target: ServiceTarget, now: dt.datetime) -> None:
    """A suspended service past its planned resume has a finding; any other has none."""
    planned = (target.suspension or {}).get("planned_resume")
    overdue = False
    if target.status == "suspended" and isinstance(planned, str):
        try:
            overdue = parse_time(planned) < now
        except ValueError:
            overdue = False
    if overdue:
        book.upsert(
            _draft(
                RULE_OVERDUE,
                "7.2.2",
                "low",
                target,
                f"暂停已超过计划恢复时间 {planned}",
                {"suspension": target.suspension},
            ),
            now,
        )
    else:
        book.resolve([RULE_OVERDUE], target.id, now)
