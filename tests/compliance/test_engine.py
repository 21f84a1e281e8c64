"""The compliance rules over small stores written row by row: per rule, a service (or a
platform) that passes and one that fails, and the verdicts stored for the report."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from monitord.compliance import evaluate_quarter, store_verdicts
from monitord.config import Settings
from monitord.store import Store, open_store
from monitord.store.models import (
    AdminReview,
    ComplianceResult,
    EvidenceDocument,
    Incident,
    IncidentEvent,
    LogAudit,
    ProbeResultRow,
    QuietWindow,
    ServiceRevision,
    ServiceStateChange,
    SyncRun,
)
from monitord.types import ComplianceVerdict
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
    service,
    t,
)

Verdicts = dict[tuple[str, str | None], ComplianceVerdict]


def seed_services(store: Store) -> None:
    """Services built to pass or fail each service rule of 2026q3."""
    with store.session() as s:
        # good: everything in order all quarter.
        online_all_quarter(s, "good")
        rollups(s, "good")
        scan(s, "good", t("2026-08-05 10:00"))
        # bad: every duty missed.
        online_all_quarter(s, "bad", filing_problems=["faq_url: missing (常见问题)"])
        gap = (t("2026-08-10 10:00"), t("2026-08-10 11:00"), t("2026-08-10 12:00"))
        rollups(s, "bad", failures=6, latency_ms=5000.0, skip=gap)
        finding(
            s,
            "bad",
            "legacy_protocol",
            "6.3.2 a",
            "medium",
            t("2026-08-01 00:00"),
            t("2026-08-03 00:00"),
        )
        finding(s, "bad", "plain_http_access", "6.3.2 b", "high", t("2026-07-05 00:00"), None)
        finding(s, "bad", "zap:40012", "8.3 b", "high", t("2026-09-01 00:00"), None)
        finding(s, "bad", "zap:10021", "8.3 b", "low", t("2026-09-01 00:00"), None)
        s.add(
            ServiceStateChange(
                service_id="bad", at=t("2026-08-20 03:00"), from_state="up", to_state="down"
            )
        )
        # A finding of the quarter before, closed before it began, is not this quarter's.
        finding(
            s,
            "good",
            "legacy_protocol",
            "6.3.2 a",
            "medium",
            t("2026-06-01 00:00"),
            t("2026-06-02 00:00"),
        )
        # golive: approved, scanned clean, then online on 2026-08-01.
        service(
            s,
            "golive",
            [
                (t("2026-06-01 00:00"), t("2026-08-01 10:00"), "approved"),
                (t("2026-08-01 10:00"), None, "online"),
            ],
        )
        scan(s, "golive", t("2026-07-30 10:00"))
        event(s, "golive", "went_online", t("2026-08-01 10:00"), "approved", "online")
        # golive-bad: online straight from pending, no review, its scan found a High.
        service(
            s,
            "golive-bad",
            [
                (t("2026-06-01 00:00"), t("2026-08-01 10:00"), "pending"),
                (t("2026-08-01 10:00"), None, "online"),
            ],
            review=None,
        )
        scan(s, "golive-bad", t("2026-07-30 10:00"), high=1)
        event(s, "golive-bad", "went_online", t("2026-08-01 10:00"), "pending", "online")
        # paused: suspended 08-10 to 08-12 as filed; down inside the window; re-tested.
        online_all_quarter(s, "paused")
        s.add(
            QuietWindow(
                kind="suspension",
                service_id="paused",
                starts_at=t("2026-08-10 00:00"),
                ends_at=t("2026-08-12 00:00"),
                recorded_at=t("2026-08-05 09:00"),
                ended_at=t("2026-08-11 20:00"),
            )
        )
        s.add(
            ServiceStateChange(
                service_id="paused", at=t("2026-08-10 10:00"), from_state="up", to_state="down"
            )
        )
        event(s, "paused", "resumed", t("2026-08-11 20:00"), "suspended", "online")
        s.add(
            ProbeResultRow(
                service_id="paused",
                kind="availability",
                target="x",
                at=t("2026-08-11 20:05"),
                success=True,
                duration_ms=100.0,
            )
        )
        scan(s, "paused", t("2026-08-12 08:00"))
        # paused-bad: resumed five days late, and not scanned after.
        online_all_quarter(s, "paused-bad")
        s.add(
            QuietWindow(
                kind="suspension",
                service_id="paused-bad",
                starts_at=t("2026-08-10 00:00"),
                ends_at=t("2026-08-20 00:00"),
                recorded_at=t("2026-08-05 09:00"),
                ended_at=t("2026-08-25 00:00"),
            )
        )
        event(s, "paused-bad", "resumed", t("2026-08-25 00:00"), "suspended", "online")
        scan(s, "paused-bad", t("2026-08-01 00:00"))
        # leaving: a notice 12 working days ahead, then offline as announced.
        notice = {
            "filed_at": "2026-09-10T10:00:00+08:00",
            "planned_offline": "2026-09-28T00:00:00+08:00",
        }
        service(
            s,
            "leaving",
            [
                (START - 30 * 24 * HOUR, t("2026-09-10 10:00"), "online"),
                (t("2026-09-10 10:00"), t("2026-09-28 00:00"), "online"),
                (t("2026-09-28 00:00"), None, "offline"),
            ],
        )
        s.flush()
        for row in s.scalars(
            select(ServiceRevision).where(
                ServiceRevision.service_id == "leaving",
                ServiceRevision.valid_from >= t("2026-09-10 10:00"),
            )
        ):
            row.record = {**row.record, "offline_notice": notice}
        event(s, "leaving", "offline_notice_filed", t("2026-09-10 10:00"), **notice)
        event(s, "leaving", "went_offline", t("2026-09-28 00:00"), "online", "offline")
        # national-day: filed Friday 09-25 for Monday 10-12. Ten weekdays lie between, but the
        # National Day holiday (10-01..10-07) leaves six working days (10-10 is a make-up day).
        online_all_quarter(s, "national-day")
        event(
            s,
            "national-day",
            "offline_notice_filed",
            t("2026-09-25 10:00"),
            filed_at="2026-09-25T10:00:00+08:00",
            planned_offline="2026-10-12T00:00:00+08:00",
        )
        # vanished: dropped from the catalogue on 09-15 without a word.
        service(
            s,
            "vanished",
            [
                (START - 30 * 24 * HOUR, t("2026-09-15 00:00"), "online"),
                (t("2026-09-15 00:00"), None, "gone"),
            ],
        )
        event(s, "vanished", "gone", t("2026-09-15 00:00"), "online")


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
    assert judged["filing_complete", "bad"].evidence["problems"] == ["faq_url: missing (常见问题)"]


def test_a_service_goes_online_only_after_approval_and_a_clean_scan(judged: Verdicts) -> None:
    assert passed(judged, "online_after_approval_and_scan", "golive")
    bad = judged["online_after_approval_and_scan", "golive-bad"]
    assert not bad.passed
    assert bad.evidence["went_online"][0]["approved"] is False
    assert bad.evidence["went_online"][0]["scan"]["high"] == 1
    # A service that went online before the quarter is not judged for it again.
    assert ("online_after_approval_and_scan", "good") not in judged


@pytest.mark.parametrize(
    ("rule", "finding_rule"),
    [("tls_policy", "legacy_protocol"), ("https_only", "plain_http_access")],
)
def test_transport_findings_open_while_online_fail_their_clause(
    judged: Verdicts, rule: str, finding_rule: str
) -> None:
    assert passed(judged, rule, "good")
    bad = judged[rule, "bad"]
    assert not bad.passed
    assert [e["rule"] for e in bad.evidence["episodes"]] == [finding_rule]
    assert passed(judged, "documented_return_codes", "bad")


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
        {"kind": "gone", "at": "2026-09-15T00:00:00+08:00", "problem": "no take-down notice"}
    ]


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


def seed_platform(store: Store, *, good: bool) -> None:
    """The platform's records for 2026q3: all in order, or each duty missed."""
    with store.session() as s:
        began = START - dt.timedelta(days=200) if good else START + dt.timedelta(days=10)
        s.add(SyncRun(started_at=began, finished_at=began, source="test", outcome="ok"))
        online_all_quarter(s, "svc")
        rollups(s, "svc", began if good else START + dt.timedelta(days=100), END)
        s.add(
            LogAudit(
                quarter=Q3,
                created_at=t("2026-10-08 06:00"),
                period_start=START,
                period_end=END,
                lines=1000,
                empty_days=[] if good else ["2026-08-10"],
                vendor_operations=[{"subject": "user:vendor-7", "summary": "", "evidence": {}}],
            )
        )
        date = dt.date(2026, 9, 20) if good else dt.date(2026, 6, 20)
        for kind in ("pentest", "risk_assessment"):
            s.add(
                EvidenceDocument(
                    clause="7.3.2",
                    kind=kind,
                    document_date=date
                    if kind == "pentest"
                    else date.replace(year=2026 - (not good)),
                    filed_by="张三",
                    filed_at=t("2026-09-21 10:00"),
                    file_name=f"{kind}.pdf",
                    stored_as=f"{kind}.pdf",
                    sha256="0" * 64,
                    size=10,
                )
            )
        s.add(
            AdminReview(
                quarter=Q3 if good else "2026q2",
                reviewed_at=t("2026-09-01 10:00"),
                reviewed_by="李四",
                file_name="accounts.csv",
                sha256="1" * 64,
            )
        )
        detected = t("2026-08-01 10:00")
        incident = Incident(
            kind="vulnerability",
            klass="security",
            severity="high",
            group_key="k",
            detected_at=detected,
            notify_by=detected + 2 * HOUR,
            notified_at=detected + HOUR,
        )
        s.add(incident)
        s.flush()
        parts = {"scope": "全市", "harm": "低", "measures": "下线", "rectification": "修复"}
        if not good:
            parts["rectification"] = ""
        s.add(
            IncidentEvent(
                incident_id=incident.id, at=detected + HOUR, kind="notified", detail=parts
            )
        )
        late = Incident(
            kind="data_exposure",
            klass="security",
            severity="high",
            group_key="k2",
            detected_at=detected,
            notify_by=detected + 2 * HOUR,
            notified_at=detected + (1 if good else 3) * HOUR,
            late=not good,
        )
        s.add(late)
        s.flush()
        s.add(
            IncidentEvent(
                incident_id=late.id,
                at=detected + HOUR,
                kind="notified",
                detail={**parts, "rectification": "修复"},
            )
        )
        s.add(
            Incident(
                kind="outage",
                klass="availability",
                severity="high",
                group_key="k3",
                detected_at=detected,
            )
        )


PLATFORM_RULES = (
    "log_retention",
    "log_audit",
    "quarterly_pentest",
    "admin_review",
    "risk_assessment",
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
    # No security incident: nothing was late.
    assert {v.rule for v in verdicts if v.passed} == {"incidents_notified"}


def test_the_log_audit_of_a_running_quarter_is_not_written_yet(sqlite_store: Store) -> None:
    with sqlite_store.session() as session:
        verdicts = evaluate_quarter(session, Settings(), "2026q4", NOW)
    audit = next(v for v in verdicts if v.rule == "log_audit")
    assert audit.evidence == {"written": False, "due_after": "2027-01-01T00:00:00+08:00"}


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
