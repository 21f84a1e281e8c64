"""The compliance rules over small stores written row by row: per rule, a service (or a
platform) that passes and one that fails, and the verdicts stored for the report."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pandas as pd
import pytest
from sqlalchemy import event as sql_event
from sqlalchemy import select
from sqlalchemy.orm import Session

from monitord.catalogue import service_rows, sync_catalogue
from monitord.compliance import evaluate_quarter, score_services, store_verdicts
from monitord.config import PortalSettings, Settings
from monitord.store import Store, open_store
from monitord.store.models import (
    ComplianceResult,
    EvidenceDocument,
    Incident,
    IncidentEvent,
    LogAudit,
    ProbeResultRow,
    ProbeRollup,
)
from monitord.store.retention import purge, roll_up
from monitord.types import ComplianceVerdict
from reports.sections import clause_lights
from tests.compliance.seed import (
    END,
    HOUR,
    NOW,
    Q3,
    START,
    event,
    finding,
    online_all_quarter,
    rollups,
    scan,
    seed_platform,
    seed_services,
    service,
    t,
)
from tests.conftest import FakeClock
from tests.fakeportal import make_service

Verdicts = dict[tuple[str, str | None], ComplianceVerdict]


@pytest.fixture(scope="module")
def judged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Verdicts]:
    """The verdicts of 2026q3 on the services of seed_services (seeded once: they only read)."""
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('judged') / 'm.db'}")
    try:
        seed_services(store)
        with store.session() as session:
            verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
        yield {(v.rule, v.service_id): v for v in verdicts}
    finally:
        store.dispose()


def passed(verdicts: Verdicts, rule: str, service_id: str | None) -> bool:
    return verdicts[rule, service_id].passed


def test_filing_is_judged_as_it_stood(judged: Verdicts) -> None:
    assert passed(judged, "filing_complete", "good")
    assert not passed(judged, "filing_complete", "bad")
    assert judged["filing_complete", "bad"].evidence["problems"] == [
        "faq_url: missing (常见问答知识库)"
    ]


def test_a_service_goes_online_only_after_approval_and_a_clean_scan(judged: Verdicts) -> None:
    assert passed(judged, "online_after_approval_and_scan", "golive")
    bad = judged["online_after_approval_and_scan", "golive-bad"]
    assert not bad.passed
    assert bad.evidence["went_online"][0]["approved"] is False
    assert bad.evidence["went_online"][0]["scan"]["high"] == 1
    # A service that went online before the quarter is not judged for it again.
    assert ("online_after_approval_and_scan", "good") not in judged


def test_a_value_appendix_a_does_not_know_is_an_incomplete_filing(sqlite_store: Store) -> None:
    with sqlite_store.session() as s:
        online_all_quarter(s, "svc", unknown_values=["type=xyz", "permission=superuser"])
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    filing = verdicts["filing_complete", "svc"]
    assert not filing.passed
    assert filing.evidence["problems"] == [
        "type=xyz: unknown value",
        "permission=superuser: unknown value",
    ]


@pytest.mark.parametrize(
    ("opinion", "approved"),
    [
        ("同意上线", True),
        ("不同意上线", False),
        ("不予通过", False),
        ("驳回，材料不全", False),
        ("退回修改", False),
        ("审核不通过", False),
        (" ", False),
    ],
)
def test_a_go_live_is_approved_only_by_an_opinion_that_approves(
    sqlite_store: Store, opinion: str, approved: bool
) -> None:
    online_at = t("2026-08-01 10:00")
    with sqlite_store.session() as s:
        service(
            s,
            "svc",
            [(t("2026-06-01 00:00"), online_at, "pending"), (online_at, None, "online")],
            review={"opinion": opinion, "signed_by": "审核人"},
        )
        scan(s, "svc", t("2026-07-30 10:00"))
        event(s, "svc", "went_online", online_at, "pending", "online")
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    verdict = verdicts["online_after_approval_and_scan", "svc"]
    assert verdict.passed is approved
    assert verdict.evidence["went_online"][0]["approved"] is approved


@pytest.mark.parametrize(
    ("rule", "finding_rules"),
    [
        # Plain HTTP is no encryption: it fails 6.3.2 a as well as b.
        ("tls_policy", ["plain_http_access", "legacy_protocol"]),
        ("https_only", ["plain_http_access"]),
    ],
)
def test_transport_findings_open_while_online_fail_their_clause(
    judged: Verdicts, rule: str, finding_rules: list[str]
) -> None:
    assert passed(judged, rule, "good")
    bad = judged[rule, "bad"]
    assert not bad.passed
    assert [e["rule"] for e in bad.evidence["episodes"]] == finding_rules
    assert passed(judged, "documented_return_codes", "bad")


def test_encryption_and_return_codes_are_not_judged_unmeasured(sqlite_store: Store) -> None:
    with sqlite_store.session() as s:
        online_all_quarter(s, "never-probed")
        online_all_quarter(s, "tls-unreachable")
        rollups(s, "tls-unreachable", START, START + HOUR, count=1, failures=1, kind="tls")
        online_all_quarter(s, "plain-http")
        finding(s, "plain-http", "plain_http", "6.3.2 b", "high", START, None)
        online_all_quarter(s, "measured")
        for kind in ("tls", "contract"):
            rollups(s, "measured", START, START + 2 * HOUR, count=1, kind=kind)
        online_all_quarter(s, "measured-not-rolled-up")
        s.add(
            ProbeResultRow(
                service_id="measured-not-rolled-up",
                kind="tls",
                target="x",
                at=t("2026-08-01 10:00"),
                success=True,
                duration_ms=100.0,
            )
        )
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    for service_id in ("never-probed", "tls-unreachable"):
        assert ("tls_policy", service_id) not in verdicts
        assert ("documented_return_codes", service_id) not in verdicts
        assert passed(verdicts, "https_only", service_id)
    plain = verdicts["tls_policy", "plain-http"]
    assert not plain.passed
    assert [e["rule"] for e in plain.evidence["episodes"]] == ["plain_http"]
    assert plain.evidence["probes_passed"] == 0
    for rule in ("tls_policy", "documented_return_codes"):
        assert passed(verdicts, rule, "measured")
        assert verdicts[rule, "measured"].evidence["probes_passed"] == 2
    assert passed(verdicts, "tls_policy", "measured-not-rolled-up")


def test_hours_online_without_a_probe_are_gaps(judged: Verdicts) -> None:
    assert passed(judged, "probed_throughout", "good")
    bad = judged["probed_throughout", "bad"]
    assert not bad.passed
    assert bad.evidence["gap_hours"] == 3
    assert bad.evidence["gaps"] == [["2026-08-10T10:00:00+08:00", "2026-08-10T13:00:00+08:00"]]
    assert bad.evidence["hours_online"] == (END - START) / HOUR


def test_uptime_and_latency_against_the_target(judged: Verdicts) -> None:
    assert passed(judged, "uptime_target", "good")
    uptime = judged["uptime_target", "bad"]
    assert not uptime.passed
    assert uptime.evidence["uptime_percent"] == 90.0
    assert uptime.evidence["target_percent"] == 99.9
    assert uptime.evidence["target_from"] == "config"
    assert passed(judged, "latency_target", "good")
    assert not passed(judged, "latency_target", "bad")
    assert judged["latency_target", "bad"].evidence["p95_ms"] > 3000


def test_a_service_is_judged_against_the_targets_it_filed(judged: Verdicts) -> None:
    uptime = judged["uptime_target", "own-target"]
    assert uptime.passed
    assert (uptime.evidence["target_percent"], uptime.evidence["target_from"]) == (95.0, "filing")
    latency = judged["latency_target", "own-target"]
    assert latency.passed and latency.evidence["target_ms"] == 5000.0


def test_uptime_counts_the_hours_a_service_was_online(judged: Verdicts) -> None:
    uptime = judged["uptime_target", "down-while-suspended"]
    assert uptime.passed and uptime.evidence["uptime_percent"] == 100.0
    assert uptime.evidence["probes"] == 60 * ((END - START) / HOUR - 48)
    assert passed(judged, "latency_target", "down-while-suspended")


def test_an_outage_inside_a_filed_suspension_is_announced(judged: Verdicts) -> None:
    assert passed(judged, "outage_announced", "paused")
    assert judged["outage_announced", "paused"].evidence["outages"] == 1
    assert not passed(judged, "outage_announced", "bad")
    assert judged["outage_announced", "bad"].evidence["unannounced"] == 1


def test_a_suspension_ends_by_its_planned_time(judged: Verdicts) -> None:
    assert passed(judged, "resumed_on_time", "paused")
    late = judged["resumed_on_time", "paused-bad"]
    assert not late.passed
    assert late.evidence["suspensions"][0]["problem"] == "resumed late"


def test_a_resumed_service_is_probed_and_scanned_again(judged: Verdicts) -> None:
    assert passed(judged, "retested_after_resume", "paused")
    bad = judged["retested_after_resume", "paused-bad"]
    assert not bad.passed
    assert bad.evidence["resumptions"][0]["scan"] is None


def test_take_down_notices_count_chinese_working_days(judged: Verdicts) -> None:
    leaving = judged["offline_notice", "leaving"]
    assert leaving.passed
    assert (
        leaving.evidence["notices"][0]["working_days"] == 11
    )  # 09-20, a Sunday, is worked; 09-25, Mid-Autumn, is not
    national = judged["offline_notice", "national-day"]
    assert not national.passed
    assert national.evidence["notices"][0]["working_days"] == 6
    vanished = judged["offline_notice", "vanished"]
    assert not vanished.passed
    assert vanished.evidence["left"] == [
        {
            "kind": "gone",
            "at": "2026-09-15T00:00:00+08:00",
            "working_days": None,
            "problem": "no take-down notice",
        }
    ]


def test_a_take_down_counts_the_working_days_until_it_really_happened(
    sqlite_store: Store,
) -> None:
    # Filed for 2026-09-28 (11 working days ahead), but taken offline twelve hours later.
    filed, offline = t("2026-09-10 10:00"), t("2026-09-10 22:00")
    notice = {
        "filed_at": "2026-09-10T10:00:00+08:00",
        "planned_offline": "2026-09-28T00:00:00+08:00",
    }
    with sqlite_store.session() as s:
        service(
            s,
            "early",
            [(START - 30 * 24 * HOUR, offline, "online"), (offline, None, "offline")],
            offline_notice=notice,
        )
        event(s, "early", "offline_notice_filed", filed, **notice)
        event(s, "early", "went_offline", offline, "online", "offline")
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    early = verdicts["offline_notice", "early"]
    assert not early.passed
    assert early.evidence["notices"][0]["working_days"] == 11  # as filed, the notice was fine
    assert early.evidence["left"] == [
        {
            "kind": "went_offline",
            "at": "2026-09-10T22:00:00+08:00",
            "working_days": 0,
            "problem": "0 working days, 10 required",
        }
    ]


def test_no_take_down_is_judged_of_a_service_never_in_service_or_missing_from_one_sync(
    sqlite_store: Store,
) -> None:
    # A store made by an older version holds a `gone` of an application never approved, and a
    # portal that left a service out of one answer recorded `gone` then `returned`.
    left, back = t("2026-08-10 10:00"), t("2026-08-10 11:00")
    with sqlite_store.session() as s:
        service(s, "withdrawn", [(START, left, "pending"), (left, None, "gone")])
        event(s, "withdrawn", "gone", left, "pending", None)
        service(
            s,
            "glitch",
            [
                (START - 30 * 24 * HOUR, left, "online"),
                (left, back, "gone"),
                (back, None, "online"),
            ],
        )
        event(s, "glitch", "gone", left, "online", None)
        event(s, "glitch", "returned", back, None, "online")
        service(s, "dropped", [(START - 30 * 24 * HOUR, left, "online"), (left, None, "gone")])
        event(s, "dropped", "gone", left, "online", None)
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v
            for v in evaluate_quarter(session, Settings(), Q3, NOW)
            if v.rule == "offline_notice"
        }
    assert set(verdicts) == {("offline_notice", "dropped")}
    assert not verdicts["offline_notice", "dropped"].passed


def test_a_service_that_left_is_judged_until_it_left(judged: Verdicts) -> None:
    assert passed(judged, "filing_complete", "vanished")
    assert (
        judged["probed_throughout", "vanished"].evidence["hours_online"]
        == (t("2026-09-15 00:00") - START) / HOUR
    )


def test_every_online_service_is_scanned_in_the_quarter(judged: Verdicts) -> None:
    assert passed(judged, "quarterly_scan", "good")
    assert not passed(judged, "quarterly_scan", "bad")


def test_an_open_high_or_medium_vulnerability_fails_8_3_b(judged: Verdicts) -> None:
    assert passed(judged, "no_high_medium_vulnerability", "good")
    bad = judged["no_high_medium_vulnerability", "bad"]
    assert not bad.passed
    assert bad.evidence["open_at_quarter_end"] == 1  # the low one does not count
    assert [e["rule"] for e in bad.evidence["episodes"]] == ["zap:40012"]


# --- platform rules ---------------------------------------------------------------------------


PLATFORM_RULES = (
    "log_retention",
    "log_audit",
    "quarterly_pentest",
    "admin_review",
    "incidents_notified",
)


@pytest.mark.parametrize("good", [True, False])
def test_platform_duties(sqlite_store: Store, good: bool) -> None:
    seed_platform(sqlite_store, good=good)
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    for rule in PLATFORM_RULES:
        assert passed(verdicts, rule, None) is good, rule
    assert passed(verdicts, "vendor_operations_audited", None)
    assert verdicts["vendor_operations_audited", None].evidence["accounts"] == ["user:vendor-7"]
    # Last year's risk assessment is not this year's, which is due by the year's end.
    assert passed(verdicts, "risk_assessment", None)
    assert verdicts["risk_assessment", None].evidence["pending"] is not good
    notified = verdicts["incidents_notified", None].evidence
    assert notified["incidents"] == 2  # the availability incident has no two-hour clock
    if not good:
        assert len(notified["late"]) == 1
        assert list(notified["missing_parts"].values()) == [["rectification"]]
        assert verdicts["log_audit", None].evidence["empty_days"] == ["2026-08-10"]


def test_an_empty_store_fails_the_platform_duties_and_judges_no_service(
    sqlite_store: Store,
) -> None:
    with sqlite_store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
    assert {v.service_id for v in verdicts} == {None}
    failed = set(PLATFORM_RULES) - {"incidents_notified"} | {"vendor_operations_audited"}
    assert {v.rule for v in verdicts if not v.passed} == failed
    # No security incident: nothing was late; the year's risk assessment is not due yet.
    assert {v.rule for v in verdicts if v.passed} == {"incidents_notified", "risk_assessment"}


@pytest.mark.parametrize(
    ("quarter", "now", "filed", "judged"),
    [
        ("2026q1", NOW, None, "pending"),
        ("2026q3", NOW, None, "pending"),
        ("2026q4", NOW, None, "pending"),  # still running
        ("2026q4", t("2027-01-05 09:00"), None, "failed"),
        ("2026q4", t("2027-01-05 09:00"), dt.date(2026, 12, 20), "passed"),
        ("2026q4", t("2027-01-05 09:00"), dt.date(2025, 12, 20), "failed"),  # last year's
        ("2026q3", NOW, dt.date(2026, 3, 20), "passed"),
    ],
)
def test_the_yearly_risk_assessment_is_pending_until_the_year_s_last_quarter_ends(
    sqlite_store: Store, quarter: str, now: dt.datetime, filed: dt.date | None, judged: str
) -> None:
    if filed is not None:
        with sqlite_store.session() as s:
            s.add(
                EvidenceDocument(
                    clause="7.3.2",
                    kind="risk_assessment",
                    document_date=filed,
                    filed_by="张三",
                    filed_at=now - HOUR,
                    file_name="risk.pdf",
                    stored_as="risk.pdf",
                    sha256="0" * 64,
                    size=10,
                )
            )
    with sqlite_store.session() as session:
        verdicts = {v.rule: v for v in evaluate_quarter(session, Settings(), quarter, now)}
    risk = verdicts["risk_assessment"]
    shown = "pending" if risk.evidence["pending"] else "passed" if risk.passed else "failed"
    assert shown == judged
    assert risk.passed is (judged != "failed")


def test_the_log_audit_of_a_running_quarter_is_pending_not_failed(sqlite_store: Store) -> None:
    with sqlite_store.session() as session:
        verdicts = {v.rule: v for v in evaluate_quarter(session, Settings(), "2026q4", NOW)}
    due = "2027-01-01T00:00:00+08:00"
    audit, vendors = verdicts["log_audit"], verdicts["vendor_operations_audited"]
    assert audit.passed and audit.evidence == {"written": False, "due_after": due, "pending": True}
    assert vendors.passed
    assert vendors.evidence == {"audited": False, "due_after": due, "pending": True}


def _security_incident(
    s: Session, key: str, detected: dt.datetime, notified: dt.datetime | None
) -> int:
    """A security incident with its two-hour deadline; notified (with the four parts) or not."""
    incident = Incident(
        kind="vulnerability",
        klass="security",
        severity="high",
        group_key=key,
        detected_at=detected,
        notify_by=detected + 2 * HOUR,
        notified_at=notified,
    )
    s.add(incident)
    s.flush()
    if notified is not None:
        parts = {"scope": "全市", "harm": "低", "measures": "下线", "rectification": "修复"}
        s.add(IncidentEvent(incident_id=incident.id, at=notified, kind="notified", detail=parts))
    return incident.id


def test_the_two_hour_record_is_pending_while_every_incident_is_within_its_clock(
    sqlite_store: Store,
) -> None:
    # One incident half an hour old, not notified yet: nothing was due, yet 7.3.3 read as
    # passed, green "通过 1" in the report.
    no_findings = pd.DataFrame({"clause": [], "severity": []})
    with sqlite_store.session() as s:
        waiting = _security_incident(s, "waiting", NOW - HOUR / 2, None)

    def judged() -> ComplianceVerdict:
        with sqlite_store.session() as session:
            verdicts = evaluate_quarter(session, Settings(), "2026q4", NOW)
        light = next(c for c in clause_lights(verdicts, no_findings) if c.clause == "7.3.3")
        verdict = next(v for v in verdicts if v.rule == "incidents_notified")
        assert light.light == ("pending" if verdict.pending else "green")
        return verdict

    verdict = judged()
    assert verdict.pending and verdict.evidence["pending"] is True
    assert verdict.evidence["pending_incidents"] == [waiting]
    # One notified in time besides: that is judged, passed; the other is still counted apart.
    with sqlite_store.session() as s:
        _security_incident(s, "done", NOW - 3 * HOUR, NOW - 2 * HOUR)
    verdict = judged()
    assert verdict.passed and not verdict.pending
    assert (verdict.evidence["on_time"], verdict.evidence["pending_incidents"]) == (1, [waiting])


@pytest.mark.parametrize("empty_days", [[], ["2026-10-10"]])
def test_a_log_audit_written_while_the_quarter_runs_fails_only_on_days_without_logs(
    sqlite_store: Store, empty_days: list[str]
) -> None:
    with sqlite_store.session() as s:
        s.add(
            LogAudit(
                quarter="2026q4",
                created_at=t("2026-11-01 06:00"),
                period_start=END,
                period_end=t("2026-11-01 00:00"),
                lines=1000,
                empty_days=empty_days,
                vendor_operations=[],
            )
        )
    with sqlite_store.session() as session:
        verdicts = {v.rule: v for v in evaluate_quarter(session, Settings(), "2026q4", NOW)}
    audit = verdicts["log_audit"]
    assert audit.passed is not empty_days
    assert audit.evidence["pending"] and not audit.evidence["covers_whole_quarter"]
    assert verdicts["vendor_operations_audited"].passed
    assert verdicts["vendor_operations_audited"].evidence["pending"]


@pytest.mark.parametrize("label", ["2026Q3", "2026q5", "q3", "2027q1"])
def test_a_bad_or_future_quarter_is_refused_naming_it(sqlite_store: Store, label: str) -> None:
    with sqlite_store.session() as session, pytest.raises(ValueError, match=label):
        evaluate_quarter(session, Settings(), label, NOW)


def test_storing_replaces_the_quarter_s_verdicts(store: Store) -> None:
    seed_services(store)
    with store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
        store_verdicts(session, Q3, verdicts, NOW)
    with store.session() as session:
        store_verdicts(session, Q3, verdicts, NOW + HOUR)  # again: replaced, not added
    with store.session() as session:
        rows = session.scalars(select(ComplianceResult)).all()
        assert len(rows) == len(verdicts)
        platform = [r for r in rows if r.rule == "log_audit"]
        assert [(r.subject, r.passed) for r in platform] == [("", False)]
        bad = next(r for r in rows if r.rule == "probed_throughout" and r.subject == "bad")
        assert bad.evidence["gap_hours"] == 3
        assert {r.evaluated_at for r in rows} == {NOW + HOUR}


def test_a_gap_is_found_in_a_running_quarter_whose_current_hour_was_probed(
    sqlite_store: Store,
) -> None:
    q4_start = END
    now = t("2026-11-02 09:30")
    with sqlite_store.session() as s:
        online_all_quarter(s, "svc")
        rollups(s, "svc", q4_start, t("2026-11-02 09:00"), skip=(t("2026-10-15 03:00"),))
        s.add(
            ProbeResultRow(
                service_id="svc",
                kind="availability",
                target="x",
                at=t("2026-11-02 09:10"),
                success=True,
                duration_ms=90.0,
            )
        )
    with sqlite_store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), "2026q4", now)
    coverage = next(v for v in verdicts if v.rule == "probed_throughout")
    assert not coverage.passed
    assert coverage.evidence["gaps"] == [["2026-10-15T03:00:00+08:00", "2026-10-15T04:00:00+08:00"]]


def test_uptime_and_latency_are_not_judged_when_nothing_was_measured(sqlite_store: Store) -> None:
    with sqlite_store.session() as s:
        online_all_quarter(s, "never-probed")
        online_all_quarter(s, "always-failing")
        rollups(s, "always-failing", failures=60)
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    assert ("uptime_target", "never-probed") not in verdicts
    assert ("latency_target", "never-probed") not in verdicts
    # Failing probes measure an uptime (0 %), but no latency: only successes have one.
    assert not passed(verdicts, "uptime_target", "always-failing")
    assert verdicts["uptime_target", "always-failing"].evidence["uptime_percent"] == 0.0
    assert ("latency_target", "always-failing") not in verdicts
    assert not passed(verdicts, "probed_throughout", "never-probed")  # 6.4 still asks a probe


def probed(session: Session, service_id: str, at: dt.datetime, *, success: bool) -> None:
    """A raw availability result of the service."""
    session.add(
        ProbeResultRow(
            service_id=service_id,
            kind="availability",
            target="x",
            at=at,
            success=success,
            duration_ms=150.0 if success else 10_000.0,
        )
    )


def test_the_figures_are_the_same_before_and_after_the_roll_up(sqlite_store: Store) -> None:
    minutes = dt.timedelta(minutes=10)
    with sqlite_store.session() as s:
        # Fine for two hours, then three failures and suspended at 10:20, within the hour.
        service(
            s,
            "suspended-in-the-hour",
            [
                (START - 30 * 24 * HOUR, t("2026-08-10 10:20"), "online"),
                (t("2026-08-10 10:20"), None, "suspended"),
            ],
        )
        for n in range(12):
            probed(s, "suspended-in-the-hour", t("2026-08-10 08:00") + n * minutes, success=True)
        for n in range(3):
            at = t("2026-08-10 10:00") + n * minutes / 2
            probed(s, "suspended-in-the-hour", at, success=False)
        # Online at 10:30: its first probe fails at 10:40, the next hours are fine.
        service(
            s,
            "online-mid-hour",
            [
                (t("2026-06-01 00:00"), t("2026-08-01 10:30"), "pending"),
                (t("2026-08-01 10:30"), None, "online"),
            ],
        )
        probed(s, "online-mid-hour", t("2026-08-01 10:40"), success=False)
        for n in range(12):
            probed(s, "online-mid-hour", t("2026-08-01 11:00") + n * minutes, success=True)

    def figures() -> dict[tuple[str, str], object]:
        with sqlite_store.session() as session:
            verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
            scores = score_services(session, Settings(), Q3, verdicts, NOW)
        shown: dict[tuple[str, str], object] = {
            (v.rule, str(v.service_id)): v.evidence
            for v in verdicts
            if v.rule in ("uptime_target", "latency_target")
        }
        shown.update({("score", sc.service_id): (sc.score, sc.parts) for sc in scores})
        return shown

    before = figures()
    assert before["uptime_target", "suspended-in-the-hour"]["failures"] == 3  # type: ignore[index]
    assert before["uptime_target", "online-mid-hour"]["failures"] == 1  # type: ignore[index]
    assert roll_up(sqlite_store, NOW) > 0
    purge(sqlite_store, Settings(), NOW)  # the successful raw results are past 30 days
    with sqlite_store.session() as session:
        assert session.scalar(select(ProbeRollup.id).limit(1)) is not None
        assert not session.scalars(
            select(ProbeResultRow).where(ProbeResultRow.success.is_(True))
        ).all()
    assert figures() == before


def part_time_services(store: Store, ids: list[str]) -> None:
    """Services online from 2026-08-01 10:30 but suspended for a day, probed every hour from
    10:00 on but 2026-09-01 03:00, a failure in every tenth probe."""
    with store.session() as s:
        for service_id in ids:
            service(
                s,
                service_id,
                [
                    (t("2026-06-01 00:00"), t("2026-08-01 10:30"), "pending"),
                    (t("2026-08-01 10:30"), t("2026-08-20 00:00"), "online"),
                    (t("2026-08-20 00:00"), t("2026-08-21 00:00"), "suspended"),
                    (t("2026-08-21 00:00"), None, "online"),
                ],
            )
            rollups(s, service_id, t("2026-08-01 10:00"), failures=6, skip=(t("2026-09-01 03:00"),))


def probe_reads(store: Store, ids: list[str]) -> tuple[int, list[ComplianceVerdict]]:
    """How many statements reading probe results or roll-ups judging the quarter sends, and
    the verdicts."""
    sent: list[str] = []

    def count(*args: object) -> None:
        if "probe_r" in str(args[2]):
            sent.append(str(args[2]))

    part_time_services(store, ids)
    sql_event.listen(store.engine, "before_cursor_execute", count)
    try:
        with store.session() as session:
            verdicts = evaluate_quarter(session, Settings(), Q3, NOW)
    finally:
        sql_event.remove(store.engine, "before_cursor_execute", count)
    return len(sent), verdicts


def test_a_quarter_of_forty_part_time_services_is_read_in_as_many_queries_as_of_two(
    store: Store,
) -> None:
    """The probes of services online only part of the quarter are read for all of them at once:
    one query per service made a city's catalogue (3,000 services) take minutes to judge."""
    few, _ = probe_reads(store, [f"svc-a{i:03d}" for i in range(2)])
    many, verdicts = probe_reads(store, [f"svc-b{i:03d}" for i in range(40)])
    assert many == few
    judged = {(v.rule, v.service_id): v for v in verdicts}
    hours_online = (END - t("2026-08-01 11:00")) / HOUR - 24
    for i in range(40):
        coverage = judged["probed_throughout", f"svc-b{i:03d}"]
        assert coverage.evidence["hours_online"] == hours_online
        assert coverage.evidence["gaps"] == [
            ["2026-09-01T03:00:00+08:00", "2026-09-01T04:00:00+08:00"]
        ]
        uptime = judged["uptime_target", f"svc-b{i:03d}"]
        # The hour it went online in counts whole, the gap has none, the suspended day is out.
        assert uptime.evidence["probes"] == 60 * hours_online
        assert uptime.evidence["uptime_percent"] == 90.0


@pytest.mark.parametrize(
    ("clause", "service_id", "counts"),
    [
        ("7.3.2", None, True),
        ("8.3 b", "svc-0001", False),  # one service's go-live pen test
        ("7.3.2", "svc-0001", False),
        ("8.3 b", None, False),
    ],
)
def test_only_the_platform_s_pen_test_filed_for_7_3_2_counts(
    sqlite_store: Store, clause: str, service_id: str | None, counts: bool
) -> None:
    with sqlite_store.session() as s:
        online_all_quarter(s, "svc-0001")
        s.add(
            EvidenceDocument(
                clause=clause,
                kind="pentest",
                service_id=service_id,
                document_date=dt.date(2026, 9, 20),
                filed_by="张三",
                filed_at=t("2026-09-21 10:00"),
                file_name="pentest.pdf",
                stored_as="pentest.pdf",
                sha256="0" * 64,
                size=10,
            )
        )
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    pentest = verdicts["quarterly_pentest", None]
    assert pentest.passed is counts
    assert len(pentest.evidence["documents"]) == counts


@pytest.mark.parametrize("filed", [0.999, 100.5, "99.9"])
async def test_a_filed_uptime_target_that_is_no_percentage_is_a_filing_problem(
    sqlite_store: Store, tmp_path: Path, filed: object
) -> None:
    # 0.999 is a fraction where 99.9 was meant: taken as 0.999 %, 50 % uptime passed it.
    file = tmp_path / "catalogue.json"
    file.write_text(
        json.dumps({"services": [make_service(1, slo={"uptime_percent": filed, "p95_ms": 800})]}),
        encoding="utf-8",
    )
    async with aiohttp.ClientSession() as session:
        outcome = await sync_catalogue(
            sqlite_store,
            PortalSettings(),
            None,
            FakeClock(START - 30 * 24 * HOUR),
            session=session,
            file=file,
        )
    assert outcome.outcome == "ok"
    problem = (
        f"slo.uptime_percent: expected a percentage from 90 to 100, got {filed!r}; "
        "the [compliance] uptime_percent is used instead"
    )
    assert service_rows(sqlite_store)[0]["filing_problems"] == [problem]
    with sqlite_store.session() as s:
        rollups(s, "svc-0001", failures=30, latency_ms=300.0)  # half the probes fail
    with sqlite_store.session() as session:
        verdicts = {
            (v.rule, v.service_id): v for v in evaluate_quarter(session, Settings(), Q3, NOW)
        }
    uptime = verdicts["uptime_target", "svc-0001"]
    assert not uptime.passed
    assert (uptime.evidence["target_percent"], uptime.evidence["target_from"]) == (99.9, "config")
    latency = verdicts["latency_target", "svc-0001"]
    assert (latency.evidence["target_ms"], latency.evidence["target_from"]) == (800.0, "filing")
    assert verdicts["filing_complete", "svc-0001"].evidence["problems"] == [problem]
