"""The compliance engine: every rule of rules/compliance.toml judged over a quarter's stored
evidence, one check function per rule kind.

A check reads, never writes. It judges each event (a go-live, an outage, a take-down notice, an
incident) in the quarter it happened, and each service over the part of the quarter it was
online. A quarter still running is judged up to now: its verdicts say where it stands so far.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, func, or_, select
from sqlalchemy.orm import Session

import rules
from monitord.config import MIN_RETENTION_DAYS, Settings
from monitord.errors import RuleError, UsageError
from monitord.store.history import (
    AVAILABILITY,
    SERVICES_PER_QUERY,
    TICK,
    Period,
    ProbeStats,
    Tally,
    catalogue_as_of,
    last_records,
    online_services,
    probe_quarter,
    quiet_windows,
    raw_results,
    rolled_up_until,
    rollup_sums,
    service_periods,
    state_changes,
    window_end,
)
from monitord.store.models import (
    SCANNED,
    AdminReview,
    ComplianceResult,
    EvidenceDocument,
    Finding,
    FindingEpisode,
    Incident,
    IncidentEvent,
    LogAudit,
    ProbeResultRow,
    ProbeRollup,
    Scan,
    Service,
    ServiceEvent,
    ServiceStateChange,
    SyncRun,
)
from monitord.store.retention import judged_records_purged_before
from monitord.timeutil import (
    SHANGHAI,
    begun_quarter_bounds,
    parse_time,
    quarter_bounds,
    quarter_start,
)
from monitord.types import IN_SERVICE, ComplianceVerdict
from monitord.workcalendar import WorkCalendar

HOUR = dt.timedelta(hours=1)
NOTIFICATION_PARTS = ("scope", "harm", "measures", "rectification")
"""The four parts clause 7.3.3 asks of a notification, as monitord.incidents stores them in its
"notified" timeline event."""
SERIOUS = ("medium", "high", "critical")
LISTED = 20
"""At most this many items of a kind are listed in a verdict's evidence (the count is whole)."""


class ComplianceRule(Protocol):
    """What a check reads of its rule (rules/compliance.toml, reached through the registry)."""

    @property
    def name(self) -> str: ...
    @property
    def clause(self) -> str: ...
    @property
    def check(self) -> str: ...
    @property
    def params(self) -> Mapping[str, Any]: ...


def iso(moment: dt.datetime | None) -> str | None:
    """A time as the evidence shows it: ISO 8601 in Asia/Shanghai, to the second."""
    return None if moment is None else moment.astimezone(SHANGHAI).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Episode:
    """A finding's episode: when it happened and until when (None: still open)."""

    finding_id: int
    rule: str
    service_id: str
    severity: str
    began: dt.datetime
    ended: dt.datetime | None

    def overlaps(self, start: dt.datetime, end: dt.datetime) -> bool:
        """Whether it was open at some moment of [start, end)."""
        return self.began < end and (self.ended is None or self.ended > start)

    def shown(self) -> dict[str, Any]:
        """The episode as a verdict's evidence lists it."""
        return {
            "rule": self.rule,
            "finding": self.finding_id,
            "severity": self.severity,
            "from": iso(self.began),
            "to": iso(self.ended),
        }


@dataclass
class Quarter:
    """One quarter as the checks see it: its bounds, the services' lifecycle periods in it and
    their records, and what several checks share (read once, on first use)."""

    session: Session
    settings: Settings
    label: str
    start: dt.datetime
    end: dt.datetime
    until: dt.datetime
    """The end of what is judged: the quarter's end, or now while it runs."""
    periods: dict[str, list[Period]]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each service's record when it was last in the catalogue during the quarter."""

    @property
    def running(self) -> bool:
        """Whether the quarter is still running (judged up to now): a duty due after its end
        is pending, not failed."""
        return self.until < self.end

    def online_services(self) -> list[str]:
        """The services online at some moment of the quarter, by id."""
        return online_services(self.periods)

    def spans(self, service_id: str, *statuses: str) -> list[tuple[dt.datetime, dt.datetime]]:
        """The service's periods in the quarter with one of `statuses`."""
        return [(a, b) for a, b, s in self.periods.get(service_id, []) if s in statuses]

    def record(self, service_id: str) -> dict[str, Any]:
        """The service's catalogue record as the quarter last saw it ({} when unknown)."""
        return self.records.get(service_id, {})

    @cached_property
    def probes(self) -> dict[str, ProbeStats]:
        """Each service's availability probes over the quarter (so far). Read once per session:
        the verdicts and the scores judged in one session share them (the costliest read)."""
        shared = self.session.info.setdefault("monitord.compliance.probes", {})
        key = (self.start, self.until)
        if key not in shared:
            shared[key] = probe_quarter(self.session, self.start, self.until)
        stats: dict[str, ProbeStats] = shared[key]
        return stats

    def stats(self, service_id: str) -> ProbeStats | None:
        """The service's availability figures over the hours it was online in the quarter: a
        suspension's outage is not counted against its uptime (the service is probed while
        suspended); an hour online only in part counts whole (_spans_stats). None when it had
        no probe then."""
        if self.spans(service_id, "online") == [(self.start, self.until)]:
            return self.probes.get(service_id)
        return self._part_time_stats.get(service_id)

    @cached_property
    def _part_time_stats(self) -> dict[str, ProbeStats]:
        """The figures of every service online only part of the quarter, read at once (one
        service at a time took minutes for a city's catalogue)."""
        spans = {
            service_id: online
            for service_id in self.periods
            if (online := self.spans(service_id, "online")) != [(self.start, self.until)]
        }
        return _spans_stats(self.session, spans, self.rolled_until, self.until)

    @cached_property
    def rolled_until(self) -> dt.datetime | None:
        """Raw results before this moment are in the roll-ups (read once)."""
        return rolled_up_until(self.session)

    @cached_property
    def calendar(self) -> WorkCalendar:
        """The Chinese working-day calendar, with the config's overrides."""
        return WorkCalendar.from_settings(self.settings.logs)

    def events(self, *kinds: str) -> list[ServiceEvent]:
        """The service events of these kinds in the quarter, in time order."""
        return list(
            self.session.scalars(
                select(ServiceEvent)
                .where(
                    ServiceEvent.kind.in_(kinds),
                    ServiceEvent.at >= self.start,
                    ServiceEvent.at < self.until,
                )
                .order_by(ServiceEvent.at, ServiceEvent.id)
            )
        )

    @cached_property
    def filed_targets(self) -> dict[str, dict[str, Any]]:
        """The targets ("slo") each service's catalogue record files, as the store holds it now
        (the revisions keep the filing's columns, not the whole raw record)."""
        return {
            service_id: raw["slo"]
            for service_id, raw in self.session.execute(select(Service.id, Service.raw))
            if isinstance(raw, dict) and isinstance(raw.get("slo"), dict)
        }

    def target(self, service_id: str, key: str, default: float) -> tuple[float, str]:
        """The service's own target `key` of its filing ("slo": {key: ...}, in its record then,
        else in its raw record now) and "filing"; else `default` and "config". The sync keeps
        no uptime target outside a sane range (catalogue validation flags it instead)."""
        slo = self.record(service_id).get("slo") or self.filed_targets.get(service_id)
        value = slo.get(key) if isinstance(slo, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value), "filing"
        return default, "config"

    def verdict(
        self, rule: ComplianceRule, service_id: str | None, passed: bool, **evidence: Any
    ) -> ComplianceVerdict:
        """A verdict of `rule` on a service (None: the platform) for this quarter."""
        return ComplianceVerdict(
            rule=rule.name,
            clause=rule.clause,
            service_id=service_id,
            quarter=self.label,
            passed=passed,
            evidence=evidence,
        )


def _clock_hours(
    spans: list[tuple[dt.datetime, dt.datetime]], until: dt.datetime
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The spans widened to the clock hours they touch (not past `until`), overlapping or
    touching ones joined: an hour online only in part counts whole."""
    joined: list[tuple[dt.datetime, dt.datetime]] = []
    for a, b in sorted(spans):
        first = a.replace(minute=0, second=0, microsecond=0)
        last = b.replace(minute=0, second=0, microsecond=0)
        stop = min(last if last == b else last + HOUR, until)
        if joined and first <= joined[-1][1]:
            joined[-1] = (joined[-1][0], max(joined[-1][1], stop))
        else:
            joined.append((first, stop))
    return joined


def _rollups_in(
    spans: Mapping[str, list[tuple[dt.datetime, dt.datetime]]],
) -> ColumnElement[bool]:
    """The availability roll-ups of each service's hours in its `spans`."""
    return or_(
        *(
            and_(ProbeRollup.service_id == service_id, ProbeRollup.hour >= a, ProbeRollup.hour < b)
            for service_id, ranges in spans.items()
            for a, b in ranges
        )
    )


def _batches(
    spans: Mapping[str, list[tuple[dt.datetime, dt.datetime]]],
) -> Iterable[dict[str, list[tuple[dt.datetime, dt.datetime]]]]:
    """`spans` in parts of SERVICES_PER_QUERY services, the services without a span left out:
    one query per part, each walking its services' hours along the roll-ups' key."""
    ids = sorted(service_id for service_id, ranges in spans.items() if ranges)
    for first in range(0, len(ids), SERVICES_PER_QUERY):
        yield {
            service_id: spans[service_id] for service_id in ids[first : first + SERVICES_PER_QUERY]
        }


def _spans_stats(
    session: Session,
    spans: Mapping[str, list[tuple[dt.datetime, dt.datetime]]],
    rolled: dt.datetime | None,
    until: dt.datetime,
) -> dict[str, ProbeStats]:
    """Each service's availability figures over the clock hours of its `spans`, blind results
    left out, as probe_quarter counts them for a whole quarter; a service without a result
    then is absent.

    An hour the service was online only in part (it went online, was suspended or resumed in
    it) counts whole: a roll-up cannot tell which minutes its probes fell in, and the raw
    results of the hours not rolled up yet are counted the same way, so the figures are the
    same before and after the roll-up and the purge of raw results.

    rolled: raw results before this moment are in the roll-ups."""
    hours = {service_id: _clock_hours(ranges, until) for service_id, ranges in spans.items()}
    tallies: dict[str, Tally] = defaultdict(Tally)
    for batch in _batches(hours):
        for service_id, count, failures, blind, probed, texts in session.execute(
            rollup_sums(ProbeRollup.kind == AVAILABILITY, _rollups_in(batch))
        ):
            tallies[str(service_id)].take_rollups(count, failures, blind, probed, texts)
    raw_from = min((a for ranges in hours.values() for a, _b in ranges), default=until)
    raw_from = max(raw_from, rolled or raw_from)
    for raw_service, at, success, duration_ms, blind in session.execute(
        raw_results(AVAILABILITY, raw_from, until)
    ):
        if any(a <= at < b for a, b in hours.get(str(raw_service), [])):
            tallies[str(raw_service)].add_result(at, success, duration_ms, blind)
    return {
        service_id: tally.stats(service_id)
        for service_id, tally in sorted(tallies.items())
        if tally.count or tally.blind
    }


def open_quarter(session: Session, settings: Settings, label: str, now: dt.datetime) -> Quarter:
    """The Quarter `label` as stored, judged up to `now` when it is still running.

    Raises ValueError naming the label when it is not a quarter such as 2026q3, or when the
    quarter has not begun yet.
    """
    start, end = begun_quarter_bounds(label, now)
    until = min(end, now)
    periods = service_periods(session, start, until)
    records = last_records(session, periods)
    return Quarter(session, settings, label, start, end, until, periods, records)


# --- the checks, one per rule kind ------------------------------------------------------------

Check = Callable[[Quarter, ComplianceRule], list[ComplianceVerdict]]
CHECKS: dict[str, Check] = {}


def check(name: str) -> Callable[[Check], Check]:
    """Register a check function under the name rules/compliance.toml calls it by."""

    def register(function: Check) -> Check:
        CHECKS[name] = function
        return function

    return register


@check("filing_complete")
def filing_complete(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.2.2, App. A: every service online in the quarter has a complete filing, as it stood at
    the quarter's end or when the service left. A value the standard does not know (type=xyz
    where Appendix A has checkboxes) fills no field: it is a problem of the filing too."""
    out = []
    for service_id in q.online_services():
        record = q.record(service_id)
        problems = list(record.get("filing_problems") or [])
        problems += [f"{value}: unknown value" for value in record.get("unknown_values") or []]
        out.append(q.verdict(rule, service_id, not problems, problems=problems[:LISTED]))
    return out


REJECTIONS = ("不同意", "不予", "驳回", "退回", "不通过")
"""Words by which a review opinion refuses (不同意上线, 不予通过, 驳回, 退回修改, 审核不通过)."""


def approves(opinion: object) -> bool:
    """Whether a filing's review opinion approves the service: it says something, and none of
    REJECTIONS."""
    text = str(opinion or "").strip()
    return bool(text) and not any(word in text for word in REJECTIONS)


@check("online_after_approval_and_scan")
def online_after_approval_and_scan(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.2.6, 7.2.1, 8.3 b: each go-live of the quarter came after approval (the service was
    approved first, or its filing carries a review opinion that approves: `approves`) and
    after a scan that found no high or medium risk."""
    went_online: dict[str, list[ServiceEvent]] = defaultdict(list)
    for event in q.events("went_online"):
        went_online[event.service_id].append(event)
    approved_at: dict[str, dt.datetime] = {}
    for service_id, at in q.session.execute(
        select(ServiceEvent.service_id, func.min(ServiceEvent.at))
        .where(ServiceEvent.kind == "approved", ServiceEvent.service_id.in_(went_online))
        .group_by(ServiceEvent.service_id)
    ):
        approved_at[service_id] = at
    out = []
    for service_id, events in sorted(went_online.items()):
        review = q.record(service_id).get("review")
        reviewed = isinstance(review, dict) and approves(review.get("opinion"))
        shown, passed = [], True
        for event in events:
            approved = (
                event.from_status == "approved"
                or (service_id in approved_at and approved_at[service_id] <= event.at)
                or reviewed
            )
            scan = q.session.scalars(
                select(Scan)
                .where(
                    Scan.service_id == service_id,
                    Scan.state.in_(SCANNED),
                    Scan.finished_at <= event.at,
                )
                .order_by(Scan.finished_at.desc())
                .limit(1)
            ).first()
            clean = scan is not None and scan.high == 0 and scan.medium == 0
            passed = passed and approved and clean
            shown.append(
                {
                    "online_at": iso(event.at),
                    "approved": approved,
                    "scan": None
                    if scan is None
                    else {
                        "id": scan.id,
                        "finished_at": iso(scan.finished_at),
                        "high": scan.high,
                        "medium": scan.medium,
                    },
                }
            )
        out.append(q.verdict(rule, service_id, passed, went_online=shown))
    return out


def _rule_filter(clause: str, declared: Mapping[str, Any]) -> ColumnElement[bool]:
    """The findings of the rules declared under `clause` (a family such as zap:* included)."""
    names = [name for name, r in declared.items() if r.clause == clause]
    exact = [n for n in names if not any(c in n for c in "*?[")]
    globs = [n for n in names if n not in exact]
    conditions: list[ColumnElement[bool]] = [Finding.rule.in_(exact)]
    conditions += [
        Finding.rule.like(g.replace("%", r"\%").replace("_", r"\_").replace("*", "%"), escape="\\")
        for g in globs
    ]
    return or_(*conditions)


def episodes(q: Quarter, where: ColumnElement[bool]) -> list[Episode]:
    """The episodes of the service findings matching `where` that were open at some moment of
    the quarter (a finding stored before episodes were kept counts as one episode)."""
    found: list[Episode] = []
    seen: set[int] = set()
    rows = q.session.execute(
        select(FindingEpisode, Finding.rule, Finding.service_id)
        .join(Finding, Finding.id == FindingEpisode.finding_id)
        .where(
            where,
            Finding.service_id.is_not(None),
            FindingEpisode.occurred_at < q.until,
            or_(FindingEpisode.closed_at.is_(None), FindingEpisode.closed_at > q.start),
        )
    )
    for episode, rule_name, service_id in rows:
        seen.add(episode.finding_id)
        found.append(
            Episode(
                episode.finding_id,
                rule_name,
                str(service_id),
                episode.severity,
                episode.occurred_at,
                episode.closed_at,
            )
        )
    without = select(FindingEpisode.finding_id).where(FindingEpisode.finding_id == Finding.id)
    for finding in q.session.scalars(
        select(Finding).where(where, Finding.service_id.is_not(None), ~without.exists())
    ):
        if finding.id in seen:
            continue
        ended = finding.resolved_at if finding.state == "resolved" else None
        single = Episode(
            finding.id,
            finding.rule,
            str(finding.service_id),
            finding.severity,
            finding.occurred_at or finding.first_seen,
            ended,
        )
        if single.overlaps(q.start, q.until):
            found.append(single)
    return sorted(found, key=lambda e: (e.service_id, e.began, e.finding_id))


def _while_online(q: Quarter, found: Iterable[Episode]) -> dict[str, list[Episode]]:
    """The episodes open while their service was online, by service."""
    by_service: dict[str, list[Episode]] = defaultdict(list)
    for episode in found:
        if any(episode.overlaps(a, b) for a, b in q.spans(episode.service_id, "online")):
            by_service[episode.service_id].append(episode)
    return by_service


def _probes_passed(q: Quarter, kind: str) -> dict[str, int]:
    """How many probes of `kind` each service passed in the quarter (blind ones left out): the
    roll-ups of the hours rolled up, the raw results of the hours after."""
    passed: dict[str, int] = defaultdict(int)
    raw_from = max(q.start, q.rolled_until or q.start)
    for service_id, count in q.session.execute(
        select(ProbeRollup.service_id, func.sum(ProbeRollup.count - ProbeRollup.failures))
        .where(
            ProbeRollup.kind == kind,
            ProbeRollup.hour >= q.start,
            ProbeRollup.hour < raw_from,
        )
        .group_by(ProbeRollup.service_id)
    ):
        passed[str(service_id)] += int(count or 0)
    for raw_service_id, count in q.session.execute(
        select(ProbeResultRow.service_id, func.count())
        .where(
            ProbeResultRow.kind == kind,
            ProbeResultRow.service_id.is_not(None),
            ProbeResultRow.success.is_(True),
            ProbeResultRow.blind.is_(False),
            ProbeResultRow.at >= raw_from,
            ProbeResultRow.at < q.until,
        )
        .group_by(ProbeResultRow.service_id)
    ):
        passed[str(raw_service_id)] += int(count)
    return {service_id: n for service_id, n in passed.items() if n}


@check("no_findings_of_clause")
def no_findings_of_clause(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.3.2 a-c: no finding of a rule declared under the clauses `params.clauses` was open
    while the service was online.

    With `params.measured_by` (a probe kind), no finding is a pass only when that probe passed
    in the quarter: a service it never measured (never probed, or never answered it) gets no
    verdict, as uptime gets none without a probe."""
    clauses = [str(c) for c in rule.params.get("clauses", [rule.clause])]
    declared = rules.declared_rules()
    found = _while_online(q, episodes(q, or_(*(_rule_filter(c, declared) for c in clauses))))
    kind = rule.params.get("measured_by")
    measured = None if kind is None else _probes_passed(q, str(kind))
    out = []
    for service_id in q.online_services():
        mine = found.get(service_id, [])
        evidence: dict[str, Any] = {
            "findings": len(mine),
            "episodes": [e.shown() for e in mine[:LISTED]],
        }
        if measured is not None:
            if not mine and service_id not in measured:
                continue  # nothing measured: neither passed nor failed
            evidence["probes_passed"] = measured.get(service_id, 0)
        out.append(q.verdict(rule, service_id, not mine, **evidence))
    return out


def _raw_hours(q: Quarter) -> dict[str, set[dt.datetime]]:
    """The hours not rolled up yet in which each service had an availability probe."""
    hours: dict[str, set[dt.datetime]] = defaultdict(set)
    raw_from = max(q.start, q.rolled_until or q.start)
    for service_id, at in q.session.execute(
        select(ProbeResultRow.service_id, ProbeResultRow.at).where(
            ProbeResultRow.kind == AVAILABILITY,
            ProbeResultRow.service_id.is_not(None),
            ProbeResultRow.at >= raw_from,
            ProbeResultRow.at < q.until,
        )
    ):
        hours[str(service_id)].add(at.replace(minute=0, second=0, microsecond=0))
    return hours


def _probed_rollups(
    hours: Mapping[str, list[range]],
) -> Iterable[dict[str, list[tuple[dt.datetime, dt.datetime]]]]:
    """`hours` (hour numbers) as spans of times, in batches (_batches), for reading the roll-ups
    of those hours in which each service had an availability probe."""
    spans = {
        service_id: [(_hour_time(r.start), _hour_time(r.stop)) for r in ranges if r]
        for service_id, ranges in hours.items()
    }
    return _batches(spans)


def _probed_rollup_filter(
    q: Quarter, batch: Mapping[str, list[tuple[dt.datetime, dt.datetime]]]
) -> tuple[ColumnElement[bool], ...]:
    """The roll-ups with an availability probe in `batch`'s hours, before the raw results begin
    (so that a rolled hour and a raw one are never the same hour)."""
    raw_from = max(q.start, q.rolled_until or q.start)
    return (
        ProbeRollup.kind == AVAILABILITY,
        ProbeRollup.count + ProbeRollup.blind > 0,
        ProbeRollup.hour < raw_from,
        _rollups_in(batch),
    )


def _rolled_hour_counts(q: Quarter, hours: Mapping[str, list[range]]) -> dict[str, int]:
    """How many of each service's `hours` (hour numbers) are rolled up with a probe."""
    counts: dict[str, int] = {}
    for batch in _probed_rollups(hours):
        for service_id, count in q.session.execute(
            select(ProbeRollup.service_id, func.count())
            .where(*_probed_rollup_filter(q, batch))
            .group_by(ProbeRollup.service_id)
        ):
            counts[str(service_id)] = int(count)
    return counts


def _rolled_hours(q: Quarter, hours: Mapping[str, list[range]]) -> dict[str, set[int]]:
    """Which of each service's `hours` (hour numbers) are rolled up with a probe."""
    probed: dict[str, set[int]] = defaultdict(set)
    for batch in _probed_rollups(hours):
        for service_id, hour in q.session.execute(
            select(ProbeRollup.service_id, ProbeRollup.hour).where(*_probed_rollup_filter(q, batch))
        ):
            probed[str(service_id)].add(_hour_number(hour))
    return probed


def _whole_hours(a: dt.datetime, b: dt.datetime) -> range:
    """The whole clock hours inside [a, b), as hour numbers since the epoch."""
    first = math.ceil(a.timestamp() / 3600)
    return range(first, max(first, math.floor(b.timestamp() / 3600)))


def _hour_number(moment: dt.datetime) -> int:
    """The hour holding `moment`, as hours since the epoch."""
    return math.floor(moment.timestamp() / 3600)


def _ranges(hours: list[int]) -> list[list[str | None]]:
    """Sorted hour numbers joined into [from, to) ranges of times, as evidence shows them."""
    out: list[list[int]] = []
    for hour in hours:
        if out and out[-1][1] == hour:
            out[-1][1] = hour + 1
        else:
            out.append([hour, hour + 1])
    return [[iso(_hour_time(a)), iso(_hour_time(b))] for a, b in out]


def _hour_time(number: int) -> dt.datetime:
    """The first moment of an hour number."""
    return dt.datetime.fromtimestamp(number * 3600, dt.UTC)


@check("probed_throughout")
def probed_throughout(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.4: every whole hour a service was online, it was probed; the hours without a probe
    are gaps, listed.

    The probed hours are counted by the database first, for every service at once; only the
    services with fewer probed hours than hours online have their hours read, to list gaps."""
    tolerated = int(rule.params.get("tolerated_gap_hours", 0))
    raw = {
        service_id: {_hour_number(h) for h in hours} for service_id, hours in _raw_hours(q).items()
    }
    online = {
        service_id: [_whole_hours(a, b) for a, b in q.spans(service_id, "online")]
        for service_id in q.online_services()
    }
    unsure = {
        service_id: hours
        for service_id, hours in online.items()
        if not _probed_all_quarter(q, service_id, raw.get(service_id, set()))
    }
    counted = _rolled_hour_counts(q, unsure)
    with_gaps = {
        service_id: hours
        for service_id, hours in unsure.items()
        if counted.get(service_id, 0) + _count_in(raw.get(service_id, set()), hours)
        < sum(len(r) for r in hours)
    }
    rolled = _rolled_hours(q, with_gaps)
    out = []
    for service_id, hours in online.items():
        probed = rolled.get(service_id, set()) | raw.get(service_id, set())
        gaps = [h for r in with_gaps.get(service_id, []) for h in r if h not in probed]
        total = sum(len(r) for r in hours)
        out.append(
            q.verdict(
                rule,
                service_id,
                len(gaps) <= tolerated,
                hours_online=total,
                hours_probed=total - len(gaps),
                gap_hours=len(gaps),
                gaps=_ranges(gaps)[:LISTED],
            )
        )
    return out


def _count_in(numbers: set[int], ranges: list[range]) -> int:
    """How many of the hour `numbers` lie in one of `ranges` (which do not overlap)."""
    return sum(any(n in r for r in ranges) for n in numbers)


def _probed_all_quarter(q: Quarter, service_id: str, unrolled: set[int]) -> bool:
    """Whether the service was online throughout the quarter and probed every whole hour of it,
    as the quarter's figures (already read for the uptime) count them."""
    if q.spans(service_id, "online") != [(q.start, q.until)]:
        return False
    stats = q.probes.get(service_id)
    last = q.until.replace(minute=0, second=0, microsecond=0)
    # The quarter's figures count the hour still running when it is probed; not a whole one.
    whole = (stats.hours_probed if stats else 0) - (
        last < q.until and _hour_number(last) in unrolled
    )
    return whole >= len(_whole_hours(q.start, q.until))


@check("uptime_target")
def uptime_target(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.4 a: the quarter's uptime (blind rounds left out) reaches the service's own target
    when its filing names one, else `[compliance] uptime_percent`. No probe: not shown."""
    out = []
    for service_id in q.online_services():
        target, source = q.target(
            service_id, "uptime_percent", q.settings.compliance.uptime_percent
        )
        stats = q.stats(service_id)
        if stats is None or stats.uptime is None:
            continue  # nothing measured: neither passed nor failed
        uptime = 100 * stats.uptime
        out.append(
            q.verdict(
                rule,
                service_id,
                uptime >= target,
                uptime_percent=round(uptime, 3),
                target_percent=target,
                target_from=source,
                probes=stats.count,
                failures=stats.failures,
            )
        )
    return out


@check("latency_target")
def latency_target(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """6.4 b: the quarter's p95 latency of successful probes is within the service's own
    target when its filing names one, else `[compliance] p95_ms`. No success: not shown."""
    out = []
    for service_id in q.online_services():
        target, source = q.target(service_id, "p95_ms", q.settings.compliance.p95_ms)
        stats = q.stats(service_id)
        p95 = None if stats is None else stats.p95_ms
        if p95 is None:
            continue  # no successful probe: no latency measured, neither passed nor failed
        out.append(
            q.verdict(
                rule,
                service_id,
                p95 <= target,
                p95_ms=p95,
                target_ms=target,
                target_from=source,
            )
        )
    return out


@check("outage_announced")
def outage_announced(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.2.2: every outage (a service's probe state turning down) in the quarter began inside a
    suspension or maintenance window that monitord knew of by then (within one catalogue sync)."""
    windows = quiet_windows(q.session, q.start, q.until)
    grace = dt.timedelta(seconds=q.settings.portal.sync_interval_seconds)
    downs: dict[str, list[ServiceStateChange]] = defaultdict(list)
    for change in state_changes(q.session, q.start, q.until):
        if change.to_state == "down":
            downs[change.service_id].append(change)
    out = []
    for service_id in sorted(set(q.online_services()) | set(downs)):
        outages = []
        for change in downs.get(service_id, []):
            announced = any(
                w.service_id in (service_id, "*")
                and w.starts_at <= change.at
                and ((stop := window_end(w)) is None or change.at < stop)
                and w.recorded_at <= change.at + grace
                for w in windows
            )
            outages.append({"at": iso(change.at), "announced": announced})
        unannounced = sum(not o["announced"] for o in outages)
        out.append(
            q.verdict(
                rule,
                service_id,
                unannounced == 0,
                outages=len(outages),
                unannounced=unannounced,
                listed=outages[:LISTED],
            )
        )
    return out


@check("resumed_on_time")
def resumed_on_time(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.2.2: each suspension due to end in the quarter (or begun in it without a planned
    resume time) was filed with a planned resume time and ended by it."""
    grace = dt.timedelta(seconds=q.settings.portal.sync_interval_seconds)
    judged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for window in quiet_windows(q.session, q.start, q.until):
        if window.kind != "suspension":
            continue
        if window.ends_at is None:
            if not q.start <= window.starts_at < q.until:
                continue
            problem: str | None = "no planned resume time"
        elif not q.start <= window.ends_at < q.until:
            continue
        elif window.ended_at is None:
            problem = "not resumed"
        elif window.ended_at <= window.ends_at + grace:
            problem = None
        else:
            problem = "resumed late"
        judged[window.service_id].append(
            {
                "from": iso(window.starts_at),
                "planned_resume": iso(window.ends_at),
                "resumed": iso(window.ended_at),
                "problem": problem,
            }
        )
    return [
        q.verdict(
            rule,
            service_id,
            all(s["problem"] is None for s in suspensions),
            suspensions=suspensions[:LISTED],
        )
        for service_id, suspensions in sorted(judged.items())
    ]


def _probe_passed_after(q: Quarter, service_id: str, moment: dt.datetime) -> dt.datetime | None:
    """When the service first passed an availability probe after `moment` (the raw result, or
    the hour of its roll-up once raw results are purged); None when it has not."""
    raw = q.session.scalar(
        select(func.min(ProbeResultRow.at)).where(
            ProbeResultRow.service_id == service_id,
            ProbeResultRow.kind == AVAILABILITY,
            ProbeResultRow.success.is_(True),
            ProbeResultRow.blind.is_(False),
            ProbeResultRow.at > moment,
        )
    )
    if raw is not None:
        return raw
    next_hour = moment.replace(minute=0, second=0, microsecond=0) + HOUR
    rolled: dt.datetime | None = q.session.scalar(
        select(func.min(ProbeRollup.hour)).where(
            ProbeRollup.service_id == service_id,
            ProbeRollup.kind == AVAILABILITY,
            ProbeRollup.hour >= next_hour,
            ProbeRollup.count > ProbeRollup.failures,
        )
    )
    return rolled


@check("retested_after_resume")
def retested_after_resume(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.2.3: after each resumption in the quarter, the service passed a probe and was scanned
    (a scan started after it resumed and ran to its end)."""
    resumed: dict[str, list[ServiceEvent]] = defaultdict(list)
    for event in q.events("resumed"):
        resumed[event.service_id].append(event)
    out = []
    for service_id, events in sorted(resumed.items()):
        shown, passed = [], True
        for event in events:
            probe_at = _probe_passed_after(q, service_id, event.at)
            scan = q.session.scalars(
                select(Scan)
                .where(
                    Scan.service_id == service_id,
                    Scan.state.in_(SCANNED),
                    Scan.started_at >= event.at,
                )
                .order_by(Scan.started_at)
                .limit(1)
            ).first()
            passed = passed and probe_at is not None and scan is not None
            shown.append(
                {
                    "resumed_at": iso(event.at),
                    "probe_passed_at": iso(probe_at),
                    "scan": None if scan is None else {"id": scan.id, "at": iso(scan.finished_at)},
                }
            )
        out.append(q.verdict(rule, service_id, passed, resumptions=shown[:LISTED]))
    return out


def _notice_time(notice: Mapping[str, Any], key: str) -> dt.datetime | None:
    value = notice.get(key)
    try:
        return parse_time(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None


def notice_working_days(
    notice: Mapping[str, Any], calendar: WorkCalendar, taken_down: dt.datetime | None = None
) -> tuple[int | None, str | None]:
    """The working days a take-down notice gave (after the filing day, before the take-down
    day: `taken_down` when the service was taken down, else the planned one; up to 60 days'
    worth) and what is wrong with it when it cannot be counted."""
    filed = _notice_time(notice, "filed_at")
    offline = taken_down or _notice_time(notice, "planned_offline")
    if filed is None or offline is None:
        return None, "filed_at or planned_offline missing or not a time"
    first, last = filed.astimezone(SHANGHAI).date(), offline.astimezone(SHANGHAI).date()
    # Ten working days always fit in 60 days: a notice for the year 9999 is not walked through.
    return calendar.working_days_between(first, min(last, first + dt.timedelta(days=60))), None


def _too_short(days: int | None, needed: int) -> str | None:
    """What is wrong with a notice period of `days` working days when `needed` are asked."""
    return None if days is None or days >= needed else f"{days} working days, {needed} required"


@check("offline_notice")
def offline_notice(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.2.4: each take-down notice filed in the quarter gave the working days asked
    (`params.working_days`, by the Chinese statutory calendar), and each service that went
    offline or vanished from the catalogue in the quarter had filed a notice that many working
    days before it really did (a notice for a later date does not cover an earlier take-down)."""
    needed = int(rule.params.get("working_days", 10))
    judged: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
        lambda: {"notices": [], "left": []}
    )
    for event in q.events("offline_notice_filed"):
        days, problem = notice_working_days(event.detail, q.calendar)
        judged[event.service_id]["notices"].append(
            {
                "filed_at": event.detail.get("filed_at"),
                "planned_offline": event.detail.get("planned_offline"),
                "working_days": days,
                "problem": problem or _too_short(days, needed),
            }
        )
    returned: dict[str, list[dt.datetime]] = defaultdict(list)
    for event in q.events("returned"):
        returned[event.service_id].append(event.at)
    for event in q.events("went_offline", "gone"):
        before = catalogue_as_of(q.session, event.at - TICK, services=[event.service_id]).get(
            event.service_id, {}
        )
        if before.get("status") not in IN_SERVICE:
            # Never in service (pending, approved: an application withdrawn), or taken down
            # before and then dropped from the catalogue (judged then): no take-down here.
            continue
        if event.kind == "gone" and any(at > event.at for at in returned[event.service_id]):
            continue  # missing from one sync's answer and back later: not a take-down
        notice = before.get("offline_notice")
        days, problem = None, "no take-down notice"
        if isinstance(notice, dict) and notice:
            days, problem = notice_working_days(notice, q.calendar, event.at)
        judged[event.service_id]["left"].append(
            {
                "kind": event.kind,
                "at": iso(event.at),
                "working_days": days,
                "problem": problem or _too_short(days, needed),
            }
        )
    out = []
    for service_id, found in sorted(judged.items()):
        problems = [item for items in found.values() for item in items if item["problem"]]
        out.append(q.verdict(rule, service_id, not problems, **found))
    return out


@check("log_retention")
def log_retention(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.1: the retention setting keeps records at least `params.days`, and the store holds
    probe evidence back to the earlier of the quarter's start and that many days ago (or to
    when monitord began, when that is later)."""
    days = int(rule.params.get("days", MIN_RETENTION_DAYS))
    setting = q.settings.store.retention_days
    began = q.session.scalar(select(func.min(SyncRun.started_at)))
    oldest = min(
        (
            t
            for t in (
                q.session.scalar(select(func.min(ProbeRollup.hour))),
                q.session.scalar(select(func.min(ProbeResultRow.at))),
                q.session.scalar(select(func.min(ServiceStateChange.at))),
            )
            if t is not None
        ),
        default=None,
    )
    reach = min(q.start, q.until - dt.timedelta(days=days))
    needed = reach if began is None else max(reach, began)
    # A day's slack: the first probe round follows the first sync, roll-ups start on the hour.
    reaches = oldest is not None and oldest <= needed + dt.timedelta(days=1)
    return [
        q.verdict(
            rule,
            None,
            setting >= days and reaches,
            retention_days=setting,
            required_days=days,
            records_needed_from=iso(needed),
            oldest_record=iso(oldest),
            monitoring_began=iso(began),
        )
    ]


@check("log_audit")
def log_audit(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.1: the quarter's log audit covers the whole quarter (LogAudit.complete), and found a
    log on every day. While the quarter runs the audit is pending (not due yet): an audit
    written by hand so far fails only on the days it found without logs."""
    audit = q.session.get(LogAudit, q.label)
    if audit is None:
        return [
            q.verdict(rule, None, q.running, written=False, due_after=iso(q.end), pending=q.running)
        ]
    whole = audit.complete  # written after the end, once the logs were read past it
    return [
        q.verdict(
            rule,
            None,
            (whole or q.running) and not audit.empty_days,
            written=True,
            written_at=iso(audit.created_at),
            covers_whole_quarter=whole,
            pending=q.running and not whole,
            lines=audit.lines,
            days_without_logs=len(audit.empty_days),
            empty_days=list(audit.empty_days)[:LISTED],
        )
    ]


@check("quarterly_scan")
def quarterly_scan(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.2: every service online in the quarter had a scan that ran to its end in it."""
    latest: dict[str, Scan] = {}
    for scan in q.session.scalars(
        select(Scan)
        .where(Scan.state.in_(SCANNED), Scan.finished_at >= q.start, Scan.finished_at < q.until)
        .order_by(Scan.finished_at)
    ):
        latest[scan.service_id] = scan
    out = []
    for service_id in q.online_services():
        last = latest.get(service_id)
        shown = (
            None
            if last is None
            else {
                "id": last.id,
                "finished_at": iso(last.finished_at),
                "state": last.state,
                "high": last.high,
                "medium": last.medium,
            }
        )
        out.append(q.verdict(rule, service_id, last is not None, scan=shown))
    return out


def _documents(
    q: Quarter, rule: ComplianceRule, first: dt.date, last: dt.date
) -> list[dict[str, Any]]:
    """The platform's evidence documents of the rule's kind (`params.kind`), filed for the
    clause the rule serves and dated from `first` to `last`, as evidence lists them. A document
    about one service (a go-live's pen test under 8.3 b) is not the platform's."""
    return [
        {
            "id": d.id,
            "date": d.document_date.isoformat(),
            "file": d.file_name,
            "sha256": d.sha256,
            "filed_by": d.filed_by,
        }
        for d in q.session.scalars(
            select(EvidenceDocument)
            .where(
                EvidenceDocument.kind == str(rule.params["kind"]),
                EvidenceDocument.clause == rule.clause,
                EvidenceDocument.service_id.is_(None),
                EvidenceDocument.document_date >= first,
                EvidenceDocument.document_date <= last,
            )
            .order_by(EvidenceDocument.document_date, EvidenceDocument.id)
        )
    ]


def _local_dates(q: Quarter) -> tuple[dt.date, dt.date]:
    """The quarter's first and last local days (the last judged so far while it runs)."""
    return q.start.astimezone(SHANGHAI).date(), (q.until - TICK).astimezone(SHANGHAI).date()


@check("evidence_in_quarter")
def evidence_in_quarter(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.2: a platform document of `params.kind` (the penetration test), filed for the rule's
    clause and dated in the quarter, is in the evidence register."""
    first, last = _local_dates(q)
    found = _documents(q, rule, first, last)
    return [q.verdict(rule, None, bool(found), documents=found[:LISTED])]


@check("evidence_in_year")
def evidence_in_year(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.2: a platform document of `params.kind` (the risk assessment), filed for the rule's
    clause and dated this calendar year by the quarter's end, is in the evidence register. The
    duty is yearly: without one it is pending, not failed, until the year's last quarter ends."""
    first, last = _local_dates(q)
    found = _documents(q, rule, first.replace(month=1, day=1), last)
    year_over = not q.running and q.end.astimezone(SHANGHAI).year > first.year
    pending = not found and not year_over
    return [
        q.verdict(rule, None, bool(found) or pending, documents=found[:LISTED], pending=pending)
    ]


@check("admin_review")
def admin_review(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.2: the platform's admin accounts were reviewed for the quarter."""
    reviews = [
        {
            "id": r.id,
            "reviewed_at": iso(r.reviewed_at),
            "reviewed_by": r.reviewed_by,
            "accounts": len(r.accounts),
            "flags": len(r.flags),
        }
        for r in q.session.scalars(
            select(AdminReview).where(AdminReview.quarter == q.label).order_by(AdminReview.id)
        )
    ]
    return [q.verdict(rule, None, bool(reviews), reviews=reviews[:LISTED])]


def _first_notifications(q: Quarter, ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each incident's first 7.3.3 notification as its timeline keeps it."""
    first: dict[int, dict[str, Any]] = {}
    for event in q.session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id.in_(ids), IncidentEvent.kind == "notified")
        .order_by(IncidentEvent.at, IncidentEvent.id)
    ):
        first.setdefault(event.incident_id, event.detail)
    return first


@check("incidents_notified")
def incidents_notified(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """7.3.3: every security incident detected in the quarter (its two-hour clock starts then)
    reached the management unit by its deadline, with the four parts of the clause. One whose
    deadline is still ahead is neither (`pending_incidents`); while every incident is such, the
    verdict is pending (blue), as nothing was due yet."""
    incidents = list(
        q.session.scalars(
            select(Incident)
            .where(
                Incident.klass == "security",
                Incident.detected_at >= q.start,
                Incident.detected_at < q.until,
            )
            .order_by(Incident.id)
        )
    )
    window = dt.timedelta(minutes=q.settings.incidents.notify_within_minutes)
    notes = _first_notifications(q, [i.id for i in incidents])
    on_time: list[int] = []
    late: list[int] = []
    still_running: list[int] = []
    missing_parts: dict[str, list[str]] = {}
    for incident in incidents:
        deadline = incident.notify_by or incident.detected_at + window
        if incident.notified_at is None and not incident.late and deadline > q.until:
            still_running.append(incident.id)
            continue
        if incident.late or incident.notified_at is None or incident.notified_at > deadline:
            late.append(incident.id)
        else:
            on_time.append(incident.id)
        note = notes.get(incident.id, {})
        lacking = [p for p in NOTIFICATION_PARTS if not str(note.get(p) or "").strip()]
        if lacking and incident.id not in late:
            missing_parts[str(incident.id)] = lacking
    return [
        q.verdict(
            rule,
            None,
            not late and not missing_parts,
            incidents=len(incidents),
            on_time=len(on_time),
            late=late,
            missing_parts=missing_parts,
            pending_incidents=still_running,
            pending=bool(still_running) and not on_time and not late,
        )
    ]


@check("no_high_medium_vulnerability")
def no_high_medium_vulnerability(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """8.3 b: no vulnerability (a finding of a rule declared under 8.3 b) of medium risk or
    above was open while the service was online; the evidence says which were still open at
    the quarter's end and which only during it."""
    where = _rule_filter("8.3 b", rules.declared_rules())
    serious = [e for e in episodes(q, where) if e.severity in SERIOUS]
    found = _while_online(q, serious)
    out = []
    for service_id in q.online_services():
        mine = found.get(service_id, [])
        at_end = [e for e in mine if e.ended is None or e.ended >= q.until]
        out.append(
            q.verdict(
                rule,
                service_id,
                not mine,
                open_at_quarter_end=len(at_end),
                open_during_quarter=len(mine) - len(at_end),
                episodes=[e.shown() for e in mine[:LISTED]],
            )
        )
    return out


@check("vendor_operations_audited")
def vendor_operations_audited(q: Quarter, rule: ComplianceRule) -> list[ComplianceVerdict]:
    """8.3 c: the vendor staff's operations of the quarter were listed by its log audit,
    written after the quarter ended; pending (not due yet) while the quarter runs."""
    audit = q.session.get(LogAudit, q.label)
    if audit is None:
        return [
            q.verdict(rule, None, q.running, audited=False, due_after=iso(q.end), pending=q.running)
        ]
    whole = audit.complete  # written after the end, once the logs were read past it
    subjects = sorted({str(op.get("subject", "")) for op in audit.vendor_operations})
    return [
        q.verdict(
            rule,
            None,
            whole or q.running,
            audited=True,
            written_at=iso(audit.created_at),
            pending=q.running and not whole,
            vendor_accounts=len(subjects),
            accounts=subjects[:LISTED],
        )
    ]


# --- the public functions ---------------------------------------------------------------------


def quarter_rules() -> list[ComplianceRule]:
    """The shipped rules, each checked to name a known check; RuleError otherwise."""
    found: list[ComplianceRule] = list(rules.compliance_rules())
    for rule in found:
        if rule.check not in CHECKS:
            raise RuleError(
                f"compliance.toml: rule {rule.name}: check = {rule.check!r}: expected one of "
                f"{', '.join(sorted(CHECKS))}"
            )
    return found


def judge(q: Quarter) -> list[ComplianceVerdict]:
    """Every rule's verdicts on an opened quarter, in the rule file's order, then by service."""
    verdicts: list[ComplianceVerdict] = []
    for rule in quarter_rules():
        verdicts += CHECKS[rule.check](q, rule)
    return verdicts


def evaluate_quarter(
    session: Session, settings: Settings, quarter: str, now: dt.datetime
) -> list[ComplianceVerdict]:
    """Every compliance rule's verdicts for `quarter` ("2026q3"), from the stored evidence;
    writes nothing. A running quarter is judged up to `now`.

    Raises ValueError naming the label when it is not a quarter or has not begun.
    """
    return judge(open_quarter(session, settings, quarter, now))


def quarters_due(session: Session, now: dt.datetime) -> list[str]:
    """The quarters the schedule evaluates now: the previous one until its verdicts were
    evaluated after it ended and after its log audit was written (once, in practice), and the
    current one."""
    current, start = quarter_start(now)
    previous, _ = quarter_start(start - dt.timedelta(days=1))
    evaluated = session.scalar(
        select(func.min(ComplianceResult.evaluated_at)).where(ComplianceResult.quarter == previous)
    )
    audit = session.get(LogAudit, previous)
    since = max(start, audit.created_at) if audit is not None else start
    due = [] if evaluated is not None and evaluated >= since else [previous]
    return [*due, current]


def store_verdicts(
    session: Session, quarter: str, verdicts: Iterable[ComplianceVerdict], now: dt.datetime
) -> None:
    """Replace the quarter's stored ComplianceResult rows with `verdicts` (subject "" for the
    platform), inside the caller's transaction.

    Raises UsageError when records the quarter is judged from have been purged since: judged
    again, it would lose what it was judged from (an outage gone with its state changes), so
    the verdicts stored when they were all there stand.
    """
    purged = judged_records_purged_before(session)
    start, _ = quarter_bounds(quarter)
    if purged is not None and start < purged:
        raise UsageError(
            f"{quarter} is not judged again: records it is judged from (state changes, sync "
            f"runs, roll-ups) before {purged.astimezone(SHANGHAI):%Y-%m-%d %H:%M} Asia/Shanghai "
            "are purged (store.retention_days, probes.rollup_retention_days); its stored "
            "verdicts stand"
        )
    session.execute(delete(ComplianceResult).where(ComplianceResult.quarter == quarter))
    session.flush()
    session.add_all(
        ComplianceResult(
            quarter=quarter,
            rule=v.rule,
            clause=v.clause,
            subject=v.service_id or "",
            passed=v.passed,
            evidence=v.evidence,
            evaluated_at=now,
        )
        for v in verdicts
    )
