"""The rules' registry: what the core calls to reach the rules, each import on first use.

Every rule is data in this folder (`logs.toml`, `probes.toml`, `core.toml`), each naming its
clause, severity and incident kind (`declared.py`). The core's stages reach the rules only
through the functions here, so that a command loads only the engines it needs (`monitord
analyse` keeps its memory budget) and no module of the core imports a rule engine directly.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitord.accesslog.analysis import LogRules
    from monitord.config import LogSettings
    from monitord.types import FindingDraft, ProbeResult


def log_rule_engine(settings: LogSettings | None = None) -> LogRules:
    """A log rule engine with the shipped rules (logs.toml); working hours from `[logs]` of the
    config when given, else the defaults."""
    from rules.log_rules import LogRuleEngine

    return LogRuleEngine.from_settings(settings)


def log_rule_names() -> list[str]:
    """The names of the shipped log rules (what their findings are filed under)."""
    from rules.log_rule_file import load_rules

    return [r.name for r in load_rules()]


@cache
def declared_rule_kinds() -> dict[str, str]:
    """Every rule's name (a glob for a family such as zap:*) and the incident kind it declares."""
    from rules.declared import declared_rules

    return {name: rule.incident for name, rule in declared_rules().items()}


def probe_findings(result: ProbeResult) -> list[FindingDraft]:
    """The findings the probe rules (probes.toml) draw from one probe result."""
    from rules.probe_rules import evaluate

    return evaluate(result)


def probe_rule_names(kind: str) -> list[str]:
    """The names of the probe rules that judge results of `kind`."""
    from rules.probe_rules import load_rules

    return [r.name for r in load_rules() if kind in r.kinds]
