"""What every rule declares besides its detection: the incident kind its findings belong to.

Each rule that can raise a finding says, next to its clause and severity, which incident kind
it belongs to (`incident = "abnormal_behaviour"`), so the clause 7.3.3 clock is decided by the
rule itself and not by a list kept elsewhere. A rule of severity high or above that is meant to
be compliance-only says why (`why = "…"`). A rule may give `quiet_minutes`: after that long
without a new occurrence, the next one is a new episode of its finding, with a new incident and
a new two-hour clock.

The rules live in three files: `logs.toml` (access-log rules), `probes.toml` (probe rules) and
`core.toml` (rules whose detection is code in monitord: the catalogue's filing checks, the
service state machine, the scans). `rule_tables` is the one reader of their tables: it checks
what every rule says (name, clause, severity, summary, declaration) and hands each file's own
keys to its module (`probe_rules`, `log_rule_file`), whose conditions `rules.conditions` reads.
`rules.declared_rules()`, the registry's, reads them all.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitord.errors import RuleError
from monitord.types import INCIDENT_KINDS, QUIET_KINDS, SEVERITIES, Severity

HERE = Path(__file__).parent
RULE_FILES = ("core.toml", "probes.toml", "logs.toml")
DECLARATION_KEYS = frozenset({"incident", "why", "quiet_minutes"})
MAX_QUIET_MINUTES = 31 * 24 * 60


@dataclass(frozen=True)
class Declaration:
    """A rule's incident kind, why a serious rule stays quiet, and its quiet period."""

    incident: str
    why: str | None = None
    quiet_minutes: int | None = None


UNDECLARED = Declaration("other")
"""What a rule built in code without a declaration counts as: a security event, never quiet."""


@dataclass(frozen=True)
class DeclaredRule:
    """One rule as every file declares it: name (a glob for a family such as zap:*), clause,
    severity, and its Declaration."""

    name: str
    clause: str
    severity: Severity
    declaration: Declaration
    origin: str

    @property
    def incident(self) -> str:
        """The incident kind its findings belong to."""
        return self.declaration.incident


def read_declaration(raw: Mapping[str, Any], severity: str, where: str) -> Declaration:
    """Validate a rule table's `incident`, `why` and `quiet_minutes`; RuleError names the key."""
    incident = raw.get("incident")
    if incident not in INCIDENT_KINDS:
        raise RuleError(
            f"{where}: incident = {incident!r}: expected the incident kind its findings belong to, "
            f"one of {', '.join(INCIDENT_KINDS)}"
        )
    why = raw.get("why")
    if why is not None and (not isinstance(why, str) or not why.strip()):
        raise RuleError(f"{where}: why = {why!r}: expected a sentence")
    serious = severity in SEVERITIES and SEVERITIES.index(severity) >= SEVERITIES.index("high")
    if serious and incident in QUIET_KINDS and not why:
        raise RuleError(
            f"{where}: severity {severity} with incident = {incident!r} opens no incident: "
            'say why it is compliance-only (why = "…") or name the incident kind it belongs to'
        )
    quiet = raw.get("quiet_minutes")
    if quiet is not None and (type(quiet) is not int or not 1 <= quiet <= MAX_QUIET_MINUTES):
        raise RuleError(
            f"{where}: quiet_minutes = {quiet!r}: expected whole minutes from 1 to "
            f"{MAX_QUIET_MINUTES}"
        )
    return Declaration(incident=incident, why=why, quiet_minutes=quiet)


COMMON_KEYS = frozenset({"name", "clause", "severity", "summary"}) | DECLARATION_KEYS
"""The keys every rule table has (`why` and `quiet_minutes` optional)."""


@dataclass(frozen=True)
class RuleTable:
    """One `[[rule]]` table whose common keys are valid: the rule it declares, the table, and
    where it stands (`logs.toml: rule x`) for the errors of the keys its own file adds."""

    rule: DeclaredRule
    raw: Mapping[str, Any]
    where: str


def rule_tables(
    document: Mapping[str, Any],
    origin: str,
    required: Collection[str] = (),
    optional: Collection[str] = (),
) -> list[RuleTable]:
    """The `[[rule]]` tables of a rule file, their common keys checked: a name used once, clause
    and summary, severity, and the declaration; no key but the common ones and the file's own
    (`required`, `optional`). RuleError names the file, the rule and the key."""
    unknown_top = set(document) - {"rule"}
    if unknown_top:
        raise RuleError(
            f"{origin}: unknown top-level key {sorted(unknown_top)[0]!r}: expected [[rule]]"
        )
    raws = document.get("rule", [])
    if not isinstance(raws, list):
        raise RuleError(f"{origin}: rule: expected [[rule]] tables")
    tables: list[RuleTable] = []
    seen: set[str] = set()
    for index, raw in enumerate(raws):
        if not isinstance(raw, Mapping):
            raise RuleError(f"{origin}: rule #{index + 1}: expected a table, got {raw!r}")
        name = raw.get("name")
        where = f"{origin}: rule {name or f'#{index + 1}'}"
        if not isinstance(name, str) or not name:
            raise RuleError(f"{where}: name: expected the rule's name, got {name!r}")
        if name in seen:
            raise RuleError(f"{where}: name used twice")
        seen.add(name)
        extra = set(raw) - COMMON_KEYS - set(required) - set(optional)
        if extra:
            raise RuleError(f"{where}: unknown key {sorted(extra)[0]!r}")
        for key in ("clause", "summary", "severity", *required):
            if key not in raw:
                raise RuleError(f"{where}: missing {key}")
        for key in ("clause", "summary"):
            if not isinstance(raw[key], str) or not raw[key]:
                raise RuleError(f"{where}: {key}: expected text, got {raw[key]!r}")
        severity = raw["severity"]
        if severity not in SEVERITIES:
            raise RuleError(f"{where}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        rule = DeclaredRule(
            name=name,
            clause=raw["clause"],
            severity=severity,
            declaration=read_declaration(raw, severity, where),
            origin=origin,
        )
        tables.append(RuleTable(rule, raw, where))
    return tables


class _SampleSummary(string.Formatter):
    """Fills each placeholder with the sample value offered for it; with none offered (probe
    rules, whose summaries may name any fact), with "?", as a missing fact is shown."""

    def __init__(self, offered: Mapping[str, object] | None) -> None:
        self._offered = offered

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if self._offered is None:
            return "?", field_name
        return self._offered[field_name], field_name  # KeyError: a name the rule never fills


def check_summary(summary: str, where: str, offered: Mapping[str, object] | None = None) -> None:
    """Refuse a summary that would fail when a finding is made, by formatting it once.

    `offered` maps the only names the rule fills to a sample value of each; None when any name
    may be filled. Raises RuleError naming `where` and the placeholder.
    """
    try:
        _SampleSummary(offered).format(summary)
    except KeyError as exc:
        names = ", ".join(f"{{{name}}}" for name in offered or ())
        raise RuleError(
            f"{where}: summary: {{{exc.args[0]}}} is not a placeholder it fills, expected one of "
            f"{names}"
        ) from None
    except (ValueError, IndexError, AttributeError) as exc:
        # A brace left open, an unknown !conversion or a format the value cannot take.
        raise RuleError(
            f"{where}: summary {summary!r}: expected text with {{name}} placeholders ({exc}); "
            "write a brace itself as {{ or }}"
        ) from None


def parse_core_rules(document: Mapping[str, Any], origin: str = "core.toml") -> list[DeclaredRule]:
    """Validate core.toml's `[[rule]]` tables; RuleError names the rule and key."""
    return [table.rule for table in rule_tables(document, origin)]


def read_core_rules() -> list[DeclaredRule]:
    """The rules of core.toml; RuleError when the file is invalid."""
    return parse_core_rules(read_rule_file(HERE / "core.toml"))


def read_rule_file(path: Path) -> dict[str, Any]:
    """A rule file's document; RuleError names the file when it is not valid TOML."""
    with path.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
