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
PURGED_TABLE_NAMES = {
    "probe_results": "探测结果",
    "probe_rollups": "探测小时汇总",
    "probe_rounds": "探测轮次",
    "sync_runs": "目录同步记录",
    "service_state_changes": "服务状态变化",
}
"""The tables the purge deletes from (monitord.store.retention), as its audit entry names them."""
PURGED_KIND_NAMES = {"successful": "成功的", "failed": "失败的", "all": ""}
"""Which rows of a table a purge cutoff applied to, as its audit entry names them."""
ADMIN_PROBLEM_NAMES = {
    "dormant_admin": "长期未登录的管理员账号",
    "vendor_without_end_date": "第三方人员账号未设置到期日",
    "expired_account": "已过到期日仍保留的账号",
    "grant_outside_chain": "授权不符合 7.1.2 授权链",
}
"""What the admin-rights review flags (monitord.evidence.admins), as the report names it."""
EVIDENCE_KIND_NAMES = {
    "pentest": "渗透测试报告",
    "risk_assessment": "风险评估报告",
    "security_plan": "网络安全保障方案",
    "drill": "应急演练记录",
    "other": "其他材料",
}
"""The kinds of document the evidence register takes (monitord.evidence.register.KINDS), as
the report names them."""


LOG_RULE_NAMES = {
    "brute_force_login": "账号暴力破解",
    "brute_force_ip": "地址暴力破解",
    "credential_stuffing": "撞库",
    "scanner_probing": "扫描探测",
    "request_flood": "高频请求",
    "scraping": "批量抓取企业信息",
    "account_sharing": "疑似共用账号",
    "off_hours_privileged": "非工作时间管理操作",
    "role_grant_violation": "越权授予角色",
    "level_violation": "低级别账号办理业务",
    "vendor_activity": "第三方人员操作",
    "error_burst": "5xx 错误激增",
    "log_lost": "日志轮转时丢失的行",
    "log_gap": "无日志的日期",
}
"""The rules of rules/logs.toml and the log audit's own findings, as the report names them; a
rule a site adds is shown by its name alone."""


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
        (r"timed out", "超时"),
        (r"more than (\d+) redirects", r"重定向超过 \1 次"),
        (
            r"refused: (\S+) resolves to (\S+) \(which carries (\S+)\), "
            r"inside denied network (\S+)",
            r"\1 解析到 \2（即 \3），位于禁止探测的网段 \4 内",
        ),
        (
            r"refused: (\S+) resolves to (\S+), inside denied network (\S+)",
            r"\1 解析到 \2，位于禁止探测的网段 \3 内",
        ),
        (r"connection reset by peer", "连接被对方重置"),
        (r"connection closed mid-handshake", "握手中途连接被关闭"),
        (r"server disconnected without a response", "服务器未作响应即断开连接"),
        (r"server disconnected before the headers ended", "服务器在响应头结束前断开连接"),
        (r"connection failed: (?P<detail>.+)", r"无法建立连接：\g<detail>"),
        (r"certificate verify failed: (?P<detail>.+)", r"证书校验失败：\g<detail>"),
        (r"TLS handshake failed: (?P<detail>.+)", r"TLS 握手失败：\g<detail>"),
        (r"response body broken: the connection closed early", "响应未传输完整：连接提前关闭"),
        (r"response body broken: (?P<detail>.+)", r"响应未传输完整：\g<detail>"),
        (
            r"bad response: chunk size (?P<size>.+) is not a hexadecimal number",
            r"响应格式错误：分块长度 \g<size> 不是十六进制数",
        ),
        (r"bad response: (?P<detail>.+)", r"响应格式错误：\g<detail>"),
        (r"HTTP status (\d+) is not documented", r"HTTP 状态码 \1 未在备案中列明"),
        (r"business code (.+) is not documented", r"业务返回码 \1 未在备案中列明"),
        (r"no business code: (?P<detail>.+)", r"没有业务返回码：\g<detail>"),
        (r"no field (.+)", r"响应中没有字段 \1"),
        (r"field (.+) is null", r"响应中字段 \1 为 null"),
        (r"field (.+) is an object, not a code", r"响应中字段 \1 是对象，不是返回码"),
        (r"field (.+) is a list, not a code", r"响应中字段 \1 是数组，不是返回码"),
        (r"body is not JSON \((.+)\)", r"响应不是 JSON（\1）"),
        (r"JSON served as (.+)", r"JSON 以 \1 类型返回"),
        (r"no content type declared", "未声明内容类型"),
        (r"no charset declared", "未声明字符集"),
        (r"no response", "无响应"),
        (r"status class (\dxx) \(desktop got (\dxx)\)", r"状态码类别 \1，桌面端为 \2"),
        (r"status (\d+)", r"状态码 \1"),
        # The system's words inside those above (an errno's text, a certificate's verify
        # message, OpenSSL's reason): the common ones said in Chinese, the rest kept.
        (r"Connect call failed .*", "对方未接受连接"),
        (r"Connection refused", "连接被拒绝"),
        (r"No route to host", "无法路由到主机"),
        (r"Network is unreachable", "网络不可达"),
        (
            r"(?:gaierror: )?(?:\[Errno -?\d+\] )?(?:Name or service not known|"
            r"Temporary failure in name resolution|No address associated with hostname)",
            "域名无法解析",
        ),
        (r"certificate has expired", "证书已过期"),
        (r"certificate is not yet valid", "证书尚未生效"),
        (r"self[- ]signed certificate", "自签名证书"),
        (r"self[- ]signed certificate in certificate chain", "证书链中有自签名证书"),
        (r"unable to get local issuer certificate", "找不到受信任的签发者证书"),
        (r"Hostname mismatch, certificate is not valid for '(.+)'\.", r"证书与域名 \1 不匹配"),
        (
            r"IP address mismatch, certificate is not valid for '(.+)'\.",
            r"证书与 IP 地址 \1 不匹配",
        ),
        (r"EE certificate key too weak", "证书密钥强度不足"),
        (r"CA certificate key too weak", "CA 证书密钥强度不足"),
        (r"CA signature digest algorithm too weak", "签名摘要算法强度不足"),
        (r"\[SSL: (\w+)\] .*", r"OpenSSL 错误 \1"),
    )
)
"""The probes' errors (English, as the command line, the log and the API show them), as an
alert or a report in Chinese says them. A `detail` part is said in Chinese too when a pattern
knows it, else kept as the system wrote it."""

UNKNOWN_PROBE_ERROR = "探测失败（未归类的错误，原文见探测结果的 error 字段）"
"""What an alert says for an error no pattern knows; the result keeps the original."""


CLIENT_NAMES = {
    "desktop": "桌面浏览器",
    "phone": "手机浏览器",
    "wechat": "微信",
    "alipay": "支付宝",
}
"""The clients the compatibility probe fetches a service as."""


def probe_error_text(error: str) -> str:
    """A probe's error in Chinese, each of its "; "-joined problems; a compatibility client's
    ("desktop: a; desktop: b") said once with its client named ("桌面浏览器：a、b"). One no
    pattern knows is `UNKNOWN_PROBE_ERROR`."""
    parts: list[str] = []
    said_of: dict[str, list[str]] = {}
    for part in error.split("; "):
        client, colon, problem = part.partition(": ")
        if not (colon and client in CLIENT_NAMES):
            parts.append(_problem_text(part, UNKNOWN_PROBE_ERROR))
            continue
        if client not in said_of:
            said_of[client] = []
            parts.append(client)  # its place, filled in below once all its problems are read
        said_of[client] += _client_problem_texts(problem)
    return "；".join(
        f"{CLIENT_NAMES[part]}：{'、'.join(said_of[part])}" if part in said_of else part
        for part in parts
    )


def _client_problem_texts(problem: str) -> list[str]:
    """One problem of a client in Chinese. Results stored before each problem stood on its own
    joined a client's problems with ", " ("desktop: a, b"): one no pattern knows whole is read
    that way."""
    whole = _problem_text(problem, "")
    if whole:
        return [whole]
    return [_problem_text(p, UNKNOWN_PROBE_ERROR) for p in problem.split(", ")]


def _problem_text(problem: str, unknown: str) -> str:
    """`problem` in Chinese by the first pattern that matches it whole, else `unknown`."""
    for pattern, chinese in _PROBE_ERRORS:
        found = pattern.fullmatch(problem)
        if found is None:
            continue
        detail = found.groupdict().get("detail")
        if detail is None:
            return found.expand(chinese)
        # The detail is translated on its own; a placeholder keeps its text out of expand().
        said = found.expand(chinese.replace(r"\g<detail>", "\x00"))
        return said.replace("\x00", _problem_text(detail, detail))
    return unknown
