"""The log rule file: what a rule says, and the checks that a rule file says it validly.

The rules are data (`rules/logs.toml`, format described at its top); `load_rules` reads them
into `LogRule`s, and `parse_rules` rejects a file that does not describe valid rules, naming
the rule and key. What every rule says is read by `rules.declared.rule_tables`, its conditions
by `rules.conditions`, within `VOCABULARY`: the log fields and their kinds. Running them is
`rules.log_rules.LogRuleEngine`'s job.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitord.errors import RuleError
from monitord.types import LOG_QUIET_MINUTES, Severity
from rules.conditions import Condition, Vocabulary, fields, parse_conditions
from rules.declared import (
    UNDECLARED,
    Declaration,
    RuleTable,
    check_summary,
    read_rule_file,
    rule_tables,
)

RULES_FILE = Path(__file__).with_name("logs.toml")
SOURCES = ("nginx", "json")
KINDS = ("row", "window")
MEASURES = ("count", "distinct", "ratio")


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

FIELDS: dict[str, str] = {
    "ts": "number", "source": "text", "ip": "text", "user": "text", "service": "text",
    "method": "text", "path": "text", "status": "number", "bytes": "number",
    "duration_ms": "number", "client": "text", "level": "text", "role": "text", "company": "text",
    "vendor": "text", "action": "text", "target_user": "text", "target_role": "text",
    "working_time": "bool", "grant": "text", "network": "text", "sensitive_path": "bool",
    "static_path": "bool", "login_path": "bool", "error": "bool",
}  # fmt: skip
"""Each field a condition may name, with its kind: the columns of
`monitord.accesslog.schema.SCHEMA` (but the raw line) and the derived fields."""

VOCABULARY = Vocabulary(
    fields=FIELDS,
    fields_are="a log column or a derived field (logs.toml lists them at its top)",
    refused={"contains_any": "a log field holds one value, not a list"},
    value_field_refused="a log rule compares a field with a value, not with another field",
)


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
    when: tuple[Condition, ...]
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
        names.update(fields((*self.when, *self.numerator)))
        for name in list(names):
            if name in DERIVED_NEEDS:
                names.discard(name)
                names.update(DERIVED_NEEDS[name])
        return sorted(names)


SUMMARY_SAMPLE: dict[str, object] = {"subject": "u1", "count": 1, "measure": "1", "window_min": 1}
"""The placeholders a summary may name, with a value of the kind the engine fills in
(`rules.log_rules.LogRuleEngine._summarise`)."""
_WHOLE_LEAST = {"min_count": 1, "min_distinct": 0, "baseline_min_lines": 1}
"""The threshold keys that are whole numbers, with the least each may be."""
_NUMBER_RANGE: dict[str, tuple[float, float | None, str]] = {
    "min_rate": (0.0, 1.0, "a share from 0 to 1, such as 0.05"),
    "peers_quantile": (0.0, 1.0, "a quantile above 0 and at most 1, such as 0.99"),
    "max_per_distinct": (0.0, None, "a number above 0"),
    "peers_factor": (0.0, None, "a number above 0"),
    "baseline_factor": (0.0, None, "a number above 0"),
}
"""The threshold keys that are numbers: above the low end, at most the high end (if any)."""

_KEYS = ("sources", "subject", "kind")
_OPTIONAL = ("when", "window", "measure", "distinct", "numerator", "threshold", "breakdown")


def parse_rules(data: Mapping[str, Any], origin: str = "logs.toml") -> list[LogRule]:
    """Validate the `[[rule]]` tables of a rule file; errors name the file, rule and key."""
    return [_rule(table) for table in rule_tables(data, origin, _KEYS, _OPTIONAL)]


def _rule(table: RuleTable) -> LogRule:
    raw, where = table.raw, table.where
    if raw["kind"] not in KINDS:
        raise RuleError(f"{where}: kind {raw['kind']!r} not in {KINDS}")
    measure = raw.get("measure", "count")
    if measure not in MEASURES:
        raise RuleError(f"{where}: measure {measure!r} not in {MEASURES}")
    window = raw.get("window", 0)
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise RuleError(f"{where}: window = {window!r}: expected whole seconds, such as 600")
    if raw["kind"] == "window" and window < 2:
        raise RuleError(f"{where}: a window rule needs window = seconds (>= 2)")
    if measure == "distinct" and not raw.get("distinct"):
        raise RuleError(f"{where}: measure distinct needs distinct = <field>")
    if measure == "ratio" and not raw.get("numerator"):
        raise RuleError(f"{where}: measure ratio needs numerator = [conditions]")
    threshold = _threshold(raw.get("threshold", {}), f"{where}: threshold")
    if threshold.max_per_distinct is not None and measure != "distinct":
        raise RuleError(f"{where}: threshold max_per_distinct needs measure distinct")
    distinct = raw.get("distinct")
    if distinct is not None:
        _names(distinct, f"{where}: distinct", FIELDS)
    check_summary(raw["summary"], where, SUMMARY_SAMPLE)
    return LogRule(
        name=table.rule.name,
        clause=table.rule.clause,
        severity=table.rule.severity,
        sources=_names(raw["sources"], f"{where}: sources", SOURCES),
        subject=_names(raw["subject"], f"{where}: subject", FIELDS),
        kind=raw["kind"],
        when=parse_conditions(raw.get("when", []), f"{where}: when", VOCABULARY),
        threshold=threshold,
        summary=raw["summary"],
        window=window,
        measure=measure,
        distinct=distinct,
        numerator=parse_conditions(raw.get("numerator", []), f"{where}: numerator", VOCABULARY),
        breakdown=_names(raw.get("breakdown", []), f"{where}: breakdown", FIELDS, empty_ok=True),
        declaration=table.rule.declaration,
    )


def _threshold(raw: Any, where: str) -> Threshold:
    # Each value is checked for its kind and range here: a quoted number failed mid-analysis
    # with a TypeError, and a quantile of 5 judged every subject against nothing.
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: expected a table such as {{ min_count = 8 }}, got {raw!r}")
    known = (*_WHOLE_LEAST, *_NUMBER_RANGE)
    values: dict[str, int | float] = {}
    for key, value in raw.items():
        if key not in known:
            raise RuleError(f"{where}: unknown key {key!r}, expected one of {', '.join(known)}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RuleError(f"{where}: {key} = {value!r}: expected a number")
        if key in _WHOLE_LEAST:
            if not isinstance(value, int) or value < _WHOLE_LEAST[key]:
                raise RuleError(
                    f"{where}: {key} = {value!r}: expected a whole number of at least "
                    f"{_WHOLE_LEAST[key]}"
                )
        else:
            low, high, what = _NUMBER_RANGE[key]
            if not low < value or (high is not None and value > high):
                raise RuleError(f"{where}: {key} = {value!r}: expected {what}")
        values[key] = value if key in _WHOLE_LEAST else float(value)
    return Threshold(**values)  # type: ignore[arg-type]


def _names(
    raw: Any, where: str, known: Collection[str], *, empty_ok: bool = False
) -> tuple[str, ...]:
    # A name (or list of names) the engine looks up: an unknown one would fail mid-analysis,
    # or, for a source, never match a line.
    names = [raw] if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise RuleError(f"{where}: expected a name or a list of names, got {raw!r}")
    if not names and not empty_ok:
        raise RuleError(f"{where}: expected at least one name")
    for name in names:
        if name not in known:
            raise RuleError(f"{where}: {name!r} is not one of {', '.join(known)}")
    return tuple(names)


def load_rules(path: Path = RULES_FILE) -> list[LogRule]:
    """Read and validate a rule file."""
    return parse_rules(read_rule_file(path), path.name)
