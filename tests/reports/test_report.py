"""The quarterly report: every section and clause, the store's figures, the same figures a
quarter later, an empty quarter, an unknown calendar year, names in any script."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sqlalchemy.orm import Session

import reports
from monitord.compliance.engine import evaluate_quarter, open_quarter
from monitord.config import Settings
from monitord.errors import ReportError
from monitord.evidence import KINDS
from monitord.incidents import open_manual
from monitord.runtime.reporting import online_availability
from monitord.scans import accept_finding
from monitord.store import Store, backup_sqlite, histogram, open_store
from monitord.store.findings import upsert_finding
from monitord.store.history import ProbeStats
from monitord.store.models import (
    AdminReview,
    EvidenceDocument,
    Incident,
    IncidentEvent,
    ProbeRollup,
    Scan,
    ServiceRevision,
    Silence,
)
from monitord.timeutil import UTC
from monitord.types import ComplianceVerdict, FindingDraft
from reports import charts
from reports.fonts import find_font
from reports.quarter import read_quarter
from reports.sections import CLAUSE_DUTIES, SECTIONS, clause_lights, pct
from tests.reports.conftest import Word
from tests.reports.seed import Seeded, seed_quarter

OCT_2 = dt.datetime(2026, 10, 2, 1, 0, tzinfo=UTC)
RANGE = "2026-07-01 00:00 至 2026-10-01 00:00（北京时间）"
FORMULA = "得分 = 0.5×可用率 + 0.5×合规"

Pages = Callable[[bytes], list[str]]


def availability(store: Store, quarter: str, now: dt.datetime) -> dict[str, ProbeStats]:
    """The services' availability figures the runtime hands the report: the engine's."""
    with store.session() as session:
        return online_availability(session, Settings(), quarter, now)


def render(
    store: Store, seeded: Seeded | None, quarter: str, now: dt.datetime
) -> reports.RenderedReport:
    with store.session() as session:
        return reports.render_quarterly(
            session,
            Settings(),
            quarter,
            verdicts=seeded.verdicts if seeded else [],
            scores=seeded.scores if seeded else [],
            availability=availability(store, quarter, now) if seeded else {},
            now=now,
            formula=FORMULA,
        )


@dataclass(frozen=True)
class Q3:
    """A store seeded with 2026q3 (shared by the tests that only read it) and its report."""

    path: Path
    store: Store
    seeded: Seeded
    report: reports.RenderedReport


@pytest.fixture(scope="module")
def q3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Q3]:
    path = tmp_path_factory.mktemp("q3") / "monitord.db"
    store = open_store(f"sqlite:///{path}")
    with store.session() as session:
        seeded = seed_quarter(session)
    try:
        yield Q3(path, store, seeded, render(store, seeded, "2026q3", OCT_2))
    finally:
        store.dispose()


def one_line(text: str) -> str:
    """pdftotext -layout's text with runs of blanks made one, to match a table row."""
    return re.sub(r"[ \t\u3000]+", " ", text)


def test_the_report_shows_every_section_and_clause_and_the_figures_the_store_holds(
    q3: Q3, pdf_pages: Pages
) -> None:
    report, seeded = q3.report, q3.seeded
    pages = pdf_pages(report.pdf)
    text = one_line("\n".join(pages))
    assert len(pages) == report.pages > 5
    for heading in SECTIONS:
        assert one_line(heading) in text
    # The cover names the standard by its own title (it said 《法人服务总入口建设运营规范》).
    assert "依据 DB3205/T 1129-2024《法人服务总入口运行管理规范》" in one_line(pages[0])
    # The operation unit submits the report (报送); the management unit receives it (主送).
    assert "报送单位（运营单位）：苏商通运营单位" in one_line(pages[0])
    assert "主送单位（管理单位）：苏州市数据局" in one_line(pages[0])
    for clause in CLAUSE_DUTIES:
        assert f"\n{clause} " in text, clause
    # Availability: each tier's figure is (count - failures) / count over the store's roll-ups.
    for tier, label in (("province", "省级平台"), ("bureau", "市级部门"), ("unknown", "未填报")):
        uptime = re.escape(pct(seeded.tier_uptime(tier)))
        assert re.search(rf"{re.escape(label)} \d+ \d+ [\d,]+ [\d,]+ {uptime}", text), tier
        assert report.figures["tiers"][tier]["uptime"] == pytest.approx(seeded.tier_uptime(tier))
    merged: dict[str, int] = {}
    for buckets in seeded.buckets.values():
        histogram.merge(merged, buckets)
    assert report.figures["p95_ms"] == histogram.percentile(merged, 0.95)
    assert report.figures["probes"] == sum(seeded.count.values())
    assert report.figures["blind"] == seeded.blind
    probes, failures = sum(seeded.count.values()), sum(seeded.failures.values())
    assert f"探测次数 / 失败次数 {probes:,} / {failures:,}" in text
    # The two-hour record: each late incident named, with how late.
    assert report.figures["late_incidents"] == seeded.late_incidents
    late, never = seeded.late_incidents
    assert re.search(rf"#{late} svc-0002 .* 超时 35 分钟", text)
    assert re.search(rf"#{never} svc-0003 .* 未通报 超时 61 天 19 小时 0 分钟", text)
    assert "未通报的事件，超时计至数据截止时间 2026-10-01 00:00。" in text
    assert "本季度安全事件 5 起：按时通报 3 起，迟报或未通报 2 起。" in text
    # Open high and medium findings at the quarter's end, named; the closed one is not.
    for rule in seeded.open_high:
        assert rule in text
    for rule in seeded.closed_high:
        assert rule not in text
    assert "zap_csrf" in text  # closed only after the quarter: open at its end
    assert "hsts_missing" not in text  # low: counted, not named
    # Log audit, vendor operations, admin review, evidence, retention, ranking.
    assert f"分析日志 {seeded.log_lines:,} 行" in text
    assert "vendor-zhang 夜间登录运维后台 3 次" in text
    assert "王审查" in text and "120 天未登录" in text
    assert "长期未登录的管理员账号" in text and "dormant_admin" not in text  # the flags in Chinese
    assert "pentest-2026q3.pdf" in text and "risk-2026q3.pdf" in text  # this year's
    assert "drill-before-2026q3.pdf" not in text  # dated last quarter
    # The last purge in words, its cutoffs in Beijing time (it showed a Python dict).
    assert (
        "最近一次清理：2026-08-2000:00。删除探测结果1,200条（成功的2026-07-2108:00之前，"
        "失败的2025-07-1608:00之前）、目录同步记录30条（2025-07-1608:00之前）。"
    ) in re.sub(r"\s+", "", text)  # the paragraph wraps
    assert FORMULA in text
    best = max(seeded.scores, key=lambda s: s.score)
    assert best.service_id in text
    # The summary's lights: 7.3.3 red (its one verdict failed), 6.3.2 a green, 6.2.2 amber;
    # 8.3 b red, most of its verdicts passed but a high finding (zap_sql_injection) is open.
    assert report.figures["clauses"]["7.3.3"]["light"] == "red"
    assert report.figures["clauses"]["8.3 b"] == {
        "light": "red",
        "passed": 198,
        "failed": 2,
        "pending": 0,
    }
    assert re.search(r"\n8\.3 b .* 198 2 ●红", text)
    assert report.figures["clauses"]["6.3.2 a"]["light"] == "green"
    assert report.figures["clauses"]["6.2.2"]["light"] == "amber"
    assert re.search(r"\n7\.3\.3 .* 0 1 ●红", text)


def test_the_retention_table_says_how_long_the_purge_keeps_each_kind_of_record(
    q3: Q3, pdf_pages: Pages
) -> None:
    """Kept days as the purge keeps them (roll-ups and state changes the longer of the two
    retentions), and 永久保存 for what it never purges (it said retention_days for all)."""
    defaults = Settings()
    store = defaults.store.model_copy(update={"retention_days": 500})
    probes = defaults.probes.model_copy(
        update={"raw_retention_days": 20, "rollup_retention_days": 450}
    )
    settings = defaults.model_copy(update={"store": store, "probes": probes})
    with q3.store.session() as session:
        report = reports.render_quarterly(
            session,
            settings,
            "2026q3",
            verdicts=q3.seeded.verdicts,
            scores=q3.seeded.scores,
            availability=availability(q3.store, "2026q3", OCT_2),
            now=OCT_2,
            formula=FORMULA,
        )
    text = one_line("\n".join(pdf_pages(report.pdf)))
    kept = {
        kind: days
        for kind, days in re.findall(
            r"\n ?(\S+) (?:\d{4}-\d\d-\d\d \d\d:\d\d|—) [\d,]+ (\S+)", text
        )
    }
    assert kept["探测结果（成功）"] == "20"
    assert kept["探测结果（失败）"] == "500"
    assert kept["探测小时汇总"] == "500"
    assert kept["服务状态变化"] == "500"
    for never in ("问题发现（片段）", "事件", "服务生命周期事件", "服务目录版本", "告警与通报"):
        assert kept[never] == "永久保存", never
    assert kept["操作审计记录"] == "永久保存"
    assert kept["访问日志小时统计"] == "永久保存"


def test_every_page_carries_the_data_range_and_its_number_of_the_total(
    q3: Q3, pdf_pages: Pages
) -> None:
    pages = pdf_pages(q3.report.pdf)
    assert q3.report.period == (q3.seeded.start, q3.seeded.end)
    for number, page in enumerate(pages, start=1):
        assert RANGE in page, number
        assert f"第 {number} 页 / 共 {len(pages)} 页" in page
    cover = pages[0]
    assert "2026年第3季度" in cover and "苏商通运营单位" in cover and "苏州市数据局" in cover
    assert "生成时间：2026-10-02 09:00" in cover
    assert "目录" in pages[1] and one_line(SECTIONS[0]) in one_line(pages[1])


def test_every_character_drawn_is_in_the_embedded_font(
    q3: Q3, pdf_pages: Pages, pdf_fonts: Callable[[bytes], list[list[str]]]
) -> None:
    report = q3.report
    fonts = pdf_fonts(report.pdf)
    assert fonts
    for name, _type, _encoding, embedded, subset, unicode_map, *_ in fonts:
        assert "WenQuanYi" in name and (embedded, subset, unicode_map) == ("yes", "yes", "yes")
    font = find_font(None)
    text = one_line("".join(pdf_pages(report.pdf)))
    missing = {c for c in text if not c.isspace() and ord(c) not in font.codepoints}
    assert missing == set()
    # A glyph the font lacks would be drawn as its empty box, which pdftotext reads as nothing:
    # names in scripts the font lacks must show as code points; markup stays text.
    assert re.search(r"svc-0003 \[U\+062E\]", text)
    assert re.search(r"svc-0004 \[U\+0F5A\]", text)
    assert "[U+062E][U+062F]" in text  # Arabic
    assert "[U+0F5A][U+0F7C]" in text  # Tibetan
    assert "[U+1F3E2] 企业开办一件事 [U+1F600]" in text  # emoji
    assert "<b>税务 & 社保</b>" in text


def test_a_past_quarter_shows_the_same_figures_after_a_quarter_of_new_data(
    q3: Q3, tmp_path: Path, pdf_pages: Pages
) -> None:
    before = q3.report
    copy = tmp_path / "later.db"
    backup_sqlite(q3.path, copy)  # consistent: q3 is open, some of it still in its WAL
    later = open_store(f"sqlite:///{copy}")
    try:
        with later.session() as session:
            seed_quarter(session, "2026q4", catalogue=False, rng_seed=11)
        after = render(later, q3.seeded, "2026q3", dt.datetime(2027, 1, 5, 2, tzinfo=UTC))
    finally:
        later.dispose()
    changing = ("generated_at", "retention")  # the store now, not the quarter
    assert {k: v for k, v in after.figures.items() if k not in changing} == {
        k: v for k, v in before.figures.items() if k not in changing
    }
    text_before = one_line("\n".join(pdf_pages(before.pdf)))
    text_after = one_line("\n".join(pdf_pages(after.pdf)))
    # From the summary up to retention (which speaks of the store as it is now), word for word;
    # the last occurrence of each heading is the section's own, the first the contents page's.
    start, stop = one_line(SECTIONS[0]), one_line(SECTIONS[6])
    assert (
        text_after[text_after.rindex(start) : text_after.rindex(stop)]
        == text_before[text_before.rindex(start) : text_before.rindex(stop)]
    )


def test_an_empty_quarter_says_there_is_nothing_rather_than_failing(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    report = render(sqlite_store, None, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    for heading in SECTIONS:
        assert one_line(heading) in text
    assert "本季度没有探测记录。" in text
    assert "本季度没有事件。" in text
    assert "本季度没有静默。" in text
    assert "2026年第3季度尚无日志审计记录" in text
    assert "本季度没有服务评价结果。" in text
    # Not "none filed" followed by "the year's risk assessments included".
    assert "本季度没有登记证据文件，本年度截至季度末也没有风险评估报告。" in text
    assert "含本年度截至季度末的风险评估报告" not in text
    assert report.figures["uptime"] is None and report.figures["services"] == 0


def test_a_year_the_calendar_does_not_know_is_said_so(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, "2031q1", services=20)
    report = render(sqlite_store, seeded, "2031q1", dt.datetime(2031, 4, 2, tzinfo=UTC))
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert "2031 年的法定节假日安排 monitord 尚不知道，工作日按周一至周五计算" in text
    assert report.figures["calendar_known"] is False
    # svc-0009 is never probed; svc-0007, suspended all quarter, had no hour online.
    assert report.figures["probed_services"] == 20 - 2


def test_a_running_quarter_reports_up_to_now_and_says_so(q3: Q3, pdf_pages: Pages) -> None:
    now = dt.datetime(2026, 8, 15, 4, 0, tzinfo=UTC)
    report = render(q3.store, q3.seeded, "2026q3", now)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert report.period == (q3.seeded.start, now)
    assert "本季度尚未结束：数据截至 2026-08-15 12:00（北京时间）。" in text
    assert report.figures["probes"] < sum(q3.seeded.count.values())
    assert report.figures["incidents"] == 5  # those detected by now


@pytest.mark.parametrize(
    ("quarter", "message"),
    [
        ("2026q5", "'2026q5' is not a quarter such as 2026q3"),
        ("2026q4", "2026q4 has not begun: it starts 2026-10-01 00:00 Asia/Shanghai"),
    ],
)
def test_a_quarter_that_cannot_be_reported_is_refused_in_one_line(
    sqlite_store: Store, quarter: str, message: str
) -> None:
    with pytest.raises(ReportError) as raised:
        render(sqlite_store, None, quarter, dt.datetime(2026, 9, 1, tzinfo=UTC))
    assert str(raised.value) == message


def test_the_report_reads_its_figures_alike_on_sqlite_and_postgresql(store: Store) -> None:
    with store.session() as session:
        seeded = seed_quarter(session, services=30)
    report = render(store, seeded, "2026q3", OCT_2)
    assert report.figures["probes"] == sum(seeded.count.values())
    assert report.figures["late_incidents"] == seeded.late_incidents
    assert report.figures["open_findings"] == {"critical": 0, "high": 1, "medium": 2}
    assert report.figures["evidence_documents"] == 2
    assert report.figures["complaints"] == 5
    assert report.figures["tiers"]["bureau"]["uptime"] == pytest.approx(
        seeded.tier_uptime("bureau")
    )


def _silence(
    session: Session, reason: str, starts: dt.datetime, ends: dt.datetime, **scope: Any
) -> Silence:
    silence = Silence(
        reason=reason,
        created_by="zhang.san",
        created_at=starts,
        starts_at=starts,
        ends_at=ends,
        **{"services": [], "kinds": [], "rules": [], **scope},
    )
    session.add(silence)
    session.flush()
    return silence


def test_the_silences_of_the_quarter_are_listed_with_the_alerts_they_held_back(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    aug_1 = dt.datetime(2026, 8, 1, 2, 0, tzinfo=UTC)
    sep_30 = dt.datetime(2026, 9, 30, 15, 0, tzinfo=UTC)  # 23:00 in Beijing
    with sqlite_store.session() as session:
        drill = _silence(
            session,
            "机房断电演练（已报备）",
            aug_1,
            aug_1 + dt.timedelta(hours=4),
            services=["svc-0001"],
        )
        window = _silence(
            session,
            "季度扫描窗口",
            sep_30,
            sep_30 + dt.timedelta(days=2),
            kinds=["outage"],
            rules=["zap:*"],
        )
        window.expired_at, window.expired_by = OCT_2, "li.si"
        _silence(
            session, "上季度的静默", aug_1 - dt.timedelta(days=60), aug_1 - dt.timedelta(days=59)
        )
        _silence(session, "下季度的静默", OCT_2, OCT_2 + dt.timedelta(hours=1), kinds=["outage"])
        incident = open_manual(session, Settings(), "outage", [], "演练中断", "monitord", aug_1)
        for minute, alert in ((1, "opened"), (30, "escalation")):
            session.add(
                IncidentEvent(
                    incident_id=incident.id,
                    at=aug_1 + dt.timedelta(minutes=minute),
                    kind="silenced",
                    detail={
                        "alert": alert,
                        "silence": drill.id,
                        "note": f"silenced by #{drill.id}",
                    },
                )
            )
        drill_id, window_id = drill.id, window.id
    report = render(sqlite_store, None, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert "告警静默记录" in text
    assert "本季度生效过的静默 2 条，共压下群聊告警 2 条。" in text
    # Each row: what it covered, why, who set it, from when to when, who ended it early, and
    # the alerts it held back from chat.
    # (pdftotext reads a wrapped cell's further lines apart from its row: match each row's
    # one-line cells, and the reasons on their own.)
    assert re.search(
        rf"#{drill_id} 服务 svc-0001 .*zhang\.san 2026-08-01 10:00 2026-08-01 14:00 — 2\n", text
    )
    assert re.search(
        rf"#{window_id} .*季度扫描窗口 zhang\.san 2026-09-30 23:00 2026-10-02 09:00 li\.si 0\n",
        text,
    )
    assert "类型 outage；规" in text and "机房断电演练（已报" in text
    assert "上季度的静默" not in text and "下季度的静默" not in text
    assert report.figures["silences"] == 2
    before = render(sqlite_store, None, "2026q2", OCT_2)
    text = one_line("\n".join(pdf_pages(before.pdf)))
    assert "本季度生效过的静默 1 条，共压下群聊告警 0 条。" in text and "上季度的静默" in text


def test_a_small_running_quarter_names_what_is_pending_and_what_is_unknown(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    now = dt.datetime(2026, 8, 10, 4, 0, tzinfo=UTC)
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=15)
        # A security incident detected half an hour ago: its two-hour clock still runs.
        session.add(
            Incident(
                kind="vulnerability",
                klass="security",
                severity="high",
                state="open",
                group_key="pending",
                summary="仍在时限内",
                services=["svc-0001"],
                detected_at=now - dt.timedelta(minutes=30),
                occurred_at=now - dt.timedelta(minutes=30),
                notify_by=now + dt.timedelta(minutes=90),
            )
        )
        # A tier the standard does not name, as the catalogue filed it.
        for revision in session.query(ServiceRevision).filter_by(service_id="svc-0000"):
            revision.record = {**revision.record, "source": "township"}
    scores = [replace(sc, tier="township") if sc.service_id == "svc-0000" else sc
              for sc in seeded.scores]  # fmt: skip
    # Fourteen rules per service, as monitord judges them: the appendix's R10 to R14.
    extra = [
        ComplianceVerdict(f"rule_{n}", "6.4", service_id, "2026q3", True, {})
        for service_id in seeded.service_ids
        for n in range(9)
    ]
    with sqlite_store.session() as session:
        report = reports.render_quarterly(
            session,
            Settings(),
            "2026q3",
            verdicts=[*seeded.verdicts, *extra],
            scores=scores,
            availability=availability(sqlite_store, "2026q3", now),
            now=now,
            formula=FORMULA,
        )
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert "本季度安全事件 5 起：按时通报 2 起，迟报或未通报 2 起，尚在两小时时限内 1 起。" in text
    # 15 ranked services: listed once, not as a top 10 and a bottom 10 sharing five.
    assert "总体排名（15 个服务）" in text
    assert "总体前 10 名" not in text and "总体后 10 名" not in text
    assert re.search(r"未知层级（township） 1 1 ", text)  # the availability table's tier row
    assert "未知层级（township）（1 个服务）" in text
    # Each column header on one line: a wrapped one reads "R1" then "0" on the next line.
    assert " ".join(["服务编号 名称", *(f"R{n}" for n in range(1, 15))]) in text


def test_a_long_chinese_name_is_cut_where_its_appendix_column_ends(
    sqlite_store: Store, pdf_words: Callable[[bytes], list[Word]]
) -> None:
    # The name was cut by its number of characters, as if each were as wide as a Latin
    # letter: a name of 40 Chinese characters ran across the R1 to R3 results.
    long_name = "苏州市生态环境局关于企业开办全流程网上办理一件事集成服务平台（第九期）建设项目"
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=15)
        for revision in session.query(ServiceRevision).filter_by(service_id="svc-0005"):
            revision.record = {**revision.record, "name": long_name}
    words = pdf_words(render(sqlite_store, seeded, "2026q3", OCT_2).pdf)
    # The per-service table's header: R1 and R2 side by side (the legend has them one above
    # the other).
    r1 = next(
        w
        for w in words
        if w.text == "R1"
        and any(o.text == "R2" and (o.page, o.y_min) == (w.page, w.y_min) for o in words)
    )
    name = next(w for w in words if w.page == r1.page and w.text.startswith(long_name[:8]))
    assert name.x_max < r1.x_min  # never into the R1 column
    assert name.x_max > r1.x_min - 20  # and cut no shorter than the column needs
    assert name.text.endswith("…") and long_name.startswith(name.text[:-1])


def test_a_platform_duty_not_due_yet_is_blue_in_the_appendix_not_passed(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # The summary showed the running quarter's log audit blue, the appendix's platform checks
    # a tick, as if the audit were done.
    now = dt.datetime(2026, 8, 10, 4, 0, tzinfo=UTC)
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=15)
    pending = {"pending": True, "due_after": "2026-09-30T16:00:00+00:00"}
    verdicts = [
        *(v for v in seeded.verdicts if v.rule != "log_audit"),
        ComplianceVerdict("log_audit", "7.3.1", None, "2026q3", True, pending),
    ]
    with sqlite_store.session() as session:
        report = reports.render_quarterly(
            session, Settings(), "2026q3", verdicts=verdicts, scores=seeded.scores,
            availability=availability(sqlite_store, "2026q3", now), now=now, formula=FORMULA,
        )  # fmt: skip
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert "\n7.3.1 log_audit ●蓝\n" in text
    assert "蓝：尚未到期，不计入通过或未通过" in text


def test_the_latency_chart_marks_the_target_the_verdicts_use(
    q3: Q3, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It marked probes.slo_ms (a single probe's "slow") as 目标: with slo_ms 2000 and the 6.4 b
    # target 3000, a service at 2,566 ms sat beyond the line and passed its verdict.
    marked: list[float] = []
    real = charts.p95_distribution

    def spy(p95s: list[float], target_ms: float, font: Any) -> bytes:
        marked.append(target_ms)
        return real(p95s, target_ms, font)

    monkeypatch.setattr(charts, "p95_distribution", spy)
    settings = Settings.model_validate(
        {"probes": {"slo_ms": 2000.0}, "compliance": {"p95_ms": 3000.0}}
    )
    with q3.store.session() as session:
        reports.render_quarterly(
            session, settings, "2026q3", verdicts=q3.seeded.verdicts, scores=q3.seeded.scores,
            availability=availability(q3.store, "2026q3", OCT_2), now=OCT_2, formula=FORMULA,
        )  # fmt: skip
    assert marked == [3000.0]


def test_a_timed_out_scan_counts_as_the_quarters_scan_and_shows_what_it_found(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # A scan stopped at scan_deadline_minutes is the quarter's scan for clause 7.3.2 (its
    # verdict passes): the report said no scan was done and hid its high finding.
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=30)
        at = seeded.start + dt.timedelta(days=20)
        session.add(
            Scan(
                service_id="svc-0024",  # the seed's one service without a scan
                scan_key="svc-0024-2026q3",
                trigger="quarterly",
                state="timed_out",
                queued_at=at,
                next_attempt_at=at,
                started_at=at,
                finished_at=at + dt.timedelta(hours=2),
                high=1,
                medium=0,
            )
        )
        scan_id = session.query(Scan).filter_by(service_id="svc-0024").one().id
    report = render(sqlite_store, seeded, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert report.figures["unscanned_online"] == ["svc-0013"]  # its scan failed
    assert "本季度未完成扫描的上线服务：svc-0013。" in text
    assert report.figures["scans_scanned"] == 30 - 1  # svc-0013 failed
    assert "完成的安全扫描（含超时停止） 29" in text
    assert "完成 29 次（其中超时停止 1 次，保留已发现的结果）" in text
    assert re.search(rf"#{scan_id}（超时） svc-0024 2026-07-21 02:00 1 0", text)


def test_a_document_dated_today_is_in_a_running_quarters_evidence_register(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # The verdicts counted today's pen test and risk assessment; the register left them out
    # ("本季度没有登记证据文件…").
    now = dt.datetime(2026, 8, 10, 4, 0, tzinfo=UTC)  # 12:00 on 2026-08-10 in Suzhou
    with sqlite_store.session() as session:
        for kind, name in (("pentest", "pentest-today.pdf"), ("risk_assessment", "risk.pdf")):
            session.add(
                EvidenceDocument(
                    clause="7.3.2",
                    kind=kind,
                    document_date=dt.date(2026, 8, 10),
                    filed_by="李登记",
                    filed_at=now,
                    file_name=name,
                    stored_as=f"evidence/{name}",
                    sha256="cd" * 32,
                    size=1000,
                )
            )
    report = render(sqlite_store, None, "2026q3", now)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert report.figures["evidence_documents"] == 2
    assert "pentest-today.pdf" in text and "risk.pdf" in text
    assert "本季度没有登记证据文件" not in text


def test_every_kind_of_evidence_is_named_in_chinese_as_the_register_names_it(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # The report printed `other` in English and called security_plan 安全保障方案, where the
    # register (`monitord evidence add --kind`) says 网络安全保障方案.
    now = dt.datetime(2026, 8, 10, 4, 0, tzinfo=UTC)
    with sqlite_store.session() as session:
        for kind in KINDS:
            session.add(
                EvidenceDocument(
                    clause="7.3.2",
                    kind=kind,
                    document_date=dt.date(2026, 8, 10),
                    filed_by="李登记",
                    filed_at=now,
                    file_name=f"{kind}.pdf",
                    stored_as=f"evidence/{kind}.pdf",
                    sha256="cd" * 32,
                    size=1000,
                )
            )
    report = render(sqlite_store, None, "2026q3", now)
    text = "".join(one_line("\n".join(pdf_pages(report.pdf))).split())
    for kind, name in KINDS.items():
        assert f"7.3.2{name}平台" in text, kind


def test_each_admin_review_flag_says_which_review_it_comes_from(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # Two reviews in a quarter flagging the same account gave two identical rows.
    now = dt.datetime(2026, 9, 20, 4, 0, tzinfo=UTC)
    with sqlite_store.session() as session:
        for day, name in ((3, "accounts-aug.csv"), (19, "accounts-sep.csv")):
            session.add(
                AdminReview(
                    quarter="2026q3",
                    reviewed_at=dt.datetime(2026, 8 if day == 3 else 9, day, 2, 0, tzinfo=UTC),
                    reviewed_by="王审查",
                    file_name=name,
                    sha256="ab" * 32,
                    accounts=[{"account": "admin-3"}],
                    flags=[
                        {"account": "admin-3", "problem": "dormant_admin", "detail": "120 天未登录"}
                    ],
                )
            )
    report = render(sqlite_store, None, "2026q3", now)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    for review in ("2026-08-03 10:00 accounts-aug.csv", "2026-09-19 10:00 accounts-sep.csv"):
        assert f"{review} admin-3 长期未登录的管理员账号 120 天未登录" in text, review


def test_a_suspended_service_is_not_the_least_available_nor_lowers_its_tier(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # Suspended all quarter (filed) and down meanwhile: 6.4 a gives it no verdict, yet the
    # report named it 可用率最低 at 0.00 % and counted its failures against its tier.
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=30)
        session.query(ProbeRollup).filter_by(service_id="svc-0007").update(
            {"failures": ProbeRollup.count, "latency_buckets": {}}
        )
    report = render(sqlite_store, seeded, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert "svc-0007" not in report.figures["worst_services"]
    assert "0.00%" not in text
    province = report.figures["tiers"]["province"]["uptime"]
    assert province == pytest.approx(seeded.tier_uptime("province"))
    assert report.figures["probes"] == sum(seeded.count.values())


def test_a_duty_not_due_yet_is_blue_and_counted_neither_passed_nor_failed() -> None:
    # While the quarter runs, its log audit (7.3.1) and vendor audit (8.3 c) are pending: the
    # management unit must not read a green "done" nor a red "failed" for them.
    pending = {"pending": True, "due_after": "2026-12-31T16:00:00+00:00"}
    verdicts = [
        ComplianceVerdict("log_audit", "7.3.1", None, "2026q4", True, pending),
        ComplianceVerdict("vendor_audit", "8.3 c", None, "2026q4", True, pending),
        ComplianceVerdict("vendor_audit", "8.3 c", "svc-1", "2026q4", True, {}),
    ]
    no_findings = pd.DataFrame({"clause": [], "severity": []})
    lights = {c.clause: c for c in clause_lights(verdicts, no_findings)}
    assert (lights["7.3.1"].light, lights["7.3.1"].passed, lights["7.3.1"].pending) == (
        "pending",
        0,
        1,
    )
    assert (lights["8.3 c"].light, lights["8.3 c"].failed) == ("green", 0)
    # A failure found before the duty is due (an audit written early found a day without
    # logs) is a failure, not pending.
    early = [ComplianceVerdict("log_audit", "7.3.1", None, "2026q4", False, pending)]
    [light] = [c for c in clause_lights(early, no_findings) if c.clause == "7.3.1"]
    assert (light.light, light.failed, light.pending) == ("red", 1, 0)


def test_a_tier_with_no_probe_in_the_quarter_shows_a_dash_and_is_left_out_of_the_chart(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # The province services were pending all quarter: never probed. The tier's uptime is
    # unknown, which the chart's axis took as NaN and the report crashed on.
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=30)
        province = [s for s in seeded.service_ids if seeded.tiers[s] == "province"]
        session.query(ProbeRollup).filter(ProbeRollup.service_id.in_(province)).delete()
    report = render(sqlite_store, seeded, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert re.search(r"省级平台 \d+ 0 0 0 — —", text)
    assert report.figures["tiers"]["province"]["uptime"] is None
    assert report.figures["tiers"]["province"]["p95_ms"] is None
    district = report.figures["tiers"]["district"]["uptime"]
    assert district == pytest.approx(seeded.tier_uptime("district"))


def test_the_tier_chart_draws_the_known_tiers_and_says_when_there_are_none() -> None:
    font = find_font(None)
    nan = float("nan")
    drawn = charts.uptime_by_tier(["省级平台", "市级部门"], [nan, 0.995], font)
    assert drawn.startswith(b"\x89PNG")
    empty = charts.uptime_by_tier(["省级平台", "市级部门"], [nan, None], font)
    assert empty.startswith(b"\x89PNG")


def test_an_accepted_finding_is_shown_as_an_accepted_risk_and_does_not_turn_its_clause_red(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # An accepted finding was listed among the open ones, without its reason, and turned 8.3 b
    # red; one whose acceptance expired within the quarter is open again.
    found = dt.datetime(2026, 8, 3, 2, 0, tzinfo=UTC)
    with sqlite_store.session() as session:
        ids = []
        for n, subject in enumerate(("svc-0001 40018-1 /a/ [id]", "svc-0002 40018-1 /b/ [id]")):
            finding = upsert_finding(
                session,
                FindingDraft(
                    rule="zap:40018",
                    clause="8.3 b",
                    severity="high",
                    subject_kind="web_path",
                    subject=subject,
                    summary="SQL 注入",
                    service_id=f"svc-000{n + 1}",
                ),
                found,
            )
            session.flush()
            ids.append(finding.id)
        until = dt.datetime(2026, 12, 31, 16, 0, tzinfo=UTC)
        accept_finding(session, ids[0], "参数经网关白名单过滤，误报", until, "王安全", found)
        expired = dt.datetime(2026, 9, 1, tzinfo=UTC)
        accept_finding(session, ids[1], "整改中", expired, "王安全", found)
    report = render(sqlite_store, None, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert report.figures["open_findings"]["high"] == 1  # the expired acceptance's
    assert report.figures["accepted_findings"] == 1
    accepted = text[text.rindex("已接受风险的中高危问题") :]
    assert re.search(r"高危 8\.3 b svc-0001 SQL 注入 .*参数经网关白名单过滤", accepted)
    assert "王安全" in accepted
    assert "2027-01-01" in accepted  # until, in Asia/Shanghai
    assert "svc-0002" not in accepted
    with sqlite_store.session() as session:
        quarter = read_quarter(session, Settings(), "2026q3", OCT_2, {})
    only_accepted = quarter.open_findings[quarter.open_findings["service_id"] != "svc-0002"]
    lights = {c.clause: c.light for c in clause_lights([], only_accepted)}
    assert lights["8.3 b"] != "red"


def test_the_log_audit_names_each_rule_in_chinese_beside_its_id(q3: Q3, pdf_pages: Pages) -> None:
    # The table listed bare rule ids (vendor_activity) in the management unit's Chinese report;
    # a rule a site added (not in rules/logs.toml) keeps its id alone.
    text = one_line("\n".join(pdf_pages(q3.report.pdf)))
    assert "vendor_activity 第三方人员操作 2" in text
    assert "brute_force_account 4" in text


def file_revisions(
    session: Session,
    service_id: str,
    record: dict[str, Any],
    statuses: list[tuple[dt.datetime, str]],
) -> None:
    """The catalogue's revisions of `service_id` as the sync writes them: from each moment on,
    `record` with that status ("gone": it left the catalogue), each until the next."""
    session.query(ServiceRevision).filter_by(service_id=service_id).delete()
    ends: list[dt.datetime | None] = [at for at, _status in statuses[1:]]
    for (at, status), until in zip(statuses, [*ends, None], strict=True):
        session.add(
            ServiceRevision(
                service_id=service_id,
                valid_from=at,
                valid_to=until,
                fingerprint=f"{service_id}-{status}",
                record={**record, "id": service_id, "status": status},
                gone=status == "gone",
            )
        )


def test_a_service_that_came_and_went_inside_the_quarter_has_its_name_and_tier(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # A service approved on 1 August, online the next day and gone on 1 September (no revision
    # at the quarter's start or end) was probed without a name or tier: the tier table gained
    # a row 未填报 0 1 and read more services probed than catalogued, while the compliance
    # verdicts judged it a 省级平台 service.
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=14)
        aug_1 = dt.datetime(2026, 7, 31, 16, tzinfo=UTC)  # 1 August in Suzhou
        file_revisions(
            session,
            "svc-0099",
            {"name": "临时企业开办专窗", "source": "province"},
            [
                (aug_1, "approved"),
                (aug_1 + dt.timedelta(days=1), "online"),
                (aug_1 + dt.timedelta(days=31), "gone"),
            ],
        )
        for day in range(2, 31):
            session.add(
                ProbeRollup(
                    service_id="svc-0099",
                    kind="availability",
                    hour=aug_1 + dt.timedelta(days=day),
                    count=60,
                    failures=30,  # the least available of all: named in section 2
                    blind=0,
                    latency_buckets={str(histogram.bucket_of(120.0)): 30},
                )
            )
    report = render(sqlite_store, seeded, "2026q3", OCT_2)
    text = one_line("\n".join(pdf_pages(report.pdf)))
    tiers = report.figures["tiers"]
    assert report.figures["services"] == 15 == sum(t["services"] for t in tiers.values())
    assert tiers["province"]["services"] == 3  # svc-0000, svc-0007 and svc-0099
    assert "未填报 2 2 " in text  # svc-0006 and svc-0013; svc-0099 is not one
    assert "省级平台 3 2 " in text  # svc-0007, suspended, has no probe counted
    assert "合计 15 13 " in text  # nor has svc-0009, never probed
    assert "目录中的服务（季度内） 15（" in text
    assert report.figures["worst_services"][0] == "svc-0099"
    assert "svc-0099 临时企业开办专窗 省级平台 1,740 870 50.00% " in text
    assert "(no name)" not in text


def test_a_service_taken_down_mid_quarter_without_a_scan_is_an_unscanned_online_one(
    sqlite_store: Store, pdf_pages: Pages
) -> None:
    # A service online until it was taken down on 10 September, never scanned, failed 7.3.2
    # in the clause table, but section 4 left it out of the online services without a scan
    # (it counted the services online at the quarter's end), so the two disagreed.
    with sqlite_store.session() as session:
        seeded = seed_quarter(session, services=30)
        file_revisions(
            session,
            "svc-0024",  # the seed's one service without a scan
            {"name": seeded.names["svc-0024"], "source": "district"},
            [
                (seeded.start - dt.timedelta(days=30), "online"),
                (dt.datetime(2026, 9, 9, 16, tzinfo=UTC), "offline"),
            ],
        )
    with sqlite_store.session() as session:
        judged = evaluate_quarter(session, Settings(), "2026q3", OCT_2)
        online = open_quarter(session, Settings(), "2026q3", OCT_2).online_services()
    unscanned = sorted(
        str(v.service_id) for v in judged if v.rule == "quarterly_scan" and not v.passed
    )
    assert unscanned == ["svc-0013", "svc-0024"]  # svc-0013's scan failed
    verdicts = [*(v for v in seeded.verdicts if v.rule != "quarterly_scan"),
                *(v for v in judged if v.rule == "quarterly_scan")]  # fmt: skip
    with sqlite_store.session() as session:
        report = reports.render_quarterly(
            session, Settings(), "2026q3", verdicts=verdicts, scores=seeded.scores,
            availability=availability(sqlite_store, "2026q3", OCT_2), now=OCT_2, formula=FORMULA,
        )  # fmt: skip
    text = one_line("\n".join(pdf_pages(report.pdf)))
    assert report.figures["unscanned_online"] == unscanned
    assert report.figures["online_services"] == len(online) == 29  # svc-0007 is suspended
    assert f"上线服务 {len(online)} 个，其中 2 个本季度没有完成的扫描。" in text
    assert "本季度未完成扫描的上线服务：svc-0013、svc-0024。" in text
    assert f"目录中的服务（季度内） 30（其中上线 {len(online)}）" in text
    assert re.search(r"\n7\.3\.2 .* 28 2 ", text)  # the clause table: 28 passed, 2 failed
