"""One condition language for probe and log rules: the same ops mean the same in both
evaluators, both files group with any/all, and what one evaluator cannot run is refused when
the file is read, naming the file, rule and key."""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pytest

from monitord.accesslog.schema import SCHEMA, TEXT
from monitord.demo import synth
from monitord.errors import RuleError
from monitord.types import ProbeResult
from monitord.workcalendar import WorkCalendar
from rules.conditions import OPS, holds
from rules.log_conditions import Block, select
from rules.log_rule_file import FIELDS, VOCABULARY, parse_rules
from rules.log_rules import LogRuleEngine
from rules.probe_rules import evaluate
from rules.probe_rules import parse_rules as parse_probe_rules
from tests.logrules import analyse

USERS = ["alice", "", None, "bob", "carol", "alice"]
STATUS = [401, 0, None, 503, 200, 404]

CASES: list[tuple[str, str, Any]] = [
    ("user", "==", "alice"),
    ("user", "!=", "alice"),
    ("user", "<", "b"),
    ("user", ">=", "bob"),
    ("user", ">", "bob"),
    ("user", "<=", "alice"),
    ("user", "in", ["alice", "carol"]),
    ("user", "not_in", ["alice"]),
    ("user", "startswith", "ca"),
    ("user", "matches", "^a|ol$"),
    ("user", "not_matches", "^a"),
    ("user", "empty", None),
    ("user", "nonempty", None),
    ("user", "null", None),
    ("user", "not_null", None),
    ("status", "==", 401),
    ("status", "!=", 401),
    ("status", "<", 500),
    ("status", ">=", 404),
    ("status", ">", 401),
    ("status", "<=", 0),
    ("status", "in", [401, 404]),
    ("status", "not_in", [401]),
    ("status", "empty", None),
    ("status", "nonempty", None),
    ("status", "null", None),
    ("status", "not_null", None),
    ("error", "==", True),
    ("error", "!=", True),
    ("error", "in", [True]),
    ("error", "not_in", [True]),
    ("error", "empty", None),
    ("error", "nonempty", None),
    ("error", "null", None),
    ("error", "not_null", None),
]


def _block() -> Block:
    n = len(USERS)
    table = pa.table(
        {
            "ts": pa.array(range(n), pa.int64()),
            "user": pa.array(USERS, pa.string()).dictionary_encode().cast(TEXT),
            "status": pa.array(STATUS, pa.int32()),
        }
    )
    return Block(table, WorkCalendar())


def _row(i: int) -> dict[str, Any]:
    status = STATUS[i]
    # `error` is derived: a 5xx status, never missing (no status is no error).
    return {"user": USERS[i], "status": status, "error": status is not None and status >= 500}


def _condition(name: str, op: str, value: Any) -> dict[str, Any]:
    return {"field": name, "op": op} | ({} if value is None else {"value": value})


@pytest.mark.parametrize(("name", "op", "value"), CASES, ids=lambda v: repr(v))
def test_both_evaluators_give_each_op_the_same_meaning(name: str, op: str, value: Any) -> None:
    """A missing value, an empty text, a zero: the log engine over Arrow columns answers each
    row as the probe engine answers one value (a missing value satisfies only `null`)."""
    (rule,) = parse_rules(
        {"rule": [{**LOG_BASE, "when": [_condition(name, op, value)]}]}, "test.toml"
    )
    blk = _block()
    vectorised = select(rule.when, blk, blk.rows).tolist()
    scalar = [holds(rule.when[0], _row(i).__getitem__) for i in range(blk.n)]
    assert vectorised == scalar


def test_every_op_is_in_the_comparison_or_refused_for_logs() -> None:
    tried = {op for _name, op, _value in CASES}
    assert tried | set(VOCABULARY.refused) == set(OPS)


def test_the_log_fields_are_the_parsed_columns_and_the_derived_ones() -> None:
    from rules.log_conditions import DERIVED

    columns = {f.name for f in SCHEMA if f.name != "line"}
    assert set(FIELDS) == columns | set(DERIVED)
    for f in SCHEMA:
        if f.name in FIELDS:
            text = pa.types.is_dictionary(f.type)
            assert FIELDS[f.name] == ("text" if text else "number"), f.name


LOG_BASE: dict[str, Any] = {
    "name": "x",
    "clause": "7.3.1",
    "severity": "high",
    "incident": "abnormal_behaviour",
    "sources": ["nginx"],
    "subject": "ip",
    "kind": "row",
    "summary": "{subject} {count}",
}


PROBED = ProbeResult(
    kind="contract",
    target="https://svc.example/api",
    success=False,
    duration_ms=1.0,
    started_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    service_id="s1",
    error="HTTP 599",
)


PROBE_BASE: dict[str, Any] = {
    "name": "odd_answer",
    "clause": "6.3.2 c",
    "severity": "medium",
    "incident": "degraded",
    "kinds": ["contract"],
    "summary": "{target}: {error}",
}


def test_a_probe_rule_groups_with_any_and_all_and_matches_text() -> None:
    when = [
        {"field": "error", "op": "matches", "value": r"^HTTP 5\d\d$"},
        {
            "any": [
                {"field": "http_status_documented", "op": "==", "value": False},
                {"all": [{"field": "body", "op": "empty"}, {"field": "retry", "op": "null"}]},
            ]
        },
    ]
    rules = parse_probe_rules({"rule": [{**PROBE_BASE, "when": when}]})
    fired = [
        [f.rule for f in evaluate(replace(PROBED, facts=facts), rules)]
        for facts in (
            {"http_status_documented": False},
            {"http_status_documented": True, "body": ""},
            {"http_status_documented": True, "body": "", "retry": 3},
            {"http_status_documented": True, "body": "ok"},
        )
    ]
    assert fired == [["odd_answer"], ["odd_answer"], [], []]
    (finding,) = evaluate(replace(PROBED, facts={"http_status_documented": False}), rules)
    # The evidence holds every fact the conditions read, those inside groups too.
    assert finding.evidence == {
        "error": "HTTP 599",
        "http_status_documented": False,
        "kind": "contract",
    }


def test_a_log_rule_can_test_how_a_path_starts() -> None:
    events = [
        synth.Event(
            synth.local(2026, 6, 2, 10) + dt.timedelta(seconds=i),
            "45.95.147.9",
            "svc-0001",
            "view",
            path=path,
            status=200,
        )
        for i, path in enumerate(["/admin/users", "/admin/keys", "/news/1"])
    ]
    log = "".join(synth.nginx_line(e) for e in events).encode()
    rule = {**LOG_BASE, "when": [{"field": "path", "op": "startswith", "value": "/admin/"}]}
    engine = LogRuleEngine(parse_rules({"rule": [rule]}), WorkCalendar())
    result = analyse(io.BytesIO(log), engine=engine)
    assert [(f.subject, f.count) for f in result.findings if f.rule == "x"] == [("45.95.147.9", 2)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A typo in a key used to be ignored: the rule then counted every line.
        ({"wehn": [{"field": "status", "op": "==", "value": 401}]}, "unknown key 'wehn'"),
        (
            {"when": [{"field": "status", "op": "==", "value": "401"}]},
            "when: status is a number, and '401' is not",
        ),
        (
            {"when": [{"field": "status", "op": "startswith", "value": "4"}]},
            "when: op 'startswith' tests text, and status is a number",
        ),
        (
            {"when": [{"field": "path", "op": "contains_any", "value": ["/a"]}]},
            "when: op 'contains_any' cannot be used here: a log field holds one value",
        ),
        (
            {"when": [{"field": "bytes", "op": ">", "value_field": "duration_ms"}]},
            "when: value_field: a log rule compares a field with a value",
        ),
        (
            {"when": [{"any": [{"field": "user", "op": "in", "value": "u-1"}]}]},
            "when: any: op 'in' needs a list value, got 'u-1'",
        ),
        ({"when": [{"any": []}]}, "when: any = []: expected at least one condition"),
        ({"when": [{"field": "user", "op": "null", "value": True}]}, "op 'null' takes no value"),
        ({"subject": "usr"}, "subject: 'usr' is not one of ts, source, ip, user"),
        ({"subject": []}, "subject: expected at least one name"),
        ({"sources": ["apache"]}, "sources: 'apache' is not one of nginx, json"),
        ({"breakdown": ["acton"]}, "breakdown: 'acton' is not one of"),
        ({"kind": "window", "window": 60, "measure": "distinct", "distinct": "pth"}, "distinct"),
    ],
)
def test_a_log_rule_the_engine_cannot_run_is_refused_when_read(
    change: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuleError) as err:
        parse_rules({"rule": [{**LOG_BASE, **change}]})
    assert str(err.value).startswith("logs.toml: rule x: ")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ([{"fact": "total_ms", "op": ">", "value": 1}], "when: unknown key 'fact' in a condition"),
        ([{"field": "protocols", "op": "contains_any", "value": "TLSv1"}], "needs a list value"),
        ([{"field": "error", "op": "matches", "value": "(?=x)"}], "not a regular expression"),
        ([{"field": "a", "op": ">", "value": 1, "value_field": "b"}], "(not both)"),
        ([{"any": [{"field": "a", "op": "empty"}], "field": "b"}], "any stands alone"),
    ],
)
def test_a_probe_rule_error_names_the_file_rule_and_key(
    when: list[dict[str, Any]], message: str
) -> None:
    with pytest.raises(RuleError) as err:
        parse_probe_rules({"rule": [{**PROBE_BASE, "when": when}]})
    assert str(err.value).startswith("probes.toml: rule odd_answer: when")
    assert message in str(err.value)


def test_a_log_rule_reads_the_columns_its_grouped_conditions_name() -> None:
    (rule,) = parse_rules(
        {
            "rule": [
                {
                    **LOG_BASE,
                    "when": [
                        {
                            "any": [
                                {"field": "company", "op": "not_null"},
                                {"field": "error", "value": True},
                            ]
                        }
                    ],
                }
            ]
        }
    )
    # `error` is derived from status; `==` is the op when none is given.
    assert rule.columns == ["company", "ip", "row", "status", "ts"]
    assert rule.when[0].any_of[1].op == "=="
