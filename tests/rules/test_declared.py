"""Every rule that can raise a finding declares the incident kind its findings belong to."""

from __future__ import annotations

import pytest

from monitord import catalogue, probing, scans
from monitord.accesslog import work as logwork
from monitord.config import Settings
from monitord.errors import RuleError
from monitord.incidents import class_of_kind, kind_of_rule
from monitord.types import QUIET_KINDS, SEVERITIES
from rules.declared import declared_rules, parse_core_rules
from rules.log_rule_file import load_rules as load_log_rules
from rules.probe_rules import load_rules as load_probe_rules

# Every rule name the code writes findings under (the rule files' own rules are walked below).
CODE_RULES = [
    *catalogue.CATALOGUE_RULES,
    probing.RULE_DOWN,
    probing.RULE_UNANNOUNCED,
    probing.RULE_SLOW,
    probing.RULE_OVERDUE,
    scans.RULE_QUARTER_MISSING,
    logwork.RULE_LOG_GAP,
    "zap:10202",  # one ZAP plugin: every zap:<plugin> is declared by the family zap:*
]


def test_every_rule_of_every_file_names_its_incident_kind() -> None:
    names = [r.name for r in load_log_rules()] + [r.name for r in load_probe_rules()]
    declared = declared_rules()
    assert set(names) <= set(declared)
    for name in names + CODE_RULES:
        assert kind_of_rule(name, Settings().incidents) != "other", name


@pytest.mark.parametrize("rule", CODE_RULES)
def test_every_rule_the_code_raises_is_declared(rule: str) -> None:
    import fnmatch

    declared = declared_rules()
    assert rule in declared or any(fnmatch.fnmatchcase(rule, glob) for glob in declared), rule


def test_a_serious_rule_that_opens_no_incident_says_why() -> None:
    for rule in declared_rules().values():
        serious = SEVERITIES.index(rule.severity) >= SEVERITIES.index("high")
        if serious and rule.incident in QUIET_KINDS:
            assert rule.declaration.why, rule.name


@pytest.mark.parametrize(
    ("rule", "kind", "klass"),
    [
        ("brute_force_login", "abnormal_behaviour", "security"),
        ("zap:40012", "vulnerability", "security"),
        ("plain_http_access", "insecure_transport", "security"),
        ("service_down", "outage", "availability"),
        ("cert_expiring_7d", "certificate_expiry", "availability"),
        # was "other" (a security kind) through the catch-all glob
        ("offline_notice_short", "compliance", "quiet"),
        ("legacy_protocol", "compliance", "quiet"),
    ],
)
def test_the_incident_kind_comes_from_the_rule(rule: str, kind: str, klass: str) -> None:
    settings = Settings().incidents
    assert kind_of_rule(rule, settings) == kind
    assert class_of_kind(kind, settings) == klass


def test_a_rule_nobody_declared_is_a_security_event_never_quiet() -> None:
    assert kind_of_rule("something_new", Settings().incidents) == "other"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"name": "x", "clause": "7.3.1", "severity": "high", "summary": "s"},
            "core.toml: rule x: incident = None: expected the incident kind",
        ),
        (
            {"name": "x", "clause": "7.3.1", "severity": "low", "summary": "s", "incident": "bad"},
            "incident = 'bad'",
        ),
        (
            {
                "name": "x",
                "clause": "6.3.2",
                "severity": "high",
                "summary": "s",
                "incident": "compliance",
            },
            "say why it is compliance-only",
        ),
        (
            {
                "name": "x",
                "clause": "7.3.1",
                "severity": "low",
                "summary": "s",
                "incident": "outage",
                "quiet_minutes": 0,
            },
            "quiet_minutes = 0",
        ),
    ],
)
def test_a_rule_without_a_valid_incident_kind_is_refused(
    table: dict[str, object], message: str
) -> None:
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_core_rules({"rule": [table]})
