"""What the log rules report: one finding per rule and subject, updated while it continues."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from monitord.timeutil import UTC
from monitord.types import LOG_QUIET_MINUTES, FindingDraft, Severity

MAX_EVIDENCE = 5


def iso(epoch: int) -> str:
    """Epoch seconds as an ISO 8601 UTC time."""
    return dt.datetime.fromtimestamp(epoch, UTC).isoformat()


@dataclass
class LogFinding:
    """A behaviour one rule saw for one subject: the key is (rule, subject_kind, subject).

    `count` is the number of matching log lines (for rules over a rate, the lines that make the
    rate: the failed requests of an error burst), in the log source that saw most of them: the
    edge log and the audit log record the same requests, so adding their lines would count each
    request twice. Per source, `settled` is the part whose windows have closed and
    `open_counts` the current count of each window bucket still open (keyed `source:bucket`),
    so re-evaluating an open window after more lines arrive replaces its count instead of
    adding it again.
    """

    rule: str
    clause: str
    severity: Severity
    subject_kind: str
    subject: str
    first_seen: int
    last_seen: int
    summary: str = ""
    settled: dict[str, int] = field(default_factory=dict)
    open_counts: dict[str, int] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    service_id: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    quiet_seconds: int = LOG_QUIET_MINUTES * 60
    """A gap this long without a matching line ends an episode (the rule's quiet_minutes)."""
    episode_start: int = 0
    """When the current episode began: the first line after such a gap (0: first_seen)."""

    @property
    def key(self) -> tuple[str, str, str]:
        """The stable identity: the same rule and subject is the same finding."""
        return (self.rule, self.subject_kind, self.subject)

    @property
    def count(self) -> int:
        """Matching lines so far, in the source with the most."""
        per_source = dict(self.settled)
        for bucket, n in self.open_counts.items():
            source = bucket.rpartition(":")[0]
            per_source[source] = per_source.get(source, 0) + n
        # "" holds a count kept before counts were per source (an older follow-mode state).
        earlier = per_source.pop("", 0)
        return earlier + max(per_source.values(), default=0)

    def add_settled(self, source: str, lines: int) -> None:
        """Count lines of `source` whose evaluation is final (row rules, closed windows)."""
        self.settled[source] = self.settled.get(source, 0) + lines

    def seen(self, first: int, last: int) -> None:
        """Widen the time span to include [first, last]; after a quiet gap, a new episode."""
        if first - self.last_seen > self.quiet_seconds:
            self.episode_start = first
        self.first_seen = min(self.first_seen, first)
        self.last_seen = max(self.last_seen, last)

    def add_evidence(self, lines: list[str]) -> None:
        """Keep the first few lines as evidence; later ones add nothing new for a reader."""
        for line in lines:
            if len(self.evidence) >= MAX_EVIDENCE:
                return
            if line not in self.evidence:
                self.evidence.append(line)

    def settle(self, bucket: str) -> None:
        """A window bucket (`source:bucket`) closed: its count is final."""
        self.add_settled(bucket.rpartition(":")[0], self.open_counts.pop(bucket, 0))

    def to_json(self) -> dict[str, Any]:
        """The shape of `monitord analyse --json`'s findings."""
        subject: dict[str, Any] = {self.subject_kind: self.subject}
        if self.service_id and self.subject_kind != "service":
            subject["service"] = self.service_id
        return {
            "rule": self.rule,
            "clause": self.clause,
            "severity": self.severity,
            "subject": subject,
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "count": self.count,
            "evidence": list(self.evidence),
        }

    def to_draft(self) -> FindingDraft:
        """The core's finding value; times, count and lines go in its evidence."""
        return FindingDraft(
            rule=self.rule,
            clause=self.clause,
            severity=self.severity,
            subject_kind=self.subject_kind,
            subject=self.subject,
            summary=self.summary,
            evidence={
                "first_seen": iso(self.first_seen),
                "last_seen": iso(self.last_seen),
                "count": self.count,
                "lines": list(self.evidence),
                **self.facts,
            },
            service_id=self.service_id,
            occurred_at=dt.datetime.fromtimestamp(self.episode_start or self.first_seen, UTC),
            observed_at=dt.datetime.fromtimestamp(self.last_seen, UTC),
            quiet_minutes=self.quiet_seconds // 60,
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-able state, for follow mode to keep in the store between runs."""
        return {
            "rule": self.rule,
            "clause": self.clause,
            "severity": self.severity,
            "subject_kind": self.subject_kind,
            "subject": self.subject,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "summary": self.summary,
            "settled": dict(self.settled),
            "open_counts": dict(self.open_counts),
            "evidence": list(self.evidence),
            "service_id": self.service_id,
            "facts": dict(self.facts),
            "quiet_seconds": self.quiet_seconds,
            "episode_start": self.episode_start,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogFinding:
        """Rebuild a finding from `to_state`'s output."""
        data = dict(state)
        data["open_counts"] = {str(k): int(v) for k, v in data.get("open_counts", {}).items()}
        settled = data.get("settled", {})
        if isinstance(settled, int):  # saved before counts were per source
            settled = {"": settled}
        data["settled"] = {str(k): int(v) for k, v in settled.items()}
        return cls(**data)
