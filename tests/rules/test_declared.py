"""Every rule that can raise a finding declares the incident kind its findings belong to."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from monitord.config import Settings
from monitord.errors import RuleError
from monitord.incidents import class_of_kind, kind_of_rule
from monitord.types import QUIET_KINDS, SEVERITIES
from rules import declared_rules
from rules.declared import parse_core_rules
from rules.log_rule_file import load_rules as load_log_rules
from rules.probe_rules import load_rules as load_probe_rules

ROOT = Path(__file__).resolve().parent.parent.parent
BUILT_FROM_RULE_FILES = {
    ("rules/probe_rules.py", "rule.name"),
    ("monitord/accesslog/findings.py", "self.rule"),
}
"""FindingDrafts whose rule is a rule of logs.toml or probes.toml: declared by construction."""


def rules_the_code_raises() -> list[tuple[str, str]]:
    """(file, rule name) of every FindingDraft the code builds: a literal, a module constant,
    a family (`f"zap:{plugin}"` as zap:x), or, where a helper passes the rule in, every RULE_*
    constant of its module. Fails on a draft whose rule it cannot read."""
    found: list[tuple[str, str]] = []
    for path in sorted([*(ROOT / "monitord").rglob("*.py"), *(ROOT / "rules").glob("*.py")]):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = str(path.relative_to(ROOT))
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and isinstance(node.value.value, str)
        }
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "FindingDraft"):
                continue
            (rule,) = [k.value for k in call.keywords if k.arg == "rule"]
            if isinstance(rule, ast.Constant):
                found.append((where, str(rule.value)))
            elif isinstance(rule, ast.Name) and rule.id in constants:
                found.append((where, constants[rule.id]))
            elif isinstance(rule, ast.Name):  # a helper's parameter: the module's RULE_* names
                found += [(where, v) for k, v in constants.items() if k.startswith("RULE_")]
            elif isinstance(rule, ast.JoinedStr) and isinstance(rule.values[0], ast.Constant):
                found.append((where, f"{rule.values[0].value}x"))
            else:
                assert (where, ast.unparse(rule)) in BUILT_FROM_RULE_FILES, (
                    where,
                    ast.unparse(rule),
                )
    return found


CODE_RULES = [rule for _where, rule in rules_the_code_raises()]


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
