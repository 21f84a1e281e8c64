"""The status page's HTML, in Chinese, for a phone first.

Every value from the store goes through `esc` (catalogue and log text is untrusted). No inline
script or style: the stylesheet and the refresh script are served at /static/ (the CSP allows
'self' only). Each form carries the session's CSRF token.
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from monitord.errors import Refused, UsageError
from monitord.names import (
    CATALOGUE_STATUS_NAMES,
    CLASS_NAMES,
    INCIDENT_STATE_NAMES,
    KIND_NAMES,
    SERVICE_STATE_NAMES,
    SEVERITY_NAMES,
    probe_error_text,
)
from monitord.redact import one_line
from monitord.runtime.status import Status
from monitord.timeutil import local_text, parse_time

STATE_NAMES = SERVICE_STATE_NAMES
INCIDENT_STATES = INCIDENT_STATE_NAMES  # one name per state, as the command line's
EVENT_NAMES = {
    "opened": "开启",
    "acknowledged": "确认",
    "notified": "提交通报",
    "delivered": "通报送达",
    "late": "逾期",
    "late_withdrawn": "撤销逾期（通报按时送达）",
    "resolved": "解决",
    "closed": "关闭",
    "reminder": "提醒",
    "escalated": "升级",
    "finding_added": "新增发现",
    "quiet": "静默（不告警）",
    "quiet_ended": "静默结束（事件仍在，补发告警）",
    "silenced": "告警被静默（未发群聊）",
    "undelivered": "通报未送达",
    "clock_step": "时钟校正",
}
PART_LABELS = {
    "scope": "一、初步判定的影响范围",
    "harm": "二、初步判定的危害",
    "measures": "三、已采取的应急处置措施",
    "rectification": "四、整改措施",
}
ALERT_KINDS = {
    "opened": "事件开启",
    "reminder": "提醒",
    "escalation": "升级",
    "late": "逾期",
    "notification": "通报",
    "update": "续报",
    "undelivered": "通报未送达",
    "resolved": "恢复",
    "storm": "大面积故障",
}
NOTICES = {
    "ack": "已确认。",
    "notify": "通报已提交，等待管理单位渠道确认送达。",
    "notify_by_phone": "已记录电话或当面通报，按所填通报时间计时。",
    "resolve": "已标记为解决。",
    "silence": "静默已添加。",
    "expire": "静默已结束。",
}
OUTDATED_NOTIFICATION = (
    "已有人提交了通报，本次未发送。下方表单现为续报，内容已保留：如需续报，请核对后再发送。"
)
"""The refusal of a notification form sent twice, or after someone else's (Outdated)."""
FORM_PLUMBING = frozenset({"csrf", "back", "number", "next", "token"})
"""A form's fields that nobody typed (or that must not be shown back: the token)."""
FIELD_LABELS = {
    **PART_LABELS,
    "out_of_band": "电话或当面通报的方式和对象",
    "at": "电话或当面通报的时间（北京时间）",
    "services": "服务编号",
    "kinds": "事件类型",
    "rules": "规则",
    "reason": "原因",
    "for": "持续时间",
    "ends_at": "结束时间（北京时间）",
}
"""The Chinese name of each field a person types in the page's forms."""
REFUSALS = {
    "missing": "请填写{fields}。",
    "too_long": "{field}：共 {length} 字，最多 {limit} 字。",
    "control_character": "{field}：含有控制字符，请只填写普通文字。",
    "empty": "{field}：请写明方式和对象，如“电话：市数据局 王科长”。",
    "at_without_out_of_band": (
        "{field}：只用于电话或当面通报，请同时写明通报的方式和对象，或清空此项。"
    ),
    "not_a_time": "{field}：无法识别的时间，请按 2026-12-06T02:10 的格式填写。",
    "future": "{field}：{at} 晚于现在。",
    "before_incident": "{field}：{at} 早于事件发生的时间（{happened}）。",
    "no_management_channel": (
        "未配置管理单位的通报渠道（配置项 alerts.management），通报无法发送。"
        "如已电话或当面通报，请写明方式和对象后记录。"
    ),
    "closed": "事件已关闭，不能再通报。",
    "already_acknowledged": "事件已由 {by} 确认。",
    "not_open": "事件{state}，无需确认。",
    "already_ended": "事件{state}，无需再标记为已解决。",
    "not_a_number": "表单已损坏（通报序号无效），请刷新页面后重新填写。",
    "matches_everything": (
        "请至少填写服务编号、事件类型或规则中的一项：不限范围的静默会掩盖下一次故障。"
    ),
    "no_such_service": "{field}：{value} 不在服务目录中。",
    "no_such_kind": "{field}：{value} 不是已知的事件类型。",
    "no_such_rule": "{field}：{value} 不是规则文件中定义的规则。",
    "not_a_duration": "{field}：无法识别，请填写如 90m、2h、1d 的时长。",
    "no_duration": "{field}：时长须大于零。",
    "too_long_a_silence": "{field}：静默最长 {days} 天。",
    "not_in_the_future": "{field}：{at} 不晚于现在。",
    "one_end": "请在“持续时间”和“结束时间（北京时间）”中填写且只填写一项。",
    "no_such_silence": "静默 {id} 不存在。",
    "silence_ended": "静默 {id} 已于 {at} 结束。",
}
"""How the page says each reason an incident action or a silence is refused
(monitord.errors.Refused):
`{field}` is the field's name as the form labels it, the rest the refusal's facts."""

LISTED = 200
"""Services, incidents, findings and timeline entries listed on a page at most (a gateway down
makes hundreds at once, an incident grouping them thousands of findings)."""
CARD_SERVICES = 10
"""Services named on an incident's card at most: the clock and the buttons stay in sight."""

CSS = """
:root{--red:#c62828;--amber:#ef6c00;--green:#2e7d32;--grey:#666}
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,"PingFang SC","Noto Sans CJK SC","WenQuanYi Zen Hei",
sans-serif;color:#222;background:#f4f5f7}
header{background:#1f2937;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;
align-items:center;gap:.5rem 1rem}
header a{color:#fff;text-decoration:none;font-weight:600}
header .who{margin-left:auto;font-size:.85rem;opacity:.85}
header form{display:inline}
header button{background:none;border:1px solid #fff8;color:#fff;border-radius:4px;
padding:.1rem .5rem;font-size:.85rem}
main{max-width:960px;margin:0 auto;padding:.75rem}
h1{font-size:1.25rem;margin:.5rem 0}
h2{font-size:1.05rem;margin:1.25rem 0 .5rem}
.summary{display:flex;gap:.5rem;flex-wrap:wrap}
.count{background:#fff;border-radius:6px;padding:.4rem .8rem;font-weight:600}
.card{background:#fff;border-radius:6px;padding:.6rem .8rem;margin:.5rem 0;
border-left:5px solid var(--grey)}
.card.degraded,.card.security{border-left-color:var(--amber)}
.card.down,.card.late{border-left-color:var(--red)}
.card .meta{font-size:.85rem;color:var(--grey)}
.badge{display:inline-block;border-radius:4px;padding:0 .4rem;font-size:.85rem;color:#fff;
background:var(--grey)}
.badge.down,.badge.late{background:var(--red)}
.badge.degraded,.badge.running{background:var(--amber)}
.badge.up,.badge.ok{background:var(--green)}
.clock{font-weight:700}
.clock.late{color:var(--red)}
.clock.running{color:var(--amber)}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.4rem}
.actions form{margin:0}
button,.button{font:inherit;border:0;border-radius:6px;padding:.45rem .9rem;background:#1565c0;
color:#fff;text-decoration:none;display:inline-block;cursor:pointer}
button.secondary{background:#555}
label{display:block;margin:.6rem 0 .2rem;font-weight:600}
textarea,input[type=text],input[type=password],input[type=datetime-local]{width:100%;font:inherit;padding:.4rem;
border:1px solid #bbb;border-radius:4px}
textarea{min-height:3.5rem}
fieldset{border:1px solid #bbb;border-radius:4px;margin:.6rem 0;padding:.2rem .6rem}
legend{font-weight:600}
label.choice{display:inline-block;font-weight:400;margin:.2rem 1rem .2rem 0}
.notice{background:#e8f5e9;border-radius:6px;padding:.5rem .8rem}
.error{background:#ffebee;color:var(--red);border-radius:6px;padding:.5rem .8rem}
.chart{width:100%;height:auto;display:block;background:#fafafa;margin:.2rem 0 .6rem}
.wide{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
td,th{padding:.3rem .4rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td{overflow-wrap:anywhere;min-width:3.5em}
th,td button{white-space:nowrap}
td button{padding:.3rem .6rem}
.empty{color:var(--grey)}
footer{color:var(--grey);font-size:.8rem;text-align:center;padding:1rem}
"""

SCRIPT = """// Reload every 30 s to stay current; not while someone is typing in a form of the page.
// Only pages served for a GET carry this script: a page answering a form (a refusal with what
// was typed) would be lost by a reload of the form's address.
(function () {
  var typed = false;
  document.addEventListener("input", function () { typed = true; });
  setInterval(function () {
    if (typed) { return; }
    var query = new URLSearchParams(location.search);
    query.delete("done");  // a notice ("已确认。") is said once, not at every reload
    var rest = query.toString();
    location.replace(location.pathname + (rest ? "?" + rest : ""));
  }, 30000);
})();
"""


def esc(value: object) -> str:
    """Text for HTML: escaped, on one line, control characters shown (untrusted text)."""
    return escape(one_line(str(value)), quote=True)


def when(iso: str | None) -> str:
    """A stored ISO time as people read it (Asia/Shanghai, to the minute), or —."""
    return local_text(parse_time(iso)) if iso else "—"


def _table(rows: str) -> str:
    """A table of `rows` that scrolls sideways by itself on a narrow phone, never the page."""
    return f'<div class="wide"><table>{rows}</table></div>'


def _hidden(csrf: str, back: str | None = None) -> str:
    fields = f'<input type="hidden" name="csrf" value="{esc(csrf)}">' if csrf else ""
    if back:
        fields += f'<input type="hidden" name="back" value="{esc(back)}">'
    return fields


def layout(title: str, body: str, *, who: str | None, csrf: str, refresh: bool = True) -> str:
    """A whole page: header (who is signed in, sign out), the body and, when `refresh`, the
    script reloading it every 30 s (never on a page answering a form: see SCRIPT)."""
    sign_out = (
        f'<form method="post" action="/logout">{_hidden(csrf)}<button>退出</button></form>'
        if csrf
        else ""
    )
    person = f'<span class="who">{esc(who)} {sign_out}</span>' if who else ""
    script = '<script src="/static/page.js" defer></script>' if refresh else ""
    return (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} · monitord</title>"
        '<link rel="stylesheet" href="/static/page.css">'
        f"{script}</head><body>"
        f'<header><a href="/">monitord 值班台</a>{person}</header>'
        f"<main>{body}</main><footer>苏商通 法人服务总入口 · 服务监测</footer></body></html>"
    )


def clock(incident: dict[str, Any]) -> str:
    """The 7.3.3 clock of an incident as a phrase: minutes left, late, sent, received."""
    if incident["class"] != "security" or not incident["notify_by"]:
        return '<span class="clock">无通报时限</span>'
    late = " late" if incident["late"] else ""
    if incident["notified_at"]:
        state = "逾期送达" if incident["late"] else "已按时通报"
        return f'<span class="clock{late}">{state}（{when(incident["notified_at"])}）</span>'
    minutes = incident["minutes_left"]
    deadline = when(incident["notify_by"])
    if incident["notification_sent_at"]:
        # Sent is not received: the clock runs on until a channel confirms delivery.
        if minutes is not None and minutes < 0:
            left = f"已逾期 {-minutes} 分钟（时限 {deadline}）"
        else:
            left = f"剩余 {minutes} 分钟，须于 {deadline} 前送达"
        return f'<span class="clock late">通报已提交但未送达，{left}：请电话通报</span>'
    if minutes is not None and minutes < 0:
        return f'<span class="clock late">已逾期 {-minutes} 分钟（时限 {deadline}）</span>'
    return (
        f'<span class="clock running">剩余 {minutes} 分钟</span>'
        f'<span class="meta">（须于 {deadline} 前通报管理单位）</span>'
    )


def _incident_title(incident: dict[str, Any]) -> str:
    label = CLASS_NAMES.get(incident["class"], "事件")
    kind = KIND_NAMES.get(incident["kind"], incident["kind"])
    return f"{label} #{incident['id']} {kind}"


def _incident_actions(incident: dict[str, Any], csrf: str, back: str) -> str:
    actions = []
    if incident["state"] == "open":
        actions.append(
            f'<form method="post" action="/incidents/{incident["id"]}/ack">'
            f"{_hidden(csrf, back)}<button>确认（我来处理）</button></form>"
        )
    if incident["class"] == "security" and incident["state"] != "closed":
        actions.append(
            f'<a class="button" href="/incidents/{incident["id"]}#notify">填写并发送通报</a>'
        )
    return f'<div class="actions">{"".join(actions)}</div>' if actions else ""


def _catalogue_status(service: dict[str, Any]) -> str:
    """The service's catalogue status in Chinese (已下线, 暂停服务…), 已移出目录 once gone."""
    if service.get("gone") or service.get("status") == "gone":
        return "已移出目录"
    status = str(service.get("status") or "")
    return CATALOGUE_STATUS_NAMES.get(status, status or "—")


def service_href(service_id: str) -> str:
    """The status page's address of a service: its id is catalogue text, which may hold "/",
    "?" or "..", so it is percent-encoded, not only HTML-escaped. An id of dots alone is
    encoded too: a browser reads /services/.. as / (quote leaves dots)."""
    encoded = quote(service_id, safe="")
    if service_id in (".", ".."):
        encoded = service_id.replace(".", "%2E")
    return esc("/services/" + encoded)


def incident_card(incident: dict[str, Any], *, can_act: bool, csrf: str, back: str) -> str:
    """One incident: what, where, its clock and, for on-call, its buttons."""
    classes = ["card", incident["class"]]
    if incident["late"] or (incident["minutes_left"] is not None and incident["minutes_left"] < 0):
        classes.append("late")
    services = _service_links(incident["services"][:CARD_SERVICES])
    if len(incident["services"]) > CARD_SERVICES:
        services += f" 等 {len(incident['services'])} 个服务"
    severity = SEVERITY_NAMES.get(incident["severity"], incident["severity"])
    state = INCIDENT_STATES.get(incident["state"], incident["state"])
    return (
        f'<div class="{" ".join(classes)}" id="incident-{incident["id"]}">'
        f'<a href="/incidents/{incident["id"]}">'
        f"<strong>{esc(_incident_title(incident))}</strong></a> "
        f'<span class="badge">{esc(state)}</span><div>{esc(incident["summary"])}</div>'
        f'<div class="meta">级别 {esc(severity)} · 发现于 {when(incident["detected_at"])}'
        f"{' · 服务 ' + services if services else ''}</div>"
        f"<div>{clock(incident)}</div>"
        f"{_incident_actions(incident, csrf, back) if can_act else ''}</div>"
    )


def _service_links(service_ids: list[str]) -> str:
    """Links to the services' pages, separated by 、."""
    return "、".join(f'<a href="{service_href(s)}">{esc(s)}</a>' for s in service_ids)


def _service_card(service: dict[str, Any]) -> str:
    state = service["state"]
    last_error = service["last_error"]
    error = f'<div class="meta">{esc(probe_error_text(last_error))}</div>' if last_error else ""
    return (
        f'<div class="card {esc(state)}"><a href="{service_href(service["id"])}">'
        f"<strong>{esc(service['id'])} {esc(service['name'])}</strong></a> "
        f'<span class="badge {esc(state)}">{esc(STATE_NAMES.get(state, state))}</span>'
        f'<div class="meta">自 {when(service["since"])}</div>{error}</div>'
    )


def silence_scope(silence: dict[str, Any]) -> str:
    """What a silence covers, as people read it: 服务：svc-1；类型：服务中断."""
    return "；".join(
        f"{label}：{'、'.join(map(str, values))}"
        for label, values in (
            ("服务", silence["services"]),
            ("类型", [KIND_NAMES.get(k, k) for k in silence["kinds"]]),
            ("规则", silence["rules"]),
        )
        if values
    )


def _expire_button(silence: dict[str, Any], csrf: str, back: str) -> str:
    return (
        f'<form method="post" action="/silences/{silence["id"]}/expire">{_hidden(csrf, back)}'
        '<button class="secondary">结束</button></form>'
    )


def silence_table(
    silences: list[dict[str, Any]], *, can_act: bool, csrf: str, back: str, ended: bool = False
) -> str:
    """Silences as a table; for on-call, a button to end each one still in force."""
    last = "<th>结束于</th><th>结束人</th>" if ended else "<th>结束</th>"
    action = "<th></th>" if can_act and not ended else ""
    rows = []
    for silence in silences:
        if ended:
            end = (
                f"<td>{when(silence['expired_at'] or silence['ends_at'])}</td>"
                f"<td>{esc(silence['expired_by'] or '到期')}</td>"
            )
        else:
            end = f"<td>{when(silence['ends_at'])}</td>"
        button = f"<td>{_expire_button(silence, csrf, back)}</td>" if action else ""
        rows.append(
            f'<tr id="silence-{silence["id"]}"><td>#{silence["id"]}</td>'
            f"<td>{esc(silence_scope(silence) or '全部')}</td>"
            f"<td>{esc(silence['reason'])}</td><td>{esc(silence['created_by'])}</td>"
            f"{end}{button}</tr>"
        )
    return _table(
        f"<tr><th>编号</th><th>范围</th><th>原因</th><th>设置人</th>{last}{action}</tr>"
        + "".join(rows)
    )


def _stuck_row(alert: dict[str, Any]) -> str:
    incident = f'<a href="/incidents/{alert["incident_id"]}">#{alert["incident_id"]}</a>'
    return (
        f"<tr><td>{esc(alert['channel'])}</td>"
        f"<td>{esc(ALERT_KINDS.get(alert['kind'], alert['kind']))}</td>"
        f"<td>{incident if alert['incident_id'] else '—'}</td><td>{when(alert['created_at'])}</td>"
        f"<td>{alert['attempts']}</td><td>{esc(alert['last_error'] or '')}</td></tr>"
    )


def _more(total: int, what: str, full_list: str | None = None) -> str:
    """The line saying how many were left off a list cut at LISTED, and where `full_list` (an
    address) gives them all."""
    if total <= LISTED:
        return ""
    link = f'：<a href="{esc(full_list)}">完整列表（JSON）</a>' if full_list else ""
    return f'<p class="meta">另有 {total - LISTED} {what}{link}</p>'


def front_page(status: Status, *, can_act: bool, csrf: str, notice: str | None) -> str:
    """The body of `/`: counts, troubled services, incidents, silences, stuck alerts."""
    counts = status.counts
    parts = [f'<p class="notice">{esc(notice)}</p>' if notice else ""]
    parts.append(
        '<div class="summary">'
        + "".join(
            f'<span class="count badge {name}">{STATE_NAMES[name]} {counts.get(name, 0)}</span>'
            for name in ("down", "degraded", "up", "unknown", "suspended")
        )
        + f'<span class="count">截至 {local_text(status.now)}</span></div>'
    )
    parts.append("<h2>中断与降级的服务</h2>")
    parts.append(
        "".join(_service_card(s) for s in status.troubled[:LISTED])
        or '<p class="empty">所有服务正常。</p>'
    )
    parts.append(_more(len(status.troubled), "个服务未显示，见 monitord status"))
    parts.append(f"<h2>未结事件（{len(status.incidents)}）</h2>")
    parts.append(
        "".join(
            incident_card(i, can_act=can_act, csrf=csrf, back="/")
            for i in status.incidents[:LISTED]
        )
        or '<p class="empty">没有未结事件。</p>'
    )
    parts.append(_more(len(status.incidents), "个事件未显示，见 monitord incidents list"))
    parts.append(f"<h2>生效中的静默（{len(status.silences)}）</h2>")
    if status.silences:
        parts.append(silence_table(status.silences, can_act=can_act, csrf=csrf, back="/"))
    else:
        parts.append('<p class="empty">没有静默。</p>')
    link = "添加或查看静默" if can_act else "查看静默"
    parts.append(f'<p><a href="/silences">{link}</a></p>')
    if status.stuck_total:
        parts.append(f'<h2 class="clock late">待发告警积压（{status.stuck_total}）</h2>')
        parts.append(
            _table(
                "<tr><th>渠道</th><th>类型</th><th>事件</th><th>生成</th><th>尝试</th>"
                "<th>错误</th></tr>" + "".join(_stuck_row(a) for a in status.stuck)
            )
        )
    return "".join(parts)


def notify_form(incident_id: int, number: int, csrf: str, values: dict[str, str]) -> str:
    """The clause 7.3.3 notification (`number` 1) or a follow-up (2, 3…): its four parts, and
    how it was made if by phone. The number goes with the form: sent twice, or after someone
    else's, it is refused instead of going out again as a follow-up."""
    fields = "".join(
        f'<label for="{name}">{label}</label>'
        f'<textarea id="{name}" name="{name}" required>'
        # What the person typed, escaped but with its lines kept.
        f"{escape(values.get(name, ''))}</textarea>"
        for name, label in PART_LABELS.items()
    )
    return (
        f'<form method="post" action="/incidents/{incident_id}/notify" id="notify">'
        f"{_hidden(csrf, f'/incidents/{incident_id}')}"
        f'<input type="hidden" name="number" value="{number}">{fields}'
        '<label for="out_of_band">已电话或当面通报？写明方式和对象'
        "（否则留空，经管理单位渠道发送）</label>"
        f'<input type="text" id="out_of_band" name="out_of_band" '
        f'value="{esc(values.get("out_of_band", ""))}" placeholder="电话：市数据局 王科长">'
        '<label for="at">电话或当面通报的时间（北京时间；留空为现在）</label>'
        f'<input type="datetime-local" id="at" name="at" value="{esc(values.get("at", ""))}">'
        '<div class="actions"><button>发送通报</button></div></form>'
    )


NOTED_ACTIONS = ("acknowledged", "resolved", "closed")
"""The timeline entries whose note a person wrote (monitord's own notes are for the logs)."""


def _event_text(event: dict[str, Any]) -> str:
    """A timeline line's what: its name, the note its actor left (acknowledged, resolved,
    closed), and for an alert held back, the silence that did."""
    detail = event.get("detail") or {}
    text = esc(EVENT_NAMES.get(event["kind"], event["kind"]))
    note = detail.get("note") if event["kind"] in NOTED_ACTIONS else None
    if isinstance(note, str) and note.strip():
        text += f"：{esc(note.strip())}"
    silence = detail.get("silence") if event["kind"] == "silenced" else None
    if isinstance(silence, int):
        text += f' <a href="/silences#silence-{silence}">静默 #{silence}</a>'
    return text


def _service_cell(service_id: str | None) -> str:
    """A table cell linking to a service's page; — for a finding on no service."""
    if not service_id:
        return "<td>—</td>"
    return f'<td><a href="{service_href(service_id)}">{esc(service_id)}</a></td>'


def _findings_table(findings: list[dict[str, Any]], *, services: bool) -> str:
    """Findings as a table: the service of each (on an incident's page), rule, clause, level,
    summary, when first seen."""
    head = "<th>服务</th>" if services else ""
    rows = "".join(
        f"<tr>{_service_cell(f['service_id']) if services else ''}"
        f"<td>{esc(f['rule'])}</td><td>{esc(f['clause'])}</td>"
        f"<td>{esc(SEVERITY_NAMES.get(f['severity'], f['severity']))}</td>"
        f"<td>{esc(f['summary'])}</td><td>{when(f['first_seen'])}</td></tr>"
        for f in findings
    )
    return _table(
        f"<tr>{head}<th>规则</th><th>条款</th><th>级别</th><th>摘要</th><th>首次发现</th>"
        f"</tr>{rows}"
    )


def _timeline_rows(events: list[dict[str, Any]], api: str) -> str:
    """The timeline's rows: all of them, or the first and the last LISTED / 2 around a row
    saying how many are not shown (the start and the latest actions are what on-call reads)."""
    half = LISTED // 2
    shown = events if len(events) <= LISTED else [*events[:half], None, *events[-half:]]
    return "".join(
        f'<tr><td colspan="3" class="meta">…… 中间另有 {len(events) - 2 * half} 条未显示：'
        f'<a href="{esc(api)}">完整时间线（JSON）</a></td></tr>'
        if e is None
        else f"<tr><td>{when(e['at'])}</td><td>{_event_text(e)}</td><td>{esc(e['actor'])}</td></tr>"
        for e in shown
    )


def incident_page(
    incident: dict[str, Any],
    events: list[dict[str, Any]],
    findings: list[dict[str, Any]],
    finding_count: int,
    *,
    notifications: int,
    can_act: bool,
    csrf: str,
    notice: str | None,
    error: str | None,
    values: dict[str, str],
) -> str:
    """The body of `/incidents/{id}`: the incident, its buttons and form (for the notification
    after the `notifications` already submitted), then the long lists (findings, of which the
    first LISTED of `finding_count`; timeline; services), each cut at LISTED with how many are
    not shown and a link to the whole incident as JSON."""
    back = f"/incidents/{incident['id']}"
    api = f"/api/v1/incidents/{incident['id']}"
    parts = [f"<h1>{esc(_incident_title(incident))}</h1>"]
    if notice:
        parts.append(f'<p class="notice">{esc(notice)}</p>')
    if error:
        parts.append(f'<p class="error">未能完成：{esc(error)}</p>')
    parts.append(incident_card(incident, can_act=False, csrf=csrf, back=back))
    if can_act:
        buttons = []
        if incident["state"] == "open":
            buttons.append(
                f'<form method="post" action="{back}/ack">{_hidden(csrf, back)}'
                "<button>确认（我来处理）</button></form>"
            )
        if incident["state"] in ("open", "acknowledged", "notified"):
            buttons.append(
                f'<form method="post" action="{back}/resolve">{_hidden(csrf, back)}'
                '<button class="secondary">标记为已解决</button></form>'
            )
        parts.append(f'<div class="actions">{"".join(buttons)}</div>')
        if incident["class"] == "security" and incident["state"] != "closed":
            title = "通报管理单位（第 7.3.3 条）"
            if notifications:
                title = f"续报（第 {notifications} 次）"
            form = notify_form(incident["id"], notifications + 1, csrf, values)
            parts.append(f"<h2>{title}</h2>{form}")
        else:  # a notification refused as the incident closed: what was typed is not lost
            parts.append(
                typed_to_copy([(name, text) for name, text in values.items() if text.strip()])
            )
    parts.append(f"<h2>发现（{finding_count}）</h2>")
    if findings:
        parts.append(_findings_table(findings, services=True))
        parts.append(_more(finding_count, "条发现未显示", api))
    else:
        parts.append('<p class="empty">没有关联的发现（人工登记的事件）。</p>')
    parts.append(f"<h2>时间线（{len(events)}）</h2>")
    parts.append(
        _table(f"<tr><th>时间</th><th>事项</th><th>操作人</th></tr>{_timeline_rows(events, api)}")
    )
    services = incident["services"]
    if len(services) > CARD_SERVICES:  # the card named only the first ones
        parts.append(f"<h2>涉及服务（{len(services)}）</h2>")
        parts.append(f"<p>{_service_links(services[:LISTED])}</p>")
        parts.append(_more(len(services), "个服务未显示", api))
    return "".join(parts)


def service_page(
    service: dict[str, Any],
    charts: list[tuple[str, float | None, str, str]],
    findings: list[dict[str, Any]],
    finding_count: int,
) -> str:
    """The body of `/services/{id}`: state, uptime and latency charts, open findings (the first
    LISTED of `finding_count`, and how many more)."""
    # A filed suspension's outage is expected: 暂停, as the front page counts it, not 中断.
    state = "suspended" if service["status"] == "suspended" else service["state"]
    parts = [
        f"<h1>{esc(service['id'])} {esc(service['name'])}</h1>",
        f'<p><span class="badge {esc(state)}">{esc(STATE_NAMES.get(state, state))}</span> '
        f'<span class="meta">目录状态 {esc(_catalogue_status(service))} · '
        f"自 {when(service['since'])}</span></p>",
    ]
    if service["last_error"]:
        parts.append(
            f'<p class="meta">最近错误：{esc(probe_error_text(service["last_error"]))}</p>'
        )
    for title, rate, strip, line in charts:
        shown = f"{rate:.2f}%" if rate is not None else "无数据"
        parts.append(f"<h2>{esc(title)}：可用率 {shown}</h2>{strip}{line}")
    parts.append(f"<h2>未解决的发现（{finding_count}）</h2>")
    if findings:
        parts.append(_findings_table(findings, services=False))
        query = urlencode({"service": service["id"], "state": "open"})
        parts.append(_more(finding_count, "条未解决的发现未显示", f"/api/v1/findings?{query}"))
    else:
        parts.append('<p class="empty">没有。</p>')
    return "".join(parts)


def silence_form(kinds: dict[str, str], csrf: str, values: dict[str, Any]) -> str:
    """The form adding a silence: what it covers (service, kind or rule), why, until when."""
    chosen = set(values.get("kinds", []))
    boxes = "".join(
        f'<label class="choice"><input type="checkbox" name="kinds" value="{esc(kind)}"'
        f"{' checked' if kind in chosen else ''}> {esc(name)}（{esc(kind)}）</label>"
        for kind, name in kinds.items()
    )

    def text(name: str, label: str, placeholder: str, kind: str = "text") -> str:
        return (
            f'<label for="{name}">{label}</label><input type="{kind}" id="{name}" name="{name}" '
            f'value="{esc(values.get(name, ""))}" placeholder="{esc(placeholder)}">'
        )

    return (
        '<form method="post" action="/silences" id="add-silence">'
        f"{_hidden(csrf, '/silences')}"
        '<p class="meta">按服务、事件类型或规则静默（至少填一项；多项须同时匹配）。'
        "静默只压下群聊告警，不会暂停安全事件第 7.3.3 条的两小时通报时限。</p>"
        f"{text('services', '服务编号（多个用逗号或空格分隔）', 'svc-0001, svc-0002')}"
        f"<fieldset><legend>事件类型</legend>{boxes}</fieldset>"
        f"{text('rules', '规则（可用通配符）', 'zap:*')}"
        '<label for="reason">原因（写入季度报告）</label>'
        f'<textarea id="reason" name="reason" required>{escape(values.get("reason", ""))}'
        "</textarea>"
        f"{text('for', '持续时间（如 90m、2h、1d）', '2h')}"
        f"{text('ends_at', '或结束时间（北京时间）', '', 'datetime-local')}"
        '<div class="actions"><button>添加静默</button></div></form>'
    )


def silences_page(
    active: list[dict[str, Any]],
    ended: list[dict[str, Any]],
    kinds: dict[str, str],
    *,
    can_act: bool,
    csrf: str,
    notice: str | None,
    error: str | None,
    values: dict[str, Any],
) -> str:
    """The body of `/silences`: those in force (with their end buttons), the form, ended ones."""
    parts = ["<h1>静默</h1>"]
    if notice:
        parts.append(f'<p class="notice">{esc(notice)}</p>')
    if error:
        parts.append(f'<p class="error">未能完成：{esc(error)}</p>')
    parts.append(f"<h2>生效中（{len(active)}）</h2>")
    parts.append(
        silence_table(active, can_act=can_act, csrf=csrf, back="/silences")
        if active
        else '<p class="empty">没有静默。</p>'
    )
    if can_act:
        parts.append(f"<h2>添加静默</h2>{silence_form(kinds, csrf, values)}")
    if ended:
        parts.append("<h2>最近结束的静默</h2>")
        parts.append(silence_table(ended, can_act=False, csrf=csrf, back="", ended=True))
    return "".join(parts)


def sign_in_page(csrf: str, next_path: str, error: str | None) -> str:
    """The body of `/login`: one field for the token."""
    message = f'<p class="error">{esc(error)}</p>' if error else ""
    return (
        f"<h1>登录值班台</h1>{message}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
        f'<input type="hidden" name="next" value="{esc(next_path)}">'
        '<label for="token">访问令牌（monitord token new 生成）</label>'
        '<input type="password" id="token" name="token" autocomplete="current-password" required>'
        '<div class="actions"><button>登录</button></div></form>'
    )


def stale_form_page(signed_out: bool, sign_in: str, typed: list[tuple[str, str]]) -> str:
    """The body answering a form sent after its session ended (`signed_out`) or from a page of
    an earlier sign-in: nothing was done; a link to `sign_in` again; what was typed, to copy."""
    if signed_out:
        why = "登录已失效（已退出登录、服务重启或登录已满 12 小时），本次操作未执行。"
    else:
        why = "表单已过期（此后已重新登录），本次操作未执行。"
    return (
        f'<p class="error">{esc(why)}</p>'
        f'<p><a class="button" href="{esc(sign_in)}">重新登录后返回</a></p>{typed_to_copy(typed)}'
    )


def typed_to_copy(typed: list[tuple[str, str]]) -> str:
    """What was typed in a form that was not done and is not shown again, read-only under its
    fields' names, to copy; nothing when nothing was typed."""
    kept = "".join(
        f'<label for="typed-{esc(name)}">{esc(FIELD_LABELS.get(name, name))}</label>'
        f'<textarea id="typed-{esc(name)}" readonly>{escape(value)}</textarea>'
        for name, value in typed
    )
    return f"<h2>已填写的内容（请先复制保存）</h2>{kept}" if kept else ""


def refusal_text(refusal: UsageError) -> str:
    """Why an incident action was refused, in Chinese, naming the form's field as the form
    labels it (the refusal's own message is the command line's, in English with its flags)."""
    if not isinstance(refusal, Refused) or refusal.reason not in REFUSALS:
        # Not one the page knows how to word: said as it is, under a Chinese heading.
        return f"操作未执行（{refusal}）"
    words: dict[str, str] = {"field": FIELD_LABELS.get(refusal.field or "", "")}
    for name, fact in refusal.facts.items():
        if isinstance(fact, dt.datetime):
            words[name] = local_text(fact)
        elif isinstance(fact, int):
            words[name] = f"{fact:,}"
        elif name == "fields":
            words[name] = "、".join(f"“{FIELD_LABELS.get(field, field)}”" for field in fact)
        elif name == "state":
            words[name] = INCIDENT_STATES.get(fact, fact)
        else:
            words[name] = str(fact)
    return REFUSALS[refusal.reason].format_map(words)


def message_page(text: str) -> str:
    """The body of a page that only says something (not found, refused)."""
    return f'<p class="error">{esc(text)}</p><p><a href="/">返回值班台</a></p>'
