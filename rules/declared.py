"""What every rule declares besides its detection: the incident kind its findings belong to.

Each rule that can raise a finding says, next to its clause and severity, which incident kind
it belongs to (`incident = "abnormal_behaviour"`), so the clause 7.3.3 clock is decided by the
rule itself and not by a list kept elsewhere. A rule of severity high or above that is meant to
be compliance-only says why (`why = "…"`). A rule may give `quiet_minutes`: after that long
without a new occurrence, the next one is a new episode of its finding, with a new incident and
a new two-hour clock.

The rules live in three files: `logs.toml` (access-log rules), `probes.toml` (probe rules) and
`core.toml` (rules whose detection is code in monitord: the catalogue's filing checks, the
service state machine, the scans). `rules.declared_rules()`, the registry's, reads them all.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
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


_CORE_KEYS = frozenset({"name", "clause", "severity", "summary"}) | DECLARATION_KEYS


def parse_core_rules(document: Mapping[str, Any], origin: str = "core.toml") -> list[DeclaredRule]:
    """Validate core.toml's `[[rule]]` tables; RuleError names the rule and key."""
    rules: list[DeclaredRule] = []
    for index, raw in enumerate(document.get("rule", [])):
        name = raw.get("name")
        where = f"{origin}: rule {name or f'#{index + 1}'}"
        if not isinstance(name, str) or not name:
            raise RuleError(f"{where}: name: expected the rule's name")
        extra = set(raw) - _CORE_KEYS
        if extra:
            raise RuleError(f"{where}: unknown key {sorted(extra)[0]!r}")
        for key in ("clause", "summary"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise RuleError(f"{where}: {key}: expected text, got {raw.get(key)!r}")
        if raw.get("severity") not in SEVERITIES:
            raise RuleError(f"{where}: severity {raw.get('severity')!r} not in {SEVERITIES}")
        rules.append(
            DeclaredRule(
                name=name,
                clause=raw["clause"],
                severity=raw["severity"],
                declaration=read_declaration(raw, raw["severity"], where),
                origin=origin,
            )
        )
    return rules


def read_core_rules() -> list[DeclaredRule]:
    """The rules of core.toml; RuleError when the file is invalid."""
    return parse_core_rules(_read(HERE / "core.toml"))


def _read(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        try:
            return tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise RuleError(f"{path}: not valid TOML: {exc}") from None
