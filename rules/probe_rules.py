"""The probe rule engine: a probe result's facts in, findings out.

The rules are data (`rules/probes.toml`, format described at its top), their conditions in the
language of `rules.conditions`, compiled once when the file is read. This engine only looks
facts up, has the conditions compare them, and fills in a `FindingDraft`; adding a rule is
adding a table. Where a rule needs a fact no probe reports directly, a function in `DERIVED`
computes it from the result (the one place behaviour needs code).

A finding's subject is the service when the result names one, else the probed URL, so the same
rule firing on the availability and the tls result of one service updates one finding.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitord.errors import RuleError
from monitord.names import probe_error_text
from monitord.redact import mask_url, mask_urls
from monitord.timeutil import SHANGHAI, parse_time
from monitord.types import PROBE_KINDS, FindingDraft, ProbeResult, Severity
from rules.conditions import (
    MISSING,
    Condition,
    Test,
    Vocabulary,
    compile_all,
    fields,
    parse_conditions,
)
from rules.declared import (
    UNDECLARED,
    Declaration,
    RuleTable,
    check_summary,
    read_rule_file,
    rule_tables,
)

RULES_FILE = Path(__file__).with_name("probes.toml")
VOCABULARY = Vocabulary()
"""A probe rule may name any fact, with every op: facts are whatever the probes report."""


def _chain_days_to_expiry(result: ProbeResult) -> Any:
    """Days from the probe's start to the earliest expiry in the chain the server sent."""
    text = result.facts.get("chain_earliest_expiry")
    if not isinstance(text, str):
        return MISSING
    return round((parse_time(text) - result.started_at).total_seconds() / 86400, 2)


def _local_date(fact: str) -> Callable[[ProbeResult], Any]:
    """A stored UTC time fact as the Asia/Shanghai date people read (a summary's expiry)."""

    def date(result: ProbeResult) -> Any:
        text = result.facts.get(fact)
        if not isinstance(text, str):
            return MISSING
        try:
            return parse_time(text).astimezone(SHANGHAI).date().isoformat()
        except ValueError:
            return MISSING

    return date


def _days_left(result: ProbeResult) -> Any:
    """Whole days until the certificate expires (the probe reports a fraction)."""
    days = result.facts.get("days_to_expiry")
    if not isinstance(days, int | float):
        return MISSING
    return math.floor(days)


def _expires_in(result: ProbeResult) -> Any:
    """When the certificate expires, as people read it: "5 天后", or "24 小时内" on its last day
    (where whole days would say "0 天后")."""
    days = _days_left(result)
    if days is MISSING:
        return MISSING
    return "24 小时内" if days < 1 else f"{days} 天后"


def _not_yet_valid(result: ProbeResult) -> Any:
    """Whether the certificate's validity starts after the probe's start: every client refuses
    it, whatever the verify code said first (a host-name mismatch is checked before the dates)."""
    text = result.facts.get("cert_not_before")
    if not isinstance(text, str):
        return MISSING
    try:
        return parse_time(text) > result.started_at
    except ValueError:
        return MISSING


def _hsts_off_reason(result: ProbeResult) -> Any:
    """Why HSTS is not in force, for people (no header, max-age=0, no valid max-age)."""
    hsts = result.facts.get("hsts")
    if not isinstance(hsts, Mapping) or hsts.get("enabled") is not False:
        return MISSING
    if not hsts.get("present"):
        return "未返回 Strict-Transport-Security 头"
    if hsts.get("max_age") == 0:
        return "max-age=0，即关闭 HSTS"
    return "头中没有有效的 max-age，浏览器忽略该头"


def _scheme_of(url: Any) -> Any:
    """A URL's scheme in lower case ("HTTP://…" is plain HTTP too)."""
    if not isinstance(url, str):
        return MISSING
    return _scheme_of_text(url)


@lru_cache(maxsize=8192)
def _scheme_of_text(url: str) -> Any:
    # Cached: every rule that reads a scheme asks it of every result of every round.
    try:
        return urlsplit(url).scheme or MISSING
    except ValueError:
        return MISSING


def _scheme(result: ProbeResult) -> Any:
    """The probed URL's scheme."""
    return _scheme_of(result.target)


def _final_scheme(result: ProbeResult) -> Any:
    """The scheme of the URL the redirects end on (availability's `final_url`)."""
    return _scheme_of(result.facts.get("final_url"))


def _landing_url(result: ProbeResult) -> Any:
    """The URL the redirects end on, as people may read it: its password and tokens masked."""
    url = result.facts.get("final_url")
    return mask_url(url) if isinstance(url, str) else MISSING


DERIVED: dict[str, Callable[[ProbeResult], Any]] = {
    "scheme": _scheme,
    "final_scheme": _final_scheme,
    "landing_url": _landing_url,
    "chain_days_to_expiry": _chain_days_to_expiry,
    "days_left": _days_left,
    "expires_in": _expires_in,
    "not_yet_valid": _not_yet_valid,
    "expiry_date": _local_date("cert_not_after"),
    "valid_from_date": _local_date("cert_not_before"),
    "hsts_off_reason": _hsts_off_reason,
    "chain_expiry_date": _local_date("chain_earliest_expiry"),
}
"""Facts computed from a result for rules that need them; a rule names them like any fact."""


@dataclass(frozen=True)
class Rule:
    """One probe rule, as read from the TOML file."""

    name: str
    clause: str
    severity: Severity
    kinds: tuple[str, ...]
    summary: str
    when: tuple[Condition, ...] = ()
    declaration: Declaration = UNDECLARED
    """The incident kind and quiet period (rules/declared.py); parse_rules requires it."""
    fires: Test = field(init=False, repr=False, compare=False)
    """Whether all of `when` holds, compiled once (`rules.conditions.compile_all`)."""
    evidence: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)
    """The facts `when` reads, which a finding's evidence holds."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fires", compile_all(self.when))
        object.__setattr__(self, "evidence", tuple(fields(self.when)))


_RESULT_FIELDS: dict[str, Callable[[ProbeResult], Any]] = {
    "success": lambda result: result.success,
    "error": lambda result: result.error,
    "target": lambda result: mask_url(result.target),
    **DERIVED,
}
"""The names `lookup` answers from the result itself, not from its facts. The target is the URL
as people may read it (in a summary, in evidence): its password and tokens masked."""


def lookup(result: ProbeResult, name: str) -> Any:
    """The value of fact `name` for `result`, or a sentinel when the result does not have it.

    `success`, `error` and `target` are the result's own fields; a `DERIVED` name is computed;
    anything else is looked up in the facts, dotted names walking into nested objects.
    """
    own = _RESULT_FIELDS.get(name)
    if own is not None:
        return own(result)
    if "." not in name:
        value = result.facts.get(name)
        return MISSING if value is None else value
    value = result.facts
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return MISSING if value is None else value


def parse_rules(document: Mapping[str, Any], origin: str = "probes.toml") -> tuple[Rule, ...]:
    """Validate a parsed rule file into rules; RuleError names the file, rule, key and value."""
    return tuple(_rule(table) for table in rule_tables(document, origin, ("kinds", "when")))


def _rule(table: RuleTable) -> Rule:
    raw, where = table.raw, table.where
    kinds = raw["kinds"]
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise RuleError(f"{where}: kinds: expected a list of probe kinds, got {kinds!r}")
    unknown = [kind for kind in kinds if kind not in PROBE_KINDS]
    if unknown:
        # A rule of no kind never runs, and nothing says so.
        raise RuleError(
            f"{where}: kinds: {unknown[0]!r} is not a probe kind, expected one of "
            f"{', '.join(PROBE_KINDS)}"
        )
    check_summary(raw["summary"], where)
    when = parse_conditions(raw["when"], f"{where}: when", VOCABULARY)
    if not when:
        # A rule without conditions would fire on every result of its kinds.
        raise RuleError(f"{where}: when: expected at least one condition")
    return Rule(
        name=table.rule.name,
        clause=table.rule.clause,
        severity=table.rule.severity,
        kinds=tuple(kinds),
        summary=raw["summary"],
        when=when,
        declaration=table.rule.declaration,
    )


@lru_cache(maxsize=8)
def _load(path: Path) -> tuple[Rule, ...]:
    return parse_rules(read_rule_file(path), path.name)


@lru_cache(maxsize=8)
def _by_kind(path: Path) -> dict[str, tuple[Rule, ...]]:
    """A rule file's rules per probe kind, in file order."""
    by_kind: dict[str, list[Rule]] = {}
    for rule in _load(path):
        for kind in rule.kinds:
            by_kind.setdefault(kind, []).append(rule)
    return {kind: tuple(kind_rules) for kind, kind_rules in by_kind.items()}


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
        return ("?" if value is MISSING else _text(value)), field_name


def _text(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return value


def evaluate(result: ProbeResult, rules: Sequence[Rule] | None = None) -> list[FindingDraft]:
    """The findings `rules` (default: `load_rules()`) draw from one probe result.

    Pure: facts in, findings out. A rule applies to the result's kind only; it fires when all of
    its `when` conditions hold. The finding's evidence holds the facts its conditions read.
    """
    if rules is None:
        active: Sequence[Rule] = _by_kind(RULES_FILE).get(result.kind, ())
    else:
        active = [rule for rule in rules if result.kind in rule.kinds]
    findings: list[FindingDraft] = []
    value_of = partial(lookup, result)
    for rule in active:
        if not rule.fires(value_of):
            continue
        # Masked once a rule fires: most results fire none, and a round judges thousands.
        target = mask_url(result.target)
        subject_kind, subject = (
            ("service", result.service_id) if result.service_id else ("target", target)
        )
        evidence = {n: lookup(result, n) for n in rule.evidence}
        evidence = {n: v for n, v in evidence.items() if v is not MISSING}
        evidence["kind"] = result.kind
        summary = _Summary(
            result,
            {
                "target": target,
                "subject": subject,
                "error": probe_error_text(mask_urls(result.error or "")),
            },
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
