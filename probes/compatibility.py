"""The compatibility probe: the same page as a desktop browser, a phone, WeChat and Alipay see it.

Clause 6.4 asks for compatibility monitoring across the clients people actually use; for a
legal-person portal in China those include the WeChat and Alipay in-app browsers, which some
servers and WAFs treat differently. Each client must get the same status class as the desktop
browser, a declared content type (and a charset for text), and, for a JSON API, JSON that parses.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from monitord.textable import load_json
from monitord.types import ProbeContext, ProbeResult, Target
from probes.http import PROBE_ERRORS, HttpSpec, error_text, fetch, probe_url, result

KIND = "compatibility"

# Real user-agent strings as these clients sent them in 2024.
CLIENTS: dict[str, str] = {
    "desktop": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36"
    ),
    "phone": (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
    ),
    "wechat": (
        "Mozilla/5.0 (Linux; Android 13; V2148A Build/TP1A.220624.014; wv) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Version/4.0 Chrome/116.0.0.0 Mobile Safari/537.36 XWEB/1160065 "
        "MMWEBSDK/20231202 MMWEBID/2247 MicroMessenger/8.0.47.2560(0x28002F35) WeChat/arm64 "
        "Weixin NetType/WIFI Language/zh_CN ABI/arm64"
    ),
    "alipay": (
        "Mozilla/5.0 (Linux; U; Android 13; zh-CN; PGEM10 Build/TP1A.220905.001) "
        "AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 "
        "UWS/3.22.2.59 Mobile Safari/537.36 UCBS/3.22.2.59_230817200129 ChannelId(1) "
        "NebulaSDK/1.8.100112 Nebula AlipayDefined(nt:WIFI,ws:393|0|2.75,ac:sp) "
        "AliApp(AP/10.5.36.8100) AlipayClient/10.5.36.8100 Language/zh-Hans"
    ),
}
REFERENCE_CLIENT = "desktop"


@dataclass(frozen=True)
class CompatibilitySpec(HttpSpec):
    """Which clients to impersonate, and whether the target is a JSON API."""

    clients: tuple[str, ...] = tuple(CLIENTS)
    expect_json: bool = False
    """A JSON API (its probe reads a business code, `expect_codes`): every client must get JSON."""


def _is_json_type(content_type: str | None) -> bool:
    return bool(content_type) and (
        content_type == "application/json" or str(content_type).endswith("+json")
    )


def _status_expected(status: int, spec: CompatibilitySpec) -> bool:
    """Whether a status is what a working service answers: one the filing lists
    (`expect_status`, the result for every kind), else any below 400."""
    if spec.expect_status:
        return status in spec.expect_status
    return status < 400


def _not_served(facts: dict[str, Any], spec: CompatibilitySpec) -> bool:
    """Whether a client went without the page: no answer, or a status a working service does
    not give."""
    return "status" not in facts or not _status_expected(facts["status"], spec)


def _has_page(status: int) -> bool:
    """Whether an answer carries a page for the client: not a 204 or 304, nor a redirect (one
    reaching here is a filed status, the answer itself)."""
    return status not in (204, 304) and not 300 <= status < 400


async def _one(
    ctx: ProbeContext, spec: CompatibilitySpec, target: Target, client: str
) -> dict[str, Any]:
    """What one client got: status, content type, charset, JSON verdict, TLS version and
    problems."""
    try:
        # Each client has its own timeout, counted once it has its connection slot: one the
        # server stalls (a WAF tarpitting WeChat) is that client's failure, and the others
        # keep what they got.
        async with ctx.connection(), asyncio.timeout(spec.timeout_s):
            fetched = await fetch(
                ctx, spec, probe_url(target, spec), extra_headers={"User-Agent": CLIENTS[client]}
            )
    except PROBE_ERRORS as exc:
        # A denied address is that client's problem too: a server sending phones on to the
        # cloud metadata address is incompatible with phones, and the desktop keeps its page.
        said = error_text(exc, spec.timeout_s)
        return {"error": said, "problems": [said]}
    content_type = fetched.content_type
    facts: dict[str, Any] = {
        "status": fetched.status,
        "status_class": f"{fetched.status // 100}xx",
        "content_type": content_type,
        "charset": fetched.charset,
        "tls_version": fetched.capture.version,
        "total_ms": fetched.phases["total_ms"],
        "json_ok": None,
        "body_truncated": False,
        "problems": [],
    }
    problems: list[str] = facts["problems"]
    if not _status_expected(fetched.status, spec):
        problems.append(f"status {fetched.status}")
    if not _has_page(fetched.status):
        return facts  # nothing a client renders: no content type, charset or JSON to judge
    if content_type is None:
        problems.append("no content type declared")
    elif content_type.startswith("text/") and not fetched.charset:
        # JSON is UTF-8 by definition (RFC 8259); text must say its charset, or GBK pages break.
        problems.append("no charset declared")
    if fetched.truncated:
        # Only the first max_body_bytes were read: whether the whole parses is not known.
        facts["body_truncated"] = True
    elif spec.expect_json or _is_json_type(content_type):
        try:
            load_json(fetched.body, constants=False)
            facts["json_ok"] = _is_json_type(content_type)
            if not facts["json_ok"]:
                problems.append(f"JSON served as {content_type}")
        except ValueError:
            facts["json_ok"] = False
            problems.append(f"body is not JSON ({content_type})")
    return facts


async def probe(target: Target, spec: CompatibilitySpec, ctx: ProbeContext) -> ProbeResult:
    """Fetch the page once per client, as many at once as the service's connection slots
    allow, and compare what each one got.

    Success means no client has a problem: each gets a status the filing expects (any below
    400 when it lists none) and the desktop browser's status class, and, for an answer with a
    page (not a 204, 304 or filed redirect), a declared content type (and charset for text),
    and JSON that parses when JSON is expected.
    A client with no answer within `spec.timeout_s` has that as its problem
    ("timed out after 5 s"), as has one sent on to an address in the denied networks. When no
    client gets the page (an outage, availability's to report), the result fails with no
    client named incompatible.
    """
    started_at = ctx.clock()
    start = time.perf_counter()
    clients = [c for c in spec.clients if c in CLIENTS]
    answers = await asyncio.gather(*(_one(ctx, spec, target, c) for c in clients))
    per_client = dict(zip(clients, answers, strict=True))
    desktop = per_client.get(REFERENCE_CLIENT, {})
    # A desktop that failed is no reference: the clients that worked are not to blame for it.
    reference = None if desktop.get("problems") else desktop.get("status_class")
    for facts in per_client.values():
        status_class = facts.get("status_class")
        if reference and status_class and status_class != reference:
            facts["problems"].append(f"status class {status_class} (desktop got {reference})")
    incompatible = [name for name, facts in per_client.items() if facts["problems"]]
    if per_client and all(_not_served(facts, spec) for facts in per_client.values()):
        # No client got the page: an outage, which is availability's to report, not a
        # difference between clients. The result fails, naming what they got, without blame.
        said = dict.fromkeys(p for facts in per_client.values() for p in facts["problems"])
        return result(
            KIND,
            target,
            started_at,
            start,
            success=False,
            facts={"clients": per_client, "incompatible_clients": []},
            error="; ".join(said),
        )
    return result(
        KIND,
        target,
        started_at,
        start,
        success=not incompatible,
        facts={"clients": per_client, "incompatible_clients": incompatible},
        # One part per problem: a problem may hold ", " itself (an address refused), and
        # monitord.names says a client's parts in Chinese together.
        error="; ".join(f"{n}: {p}" for n in incompatible for p in per_client[n]["problems"])
        or None,
    )
