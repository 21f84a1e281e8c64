"""The log rules: every rule's annotated samples (fail2ban's failJSON idea), the rule file's
validation, and the working-day calendar."""

from __future__ import annotations

import datetime as dt
import io
import json
import warnings
from pathlib import Path

import chinese_calendar
import pytest
from loguru import logger

from monitord import workcalendar
from monitord.config import parse_config
from monitord.demo import synth
from monitord.errors import RuleError
from monitord.timeutil import SHANGHAI
from monitord.workcalendar import WorkCalendar, bring_in_advice
from rules.log_conditions import DERIVED
from rules.log_rule_file import DERIVED_NEEDS, RULES_FILE, load_rules, parse_rules
from rules.log_rules import LogRuleEngine
from tests.logrules import analyse

SAMPLES = Path(RULES_FILE).parent / "samples"
SAMPLE_FILES = sorted(p for p in SAMPLES.iterdir() if p.suffix in (".log", ".jsonl"))


def _annotations(lines: list[str], tag: str) -> list[dict[str, object]]:
    prefix = f"# {tag}:"
    return [json.loads(line[len(prefix) :]) for line in lines if line.startswith(prefix)]


def test_every_rule_has_samples() -> None:
    names = {r.name for r in load_rules()}
    covered = {
        e["rule"] for p in SAMPLE_FILES for e in _annotations(p.read_text().splitlines(), "expect")
    }
    assert names == covered


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.stem)
def test_sample_finds_what_it_says(sample: Path) -> None:
    lines = sample.read_text(encoding="utf-8").splitlines()
    body = "\n".join(line for line in lines if not line.startswith("#")).encode()
    result = analyse(io.BytesIO(body))
    assert result.rejected == 0, result.rejected_samples
    found = {(f.rule, json.dumps({f.subject_kind: f.subject})): f for f in result.findings}
    for expect in _annotations(lines, "expect"):
        key = (expect["rule"], json.dumps(expect["subject"]))
        assert key in found, f"{sample.name}: {key} not found among {sorted(found)}"
        f = found[key]
        assert f.count == expect["count"], f"{sample.name}: {key}"
        assert f.evidence and all(line in body.decode() for line in f.evidence)
        assert f.first_seen <= f.last_seen
        assert f.summary and f.subject in f.summary
    for expect_not in _annotations(lines, "expect_not"):
        key = (expect_not["rule"], json.dumps(expect_not["subject"]))
        assert key not in found, f"{sample.name}: {key} should not be found"


def test_shipped_rules_load_and_name_their_clauses() -> None:
    rules = load_rules()
    assert len(rules) == 12
    assert {r.clause for r in rules} >= {"7.3.1", "7.1.1", "7.1.2", "8.3 c", "6.4 c"}
    relative = {r.name for r in rules if r.threshold.peers_quantile or r.threshold.baseline_factor}
    assert relative == {"scraping", "request_flood", "error_burst"}


BASE = {
    "name": "x",
    "clause": "7.3.1",
    "severity": "high",
    "incident": "abnormal_behaviour",
    "sources": ["json"],
    "subject": "user",
    "kind": "row",
    "summary": "{subject}",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"severity": "urgent"}, "severity 'urgent'"),
        ({"kind": "sliding"}, "kind 'sliding'"),
        ({"when": [{"field": "nope", "op": "=="}]}, "field 'nope'"),
        ({"when": [{"field": "user", "op": "~"}]}, "op '~'"),
        ({"kind": "window"}, "needs window"),
        ({"kind": "window", "window": 60, "measure": "distinct"}, "needs distinct"),
        ({"kind": "window", "window": 60, "measure": "ratio"}, "needs numerator"),
        ({"threshold": {"min_cout": 3}}, "threshold"),
        ({"threshold": {"max_per_distinct": 2}}, "max_per_distinct needs measure distinct"),
        # Each of these loaded, then failed mid-analysis or when a finding was made (a plain
        # ValueError, a TypeError, a KeyError), or was silently cut or meaningless.
        ({"kind": "window", "window": "abc"}, "window = 'abc': expected whole seconds"),
        ({"kind": "window", "window": 2.9}, "window = 2.9: expected whole seconds"),
        ({"threshold": {"min_count": "8"}}, "threshold: min_count = '8': expected a number"),
        (
            {"threshold": {"min_count": 2.5}},
            "threshold: min_count = 2.5: expected a whole number of at least 1",
        ),
        (
            {"threshold": {"peers_quantile": 5.0}},
            "threshold: peers_quantile = 5.0: expected a quantile above 0 and at most 1",
        ),
        (
            {"summary": "{subjct} 登录失败"},
            "rule x: summary: {subjct} is not a placeholder it fills, expected one of {subject}, "
            "{count}, {measure}, {window_min}",
        ),
        ({"summary": "{subject 登录失败"}, "summary '{subject 登录失败': expected text with"),
        (
            {"when": [{"field": "path", "op": "matches", "value": "^/a(?=b)"}]},
            "matches '^/a(?=b)' is not a regular expression RE2 accepts (invalid perl operator",
        ),
    ],
)
def test_invalid_rules_name_rule_and_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError, match="rule x") as err:
        parse_rules({"rule": [{**BASE, **change}]})
    assert message in str(err.value)


def test_missing_key_is_named() -> None:
    raw = dict(BASE)
    del raw["clause"]
    with pytest.raises(RuleError, match="rule x: missing clause"):
        parse_rules({"rule": [raw]})


def test_every_derived_field_the_rule_file_accepts_is_computed() -> None:
    # Validation and evaluation live in separate modules, each with its own list of fields.
    assert DERIVED.keys() == DERIVED_NEEDS.keys()


def test_engine_state_round_trip_keeps_an_open_window() -> None:
    """Follow mode: a brute force split over two runs, with a restart between, is one finding."""
    lines = (SAMPLES / "brute_force_login.jsonl").read_text().splitlines()
    body = [line for line in lines if not line.startswith("#")]
    from monitord.accesslog import Analyzer

    first = Analyzer(LogRuleEngine.load())
    first.feed(("\n".join(body[:5]) + "\n").encode())
    assert not first.findings()
    state = json.loads(json.dumps(first.to_state()))  # what the store would keep
    second = Analyzer.from_state(state, LogRuleEngine.load())
    second.feed(("\n".join(body[5:]) + "\n").encode())
    found = [f for f in second.findings() if f.rule == "brute_force_login"]
    assert [(f.subject, f.count) for f in found] == [("u-77", 9)]


def _failed_logins(ip: str, path: str, count: int) -> list[synth.Event]:
    start = _at(2026, 6, 2, 10)
    return [
        synth.Event(
            start + dt.timedelta(seconds=5 * i),
            ip,
            "svc-0001",
            "login_failed",
            method="POST",
            path=path,
            status=401,
            user_id=f"u-{i % 3}",
        )
        for i in range(count)
    ]


def test_an_address_failing_logins_in_both_logs_is_one_finding_counted_once() -> None:
    # An edge log and the audit log of the same requests: each failure is counted once.
    events = _failed_logins("45.95.147.9", "/auth/login", 120)
    edge = "".join(synth.nginx_line(e) for e in events).encode()
    audit = "".join(synth.json_line(e) for e in events).encode()
    result = analyse([io.BytesIO(edge), io.BytesIO(audit)])
    found = [(f.subject, f.count) for f in result.findings if f.rule == "brute_force_ip"]
    assert found == [("45.95.147.9", 120)]


def test_the_login_paths_are_the_configured_ones() -> None:
    logs = parse_config({"logs": {"login_paths": ["/sso/login"]}}, "test", env={}).logs
    events = _failed_logins("45.95.147.9", "/sso/login", 60)
    events += _failed_logins("61.155.1.1", "/auth/login", 60)
    edge = "".join(synth.nginx_line(e) for e in sorted(events, key=lambda e: e.ts)).encode()
    result = analyse(io.BytesIO(edge), engine=LogRuleEngine.from_settings(logs))
    found = [(f.subject, f.count) for f in result.findings if f.rule == "brute_force_ip"]
    assert found == [("45.95.147.9", 60)]


def _at(y: int, m: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, mi, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("moment", "working"),
    [
        (_at(2026, 6, 2, 10), True),  # Tuesday morning
        (_at(2026, 6, 2, 8, 29), False),  # before 08:30
        (_at(2026, 6, 2, 18, 0), False),  # 18:00 is after hours
        (_at(2026, 6, 6, 10), False),  # Saturday
        (_at(2026, 10, 2, 10), False),  # National Day holiday on a Friday
        (_at(2026, 10, 10, 10), True),  # Saturday make-up working day
    ],
)
def test_working_time_follows_the_statutory_calendar(moment: dt.datetime, working: bool) -> None:
    assert WorkCalendar().is_working_time(moment) is working


def test_unknown_year_is_logged_in_one_line_once_and_assumes_weekdays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It was a Python warning with a source line on stderr, once per calendar built (sync,
    # report and compliance each build several).
    monkeypatch.setattr(workcalendar, "_SAID_UNKNOWN", set(), raising=False)
    logged: list[str] = []
    handler = logger.add(lambda m: logged.append(m.record["message"]), level="WARNING")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no Python warning at all
            for cal in (WorkCalendar(), WorkCalendar()):
                assert cal.is_workday(dt.date(2031, 1, 6)) is True  # a Monday
                assert cal.is_workday(dt.date(2031, 1, 7)) is True
                assert cal.is_workday(dt.date(2031, 1, 5)) is False  # a Sunday
    finally:
        logger.remove(handler)
    assert logged == [bring_in_advice([2031])]
    assert logged[0].startswith(
        f"the Chinese statutory calendar of 2031 is unknown to chinesecalendar "
        f"{chinese_calendar.__version__}: working days of 2031 fall back to Monday-Friday"
    )


def test_config_overrides_win_over_the_package() -> None:
    cal = WorkCalendar.from_config(holidays=["2031-01-06"], workdays=["2026-06-06"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cal.is_workday(dt.date(2031, 1, 6)) is False  # no warning: the config knows
    assert cal.is_workday(dt.date(2026, 6, 6)) is True


def test_working_days_between_two_dates_count_neither_end() -> None:
    # Monday 8 June 2026 to Monday 15 June: Tuesday to Friday, and Saturday 13 if the config
    # makes it a working day.
    monday, next_monday = dt.date(2026, 6, 8), dt.date(2026, 6, 15)
    assert WorkCalendar().working_days_between(monday, next_monday) == 4
    assert (
        WorkCalendar.from_config(workdays=["2026-06-13"]).working_days_between(monday, next_monday)
        == 5
    )
    assert WorkCalendar().working_days_between(next_monday, monday) == 0


def test_a_rule_file_that_is_not_toml_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "logs.toml"
    broken.write_text('[[rule]]\nname = "x\n')
    with pytest.raises(RuleError, match=f"{broken}: not valid TOML"):
        load_rules(broken)
