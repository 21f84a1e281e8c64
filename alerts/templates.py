"""Alert texts for people, in Chinese, short enough for a phone screen.

Every message ends with its idempotency key, so a copy re-sent after a crash is recognisable.

A message is plain text. Text a service provider wrote in the catalogue (a service's name, its
provider, contacts, emergency plan URL, and summaries built from them) goes through
`catalogue_text` first: one line, no control characters, and no mention of anyone. Escaping for
the channel's format (HTML for e-mail, Markdown where apprise sends Markdown) is apprise's, told
that the message is text (alerts.delivery).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from monitord.config import ReportSettings
from monitord.names import CLASS_NAMES, KIND_NAMES, SEVERITY_NAMES
from monitord.redact import one_line
from monitord.store.models import Incident, Service
from monitord.timeutil import local_text

COVERAGE_ALL = "全市"
COVERAGE_NOT_FILED = "未备案"
UNITS = ReportSettings()
"""The units' names a payload queued before it carried them is written with (the defaults of
[report] management_unit and operation_unit)."""


# The opening of a mention tag: Feishu's <at user_id="all">, WeCom's <@userid>, Slack's <!here>.
_MENTION_TAG = re.compile(r"<(?=\s*/?\s*at\b|\s*[@!])", re.IGNORECASE)


def catalogue_text(value: object) -> str:
    """Catalogue text as an alert may show it: on one line (no forged line), without control
    characters, and mentioning nobody: @all, @所有人 and mention tags are defused with the
    full-width ＠ and ＜, which read the same and notify no one."""
    text = one_line(str(value))
    return _MENTION_TAG.sub("＜", text).replace("@", "＠")


NAME_CHARS = 60
"""The characters of a catalogue name an alert shows; a longer one ends in …: the catalogue lets
a name be as long as max_field_kb, and a chat robot's message holds 2,048 bytes."""


def short_name(value: object) -> str:
    """A catalogue name (a service's, a provider's) as alert text: `catalogue_text`, cut to
    NAME_CHARS characters with … when longer; the service's id next to it says which it is."""
    text = catalogue_text(value)
    return text if len(text) <= NAME_CHARS else text[: NAME_CHARS - 1] + "…"


@dataclass(frozen=True)
class Message:
    """A rendered alert."""

    title: str
    body: str
    attachments: tuple[str, ...] = ()
    """Paths of files sent with it (the quarterly report's PDF, by e-mail only)."""


def _services_line(services: list[Service], ids: list[str]) -> str:
    if not ids:
        return "涉及服务：—"
    names = {s.id: s.name for s in services}
    shown = [f"{catalogue_text(sid)} {short_name(names.get(sid, ''))}".strip() for sid in ids[:3]]
    more = f" 等 {len(ids)} 个" if len(ids) > 3 else ""
    return "涉及服务：" + "、".join(shown) + more


def _subjects_line(subjects: list[str]) -> str:
    """The addresses and accounts a security incident is about (one pass of log analysis)."""
    if not subjects:
        return ""
    more = f" 等 {len(subjects)} 个" if len(subjects) > 5 else ""
    return "涉及对象：" + "、".join(subjects[:5]) + more


def _deadline_line(incident: Incident, now: dt.datetime) -> str | None:
    if incident.klass != "security" or incident.notify_by is None:
        return None
    if incident.notified_at is not None:
        return f"已于 {local_text(incident.notified_at)} 通报管理单位"
    if incident.notification_sent_at is not None:
        sent = local_text(incident.notification_sent_at)
        return (
            f"通报已于 {sent} 提交，管理单位尚未收到；须于 {local_text(incident.notify_by)} 前"
            "送达，请电话通报并用 --out-of-band 登记"
        )
    minutes = int((incident.notify_by - now).total_seconds() // 60)
    if minutes >= 0:
        return f"须于 {local_text(incident.notify_by)} 前通报管理单位（剩余 {minutes} 分钟）"
    return f"已超过通报时限 {local_text(incident.notify_by)}（逾期 {-minutes} 分钟）"


def _plan_lines(incident: Incident, services: list[Service]) -> list[str]:
    """Clause 6.4 d: an availability alert shows each service's emergency plan and contacts."""
    if incident.klass != "availability":
        return []
    lines = []
    for service in services[:3]:
        contacts = "，".join(
            catalogue_text(f"{c.get('name', '?')}({c.get('role', '')})")
            for c in service.contacts
            if isinstance(c, dict)
        )
        plan = catalogue_text(service.emergency_plan_url) if service.emergency_plan_url else None
        lines.append(f"应急预案：{plan or '未备案'}")
        if contacts:
            lines.append(f"联系人：{contacts}")
    return lines


def page_link(public_url: str | None, incident_id: int | None = None) -> str | None:
    """The status page's address of an incident (or the page itself), when `[api] public_url`
    says where people reach it; else None."""
    if not public_url:
        return None
    base = public_url.rstrip("/")
    return f"{base}/incidents/{incident_id}" if incident_id is not None else f"{base}/"


def render_incident(
    kind: str,
    payload: dict[str, Any],
    incident: Incident,
    services: list[Service],
    now: dt.datetime,
    key: str,
    link: str | None = None,
) -> Message:
    """The on-call message for one incident event: opened, reminder, escalation, late, resolved.
    `link`: the incident on the status page (page_link), shown as 详情, as Alertmanager's
    generatorURL."""
    lines = [
        _services_line(services, incident.services),
        _subjects_line(incident.subjects or []),
        f"级别：{SEVERITY_NAMES.get(incident.severity, incident.severity)}；"
        f"发现于 {local_text(incident.detected_at)}",
        catalogue_text(incident.summary),  # findings' summaries quote catalogue text
    ]
    if kind == "resolved" and payload.get("ended"):
        # Resolved by hand, a security incident or a service still down: no recovery claimed.
        unrecovered = "（服务并未恢复）" if payload.get("unrecovered", True) else ""
        lines.append(f"结束原因：{payload['ended']}{unrecovered}")
    if kind == "resolved" and incident.klass == "security" and incident.notified_at is None:
        lines.append("尚未通报管理单位：事件已结束，通报义务仍在（7.3.3），请尽快通报")
    deadline = _deadline_line(incident, now)
    if deadline and kind != "resolved":
        lines.append(deadline)
    lines += _plan_lines(incident, services)
    if kind != "resolved" and incident.acknowledged_at is None and incident.state == "open":
        # A resolved incident has nothing to acknowledge: `ack` refuses it.
        lines.append(f"确认：monitord incidents ack {incident.id}")
    if incident.klass == "security" and incident.notified_at is None:
        lines.append(
            f"通报：monitord incidents notify {incident.id} --scope … --harm … "
            "--measures … --rectification …"
        )
    if link:
        lines.append(f"详情：{link}")
    lines.append(f"编号 {key}")
    return Message(
        title=_head(kind, payload, incident), body="\n".join(line for line in lines if line)
    )


def render_for_provider(
    kind: str,
    payload: dict[str, Any],
    incident: Incident,
    services: list[Service],
    findings: list[str],
    key: str,
) -> Message:
    """The copy of an incident's opened or resolved alert to one service provider's own contact.

    `services`: the incident's services whose filings list that contact; `findings`: the
    summaries of what was found on them. An incident can group several providers' services,
    so the copy tells only of these: not the other services, the incident's summary (another
    provider's finding may head it) or its log subjects (addresses, accounts); and none of
    on-call's duties (the commands, the 7.3.3 clock, the status page, which the provider
    cannot use). Its services' emergency plans stay (6.4 d).
    """
    lines = [
        _services_line(services, [s.id for s in services]),
        f"事件类型：{KIND_NAMES.get(incident.kind, incident.kind)}；"
        f"发现于 {local_text(incident.detected_at)}",
        *(f"发现：{catalogue_text(summary)}" for summary in findings[:3]),
        *_plan_lines(incident, services),
        f"编号 {key}",
    ]
    return Message(title=_head(kind, payload, incident), body="\n".join(lines))


def _head(kind: str, payload: dict[str, Any], incident: Incident) -> str:
    """An incident alert's title: what happened to which incident."""
    label = CLASS_NAMES.get(incident.klass, "事件")
    what = KIND_NAMES.get(incident.kind, incident.kind)
    heads = {
        "opened": f"【{label}】#{incident.id} {what}",
        "reminder": f"【提醒 {payload.get('minute')} 分钟】{label} #{incident.id} 尚未通报",
        "escalation": f"【升级至{payload.get('name', '')}】{label} #{incident.id} 无人确认",
        "late": f"【已逾期】{label} #{incident.id} 未在时限内通报管理单位",
        "resolved": f"【已结束】{label} #{incident.id} {what}"
        if payload.get("ended")
        else f"【已恢复】{label} #{incident.id} {what}",
        "undelivered": f"【通报未送达】{label} #{incident.id} 通报未送达，请电话通报",
    }
    return heads.get(kind, f"【{label}】#{incident.id}")


def render_notification(
    payload: dict[str, Any], incident: Incident, services: list[Service], key: str
) -> Message:
    """The clause 7.3.3 notification to the management unit, with its four parts."""
    draft = payload.get("draft", {})
    number = payload.get("number", 1)
    label = CLASS_NAMES.get(incident.klass, "事件")
    title = f"【{label}通报】#{incident.id} {KIND_NAMES.get(incident.kind, incident.kind)}"
    if number > 1:
        title = f"【{label}续报 {number - 1}】#{incident.id}"
    service_lines = []
    for item in draft.get("services", []):
        coverage = item.get("coverage") or []
        if not coverage:
            area = COVERAGE_NOT_FILED  # never "the whole city" for what the filing left out
        elif coverage == ["all"]:
            area = COVERAGE_ALL
        else:
            area = "、".join(map(str, coverage))
        users = item.get("users")
        users_text = f"；用户数 {users}" if users else ""
        service_lines.append(
            "  "
            + catalogue_text(
                f"{item.get('id')} {short_name(item.get('name', ''))}"
                f"（{short_name(item.get('provider') or '—')}；覆盖：{area}{users_text}）"
            )
        )
    occurred = draft.get("occurred_at") or incident.detected_at.isoformat()
    lines = [
        f"{payload.get('management_unit', UNITS.management_unit)}：",
        f"事件发生时间：{local_text(dt.datetime.fromisoformat(occurred))}",
        f"发现时间：{local_text(incident.detected_at)}",
        "涉及服务：",
        *(service_lines or ["  —"]),
        f"一、初步判定的影响范围：{payload['scope']}",
        f"二、初步判定的危害：{payload['harm']}",
        f"三、已采取的应急处置措施：{payload['measures']}",
        f"四、整改措施：{payload['rectification']}",
        f"报告单位：{payload.get('operation_unit', UNITS.operation_unit)}",
        f"编号 {key}",
    ]
    return Message(title=title, body="\n".join(lines))


def render_storm(
    payload: dict[str, Any], services: dict[str, str], key: str, link: str | None = None
) -> Message:
    """One grouped alert when many services fail at once (a shared gateway down); `link`: the
    status page (page_link)."""
    ids: list[int] = payload.get("incidents", [])
    see = f"查看：{link}" if link else "查看：monitord incidents list"
    listed = "、".join(services.get(str(i), f"#{i}") for i in ids[:5])
    return Message(
        title=f"【大面积故障】{payload.get('count', len(ids))} 个服务同时异常",
        body=(
            f"同时出现 {payload.get('count', len(ids))} 个可用性事件，疑似公共网关或网络故障。\n"
            f"包括：{listed}{' 等' if len(ids) > 5 else ''}\n"
            f"{see}\n"
            f"编号 {key}"
        ),
    )


def render_digest(messages: list[Message], key: str, *, paced: bool = True) -> Message:
    """Several alerts in one message, each in full with its own key (alerts.pacing): for a
    chat channel that takes no more messages this minute (`paced`), or for a flood due at once
    on a channel without a rate."""
    parts = [f"{n}. {m.title}\n{m.body}" for n, m in enumerate(messages, 1)]
    why = "渠道限速" if paced else "同时到达"
    return Message(
        title=f"【告警汇总】{len(messages)} 条告警（{why}，合并发送）",
        body="\n\n".join([*parts, f"编号 {key}"]),
    )


QUARTER_NAMES = {"1": "一", "2": "二", "3": "三", "4": "四"}


def quarter_text(quarter: str) -> str:
    """A quarter label as people read it: "2026q3" → "2026年第三季度"."""
    year, _, number = quarter.partition("q")
    return f"{year}年第{QUARTER_NAMES.get(number, number)}季度"


def render_report(payload: dict[str, Any], key: str, *, attached: bool) -> Message:
    """The quarterly report handed to the management unit: by e-mail with the PDF `attached`,
    or as a chat line saying it is ready, with what identifies the file (pages, SHA-256)."""
    quarter = quarter_text(str(payload.get("quarter", "")))
    start = dt.datetime.fromisoformat(payload["period_start"])
    end = dt.datetime.fromisoformat(payload["period_end"])
    where = "报告 PDF 见本邮件附件。" if attached else "报告 PDF 已通过电子邮件发送管理单位。"
    lines = [
        f"{payload.get('management_unit', UNITS.management_unit)}：",
        f"法人服务总入口{quarter}服务监测与安全合规报告已生成。",
        f"数据时段：{local_text(start)} 至 {local_text(end)}（北京时间）",
        f"页数：{payload.get('pages')}",
        f"SHA-256：{payload.get('sha256')}",
        where,
        f"报告单位：{payload.get('operation_unit', UNITS.operation_unit)}",
        f"编号 {key}",
    ]
    return Message(title=f"【季度合规报告】{quarter}", body="\n".join(lines))
