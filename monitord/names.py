"""The Chinese names of monitord's codes (incident classes, kinds, states, severities): one
table for the alerts, the status page and the command line, so all three say the same."""

from __future__ import annotations

import re

CLASS_NAMES = {"security": "安全事件", "availability": "可用性事件"}
KIND_NAMES = {
    "vulnerability": "安全漏洞",
    "abnormal_behaviour": "用户异常行为",
    "insecure_transport": "传输未加密或加密薄弱",
    "certificate_compromise": "证书泄露",
    "data_exposure": "数据泄露",
    "certificate_expiry": "证书过期或即将过期",
    "outage": "服务中断",
    "degraded": "服务降级",
    "other": "其他安全问题",
    "compliance": "合规问题",
}
SEVERITY_NAMES = {"critical": "严重", "high": "高", "medium": "中", "low": "低", "info": "提示"}
INCIDENT_STATE_NAMES = {
    "open": "待处理",
    "acknowledged": "已确认",
    "notified": "已提交通报",  # submitted: delivered or not, its clock says
    "resolved": "已解决",
    "closed": "已关闭",
}
SERVICE_STATE_NAMES = {
    "up": "正常",
    "degraded": "降级",
    "down": "中断",
    "unknown": "未知",
    "suspended": "暂停",
}
"""A service's probe state (the status page's badges), and 暂停 for a suspended service, whose
outage is filed."""
FINDING_STATE_NAMES = {"open": "未处理", "resolved": "已修复", "accepted": "已接受风险"}
CATALOGUE_STATUS_NAMES = {
    "pending": "待审核",
    "approved": "已审核",
    "online": "已上线",
    "suspended": "暂停服务",
    "offline": "已下线",
}
"""A service's status as the portal's catalogue gives it (Appendix A's lifecycle)."""
ADMIN_PROBLEM_NAMES = {
    "dormant_admin": "长期未登录的管理员账号",
    "vendor_without_end_date": "第三方人员账号未设置到期日",
    "expired_account": "已过到期日仍保留的账号",
    "grant_outside_chain": "授权不符合 7.1.2 授权链",
}
"""What the admin-rights review flags (monitord.evidence.admins), as the report names it."""


def named(code: str, names: dict[str, str]) -> str:
    """A code with its Chinese name beside it, as the command line shows it
    ("abnormal_behaviour 用户异常行为"); the code alone when it has no name."""
    name = names.get(code)
    return f"{code} {name}" if name else code


_PROBE_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), chinese)
    for pattern, chinese in (
        (r"status (\d+) not in the expected statuses", r"返回状态码 \1，不在预期范围内"),
        (r"keyword (.+) not found in the page", r"页面中未找到关键字 \1"),
        (r"timed out after ([\d.]+) s", r"\1 秒内无响应（超时）"),
        (r"connection reset by peer", "连接被对方重置"),
        (r"server disconnected without a response", "服务器未作响应即断开连接"),
        (r"connection failed: (.+)", r"无法建立连接：\1"),
        (r"certificate verify failed: (.+)", r"证书校验失败：\1"),
        (r"TLS handshake failed: (.+)", r"TLS 握手失败：\1"),
        (r"response body broken: the connection closed early", "响应未传输完整：连接提前关闭"),
        (r"response body broken: (.+)", r"响应未传输完整：\1"),
        (r"bad response: (.+)", r"响应格式错误：\1"),
        (r"HTTP status (\d+) is not documented", r"HTTP 状态码 \1 未在备案中列明"),
        (r"business code (.+) is not documented", r"业务返回码 \1 未在备案中列明"),
        (r"no business code: (.+)", r"没有业务返回码：\1"),
        (r"no field (.+)", r"响应中没有字段 \1"),
        (r"body is not JSON \((.+)\)", r"响应不是 JSON（\1）"),
        (r"JSON served as (.+)", r"JSON 以 \1 类型返回"),
        (r"no content type declared", "未声明内容类型"),
        (r"no charset declared", "未声明字符集"),
        (r"no response", "无响应"),
        (r"status class (\dxx) \(desktop got (\dxx)\)", r"状态码类别 \1，桌面端为 \2"),
        (r"status (\d+)", r"状态码 \1"),
    )
)
"""The probes' errors (English, as the command line and the log show them), as an alert or
a report in Chinese says them; the system's own words (an errno's text, a certificate's
verify message) stay as they are."""


CLIENT_NAMES = {
    "desktop": "桌面浏览器",
    "phone": "手机浏览器",
    "wechat": "微信",
    "alipay": "支付宝",
}
"""The clients the compatibility probe fetches a service as."""


def probe_error_text(error: str) -> str:
    """A probe's error in Chinese, each of its "; "-joined problems (a compatibility client's
    "desktop: a, b" with its client named); one no pattern knows is kept as it is."""
    parts = []
    for part in error.split("; "):
        client, colon, problems = part.partition(": ")
        if colon and client in CLIENT_NAMES:
            said = "、".join(_problem_text(p) for p in problems.split(", "))
            parts.append(f"{CLIENT_NAMES[client]}：{said}")
        else:
            parts.append(_problem_text(part))
    return "；".join(parts)


def _problem_text(problem: str) -> str:
    for pattern, chinese in _PROBE_ERRORS:
        found = pattern.fullmatch(problem)
        if found is not None:
            return found.expand(chinese)
    return problem
