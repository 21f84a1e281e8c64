"""The rules' registry: what the core calls to reach the rules, each import on first use.

Every rule is data in this folder (`logs.toml`, `probes.toml`, `core.toml`), each naming its
clause, severity and incident kind (`declared.py`). The core's stages reach the rules only
through the functions here, so that a command loads only the engines it needs (`monitord
analyse` keeps its memory budget) and no module of the core imports a rule engine directly.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from monitord.errors import RuleError

if TYPE_CHECKING:
    from monitord.accesslog.analysis import LogRules
    from monitord.config import LogSettings
    from monitord.types import FindingDraft, ProbeResult
    from rules.compliance import ComplianceRule
    from rules.declared import DeclaredRule


def log_rule_engine(settings: LogSettings | None = None) -> LogRules:
    """A log rule engine with the shipped rules (logs.toml); working hours from `[logs]` of the
    config when given, else the defaults."""
    from rules.log_rules import LogRuleEngine

    return LogRuleEngine.from_settings(settings)


def log_window_rules() -> dict[str, int]:
    """The shipped log rules that judge a window of lines (error_burst…), with its seconds."""
    from rules.log_rule_file import load_rules

    return {r.name: r.window for r in load_rules() if r.kind == "window"}


def log_rule_names() -> list[str]:
    """The names of the shipped log rules (what their findings are filed under)."""
    from rules.log_rule_file import load_rules

    return [r.name for r in load_rules()]


def log_rule_summary(name: str) -> str:
    """The summary template of a shipped log rule (`{subject}`, `{count}`, `{measure}`,
    `{window_min}`); RuleError when no log rule has that name."""
    from rules.log_rule_file import load_rules

    for rule in load_rules():
        if rule.name == name:
            return rule.summary
    raise RuleError(f"rules/logs.toml: no log rule named {name!r}")


@cache
def declared_rules() -> dict[str, DeclaredRule]:
    """Every rule of the three rule files by name, with its clause, severity and incident kind;
    RuleError when a file is invalid or a name is declared twice."""
    from rules.declared import DeclaredRule, read_core_rules
    from rules.log_rule_file import load_rules as load_log_rules
    from rules.probe_rules import load_rules as load_probe_rules

    found = read_core_rules()
    found += [
        DeclaredRule(r.name, r.clause, r.severity, r.declaration, "probes.toml")
        for r in load_probe_rules()
    ]
    found += [
        DeclaredRule(r.name, r.clause, r.severity, r.declaration, "logs.toml")
        for r in load_log_rules()
    ]
    declared: dict[str, DeclaredRule] = {}
    for rule in found:
        if rule.name in declared:
            raise RuleError(
                f"rule {rule.name!r} is declared in both {declared[rule.name].origin} and "
                f"{rule.origin}"
            )
        declared[rule.name] = rule
    return declared


@cache
def declared_rule_kinds() -> dict[str, str]:
    """Every rule's name (a glob for a family such as zap:*) and the incident kind it declares."""
    return {name: rule.incident for name, rule in declared_rules().items()}


@cache
def compliance_rules() -> tuple[ComplianceRule, ...]:
    """The quarterly compliance rules (compliance.toml); RuleError when the file is invalid."""
    from rules.compliance import load_rules

    return tuple(load_rules())


def probe_findings(result: ProbeResult) -> list[FindingDraft]:
    """The findings the probe rules (probes.toml) draw from one probe result."""
    from rules.probe_rules import evaluate

    return evaluate(result)


def probe_rule_names(kind: str) -> list[str]:
    """The names of the probe rules that judge results of `kind`."""
    from rules.probe_rules import load_rules

    return [r.name for r in load_rules() if kind in r.kinds]
