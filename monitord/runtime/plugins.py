"""The plug-ins the core calls that are not registries themselves, reached in one place.

DESIGN.md keeps the arrows one way: probes, rules, alerts and reports import from monitord, and
monitord's core reaches them only through their registries. `probes` is a registry
(`probes.PROBES`) and is used as one. The rule engines and alert delivery have none of their own,
so this module is theirs: the rest of the core calls these functions, and only this module
imports them. Each import happens on first use, so a command loads only the plug-ins it needs
(`monitord analyse` keeps its memory budget).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.delivery import DeliveryReport
    from monitord.accesslog.analysis import LogRules
    from monitord.config import LogSettings
    from monitord.runtime.app import App
    from monitord.types import FindingDraft, ProbeResult


def log_rules(settings: LogSettings | None = None) -> LogRules:
    """A log rule engine with the shipped rules (rules/logs.toml); working hours from `[logs]`
    of the config when given, else the defaults."""
    from rules.log_rules import LogRuleEngine

    return LogRuleEngine.from_settings(settings)


def log_rule_names() -> list[str]:
    """The names of the shipped log rules (what their findings are filed under)."""
    from rules.log_rule_file import load_rules

    return [r.name for r in load_rules()]


@cache
def declared_rule_kinds() -> dict[str, str]:
    """Every rule's name (a glob for a family such as zap:*) and the incident kind it declares
    in rules/*.toml."""
    from rules.declared import declared_rules

    return {name: rule.incident for name, rule in declared_rules().items()}


def probe_findings(result: ProbeResult) -> list[FindingDraft]:
    """The findings the probe rules (rules/probes.toml) draw from one probe result."""
    from rules.probe_rules import evaluate

    return evaluate(result)


def probe_rule_names(kind: str) -> list[str]:
    """The names of the probe rules that judge results of `kind`."""
    from rules.probe_rules import load_rules

    return [r.name for r in load_rules() if kind in r.kinds]


async def deliver_alerts(app: App, **only: Any) -> DeliveryReport:
    """Deliver due alerts from the outbox through apprise; `only` narrows what is due
    (alerts.delivery.deliver_due's incident_id, kinds, limit)."""
    from alerts.delivery import deliver_due, make_apprise_sender

    secret = app.settings.secrets.smtp_password
    sender = make_apprise_sender(secret.get_secret_value() if secret else None)
    return await deliver_due(app.store, app.settings, app.clock, sender, **only)
