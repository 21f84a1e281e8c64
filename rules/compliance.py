"""The quarterly compliance rules of `compliance.toml`: each names its clause, its scope (one
verdict per service, or one for the platform), the check that judges it and that check's
parameters. The checks themselves are code, in monitord/compliance/engine.py."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monitord.errors import RuleError

HERE = Path(__file__).parent
SCOPES = ("service", "platform")
_KEYS = frozenset({"name", "clause", "scope", "check", "title", "params"})


@dataclass(frozen=True)
class ComplianceRule:
    """One compliance rule: what it is called, the clause it judges, for whom, and how."""

    name: str
    clause: str
    scope: Literal["service", "platform"]
    check: str
    title: str
    """What the rule requires, in Chinese."""
    params: Mapping[str, Any] = field(default_factory=dict)


def parse_rules(document: Mapping[str, Any], origin: str) -> list[ComplianceRule]:
    """Validate the `[[rule]]` tables of a compliance rule file; RuleError names the rule and
    the key that is wrong."""
    rules: list[ComplianceRule] = []
    seen: set[str] = set()
    for index, raw in enumerate(document.get("rule", [])):
        name = raw.get("name")
        where = f"{origin}: rule {name if isinstance(name, str) and name else f'#{index + 1}'}"
        extra = set(raw) - _KEYS
        if extra:
            raise RuleError(f"{where}: unknown key {sorted(extra)[0]!r}, expected {sorted(_KEYS)}")
        for key in ("name", "clause", "check", "title"):
            if not isinstance(raw.get(key), str) or not raw[key].strip():
                raise RuleError(f"{where}: {key} = {raw.get(key)!r}: expected text")
        if raw.get("scope") not in SCOPES:
            raise RuleError(f"{where}: scope = {raw.get('scope')!r}: expected one of {SCOPES}")
        params = raw.get("params", {})
        if not isinstance(params, dict):
            raise RuleError(f"{where}: params = {params!r}: expected a table")
        if name in seen:
            raise RuleError(f"{where}: the name is used twice")
        seen.add(name)
        rules.append(
            ComplianceRule(name, raw["clause"], raw["scope"], raw["check"], raw["title"], params)
        )
    return rules


def load_rules(path: Path = HERE / "compliance.toml") -> list[ComplianceRule]:
    """The compliance rules of `path` (the shipped file by default); RuleError when invalid."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the rule file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"{path}: not valid TOML: {exc}") from None
    return parse_rules(document, path.name)
