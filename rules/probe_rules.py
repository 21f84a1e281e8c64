"""The probe rule engine: a probe result's facts in, findings out.

The rules are data (`rules/probes.toml`, format described at its top). This engine only looks
facts up, compares them, and fills in a `FindingDraft`; adding a rule is adding a table. Where a
rule needs a fact no probe reports directly, a function in `DERIVED` computes it from the result
(the one place behaviour needs code).

A finding's subject is the service when the result names one, else the probed URL, so the same
rule firing on the availability and the tls result of one service updates one finding.
"""

from __future__ import annotations

import math
import operator
import string
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from monitord.errors import RuleError
from monitord.timeutil import SHANGHAI, parse_time
from monitord.types import SEVERITIES, FindingDraft, ProbeResult, Severity
from rules.declared import DECLARATION_KEYS, UNDECLARED, Declaration, read_declaration

RULES_FILE = Path(__file__).with_name("probes.toml")
_MISSING: Any = object()


def _contains_any(fact: Any, value: Any) -> bool:
    return isinstance(fact, list | tuple) and any(v in fact for v in value)


def _nonempty(fact: Any, _value: Any) -> bool:
    return bool(fact)


OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "in": lambda fact, value: fact in value,
    "not_in": lambda fact, value: fact not in value,
    "contains_any": _contains_any,
    "nonempty": _nonempty,
    "empty": lambda fact, _value: not fact,
    "startswith": lambda fact, value: isinstance(fact, str) and fact.startswith(value),
}
_UNARY = frozenset({"nonempty", "empty"})


def _chain_days_to_expiry(result: ProbeResult) -> Any:
    """Days from the probe's start to the earliest expiry in the chain the server sent."""
    text = result.facts.get("chain_earliest_expiry")
    if not isinstance(text, str):
        return _MISSING
    return round((parse_time(text) - result.started_at).total_seconds() / 86400, 2)


def _local_date(fact: str) -> Callable[[ProbeResult], Any]:
    """A stored UTC time fact as the Asia/Shanghai date people read (a summary's expiry)."""

    def date(result: ProbeResult) -> Any:
        text = result.facts.get(fact)
        if not isinstance(text, str):
            return _MISSING
        try:
            return parse_time(text).astimezone(SHANGHAI).date().isoformat()
        except ValueError:
            return _MISSING

    return date


def _days_left(result: ProbeResult) -> Any:
    """Whole days until the certificate expires (the probe reports a fraction)."""
    days = result.facts.get("days_to_expiry")
    if not isinstance(days, int | float):
        return _MISSING
    return math.floor(days)


DERIVED: dict[str, Callable[[ProbeResult], Any]] = {
    "chain_days_to_expiry": _chain_days_to_expiry,
    "days_left": _days_left,
    "expiry_date": _local_date("cert_not_after"),
    "chain_expiry_date": _local_date("chain_earliest_expiry"),
}
"""Facts computed from a result for rules that need them; a rule names them like any fact."""


@dataclass(frozen=True)
class Condition:
    """One comparison of a fact with a value, or with another fact."""

    fact: str
    op: str
    value: Any = None
    value_fact: str | None = None


@dataclass(frozen=True)
class Rule:
    """One probe rule, as read from the TOML file."""

    name: str
    clause: str
    severity: Severity
    kinds: tuple[str, ...]
    summary: str
    when: tuple[Condition, ...] = ()
    when_any: tuple[Condition, ...] = ()
    declaration: Declaration = UNDECLARED
    """The incident kind and quiet period (rules/declared.py); parse_rules requires it."""


def lookup(result: ProbeResult, name: str) -> Any:
    """The value of fact `name` for `result`, or a sentinel when the result does not have it.

    `success`, `error` and `target` are the result's own fields; a `DERIVED` name is computed;
    anything else is looked up in the facts, dotted names walking into nested objects.
    """
    if name == "success":
        return result.success
    if name == "error":
        return result.error
    if name == "target":
        return result.target
    if name in DERIVED:
        return DERIVED[name](result)
    value: Any = result.facts
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return _MISSING if value is None else value


def holds(condition: Condition, result: ProbeResult) -> bool:
    """Whether one condition holds; a missing fact (or None) makes it false."""
    fact = lookup(result, condition.fact)
    if fact is _MISSING:
        return False
    value = condition.value
    if condition.value_fact is not None:
        value = lookup(result, condition.value_fact)
        if value is _MISSING:
            return False
    try:
        return bool(OPS[condition.op](fact, value))
    except TypeError:  # comparing a number with text: the fact is not what the rule expects
        return False


def _condition(rule: str, key: str, raw: Any) -> Condition:
    where = f"rule {rule!r}, {key}"
    if not isinstance(raw, Mapping):
        raise RuleError(f"{where}: expected a table {{fact, op, value}}, got {raw!r}")
    extra = set(raw) - {"fact", "op", "value", "value_fact"}
    if extra:
        raise RuleError(f"{where}: unknown key {sorted(extra)[0]!r}")
    if not isinstance(raw.get("fact"), str):
        raise RuleError(f"{where}: 'fact' must be a fact name, got {raw.get('fact')!r}")
    op = raw.get("op")
    if op not in OPS:
        raise RuleError(f"{where}: op {op!r} is not one of {', '.join(OPS)}")
    if op not in _UNARY and "value" not in raw and "value_fact" not in raw:
        raise RuleError(f"{where}: op {op!r} needs a 'value' or a 'value_fact'")
    return Condition(raw["fact"], op, raw.get("value"), raw.get("value_fact"))


_RULE_KEYS = {
    "name",
    "clause",
    "severity",
    "kinds",
    "summary",
    "when",
    "when_any",
} | DECLARATION_KEYS


def parse_rules(document: Mapping[str, Any]) -> tuple[Rule, ...]:
    """Validate a parsed rule file into rules; RuleError names the rule, the key and the value."""
    rules: list[Rule] = []
    seen: set[str] = set()
    unknown_top = set(document) - {"rule"}
    if unknown_top:
        raise RuleError(f"unknown top-level key {sorted(unknown_top)[0]!r}: expected [[rule]]")
    for index, raw in enumerate(document.get("rule", [])):
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise RuleError(f"rule #{index + 1}: 'name' must be a non-empty string, got {name!r}")
        if name in seen:
            raise RuleError(f"rule {name!r}: defined twice")
        seen.add(name)
        extra = set(raw) - _RULE_KEYS
        if extra:
            raise RuleError(f"rule {name!r}: unknown key {sorted(extra)[0]!r}")
        for key in ("clause", "summary"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise RuleError(f"rule {name!r}, {key}: expected text, got {raw.get(key)!r}")
        if raw.get("severity") not in SEVERITIES:
            raise RuleError(
                f"rule {name!r}, severity: {raw.get('severity')!r} is not one of "
                + ", ".join(SEVERITIES)
            )
        kinds = raw.get("kinds")
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise RuleError(f"rule {name!r}, kinds: expected a list of probe kinds, got {kinds!r}")
        when = tuple(_condition(name, "when", c) for c in raw.get("when", []))
        when_any = tuple(_condition(name, "when_any", c) for c in raw.get("when_any", []))
        if not when and not when_any:
            raise RuleError(f"rule {name!r}: needs 'when' or 'when_any' conditions")
        rules.append(
            Rule(
                name=name,
                clause=raw["clause"],
                severity=raw["severity"],
                kinds=tuple(kinds),
                summary=raw["summary"],
                when=when,
                when_any=when_any,
                declaration=read_declaration(raw, raw["severity"], f"probes.toml: rule {name}"),
            )
        )
    return tuple(rules)


@lru_cache(maxsize=8)
def _load(path: Path) -> tuple[Rule, ...]:
    with path.open("rb") as handle:
        try:
            document = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
    return parse_rules(document)


def load_rules(path: str | Path | None = None) -> tuple[Rule, ...]:
    """Read and validate a probe rule file (default: rules/probes.toml), cached per path."""
    return _load(Path(path) if path is not None else RULES_FILE)


class _Summary(string.Formatter):
    """Fills `{name}` with a fact (dotted names walk into nested facts), '?' when missing."""

    def __init__(self, result: ProbeResult, extra: Mapping[str, Any]) -> None:
        self._result = result
        self._extra = extra

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name in self._extra:
            return _text(self._extra[field_name]), field_name
        value = lookup(self._result, field_name)
        return ("?" if value is _MISSING else _text(value)), field_name


def _text(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def evaluate(result: ProbeResult, rules: Sequence[Rule] | None = None) -> list[FindingDraft]:
    """The findings `rules` (default: `load_rules()`) draw from one probe result.

    Pure: facts in, findings out. A rule applies to the result's kind only; it fires when all of
    its `when` conditions hold and, if it has `when_any`, at least one of those. The finding's
    evidence holds the facts its conditions read.
    """
    active = load_rules() if rules is None else rules
    subject_kind, subject = (
        ("service", result.service_id) if result.service_id else ("target", result.target)
    )
    findings: list[FindingDraft] = []
    for rule in active:
        if result.kind not in rule.kinds:
            continue
        if not all(holds(c, result) for c in rule.when):
            continue
        if rule.when_any and not any(holds(c, result) for c in rule.when_any):
            continue
        names = [c.fact for c in (*rule.when, *rule.when_any)]
        names += [c.value_fact for c in (*rule.when, *rule.when_any) if c.value_fact]
        evidence = {n: lookup(result, n) for n in dict.fromkeys(names)}
        evidence = {n: v for n, v in evidence.items() if v is not _MISSING}
        evidence["kind"] = result.kind
        summary = _Summary(
            result, {"target": result.target, "subject": subject, "error": result.error or ""}
        )
        findings.append(
            FindingDraft(
                rule=rule.name,
                clause=rule.clause,
                severity=rule.severity,
                subject_kind=subject_kind,
                subject=subject,
                summary=summary.format(rule.summary),
                evidence=evidence,
                service_id=result.service_id,
            )
        )
    return findings
