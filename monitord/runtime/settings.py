"""Loading the config with the rules at hand: what the config alone cannot check.

The config (monitord.config) knows no rule; each rule declares its incident kind in rules/. A
config whose incidents.rule_kinds would take a security rule off the two-hour clock of clause
7.3.3, or names a rule that does not exist, is refused here, wherever the daemon or a command
loads the config.
"""

from __future__ import annotations

from pathlib import Path

import rules
from monitord.config import (
    Settings,
    load_config,
    remapped_security_rule,
    unmatched_rule_pattern,
)
from monitord.errors import ConfigError


def check_rules(settings: Settings) -> None:
    """Raise ConfigError when the config remaps a security rule (naming clause 7.3.3), or
    names a rule that does not exist."""
    if not settings.incidents.rule_kinds:
        return  # nothing remapped: the rule files need not be read
    declared = rules.declared_rule_kinds()
    problem = remapped_security_rule(settings.incidents, declared) or unmatched_rule_pattern(
        settings.incidents, declared
    )
    if problem is not None:
        raise ConfigError(f"{settings.source}: incidents: {problem}")


def load_settings(path: str | Path | None, env: dict[str, str] | None = None) -> Settings:
    """Read, validate and check a config file against the rules; None: the built-in defaults.

    Raises ConfigError, one line per problem.
    """
    settings = load_config(path, env)
    check_rules(settings)
    return settings
