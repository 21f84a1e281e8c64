"""The log rule file: what a rule says, and the checks that a rule file says it validly.

The rules are data (`rules/logs.toml`, format described at its top); `load_rules` reads them
into `LogRule`s, and `parse_rules` rejects a file that does not describe valid rules, naming
the rule and key. Running them is `rules.log_rules.LogRuleEngine`'s job.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitord.errors import RuleError
from monitord.types import LOG_QUIET_MINUTES, SEVERITIES, Severity
from rules.declared import UNDECLARED, Declaration, read_declaration

RULES_FILE = Path(__file__).with_name("logs.toml")
KINDS = ("row", "window")
MEASURES = ("count", "distinct", "ratio")
OPS = (
    "==", "!=", "in", "not_in", "<", "<=", ">", ">=", "matches", "not_matches", "null", "not_null",
)  # fmt: skip


DERIVED_NEEDS: dict[str, tuple[str, ...]] = {
    "working_time": ("ts",),
    "grant": ("role", "target_role"),
    "network": ("ip",),
    "sensitive_path": ("path",),
    "static_path": ("path",),
    "login_path": ("path",),
    "error": ("status",),
}
"""The derived fields a condition may name, each with the log columns it is computed from
(`rules.log_conditions.DERIVED` computes them; the two must name the same fields)."""


@dataclass(frozen=True)
class Condition:
    """One test on a column, or a group: `any_of` (one must hold) or `all_of` (all must)."""

    field: str = ""
    op: str = "=="
    value: Any = None
    any_of: tuple[Condition, ...] = ()
    all_of: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Threshold:
    """When a subject's measure in a window (or its count of rows) makes a finding."""

    min_count: int = 1
    min_distinct: int = 0
    min_rate: float = 0.0
    max_per_distinct: float | None = None
    peers_quantile: float | None = None
    peers_factor: float = 1.0
    baseline_factor: float | None = None
    baseline_min_lines: int = 1000


@dataclass(frozen=True)
class LogRule:
    """One entry of `rules/logs.toml`."""

    name: str
    clause: str
    severity: Severity
    sources: tuple[str, ...]
    subject: tuple[str, ...]
    kind: str
    where: tuple[Condition, ...]
    threshold: Threshold
    summary: str
    window: int = 0
    measure: str = "count"
    distinct: str | None = None
    numerator: tuple[Condition, ...] = ()
    breakdown: tuple[str, ...] = ()
    declaration: Declaration = UNDECLARED
    """The incident kind and quiet period (rules/declared.py); parse_rules requires it."""

    @property
    def quiet_minutes(self) -> int:
        """After this long without a matching line, the next one starts a new episode."""
        return self.declaration.quiet_minutes or LOG_QUIET_MINUTES

    @property
    def columns(self) -> list[str]:
        """The block columns this rule reads, so it filters narrow tables, not whole blocks."""
        names: set[str] = {"ts", "row", *self.subject, *self.breakdown}
        if self.distinct:
            names.add(self.distinct)

        def walk(conditions: Iterable[Condition]) -> None:
            for c in conditions:
                walk(c.any_of)
                walk(c.all_of)
                if c.field:
                    names.add(c.field)

        walk(self.where)
        walk(self.numerator)
        for name in list(names):
            if name in DERIVED_NEEDS:
                names.discard(name)
                names.update(DERIVED_NEEDS[name])
        return sorted(names)


_COLUMNS = {
    "ts", "source", "ip", "user", "service", "method", "path", "status", "bytes", "duration_ms",
    "client", "level", "role", "company", "vendor", "action", "target_user", "target_role",
}  # fmt: skip


def _condition(raw: Mapping[str, Any], where: str) -> Condition:
    if "any" in raw:
        return Condition(any_of=tuple(_condition(c, where) for c in raw["any"]))
    if "all" in raw:
        return Condition(all_of=tuple(_condition(c, where) for c in raw["all"]))
    name, op = raw.get("field"), raw.get("op", "==")
    if name not in _COLUMNS and name not in DERIVED_NEEDS:
        raise RuleError(f"{where}: field {name!r} is neither a log column nor derived")
    if op not in OPS:
        raise RuleError(f"{where}: op {op!r} is not one of {', '.join(OPS)}")
    unknown = set(raw) - {"field", "op", "value"}
    if unknown:
        raise RuleError(f"{where}: unknown keys {sorted(unknown)}")
    value = raw.get("value")
    if op in ("matches", "not_matches"):
        from monitord.regex import re2_error

        problem = re2_error(value) if isinstance(value, str) else "not a string"
        if problem is not None:
            raise RuleError(f"{where}: {op} {value!r} is not a regular expression RE2 accepts "
                            f"({problem})")  # fmt: skip
    return Condition(field=name, op=op, value=value)


def parse_rules(data: Mapping[str, Any], origin: str = "logs.toml") -> list[LogRule]:
    """Validate the `[[rule]]` tables of a rule file; errors name the rule and key."""
    out: list[LogRule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("rule", [])):
        name = raw.get("name") or f"#{i + 1}"
        where = f"{origin}: rule {name}"
        for key in ("name", "clause", "severity", "sources", "subject", "kind", "summary"):
            if key not in raw:
                raise RuleError(f"{where}: missing {key}")
        if name in seen:
            raise RuleError(f"{where}: name used twice")
        seen.add(name)
        if raw["severity"] not in SEVERITIES:
            raise RuleError(f"{where}: severity {raw['severity']!r} not in {SEVERITIES}")
        if raw["kind"] not in KINDS:
            raise RuleError(f"{where}: kind {raw['kind']!r} not in {KINDS}")
        measure = raw.get("measure", "count")
        if measure not in MEASURES:
            raise RuleError(f"{where}: measure {measure!r} not in {MEASURES}")
        if raw["kind"] == "window" and int(raw.get("window", 0)) < 2:
            raise RuleError(f"{where}: a window rule needs window = seconds (>= 2)")
        if measure == "distinct" and not raw.get("distinct"):
            raise RuleError(f"{where}: measure distinct needs distinct = <field>")
        if measure == "ratio" and not raw.get("numerator"):
            raise RuleError(f"{where}: measure ratio needs numerator = [conditions]")
        try:
            threshold = Threshold(**raw.get("threshold", {}))
        except TypeError as exc:
            raise RuleError(f"{where}: threshold: {exc}") from None
        if threshold.max_per_distinct is not None and measure != "distinct":
            raise RuleError(f"{where}: threshold max_per_distinct needs measure distinct")
        subject = raw["subject"]
        out.append(
            LogRule(
                name=name,
                clause=raw["clause"],
                severity=raw["severity"],
                sources=tuple(raw["sources"]),
                subject=tuple([subject] if isinstance(subject, str) else subject),
                kind=raw["kind"],
                where=tuple(_condition(c, where) for c in raw.get("where", [])),
                threshold=threshold,
                summary=raw["summary"],
                window=int(raw.get("window", 0)),
                measure=measure,
                distinct=raw.get("distinct"),
                numerator=tuple(_condition(c, where) for c in raw.get("numerator", [])),
                breakdown=tuple(raw.get("breakdown", ())),
                declaration=read_declaration(raw, raw["severity"], where),
            )
        )
    return out


def load_rules(path: Path = RULES_FILE) -> list[LogRule]:
    """Read and validate a rule file."""
    with path.open("rb") as fh:
        try:
            document = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
    return parse_rules(document, path.name)
