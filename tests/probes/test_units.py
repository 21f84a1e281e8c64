"""Pure parts of the probes and rules: deny list, specs from the catalogue, rule files, HSTS."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

import probes
from monitord.errors import RuleError
from monitord.names import probe_error_text
from monitord.netguard import (
    DEFAULT_DENIED_NETWORKS,
    DeniedTargetError,
    denied_network,
    refuse_denied,
)
from monitord.redact import mask_url
from monitord.types import ProbeResult
from probes import availability, compatibility, contract, tls, tlsinfo
from rules.probe_rules import evaluate, load_rules, parse_rules


@pytest.mark.parametrize(
    ("address", "networks", "expected"),
    [
        ("169.254.169.254", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),
        ("100.100.100.200", DEFAULT_DENIED_NETWORKS, "100.100.100.200/32"),
        ("100.100.100.201", DEFAULT_DENIED_NETWORKS, None),
        ("fd00:ec2::254", DEFAULT_DENIED_NETWORKS, "fd00:ec2::254/128"),
        ("fe80::1%eth0", DEFAULT_DENIED_NETWORKS, "fe80::/10"),
        ("::ffff:169.254.169.254", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),
        ("58.210.1.1", DEFAULT_DENIED_NETWORKS, None),
        ("127.0.0.1", DEFAULT_DENIED_NETWORKS, None),
        ("127.0.0.1", ("127.0.0.0/8",), "127.0.0.0/8"),
        ("10.1.2.3", ("10.0.0.0/8", "::1/128"), "10.0.0.0/8"),
        # IPv6 forms that carry an IPv4 address and send their packets to it.
        ("::169.254.169.254", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),  # IPv4-compatible
        ("64:ff9b::169.254.169.254", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),  # NAT64
        ("64:ff9b::100.100.100.200", DEFAULT_DENIED_NETWORKS, "100.100.100.200/32"),
        ("64:ff9b:1:0:0:0:a9fe:a9fe", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),  # local NAT64
        ("2002:a9fe:a9fe::1", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),  # 6to4
        ("2001:0:4136:e378:8000:63bf:5601:5601", DEFAULT_DENIED_NETWORKS, "169.254.0.0/16"),
        ("64:ff9b::58.210.1.1", DEFAULT_DENIED_NETWORKS, None),
        ("2002:3ad2:101::1", DEFAULT_DENIED_NETWORKS, None),
        ("::1", DEFAULT_DENIED_NETWORKS, None),
        ("::", DEFAULT_DENIED_NETWORKS, None),
        ("64:ff9b::10.0.0.1", ("10.0.0.0/8",), "10.0.0.0/8"),
        ("64:ff9b::10.0.0.1", ("64:ff9b::/96",), "64:ff9b::/96"),  # the IPv6 network itself
        ("2400:3200::1", DEFAULT_DENIED_NETWORKS, None),
    ],
)
def test_denied_network(address: str, networks: tuple[str, ...], expected: str | None) -> None:
    """Addresses are matched against the deny list; an IPv6 address that carries an IPv4 one
    (mapped, compatible, NAT64, 6to4, Teredo) is also matched as that IPv4 address."""
    assert denied_network(address, networks) == expected


def test_a_refusal_names_the_ipv4_address_an_ipv6_one_carries() -> None:
    with pytest.raises(DeniedTargetError) as refused:
        refuse_denied("meta.example", ["64:ff9b::a9fe:a9fe"], DEFAULT_DENIED_NETWORKS)
    assert str(refused.value) == (
        "refused: meta.example resolves to 64:ff9b::a9fe:a9fe (which carries 169.254.169.254), "
        "inside denied network 169.254.0.0/16"
    )


def test_registry_is_the_one_list_of_kinds() -> None:
    """Every kind registered with a frozen spec class derived from monitord's Spec."""
    assert set(probes.PROBES) == {"availability", "tls", "compatibility", "contract"}
    for kind in probes.PROBES.values():
        spec = kind.spec()
        assert spec.timeout_s > 0
        with pytest.raises(AttributeError):
            spec.timeout_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kind", "probe", "codes", "expected"),
    [
        ("availability", None, None, availability.AvailabilitySpec()),
        (
            "availability",
            {"path": "/health", "method": "head", "expect_status": [200, 204], "keyword": "ok"},
            None,
            availability.AvailabilitySpec(
                path="/health", method="HEAD", expect_status=(200, 204), keyword="ok"
            ),
        ),
        # Malformed catalogue values fall back to the defaults.
        (
            "availability",
            {"path": 3, "method": "DELETE", "expect_status": "200", "keyword": ""},
            None,
            availability.AvailabilitySpec(),
        ),
        (
            "contract",
            {"path": "/api", "expect_status": [200], "expect_codes": {"field": "code", "ok": [0]}},
            {"0": "success", "1001": "invalid token"},
            contract.ContractSpec(
                path="/api",
                expect_status=(200,),
                code_field="code",
                ok_codes=("0",),
                return_codes=(("0", "success"), ("1001", "invalid token")),
            ),
        ),
        (
            "compatibility",
            {"expect_codes": {"field": "code"}, "mobile": False},
            None,
            compatibility.CompatibilitySpec(expect_json=True, clients=("desktop",)),
        ),
        ("tls", {"path": "/x", "keyword": "ignored"}, None, tls.TlsSpec(path="/x")),
    ],
)
def test_spec_from_catalogue(
    kind: str, probe: dict[str, Any] | None, codes: dict[str, str] | None, expected: Any
) -> None:
    """A catalogue `probe` object and `return_codes` become the kind's spec, with defaults."""
    assert probes.spec_for(kind, probe, return_codes=codes) == expected


def test_spec_overrides_from_config() -> None:
    """monitord's config overrides the catalogue; unknown overrides fail naming the key."""
    spec = probes.spec_for("availability", {}, timeout_s=3, denied_networks=["10.0.0.0/8"])
    assert spec.timeout_s == 3
    assert isinstance(spec, availability.AvailabilitySpec)
    assert spec.denied_networks == ("10.0.0.0/8",)
    with pytest.raises(TypeError, match="no field bogus"):
        probes.spec_for("tls", {}, bogus=1)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, {"present": False, "enabled": False, "max_age": None, "preload": False}),
        (
            "max-age=31536000; includeSubDomains; preload",
            {"present": True, "enabled": True, "max_age": 31536000, "include_subdomains": True},
        ),
        ('max-age="600"', {"present": True, "enabled": True, "max_age": 600}),
        # RFC 6797 §6.1.1: no valid max-age, the header is ignored; max-age=0 switches HSTS off.
        ("max-age=oops", {"present": True, "enabled": False, "max_age": None}),
        ("includeSubDomains", {"present": True, "enabled": False, "include_subdomains": True}),
        ("max-age=0; includeSubDomains", {"present": True, "enabled": False, "max_age": 0}),
    ],
)
def test_parse_hsts(header: str | None, expected: dict[str, Any]) -> None:
    """HSTS header values become the `hsts` fact."""
    fact = tlsinfo.parse_hsts(header)
    assert {k: fact[k] for k in expected} == expected


def test_client_hello_is_well_formed() -> None:
    """The raw ClientHello: one handshake record whose lengths add up, SNI only for names."""
    hello = tlsinfo.client_hello("example.gov.cn", [0x002F, 0x000A], status_request=True)
    assert hello[0] == 0x16 and int.from_bytes(hello[3:5], "big") == len(hello) - 5
    assert hello[5] == 0x01 and int.from_bytes(hello[6:9], "big") == len(hello) - 9
    assert b"example.gov.cn" in hello
    assert b"127.0.0.1" not in tlsinfo.client_hello("127.0.0.1", [0x002F], status_request=False)


def _result(kind: str, facts: dict[str, Any], success: bool = True) -> ProbeResult:
    return ProbeResult(
        kind=kind,
        target="https://svc.example/",
        success=success,
        duration_ms=1.0,
        started_at=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        facts=facts,
        service_id="s1",
    )


def test_rules_file_loads_and_names_are_unique() -> None:
    """The shipped rule file is valid and covers what issue 3 asks for."""
    names = {rule.name for rule in load_rules()}
    assert {
        "service_down",
        "service_slow",
        "cert_expiring_30d",
        "cert_expiring_7d",
        "cert_expired",
        "cert_not_yet_valid",
        "cert_weak_key",
        "cert_weak_signature",
        "untrusted_chain",
        "hostname_mismatch",
        "legacy_protocol",
        "weak_cipher",
        "no_hsts",
        "plain_http",
        "undocumented_return_code",
        "incompatible_client",
    } <= names


@pytest.mark.parametrize(
    ("kind", "facts", "expected"),
    [
        ("tls", {"days_to_expiry": 30.0}, {"cert_expiring_30d"}),
        ("tls", {"days_to_expiry": 7.0}, {"cert_expiring_7d"}),
        ("tls", {"days_to_expiry": -0.01}, {"cert_expired"}),
        ("tls", {"days_to_expiry": 31.0}, set()),
        # The leaf is fine but the intermediate expires in 10 days: a derived fact.
        (
            "tls",
            {"days_to_expiry": 300.0, "chain_earliest_expiry": "2025-01-11T00:00:00+00:00"},
            {"chain_cert_expiring"},
        ),
        ("tls", {"ocsp_stapled": {"stapled": True, "status": "revoked"}}, {"ocsp_revoked"}),
        ("tls", {"protocols": ["TLSv1.2", "TLSv1.3"], "weak_ciphers": []}, set()),
        # A fact that could not be learnt (None) never fires a rule.
        ("tls", {"chain_trusted": None, "hostname_match": None, "hsts": None}, set()),
        ("availability", {"days_to_expiry": 3.0, "total_ms": 10.0, "slo_ms": 5.0}, set()),
    ],
)
def test_rule_thresholds(kind: str, facts: dict[str, Any], expected: set[str]) -> None:
    """Thresholds are inclusive where the issue says 'within'; missing facts fire nothing."""
    got = {f.rule for f in evaluate(_result(kind, facts))}
    if kind == "availability":
        # `slow` needs success and a real total; cert rules read the same facts as tls.
        assert got == {"cert_expiring_7d", "service_slow"}
    else:
        assert got == expected


def test_finding_carries_clause_severity_and_evidence() -> None:
    """A finding names its clause, severity, subject and the facts it was drawn from."""
    (finding,) = evaluate(_result("tls", {"weak_ciphers": ["TLS_RSA_WITH_RC4_128_SHA"]}))
    assert (finding.rule, finding.clause, finding.severity) == ("weak_cipher", "6.3.2 a", "high")
    assert (finding.subject_kind, finding.subject, finding.service_id) == ("service", "s1", "s1")
    assert finding.evidence == {"weak_ciphers": ["TLS_RSA_WITH_RC4_128_SHA"], "kind": "tls"}
    assert "TLS_RSA_WITH_RC4_128_SHA" in finding.summary


BASE = {
    "name": "r",
    "clause": "6.4",
    "severity": "low",
    "kinds": ["tls"],
    "summary": "s",
    "incident": "compliance",
}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({**BASE, "when": []}, "probes.toml: rule r: when: expected at least one condition"),
        ({**BASE, "severity": "urgent", "when": [{"field": "x", "op": "nonempty"}]}, "severity"),
        ({**BASE, "when": [{"field": "x", "op": "~="}]}, "op '~=' is not one of"),
        ({**BASE, "when": [{"field": "x", "op": "<"}]}, "needs a 'value'"),
        ({**BASE, "colour": "red", "when": [{"field": "x", "op": "nonempty"}]}, "unknown key"),
        ({**BASE, "kinds": "tls", "when": [{"field": "x", "op": "nonempty"}]}, "kinds"),
        # Each loaded, then the rule never ran, or evaluate() failed with a ValueError.
        (
            {**BASE, "kinds": ["tsl"], "when": [{"field": "x", "op": "nonempty"}]},
            "rule r: kinds: 'tsl' is not a probe kind, expected one of",
        ),
        (
            {**BASE, "summary": "{target 未响应", "when": [{"field": "x", "op": "nonempty"}]},
            "rule r: summary '{target 未响应': expected text with {name} placeholders",
        ),
        (
            {**BASE, "summary": "{target!z}", "when": [{"field": "x", "op": "nonempty"}]},
            "rule r: summary '{target!z}': expected text with {name} placeholders",
        ),
    ],
)
def test_invalid_rules_say_what_is_wrong(rule: dict[str, Any], message: str) -> None:
    """A broken rule table fails loading, naming the rule and the key."""
    with pytest.raises(RuleError, match=message):
        parse_rules({"rule": [rule]})


def test_adding_a_rule_is_adding_data() -> None:
    """A new rule in TOML form works with no code."""
    rules = parse_rules(
        {
            "rule": [
                {
                    **BASE,
                    "name": "short_hsts",
                    "when": [{"field": "hsts.max_age", "op": "<", "value": 15552000}],
                    "summary": "HSTS max-age of {target} is only {hsts.max_age} s",
                }
            ]
        }
    )
    (finding,) = evaluate(_result("tls", {"hsts": {"present": True, "max_age": 600}}), rules)
    assert finding.rule == "short_hsts" and finding.summary.endswith("only 600 s")


def test_a_certificate_expiry_is_shown_in_whole_days_and_a_local_date() -> None:
    # 03:00 UTC on 2026-12-09 is 11:00 the same day in Suzhou; 16:30 UTC is already the 10th.
    facts = {"days_to_expiry": 5.93, "cert_not_after": "2026-12-09T16:30:00+00:00"}
    (finding,) = [f for f in evaluate(_result("tls", facts)) if f.rule == "cert_expiring_7d"]
    assert finding.summary.endswith("的证书将在 5 天后过期（2026-12-10）")
    # Seven hours left read "将在 0 天后过期".
    last_day = {"days_to_expiry": 0.29, "cert_not_after": "2026-12-09T16:30:00+00:00"}
    (soon,) = [f for f in evaluate(_result("tls", last_day)) if f.rule == "cert_expiring_7d"]
    assert soon.summary.endswith("的证书将在 24 小时内过期（2026-12-10）")
    expired = {"days_to_expiry": -0.4, "cert_not_after": "2026-12-03T20:00:00+00:00"}
    (gone,) = [f for f in evaluate(_result("tls", expired)) if f.rule == "cert_expired"]
    assert gone.summary.endswith("的证书已于 2026-12-04 过期")


@pytest.mark.parametrize(
    ("verified", "code", "trusted", "problem"),
    [
        (True, None, True, None),
        (False, None, None, None),  # reset or no common protocol: nothing learnt
        (False, 10, True, "expired"),
        (False, 9, True, "not_yet_valid"),
        (False, 62, True, "hostname_mismatch"),
        (False, 64, True, "hostname_mismatch"),  # an IP-address target's mismatch
        (False, 66, True, "weak_key"),
        (False, 67, True, "weak_key"),
        (False, 68, True, "weak_signature"),
        (False, 20, False, "untrusted"),  # unable to get local issuer certificate
        (False, 18, False, "untrusted"),  # self-signed
        (False, 7, False, "untrusted"),  # certificate signature failure
    ],
)
def test_a_verify_code_says_whether_the_chain_is_trusted_and_what_else_is_wrong(
    verified: bool, code: int | None, trusted: bool | None, problem: str | None
) -> None:
    # Every refusal counted as an untrusted chain: an expired certificate from a trusted CA
    # read 证书链不受信任 and opened an insecure_transport security incident.
    assert tlsinfo.trust_verdict(verified, code) == {
        "chain_trusted": trusted,
        "cert_problem": problem,
    }


@pytest.mark.parametrize(
    ("facts", "rule", "summary"),
    [
        (
            {"cert_not_before": "2025-01-02T20:00:00+00:00", "chain_trusted": True},
            "cert_not_yet_valid",
            "的证书尚未生效（生效日期 2025-01-03）",
        ),
        (
            {"cert_problem": "weak_key", "key_type": "RSA", "key_bits": 1024},
            "cert_weak_key",
            "的证书链中有密钥过短，客户端拒绝连接（证书密钥 RSA 1024 位）",
        ),
        (
            {"cert_problem": "weak_signature", "signature_algorithm": "sha1WithRSAEncryption"},
            "cert_weak_signature",
            "的证书链使用过弱的签名算法，客户端拒绝连接（证书签名算法 sha1WithRSAEncryption）",
        ),
    ],
)
def test_a_certificate_refused_on_a_trusted_chain_is_named_for_its_reason(
    facts: dict[str, Any], rule: str, summary: str
) -> None:
    findings = evaluate(_result("tls", facts))
    assert [f.rule for f in findings] == [rule]
    assert findings[0].summary.endswith(summary)
    started = {"cert_not_before": "2024-12-31T00:00:00+00:00"}
    assert not evaluate(_result("tls", started))  # valid since before the probe: no finding


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "未返回 Strict-Transport-Security 头"),
        ("max-age=0", "max-age=0，即关闭 HSTS"),
        ("includeSubDomains", "头中没有有效的 max-age，浏览器忽略该头"),
    ],
)
def test_hsts_switched_off_or_ignored_is_no_hsts_and_says_which(
    header: str | None, reason: str
) -> None:
    # max-age=0 and a header without max-age gave no finding: only the header's absence did.
    facts = {"hsts": tlsinfo.parse_hsts(header)}
    (finding,) = evaluate(_result("tls", facts))
    assert finding.rule == "no_hsts"
    assert finding.summary == f"https://svc.example/ 未启用 HSTS（{reason}）"
    assert not evaluate(_result("tls", {"hsts": tlsinfo.parse_hsts("max-age=600")}))


def test_an_upper_case_http_scheme_is_plain_http_and_a_password_in_the_url_is_masked() -> None:
    # "HTTP://" passed for HTTPS: no plain-HTTP finding, no security incident, no 7.3.3 clock;
    # and the summaries carried the URL's password and token to the chat groups.
    url = "HTTP://admin:S3cretPass@svc.example/entry?access_token=abcdef1234567890abcd"
    result = replace(_result("availability", {}), target=url)
    (finding,) = [f for f in evaluate(result) if f.rule == "plain_http"]
    assert "S3cretPass" not in finding.summary and "abcdef1234567890abcd" not in finding.summary
    assert finding.summary.startswith("http://admin:***@svc.example/entry?access_token=***")
    assert finding.evidence == {"scheme": "http", "kind": "availability"}
    ad_hoc = replace(result, service_id=None)
    assert {f.subject for f in evaluate(ad_hoc)} == {mask_url(url)}
    assert not [f for f in evaluate(_result("availability", {})) if f.rule == "plain_http"]


def test_the_trust_store_is_built_once_per_bundle_and_again_when_the_bundle_changes(
    tmp_path: Any,
) -> None:
    """Each round asks for the trust store (24 ms to build from the system's CAs): it is kept,
    but a government CA bundle replaced in place is read again."""
    import os

    import trustme

    bundle = tmp_path / "gov-ca.pem"
    first_ca, second_ca = trustme.CA(), trustme.CA()
    first_ca.cert_pem.write_to_path(str(bundle))
    context = tlsinfo.trust_context(str(bundle))
    assert tlsinfo.trust_context(str(bundle)) is context

    def subjects(ctx: Any) -> set[str]:
        return {str(cert["subject"]) for cert in ctx.get_ca_certs()}

    second_ca.cert_pem.write_to_path(str(bundle))
    stat = bundle.stat()
    os.utime(bundle, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    renewed = tlsinfo.trust_context(str(bundle))
    assert renewed is not context
    assert subjects(renewed) - subjects(context)  # the new CA is trusted


def test_a_probe_error_reads_in_chinese_in_the_findings_people_are_alerted_with() -> None:
    # 服务不可用：status 503 not in the expected statuses, in every alert and the report.
    failed = replace(
        _result("availability", {"refused": False}, success=False),
        error="status 503 not in the expected statuses; keyword '在线办理' not found in the page",
    )
    (finding,) = [f for f in evaluate(failed) if f.rule == "service_down"]
    assert finding.summary.endswith(
        "未按预期响应：返回状态码 503，不在预期范围内；页面中未找到关键字 '在线办理'"
    )
    assert probe_error_text("timed out after 5 s") == "5 秒内无响应（超时）"
    assert probe_error_text("business code '9999' is not documented") == (
        "业务返回码 '9999' 未在备案中列明"
    )
    assert probe_error_text("desktop: body is not JSON (text/html); phone: status 503") == (
        "桌面浏览器：响应不是 JSON（text/html）；手机浏览器：状态码 503"
    )
    assert probe_error_text("KeyError: boom") == (
        "探测失败（未归类的错误，原文见探测结果的 error 字段）"
    )


@pytest.mark.parametrize(
    ("error", "said"),
    [
        ("more than 5 redirects", "重定向超过 5 次"),
        ("server disconnected before the headers ended", "服务器在响应头结束前断开连接"),
        (
            "bad response: chunk size 'zz' is not a hexadecimal number",
            "响应格式错误：分块长度 'zz' 不是十六进制数",
        ),
        ("no business code: no field 'code'", "没有业务返回码：响应中没有字段 'code'"),
        (
            "no business code: body is not JSON (application/json)",
            "没有业务返回码：响应不是 JSON（application/json）",
        ),
        (
            "refused: 169.254.169.254 resolves to 169.254.169.254, "
            "inside denied network 169.254.0.0/16",
            "169.254.169.254 解析到 169.254.169.254，位于禁止探测的网段 169.254.0.0/16 内",
        ),
        (
            "refused: meta.example resolves to 64:ff9b::a9fe:a9fe (which carries "
            "169.254.169.254), inside denied network 169.254.0.0/16",
            "meta.example 解析到 64:ff9b::a9fe:a9fe（即 169.254.169.254），"
            "位于禁止探测的网段 169.254.0.0/16 内",
        ),
        ("connection failed: Connect call failed ('127.0.0.1', 1)", "无法建立连接：对方未接受连接"),
        ("gaierror: [Errno -2] Name or service not known", "域名无法解析"),
        ("certificate verify failed: certificate has expired", "证书校验失败：证书已过期"),
        (
            "certificate verify failed: Hostname mismatch, certificate is not valid for 'a.cn'.",
            "证书校验失败：证书与域名 a.cn 不匹配",
        ),
        (
            "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
            "TLS 握手失败：OpenSSL 错误 WRONG_VERSION_NUMBER",
        ),
        # A system's own words no pattern knows stay inside a known frame.
        ("connection failed: Too many open files", "无法建立连接：Too many open files"),
    ],
)
def test_every_known_probe_error_reads_in_chinese(error: str, said: str) -> None:
    # "未按预期响应：more than 5 redirects" and "没有业务返回码：no field 'code'" reached people.
    assert probe_error_text(error) == said


@pytest.mark.parametrize(
    ("error", "said"),
    [
        (
            "phone: connection failed: Connect call failed ('127.0.0.1', 1)",
            "手机浏览器：无法建立连接：对方未接受连接",
        ),
        (
            "wechat: status 403; wechat: status class 4xx (desktop got 2xx); alipay: "
            "certificate verify failed: IP address mismatch, certificate is not valid for "
            "'127.0.0.1'.",
            "微信：状态码 403、状态码类别 4xx，桌面端为 2xx；"
            "支付宝：证书校验失败：证书与 IP 地址 127.0.0.1 不匹配",
        ),
        # As results stored before each problem stood on its own say a client's problems.
        (
            "wechat: status 403, status class 4xx (desktop got 2xx)",
            "微信：状态码 403、状态码类别 4xx，桌面端为 2xx",
        ),
    ],
)
def test_a_clients_problem_holding_a_comma_reads_in_chinese(error: str, said: str) -> None:
    # A problem holding ", " was cut there, and half of it read "探测失败（未归类的错误…）".
    assert probe_error_text(error) == said


def test_a_refused_target_finding_says_why_in_chinese() -> None:
    refused = replace(
        _result("availability", {"refused": True}, success=False),
        error="refused: meta.example resolves to 169.254.169.254, inside denied network "
        "169.254.0.0/16",
    )
    (finding,) = evaluate(refused)
    assert finding.summary == (
        "https://svc.example/ 未被探测（地址在禁止探测的网段内）："
        "meta.example 解析到 169.254.169.254，位于禁止探测的网段 169.254.0.0/16 内"
    )
