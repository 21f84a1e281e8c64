"""The report's pages: the cover, the contents, sections 1 to 8 and the appendix, as flowables.

Each section is one function over the quarter's tables (`reports.quarter.Quarter`), the
compliance verdicts and the service scores; what a section shows is what the store holds.
People-facing text is Chinese; every value from the store goes through `Writer.text`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from reportlab.platypus import Flowable, PageBreak

from monitord.config import MIN_RETENTION_DAYS
from monitord.names import (
    ADMIN_PROBLEM_NAMES,
    EVIDENCE_KIND_NAMES,
    LOG_RULE_NAMES,
    PURGED_KIND_NAMES,
    PURGED_TABLE_NAMES,
    named,
)
from monitord.textable import shortened
from monitord.timeutil import SHANGHAI, local_text
from monitord.types import ComplianceVerdict, ServiceScore
from reports import charts
from reports.pdf import Writer
from reports.quarter import (
    Quarter,
    incidents_per_week,
    least_available,
    scanned,
    tier_words,
    tiers_in,
)

STANDARD = "DB3205/T 1129-2024《法人服务总入口运行管理规范》"
"""The standard the report answers to: its number and its title, as the standard gives them."""

SECTIONS = (
    "一、概要与各条款符合情况",
    "二、可用性与响应时间（按来源层级）",
    "三、事件与两小时通报记录",
    "四、安全扫描与未关闭问题",
    "五、日志审计与第三方运维操作",
    "六、管理员权限审查与证据登记",
    "七、记录保存",
    "八、服务评价排名（9.2）",
    "附录　各服务合规明细",
)
"""The headings of the report's sections, in order (the contents page lists them)."""

CLAUSE_DUTIES: dict[str, str] = {
    "6.2.2": "服务上线前提交附录 A 备案信息",
    "7.2.1": "经联调测试与审批后上线（6.2.6）",
    "6.3.2 a": "接口调用加密（TLS 策略）",
    "6.3.2 b": "接口采用 HTTPS 方式",
    "6.3.2 c": "接口返回已备案的代码",
    "6.4": "统一监测，巡检有记录",
    "6.4 a": "服务可用率达标",
    "6.4 b": "接口响应时间达标",
    "7.2.2": "暂停服务提前报备、按时恢复",
    "7.2.3": "恢复服务重新测试",
    "7.2.4": "下线提前十个工作日报备",
    "7.3.1": "日志保存六个月、每季度日志审计",
    "7.3.2": "每季度漏洞扫描、渗透测试、权限审查；年度风险评估",
    "7.3.3": "安全事件两小时内通报管理单位",
    "8.3 b": "上线服务无中高危漏洞",
    "8.3 c": "第三方运维操作记录与审计",
}
"""The clauses the compliance rules judge, and each one's duty in a few words; the summary
lists every one of them, judged or not."""

SEVERITY_WORDS = {
    "critical": "严重",
    "high": "高危",
    "medium": "中危",
    "low": "低危",
    "info": "提示",
}
CLASS_WORDS = {"security": "安全事件", "availability": "可用性事件"}
SCAN_STATES = {
    "finished": "已完成",
    "queued": "排队中",
    "running": "进行中",
    "timed_out": "超时",
    "failed": "失败",
    "interrupted": "中断",
}
PARTS = {
    "availability": "可用率",
    "latency": "响应时间",
    "incidents": "事件",
    "findings": "未关闭问题",
    "compliance": "合规",
    "complaints": "投诉",
}
RULES_PER_TABLE = 16
"""The appendix's rule columns per table: more would not fit the width of an A4 page."""
ROWS_PER_TABLE = 60
"""The appendix's rows per table: short tables lay out much faster than one long one."""


RED_SEVERITIES = ("critical", "high")
"""A finding of these severities open at the data's end makes its clause's light red."""


@dataclass(frozen=True)
class ClauseLight:
    """A clause's traffic light: red when none of its judged verdicts passed or a high (or
    critical) finding of the clause is open at the data's end; else green all its judged
    verdicts passed, amber some failed, pending (blue) its duties are not due yet (the quarter's
    log audit while the quarter runs), none (grey) nothing judged it this quarter."""

    clause: str
    passed: int
    failed: int
    light: str
    pending: int = 0


def quarter_words(label: str) -> str:
    """2026q3 → 2026年第3季度."""
    return f"{label[:4]}年第{label[5]}季度"


def pct(value: float | None) -> str:
    """An availability as a percentage with two decimals; — when there was nothing to count."""
    return "—" if value is None or math.isnan(value) else f"{value * 100:.2f}%"


def ms(value: float | None) -> str:
    """A latency in milliseconds (a histogram's bucket bound: at most 8 % above the truth)."""
    if value is None or math.isnan(value):
        return "—"
    return "> 120000 ms" if math.isinf(value) else f"{value:.0f} ms"


def when(moment: dt.datetime | None) -> str:
    """A time for people (Asia/Shanghai); — when there is none (None, or pandas' NaT)."""
    return "—" if moment is None or pd.isna(moment) else local_text(moment)


def minutes_text(minutes: float) -> str:
    """A duration in days, hours and minutes, e.g. 1 小时 5 分钟, 2 天 3 小时 0 分钟."""
    hours, rest = divmod(max(0, math.ceil(minutes)), 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} 天 {hours} 小时 {rest} 分钟"
    return f"{hours} 小时 {rest} 分钟" if hours else f"{rest} 分钟"


def period_text(quarter: Quarter) -> str:
    """The data's time range, in Asia/Shanghai."""
    return f"{local_text(quarter.start)} 至 {local_text(quarter.end)}（北京时间）"


def _clause_key(clause: str) -> tuple[tuple[int, ...], str]:
    numbers = tuple(int(n) for n in re.findall(r"\d+", clause.split(" ")[0]))
    return numbers, clause


def clause_lights(
    verdicts: Sequence[ComplianceVerdict], open_findings: pd.DataFrame
) -> list[ClauseLight]:
    """Every clause of CLAUSE_DUTIES and of the verdicts, in the standard's order, with its
    light; `open_findings` are the findings open at the data's end (Quarter.open_findings)."""
    by_clause: dict[str, list[ComplianceVerdict]] = defaultdict(list)
    for verdict in verdicts:
        by_clause[verdict.clause].append(verdict)
    serious = open_findings["severity"].isin(RED_SEVERITIES)
    severe_clauses = set(open_findings.loc[serious, "clause"])
    lights = []
    for clause in sorted(set(CLAUSE_DUTIES) | set(by_clause), key=_clause_key):
        mine = by_clause.get(clause, [])
        judged = [v for v in mine if not v.pending]
        passed = sum(v.passed for v in judged)
        failed = len(judged) - passed
        if clause in severe_clauses or (judged and passed == 0):
            light = "red"
        elif not mine:
            light = "none"
        elif not judged:
            light = "pending"
        elif failed == 0:
            light = "green"
        else:
            light = "amber"
        lights.append(ClauseLight(clause, passed, failed, light, len(mine) - len(judged)))
    return lights


def cover(w: Writer, quarter: Quarter, operation_unit: str, management_unit: str) -> list[Flowable]:
    """The cover: the quarter, who writes the report and for whom, the data's range, when."""
    s = w.styles
    return [
        w.gap(45),
        w.para("苏商通（法人服务总入口）", s.subtitle),
        w.para("服务监测与安全合规季度报告", s.title),
        w.para(quarter_words(quarter.label), s.title),
        w.gap(20),
        # 报送单位 is the one that submits the report (the operation unit, 3.4); the one it is
        # submitted to is the 主送单位 (the management unit, 3.3).
        w.para(f"报送单位（运营单位）：{operation_unit}", s.subtitle),
        w.para(f"主送单位（管理单位）：{management_unit}", s.subtitle),
        w.para(f"数据时段：{period_text(quarter)}", s.subtitle),
        w.para(f"生成时间：{local_text(quarter.now)}（北京时间）", s.subtitle),
        w.gap(25),
        w.para(
            f"依据 {STANDARD}，本报告各项数据均来自 monitord 存储的监测记录，可逐条追溯。",
            s.note,
        ),
        PageBreak(),
    ]


def contents(w: Writer) -> list[Flowable]:
    """The contents page."""
    return [w.para("目　录", w.styles.h1), w.contents(), PageBreak()]


def summary(w: Writer, quarter: Quarter, lights: list[ClauseLight]) -> list[Flowable]:
    """Section 1: the headline figures and a traffic light per clause."""
    s = w.styles
    incidents = quarter.incidents
    security = incidents[incidents["klass"] == "security"]
    findings = quarter.open_findings
    online = int(quarter.services["online"].sum())
    out: list[Flowable] = [w.heading(SECTIONS[0])]
    if quarter.end < quarter.quarter_end:
        out.append(
            w.para(f"本季度尚未结束：数据截至 {local_text(quarter.end)}（北京时间）。", s.note)
        )
    if not quarter.calendar_known:
        year = quarter.start.astimezone(SHANGHAI).year
        out.append(
            w.para(
                f"注意：{year} 年的法定节假日安排 monitord 尚不知道，工作日按周一至周五计算"
                "（可在配置 [logs] holidays / workdays 中补充）。",
                s.note,
            )
        )
    rows = [
        ("目录中的服务（季度内）", f"{len(quarter.services)}（其中上线 {online}）"),
        ("有探测记录的服务", str(int((quarter.probes["count"] > 0).sum()))),
        ("探测次数 / 失败次数", f"{quarter.overall['count']:,} / {quarter.overall['failures']:,}"),
        ("总体可用率", pct(quarter.overall["uptime"])),
        ("总体 P95 响应时间", ms(quarter.overall["p95_ms"])),
        ("事件总数（其中安全事件）", f"{len(incidents)}（{len(security)}）"),
        ("安全事件迟报", str(int(security["late"].sum()))),
        ("完成的安全扫描（含超时停止）", str(len(scanned(quarter)))),
        (
            "季度末未关闭的中高危问题",
            str(int(findings["severity"].isin(("critical", "high", "medium")).sum())),
        ),
        ("季度末已接受风险的中高危问题", str(len(quarter.accepted_findings))),
    ]
    out += [w.table(["项目", "数值"], rows, [0.5, 0.5]), w.gap()]
    out.append(w.heading("各条款符合情况", 1))
    out.append(
        w.para(
            "绿：该条款各项检查全部通过；黄：部分未通过；红：全部未通过，或截至数据截止时间"
            "仍有该条款的高危（含严重）问题未关闭（已接受风险的不计）；蓝：尚未到期（如季度内的日志审计），"
            "不计入通过或未通过；灰：本季度未评估。",
            s.note,
        )
    )
    table_rows = [
        (c.clause, CLAUSE_DUTIES.get(c.clause, ""), str(c.passed), str(c.failed), w.light(c.light))
        for c in lights
    ]
    out.append(
        w.table(["条款", "要求", "通过", "未通过", "状态"], table_rows, [0.1, 0.56, 0.1, 0.1, 0.14])
    )
    return out


def availability(w: Writer, quarter: Quarter, worst: int, p95_target_ms: float) -> list[Flowable]:
    """Section 2: availability and latency by source tier, charts, the least available."""
    s = w.styles
    out: list[Flowable] = [w.heading(SECTIONS[1])]
    out.append(
        w.para(
            "可用率 =（探测次数 - 失败次数）÷ 探测次数，只计各服务上线期间的探测（已报备暂停、"
            "下线期间不计，与 6.4 a 的判定一致）；监测自身网络中断期间（盲区）的结果不计入。"
            "响应时间取成功探测的时延直方图，误差不超过一个分桶（8%）。",
            s.note,
        )
    )
    tiers = quarter.tiers
    rows: list[list[object]] = [
        [
            tier_words(t.tier),
            t.services,
            t.probed,
            f"{t.count:,}",
            f"{t.failures:,}",
            pct(t.uptime),
            ms(t.p95_ms),
        ]
        for t in tiers.itertuples()
    ]
    overall = quarter.overall
    rows.append(
        [
            "合计",
            len(quarter.services),
            int((quarter.probes["count"] > 0).sum()),
            f"{overall['count']:,}",
            f"{overall['failures']:,}",
            pct(overall["uptime"]),
            ms(overall["p95_ms"]),
        ]
    )
    header = ["层级", "目录服务", "有探测", "探测次数", "失败次数", "可用率", "P95"]
    out.append(w.table(header, rows, [0.2, 0.12, 0.12, 0.14, 0.14, 0.14, 0.14]))
    if overall["blind"]:
        out.append(w.para(f"另有 {overall['blind']:,} 次探测处于盲区，未计入可用率。", s.note))
    out.append(w.gap())
    out.append(
        w.image(
            charts.uptime_by_tier(
                [tier_words(t) for t in tiers["tier"]], list(tiers["uptime"]), w.font
            ),
            0.44,
        )
    )
    p95s = [float(p) for p in quarter.probes["p95_ms"].dropna()]
    out.append(w.image(charts.p95_distribution(p95s, p95_target_ms, w.font), 0.44))
    out.append(w.heading(f"可用率最低的 {worst} 个服务", 1))
    worst_rows = [
        [
            r.service_id,
            r.name,
            tier_words(r.tier),
            f"{r.count:,}",
            f"{r.failures:,}",
            pct(r.uptime),
            ms(r.p95_ms),
            ms(r.p99_ms),
        ]
        for r in least_available(quarter, worst).itertuples()
    ]
    header = ["服务编号", "名称", "层级", "探测", "失败", "可用率", "P95", "P99"]
    widths = [0.14, 0.26, 0.12, 0.09, 0.08, 0.11, 0.1, 0.1]
    out.append(w.table(header, worst_rows, widths, empty="本季度没有探测记录。"))
    return out


def incidents(w: Writer, quarter: Quarter, per_week: list[tuple[str, int]]) -> list[Flowable]:
    """Section 3: incidents, the two-hour record of clause 7.3.3, every late one named."""
    s = w.styles
    frame = quarter.incidents
    out: list[Flowable] = [w.heading(SECTIONS[2])]
    if frame.empty:
        out.append(w.para("本季度没有事件。", s.body))
    else:
        counts = frame.groupby(["klass", "severity"]).size()
        rows = [
            [CLASS_WORDS.get(k, k), SEVERITY_WORDS.get(v, v), int(n)]
            for (k, v), n in counts.items()
        ]
        out.append(w.table(["类别", "严重程度", "数量"], rows, [0.4, 0.3, 0.3]))
    labels, counts = [label for label, _ in per_week], [count for _, count in per_week]
    out.append(w.image(charts.incidents_per_week(labels, counts, w.font), 0.44))
    security = frame[frame["klass"] == "security"]
    is_late = security["late"].astype(bool)
    late = security[is_late]
    on_time = security[~is_late & security["notified_at"].notna()]
    pending = len(security) - len(late) - len(on_time)  # not notified, its deadline ahead
    still = f"，尚在两小时时限内 {pending} 起" if pending else ""
    out.append(w.heading("两小时通报记录（7.3.3）", 1))
    out.append(
        w.para(
            f"本季度安全事件 {len(security)} 起：按时通报 {len(on_time)} 起，"
            f"迟报或未通报 {len(late)} 起{still}。",
            s.body,
        )
    )
    rows = []
    for r in late.itertuples():
        lateness = "—" if pd.isna(r.late_minutes) else f"超时 {minutes_text(r.late_minutes)}"
        how = "未通报" if pd.isna(r.notified_at) else when(r.notified_at)
        services = "、".join(r.services) or "—"
        rows.append([f"#{r.id}", services, when(r.detected_at), when(r.notify_by), how, lateness])
    header = ["事件", "服务", "发现时间", "通报时限", "通报时间", "迟报"]
    widths = [0.07, 0.16, 0.16, 0.16, 0.16, 0.29]
    out.append(w.table(header, rows, widths, empty="没有迟报的事件。"))
    if late["notified_at"].isna().any():
        out.append(
            w.para(f"未通报的事件，超时计至数据截止时间 {local_text(quarter.end)}。", s.note)
        )
    out.extend(silences(w, quarter))
    return out


def silence_scope(row: Any) -> str:
    """What a silence covered: 服务 svc-1、svc-2；类型 outage；规则 zap:*."""
    return "；".join(
        f"{label} {'、'.join(values)}"
        for label, values in (("服务", row.services), ("类型", row.kinds), ("规则", row.rules))
        if values
    )


def silences(w: Writer, quarter: Quarter) -> list[Flowable]:
    """Section 3's silences: each one in force in the quarter, who set it, why, how long, and
    how many alerts it held back from chat (never the 7.3.3 duty, which no silence quiets)."""
    s = w.styles
    frame = quarter.silences
    out: list[Flowable] = [w.heading("告警静默记录", 1)]
    out.append(
        w.para(
            f"本季度生效过的静默 {len(frame)} 条，共压下群聊告警 {int(frame['held_back'].sum())} "
            "条。静默只压下群聊告警，不暂停安全事件两小时通报（7.3.3）的提醒、升级与通报。",
            s.body,
        )
    )
    rows = [
        [
            f"#{r.id}",
            silence_scope(r),
            r.reason,
            r.created_by,
            when(r.starts_at),
            when(r.ended_at),
            "—" if pd.isna(r.expired_by) else r.expired_by,
            int(r.held_back),
        ]
        for r in frame.itertuples()
    ]
    header = ["静默", "范围", "原因", "设置人", "开始", "结束", "提前结束", "压下告警"]
    widths = [0.06, 0.15, 0.17, 0.1, 0.16, 0.16, 0.1, 0.1]
    out.append(w.table(header, rows, widths, empty="本季度没有静默。"))
    return out


def scans(w: Writer, quarter: Quarter) -> list[Flowable]:
    """Section 4: the quarter's scans and the high and medium findings open at its end."""
    s = w.styles
    frame = quarter.scans
    out: list[Flowable] = [w.heading(SECTIONS[3])]
    done = scanned(quarter)
    timed_out = int((done["state"] == "timed_out").sum())
    of_which = f"（其中超时停止 {timed_out} 次，保留已发现的结果）" if timed_out else ""
    online = int(quarter.services["online"].sum())
    out.append(
        w.para(
            f"本季度扫描 {len(frame)} 次，完成 {len(done)} 次{of_which}，覆盖 "
            f"{done['service_id'].nunique()} 个服务；上线服务 {online} 个，其中"
            f" {len(quarter.unscanned_online)} 个本季度没有完成的扫描。",
            s.body,
        )
    )
    states = frame.groupby("state").size()
    rows = [[SCAN_STATES.get(str(k), str(k)), int(n)] for k, n in states.items()]
    out.append(w.table(["状态", "次数"], rows, [0.5, 0.5], empty="本季度没有扫描。"))
    if quarter.unscanned_online:
        names = "、".join(quarter.unscanned_online[:60])
        more = len(quarter.unscanned_online) - 60
        tail = f" 等 {len(quarter.unscanned_online)} 个" if more > 0 else ""
        out.append(w.para(f"本季度未完成扫描的上线服务：{names}{tail}。", s.note))
    found = done[(done["high"] > 0) | (done["medium"] > 0)]
    rows = [
        [
            f"#{r.id}" + ("（超时）" if r.state == "timed_out" else ""),
            r.service_id,
            when(r.finished_at),
            int(r.high),
            int(r.medium),
        ]
        for r in found.itertuples()
    ]
    out.append(w.heading("发现中高危风险的扫描", 1))
    out.append(
        w.table(
            ["扫描", "服务", "完成时间", "高危", "中危"],
            rows,
            [0.12, 0.28, 0.26, 0.17, 0.17],
            empty="本季度完成的扫描均未发现中高危风险。",
        )
    )
    findings = quarter.open_findings
    out.append(w.heading(f"截至 {local_text(quarter.end)} 未关闭的中高危问题", 1))
    rows = [
        [
            SEVERITY_WORDS.get(r.severity, r.severity),
            r.clause,
            r.rule,
            r.service_id or r.subject,
            r.summary,
            when(r.opened_at),
        ]
        for r in findings.itertuples()
    ]
    header = ["严重程度", "条款", "规则", "服务 / 对象", "摘要", "发现时间"]
    widths = [0.09, 0.08, 0.17, 0.17, 0.33, 0.16]
    out.append(w.table(header, rows, widths, empty="没有未关闭的中高危问题。"))
    out.extend(_accepted_findings(w, quarter))
    return out


def _accepted_findings(w: Writer, quarter: Quarter) -> list[Flowable]:
    """The medium and worse findings under an acceptance at the data's end, with its reason,
    who accepted it and until when."""
    accepted = quarter.accepted_findings
    out: list[Flowable] = [w.heading(f"截至 {local_text(quarter.end)} 已接受风险的中高危问题", 1)]
    out.append(
        w.para(
            "已接受风险：经负责人确认的误报或可容忍风险，理由与有效期记录在审计日志中，"
            "有效期内不开启安全事件，不计入未关闭问题和条款状态；到期后重新开启。",
            w.styles.note,
        )
    )
    rows = [
        [
            SEVERITY_WORDS.get(r.severity, r.severity),
            r.clause,
            r.service_id or r.subject,
            r.summary,
            r.reason,
            r.by,
            when(r.until),
        ]
        for r in accepted.itertuples()
    ]
    header = ["严重程度", "条款", "服务 / 对象", "摘要", "接受理由", "接受人", "有效期至"]
    widths = [0.09, 0.07, 0.14, 0.2, 0.26, 0.1, 0.14]
    out.append(w.table(header, rows, widths, empty="没有已接受风险的中高危问题。"))
    return out


def log_audit(w: Writer, quarter: Quarter) -> list[Flowable]:
    """Section 5: the quarter's log audit (7.3.1) and the vendor staff's operations (8.3 c)."""
    s = w.styles
    audit = quarter.log_audit
    out: list[Flowable] = [w.heading(SECTIONS[4])]
    if audit is None:
        missing = f"{quarter_words(quarter.label)}尚无日志审计记录"
        out.append(w.para(f"{missing}（由 monitord log-audit 或季度任务生成）。", s.body))
        return out
    empty_days = audit["empty_days"]
    out.append(
        w.para(
            f"审计生成于 {when(audit['created_at'])}：分析日志 {audit['lines']:,} 行，覆盖 "
            f"{audit['days']} 天，无日志的天数 {len(empty_days)}。",
            s.body,
        )
    )
    if empty_days:
        out.append(w.para("无日志的日期：" + "、".join(empty_days), s.note))
    rows = [
        [named(rule, LOG_RULE_NAMES), count]
        for rule, count in sorted(
            audit["findings_by_rule"].items(), key=lambda kv: (-int(kv[1]), kv[0])
        )
    ]
    out.append(w.heading("异常行为与日志缺失（按规则）", 1))
    out.append(
        w.table(["规则", "发现数"], rows, [0.6, 0.4], empty="本季度日志中没有发现异常行为。")
    )
    vendors = [
        [str(op.get("subject", "")), str(op.get("summary", ""))]
        for op in audit["vendor_operations"]
    ]
    out.append(w.heading("第三方运维人员操作（8.3 c）", 1))
    out.append(
        w.table(
            ["账号 / 对象", "操作摘要"], vendors, [0.3, 0.7], empty="本季度没有第三方运维操作记录。"
        )
    )
    return out


def problem_words(problem: object) -> str:
    """An admin review's flag in Chinese; a code monitord does not know, as it was stored."""
    return ADMIN_PROBLEM_NAMES.get(str(problem), str(problem or ""))


def registers(w: Writer, quarter: Quarter) -> list[Flowable]:
    """Section 6: the admin-rights review (7.3.2) and the evidence register."""
    s = w.styles
    out: list[Flowable] = [w.heading(SECTIONS[5]), w.heading("管理员账号权限审查（7.3.2）", 1)]
    reviews = quarter.admin_reviews
    rows = [
        [
            when(r["reviewed_at"]),
            r["reviewed_by"],
            r["file_name"],
            r["sha256"][:16],
            r["accounts"],
            len(r["flags"]),
        ]
        for r in reviews
    ]
    header = ["审查时间", "审查人", "文件", "SHA-256（前 16 位）", "账号数", "标记"]
    out.append(
        w.table(
            header,
            rows,
            [0.17, 0.15, 0.25, 0.21, 0.11, 0.11],
            empty="本季度没有管理员权限审查记录。",
        )
    )
    # Each flag names its review: several reviews in a quarter often flag the same account.
    flags = [
        [
            f"{when(r['reviewed_at'])} {r['file_name']}",
            str(f.get("account", "")),
            problem_words(f.get("problem")),
            str(f.get("detail", "")),
        ]
        for r in reviews
        for f in r["flags"]
    ]
    if flags:
        out.append(
            w.table(["所属审查（时间、文件）", "账号", "问题", "说明"], flags, [0.3, 0.2, 0.2, 0.3])
        )
    out.append(w.heading("证据登记", 1))
    rows = [
        [
            str(r.document_date),
            r.clause,
            EVIDENCE_KIND_NAMES.get(r.kind, r.kind),
            r.service_id or "平台",
            r.filed_by,
            r.file_name,
            r.sha256[:16],
        ]
        for r in quarter.evidence.itertuples()
    ]
    header = ["文件日期", "条款", "类别", "服务", "登记人", "文件名", "SHA-256（前 16 位）"]
    widths = [0.12, 0.08, 0.18, 0.11, 0.1, 0.21, 0.2]  # 类别 holds 网络安全保障方案 on one line
    out.append(
        w.table(
            header,
            rows,
            widths,
            empty="本季度没有登记证据文件，本年度截至季度末也没有风险评估报告。",
        )
    )
    if rows:
        out.append(w.para("含本年度截至季度末的风险评估报告。", s.note))
    return out


def retention(w: Writer, quarter: Quarter, retention_days: int) -> list[Flowable]:
    """Section 7: the oldest record of each kind, how long each is kept, the last purge."""
    s = w.styles
    out: list[Flowable] = [w.heading(SECTIONS[6])]
    verdict = "符合" if retention_days >= MIN_RETENTION_DAYS else "不符合"
    out.append(
        w.para(
            f"记录保存期限 {retention_days} 天（7.3.1 要求留存六个月以上，按最长的六个月计不少于 "
            f"{MIN_RETENTION_DAYS} 天：{verdict}）。以下为生成报告时存储中的情况。",
            s.body,
        )
    )
    rows = [
        [r.kind, when(r.oldest), r.rows, "永久保存" if r.keep_days is None else r.keep_days]
        for r in quarter.retention
    ]
    out.append(
        w.table(["记录类别", "最早记录", "现存条数", "保存期限（天）"], rows, [0.3, 0.3, 0.2, 0.2])
    )
    purge = quarter.last_purge
    if purge is None:
        out.append(w.para("尚无清理记录。", s.body))
    else:
        detail = shortened(purge_text(purge["detail"]), 600)
        out.append(w.para(f"最近一次清理：{when(purge['at'])}。{detail}", s.body))
    return out


def purge_text(detail: dict[str, Any]) -> str:
    """What a purge removed, as its audit entry records it ({"deleted": {table: rows},
    "before": {table: {kind: ISO time}}}), in words: 删除探测结果 1,200 条（成功的 2026-07-21
    08:00 之前）、…. A table or a value it does not know is shown as stored."""
    deleted, before = detail.get("deleted"), detail.get("before")
    if not isinstance(deleted, dict):
        return "，".join(f"{key}: {value}" for key, value in detail.items())
    cutoffs = before if isinstance(before, dict) else {}
    parts = []
    for table, rows in deleted.items():
        name = PURGED_TABLE_NAMES.get(table, table)
        count = f"{rows:,}" if isinstance(rows, int) else str(rows)
        until = _cutoffs_text(cutoffs.get(table))
        parts.append(f"{name} {count} 条" + (f"（{until}）" if until else ""))
    return "删除" + "、".join(parts) + "。" if parts else "未删除任何记录。"


def _cutoffs_text(cutoffs: object) -> str:
    """A table's purge cutoffs ({kind: ISO time}) in words: 成功的 2026-07-21 08:00 之前."""
    if not isinstance(cutoffs, dict):
        return ""
    return "，".join(
        f"{PURGED_KIND_NAMES.get(kind, kind)}{_time_text(moment)} 之前"
        for kind, moment in cutoffs.items()
    )


def _time_text(value: object) -> str:
    """A stored ISO time for people (Asia/Shanghai; one without an offset is UTC, as the store
    keeps times); anything else as stored."""
    try:
        moment = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return when(moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC))


def _ranking_rows(
    scores: Sequence[ServiceScore], places: dict[str, int], *, in_tier: bool = False
) -> list[list[object]]:
    """Rows of the ranking: the scores' own rank (overall or in the tier), else their place in
    the order shown (`places`)."""
    return [
        [
            (sc.tier_rank if in_tier else sc.rank) or places[sc.service_id],
            sc.service_id,
            sc.name,
            tier_words(sc.tier),
            f"{sc.score:.1f}",
            *("—" if sc.parts.get(p) is None else f"{sc.parts[p]:.0f}" for p in PARTS),
        ]
        for sc in scores
    ]


def ranking(
    w: Writer, scores: Sequence[ServiceScore], formula: str, count: int, complaints: int
) -> list[Flowable]:
    """Section 8: the 9.2 evaluation: its formula, the top and bottom overall and per tier."""
    s = w.styles
    out: list[Flowable] = [w.heading(SECTIONS[7])]
    out.append(w.para(f"评价公式：{formula or '（未提供评价公式）'}", s.body))
    out.append(w.para(f"本季度收到投诉 {complaints} 件（9.1），计入各服务评价。", s.note))
    if not scores:
        out.append(w.para("本季度没有服务评价结果。", s.body))
        return out
    # A service whose availability was not measured is not ranked: on its other parts alone
    # it would come first.
    unmeasured = sorted(sc.service_id for sc in scores if "availability" not in sc.parts)
    ordered = sorted(
        (sc for sc in scores if "availability" in sc.parts),
        key=lambda sc: (-sc.score, sc.service_id),
    )
    if unmeasured:
        names = "、".join(unmeasured[:20]) + (" 等" if len(unmeasured) > 20 else "")
        out.append(
            w.para(
                f"本季度无可用率数据、未纳入排名的服务 {len(unmeasured)} 个：{names}。",
                s.note,
            )
        )
    if not ordered:
        out.append(w.para("本季度没有可排名的服务（均无可用率数据）。", s.body))
        return out
    header = ["名次", "服务编号", "名称", "层级", "得分", *PARTS.values()]
    widths = [0.08, 0.12, 0.19, 0.11, 0.08, *(0.07,) * len(PARTS)]  # ranks of 4 digits fit
    places = {sc.service_id: place for place, sc in enumerate(ordered, start=1)}
    if len(ordered) <= 2 * count:  # the top and the bottom would share services: all, once
        out.append(w.heading(f"总体排名（{len(ordered)} 个服务）", 1))
        out.append(w.table(header, _ranking_rows(ordered, places), widths))
    else:
        out.append(w.heading(f"总体前 {count} 名", 1))
        out.append(w.table(header, _ranking_rows(ordered[:count], places), widths))
        out.append(w.heading(f"总体后 {count} 名", 1))
        out.append(w.table(header, _ranking_rows(ordered[-count:], places), widths))
    by_tier: dict[str, list[ServiceScore]] = defaultdict(list)
    for sc in ordered:
        by_tier[sc.tier].append(sc)
    for tier in tiers_in(by_tier):
        label = tier_words(tier)
        mine = by_tier.get(tier)
        if not mine:
            continue
        shown = mine if len(mine) <= 2 * count else [*mine[:count], *mine[-count:]]
        out.append(w.heading(f"{label}（{len(mine)} 个服务）", 1))
        if len(shown) < len(mine):
            out.append(w.para(f"前 {count} 名与后 {count} 名。", s.note))
        in_tier = {sc.service_id: place for place, sc in enumerate(mine, start=1)}
        out.append(w.table(header, _ranking_rows(shown, in_tier, in_tier=True), widths))
    return out


def platform_result(w: Writer, verdict: ComplianceVerdict) -> object:
    """A platform check's result: the blue light while its duty is not due yet (the quarter's
    log audit while the quarter runs), else passed or failed."""
    if verdict.pending:
        return w.light("pending")
    return w.yes if verdict.passed else w.no


def appendix(w: Writer, quarter: Quarter, verdicts: Sequence[ComplianceVerdict]) -> list[Flowable]:
    """The appendix: every service's row of compliance rules, passed or not."""
    s = w.styles
    out: list[Flowable] = [PageBreak(), w.heading(SECTIONS[8])]
    per_service = [v for v in verdicts if v.service_id is not None]
    platform = [v for v in verdicts if v.service_id is None]
    rules = sorted(
        {(v.clause, v.rule) for v in per_service}, key=lambda cr: (_clause_key(cr[0]), cr[1])
    )
    marks: dict[str, dict[str, bool]] = defaultdict(dict)
    for v in per_service:
        assert v.service_id is not None  # for mypy: filtered above
        marks[v.service_id][v.rule] = marks[v.service_id].get(v.rule, True) and v.passed
    out.append(
        w.para(
            f"{w.yes} 通过，{w.no} 未通过，— 不适用或未评估。列号与规则的对应见下表。",
            s.note,
        )
    )
    legend = [
        [f"R{i}", clause, rule, sum(m.get(rule) is True for m in marks.values()),
         sum(m.get(rule) is False for m in marks.values())]
        for i, (clause, rule) in enumerate(rules, start=1)
    ]  # fmt: skip
    out.append(
        w.table(
            ["列", "条款", "规则", "通过", "未通过"],
            legend,
            [0.08, 0.12, 0.5, 0.15, 0.15],
            empty="本季度没有针对单个服务的合规结果。",
        )
    )
    if platform:
        rows = [[v.clause, v.rule, platform_result(w, v)] for v in platform]
        out.append(w.heading("平台级检查", 1))
        out.append(
            w.para(f"{w.yes} 通过，{w.no} 未通过，蓝：尚未到期，不计入通过或未通过。", s.note)
        )
        out.append(w.table(["条款", "规则", "结果"], rows, [0.2, 0.6, 0.2]))
    names = quarter.services["name"].to_dict()
    services = sorted(set(names) | set(marks))
    if not rules:
        return out
    for first in range(0, len(rules), RULES_PER_TABLE):
        chunk = rules[first : first + RULES_PER_TABLE]
        header = ["服务编号", "名称", *(f"R{first + i + 1}" for i in range(len(chunk)))]
        rule_width = 0.045  # "R16" fits on one line in a plain table's narrow padding
        widths = [0.2, 1 - 0.2 - rule_width * len(chunk), *(rule_width,) * len(chunk)]
        for top in range(0, len(services), ROWS_PER_TABLE):
            rows = []
            for service_id in services[top : top + ROWS_PER_TABLE]:
                mine = marks.get(service_id, {})
                cells = [
                    "—" if rule not in mine else (w.yes if mine[rule] else w.no)
                    for _clause, rule in chunk
                ]
                name = w.fitted(names.get(service_id, ""), widths[1])
                rows.append([w.fitted(service_id, widths[0]), name, *cells])
            out.append(w.table(header, rows, widths, plain=True, red=w.no))
            out.append(w.gap(2))
    return out


def figures_of_lights(lights: list[ClauseLight]) -> dict[str, Any]:
    """The lights as the report's figures record them."""
    return {
        c.clause: {"light": c.light, "passed": c.passed, "failed": c.failed, "pending": c.pending}
        for c in lights
    }


def weeks(quarter: Quarter) -> list[tuple[str, int]]:
    """Incidents per week, each week labelled by its first day (MM-DD)."""
    series = incidents_per_week(quarter)
    return [(day.strftime("%m-%d"), int(n)) for day, n in series.items()]
