"""Availability, compatibility and contract probes against real aiohttp servers on loopback."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from aiohttp import web

import probes
from monitord.types import ProbeContext, ProbeResult, Target
from probes import availability, compatibility, contract, http
from rules.probe_rules import evaluate
from tests.probes.helpers import Serve

SLOW_S = 0.3


async def page(_request: web.Request) -> web.Response:
    """An HTML page with a keyword."""
    return web.Response(
        text="<html>苏州 企业服务</html>", content_type="text/html", charset="utf-8"
    )


async def slow(_request: web.Request) -> web.Response:
    """A page that takes SLOW_S to answer (real time: the probe measures wall time)."""
    await asyncio.sleep(SLOW_S)
    return web.Response(text="late", content_type="text/plain", charset="utf-8")


async def hang(_request: web.Request) -> web.Response:
    """A page that does not answer within any probe's timeout, however loaded the machine."""
    await asyncio.sleep(30)
    return web.Response(text="never read")


async def api_ok(_request: web.Request) -> web.Response:
    """A JSON API answering a documented success code."""
    return web.json_response({"code": "0", "data": {"state": "ok"}})


async def api_undocumented(_request: web.Request) -> web.Response:
    """A JSON API answering a business code the filing does not list."""
    return web.json_response({"code": 9999, "msg": "系统繁忙"})


async def api_html(_request: web.Request) -> web.Response:
    """An API answering an HTML error page, as a misconfigured gateway does."""
    return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")


async def no_wechat(request: web.Request) -> web.Response:
    """A WAF that blocks the WeChat in-app browser."""
    if "MicroMessenger" in request.headers.get("User-Agent", ""):
        return web.Response(status=403, text="forbidden", content_type="text/plain")
    return await page(request)


async def tarpit_wechat(request: web.Request) -> web.Response:
    """A WAF that holds the WeChat in-app browser's connection open without ever answering."""
    if "MicroMessenger" in request.headers.get("User-Agent", ""):
        await asyncio.sleep(30)
    return await page(request)


async def redirect_a(_request: web.Request) -> web.Response:
    """The first of two redirects."""
    raise web.HTTPFound("/b")


async def redirect_b(_request: web.Request) -> web.Response:
    """The second redirect."""
    raise web.HTTPMovedPermanently("/page")


def app(**routes: Any) -> web.Application:
    """An aiohttp app with GET routes from keyword arguments (`page=handler` → /page)."""
    application = web.Application()
    for name, handler in routes.items():
        application.router.add_get(f"/{name}", handler)
    return application


ROUTES = {
    "page": page,
    "slow": slow,
    "hang": hang,
    "api": api_ok,
    "bad": api_undocumented,
    "html": api_html,
    "nowechat": no_wechat,
    "tarpit": tarpit_wechat,
    "a": redirect_a,
    "b": redirect_b,
}

CATALOGUE_API = {"path": "/api", "expect_codes": {"field": "code", "ok": ["0"]}}
RETURN_CODES = {"0": "成功", "1001": "令牌无效"}

# (name, kind, path, catalogue probe object, spec overrides, success, facts subset, findings)
Case = tuple[str, str, str, dict[str, Any], dict[str, Any], bool, dict[str, Any], set[str]]
CASES: list[Case] = [
    ("healthy", "availability", "/page", {"keyword": "企业服务"}, {}, True,
     {"status": 200, "keyword_found": True, "redirects": []}, {"plain_http"}),
    ("keyword missing", "availability", "/page", {"keyword": "维护中"}, {}, False,
     {"status": 200, "keyword_found": False}, {"service_down", "plain_http"}),
    ("unexpected status", "availability", "/missing", {"expect_status": [200]}, {}, False,
     {"status": 404}, {"service_down", "plain_http"}),
    ("slow", "availability", "/slow", {}, {"slo_ms": 100.0}, True,
     {"status": 200, "slo_ms": 100.0}, {"service_slow", "plain_http"}),
    ("redirects followed", "availability", "/a", {}, {}, True,
     {"status": 200, "redirects": [
         {"url": "/a", "status": 302, "location": "/b"},
         {"url": "/b", "status": 301, "location": "/page"},
     ]}, {"plain_http"}),
    ("too many redirects", "availability", "/a", {}, {"max_redirects": 1}, False,
     {}, {"service_down", "plain_http"}),
    ("a filed redirect status is the answer", "availability", "/a", {"expect_status": [302]},
     {}, True, {"status": 302, "redirects": []}, {"plain_http"}),
    ("a filed redirect status is the answer (contract)", "contract", "/a",
     {"path": "/a", "expect_status": [302]}, {}, True,
     {"http_status": 302, "http_status_documented": True}, set()),
    ("documented code", "contract", "/api", CATALOGUE_API, {}, True,
     {"http_status": 200, "business_code": "0", "business_code_documented": True,
      "business_code_meaning": "成功"}, set()),
    ("undocumented business code", "contract", "/bad", {**CATALOGUE_API, "path": "/bad"}, {},
     False, {"business_code": "9999", "business_code_documented": False},
     {"undocumented_return_code"}),
    ("HTML to an API probe (contract)", "contract", "/html", {**CATALOGUE_API, "path": "/html"},
     {}, False, {"business_code": None, "business_code_documented": False,
                 "body_error": "body is not JSON (text/html)"}, {"undocumented_return_code"}),
    ("undocumented HTTP status", "contract", "/missing", {"path": "/missing"}, {}, False,
     {"http_status": 404, "http_status_documented": False}, {"undocumented_return_code"}),
    ("HTML to an API probe (compatibility)", "compatibility", "/html",
     {**CATALOGUE_API, "path": "/html"}, {}, False,
     {"incompatible_clients": ["desktop", "phone", "wechat", "alipay"]}, {"incompatible_client"}),
    ("JSON API compatible", "compatibility", "/api", CATALOGUE_API, {}, True,
     {"incompatible_clients": []}, set()),
    ("WeChat blocked", "compatibility", "/nowechat", {"path": "/nowechat"}, {}, False,
     {"incompatible_clients": ["wechat"]}, {"incompatible_client"}),
    ("desktop only", "compatibility", "/nowechat", {"path": "/nowechat", "mobile": False}, {},
     True, {"incompatible_clients": []}, set()),
]  # fmt: skip


def pick(expected: dict[str, Any], facts: dict[str, Any], base: str) -> dict[str, Any]:
    """The facts `expected` names; redirect URLs are made relative to the server for comparing."""
    out = {k: facts.get(k) for k in expected}
    if "redirects" in out and isinstance(out["redirects"], list):
        out["redirects"] = [{**r, "url": r["url"].removeprefix(base)} for r in out["redirects"]]
    return out


@pytest.mark.parametrize(
    ("kind", "path", "probe", "overrides", "success", "facts", "findings"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
async def test_http_cases(
    kind: str,
    path: str,
    probe: dict[str, Any],
    overrides: dict[str, Any],
    success: bool,
    facts: dict[str, Any],
    findings: set[str],
    serve: Serve,
    ctx: ProbeContext,
) -> None:
    """Each server behaviour gives the facts and findings it should."""
    port = await serve(app(**ROUTES), None)
    base = f"http://127.0.0.1:{port}"
    # Only the API cases document business codes; a filing with codes marks a JSON API.
    codes = RETURN_CODES if "expect_codes" in probe else None
    spec = probes.spec_for(
        kind, {"path": path, **probe}, return_codes=codes, timeout_s=5, **overrides
    )
    result = await probes.PROBES[kind].probe(Target(base + "/", service_id="svc"), spec, ctx)
    assert result.success is success, result.error
    assert result.kind == kind and result.service_id == "svc"
    assert pick(facts, result.facts, base) == facts
    assert {f.rule for f in evaluate(result)} == findings


async def test_slow_service_timing(serve: Serve, ctx: ProbeContext) -> None:
    """The server's think time shows up as first-byte time, not as connect or DNS time."""
    port = await serve(app(**ROUTES), None)
    result = await availability.probe(
        Target(f"http://127.0.0.1:{port}/slow"), availability.AvailabilitySpec(slo_ms=100), ctx
    )
    assert result.facts["first_byte_ms"] >= SLOW_S * 1000 * 0.9
    assert result.facts["connect_ms"] < SLOW_S * 1000 / 2
    assert result.facts["total_ms"] >= result.facts["first_byte_ms"]
    (finding,) = [f for f in evaluate(result) if f.rule == "service_slow"]
    assert finding.evidence["slo_ms"] == 100 and finding.clause == "6.4 b"


async def test_a_client_blocked_is_named_in_chinese_in_the_finding(
    serve: Serve, ctx: ProbeContext
) -> None:
    """The on-call engineer reads which client a service turns away, and why, in Chinese."""
    port = await serve(app(**ROUTES), None)
    spec = probes.spec_for("compatibility", {"path": "/nowechat"}, timeout_s=5)
    result = await probes.PROBES["compatibility"].probe(
        Target(f"http://127.0.0.1:{port}/"), spec, ctx
    )
    (finding,) = evaluate(result)
    assert finding.summary == (
        f"http://127.0.0.1:{port}/ 在部分客户端中不可用："
        "微信：状态码 403、状态码类别 4xx，桌面端为 2xx"
    )


async def test_a_client_left_hanging_is_that_clients_failure(
    serve: Serve, ctx: ProbeContext
) -> None:
    """A server that never answers WeChat: WeChat is the incompatible client, no answer within
    the timeout its problem, and the three clients that got the page keep what they got."""
    port = await serve(app(**ROUTES), None)
    spec = probes.spec_for("compatibility", {"path": "/tarpit"}, timeout_s=SLOW_S)
    result = await probes.PROBES["compatibility"].probe(
        Target(f"http://127.0.0.1:{port}/"), spec, ctx
    )
    assert result.facts["incompatible_clients"] == ["wechat"]
    clients = result.facts["clients"]
    assert clients["wechat"]["problems"] == [f"timed out after {SLOW_S:g} s"]
    assert all(clients[c]["status"] == 200 for c in ("desktop", "phone", "alipay"))
    (finding,) = evaluate(result)
    assert finding.summary == (
        f"http://127.0.0.1:{port}/ 在部分客户端中不可用：微信：{SLOW_S:g} 秒内无响应（超时）"
    )


async def test_timeout_is_a_failure_not_an_exception(serve: Serve, ctx: ProbeContext) -> None:
    """A service slower than the probe's timeout is down, with the reason said."""
    port = await serve(app(**ROUTES), None)
    # /hang, not /slow: a garbage collection or a busy machine can stall the event loop long
    # enough for a page answering in SLOW_S to arrive before the timeout is seen.
    result = await availability.probe(
        Target(f"http://127.0.0.1:{port}/hang"),
        availability.AvailabilitySpec(timeout_s=SLOW_S / 3),
        ctx,
    )
    assert not result.success and result.error == f"timed out after {SLOW_S / 3:g} s"
    assert {f.rule for f in evaluate(result)} == {"service_down", "plain_http"}


async def _resetting_server() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        sock = writer.get_extra_info("socket")
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("kind", ["availability", "contract", "compatibility"])
async def test_connection_reset(kind: str, ctx: ProbeContext) -> None:
    """A server that resets the connection gives a failed result, never an exception."""
    server, port = await _resetting_server()
    async with server:
        spec = probes.spec_for(kind, {}, timeout_s=5)
        result = await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert not result.success
    assert result.error
    if kind == "availability":
        assert result.error in (
            "connection reset by peer",
            "server disconnected without a response",
        )
        assert "service_down" in {f.rule for f in evaluate(result)}
    if kind == "compatibility":
        # Every client failing alike is an outage, availability's to report: no client is
        # named incompatible (it opened a degraded incident on top of the outage's).
        assert result.facts["incompatible_clients"] == []
        assert all(c["problems"] for c in result.facts["clients"].values())
        assert evaluate(result) == []


async def test_connection_refused(ctx: ProbeContext) -> None:
    """Nothing listening: a failed result that says the connection failed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await availability.probe(
        Target(f"http://127.0.0.1:{port}/"), availability.AvailabilitySpec(), ctx
    )
    assert not result.success and (result.error or "").startswith("connection failed")


def _by_kind(results: list[ProbeResult]) -> dict[str, ProbeResult]:
    return {r.kind: r for r in results}


async def test_denied_network_target_is_refused_without_connecting(
    serve: Serve, ctx: ProbeContext
) -> None:
    """A target in a denied network: every kind refuses it and the server sees no request."""
    hits: list[str] = []

    async def counted(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    port = await serve(app(page=counted), None)
    results = []
    for kind, registered in probes.PROBES.items():
        spec = probes.spec_for(kind, {"path": "/page"}, denied_networks=["127.0.0.0/8"])
        results.append(await registered.probe(Target(f"https://localhost:{port}/"), spec, ctx))
    assert hits == []
    for result in results:
        assert not result.success
        assert "inside denied network 127.0.0.0/8" in (result.error or ""), result.kind
    avail = _by_kind(results)["availability"]
    assert avail.facts["refused"] is True
    assert {f.rule for f in evaluate(avail)} == {"refused_target"}


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/", "http://[fe80::1]/"],
)
async def test_metadata_addresses_denied_by_default(url: str, ctx: ProbeContext) -> None:
    """The cloud metadata and link-local addresses are refused with the default deny list."""
    result = await availability.probe(Target(url), availability.AvailabilitySpec(), ctx)
    assert not result.success and "denied network" in (result.error or "")
    assert result.duration_ms < 1000


async def test_compatibility_reports_each_client(serve: Serve, ctx: ProbeContext) -> None:
    """Per-client facts: status class, content type and charset of what each one got."""
    port = await serve(app(**ROUTES), None)
    result = await compatibility.probe(
        Target(f"http://127.0.0.1:{port}/page"), compatibility.CompatibilitySpec(), ctx
    )
    assert set(result.facts["clients"]) == set(compatibility.CLIENTS)
    for facts in result.facts["clients"].values():
        assert facts["status_class"] == "2xx"
        assert facts["content_type"] == "text/html" and facts["charset"] == "utf-8"
        # It was always "http/1.1", whatever the server spoke: not measured, so not claimed.
        assert "http_version" not in facts


async def test_contract_dotted_code_field(serve: Serve, ctx: ProbeContext) -> None:
    """A business code nested in the body is found by its dotted path."""
    port = await serve(app(**ROUTES), None)
    spec = contract.ContractSpec(code_field="data.state", ok_codes=("ok",))
    result = await contract.probe(Target(f"http://127.0.0.1:{port}/api"), spec, ctx)
    assert result.success and result.facts["business_code"] == "ok"


@pytest.mark.parametrize(
    ("body", "filed_ok", "code", "documented", "error"),
    [
        # A filing's [1] and a service's 1.0 are one JSON number.
        ({"data": {"code": 1.0}}, [1], "1", True, None),
        # A filing's [true] and a service's true are one JSON literal (it read "True" vs "true").
        ({"data": {"code": True}}, [True], "true", True, None),
        ({"data": {"code": 0}}, ["0"], "0", True, None),
        # null is no code at all, not the undocumented code 'None'.
        ({"data": {"code": None}}, [0], None, False, "no business code: field 'data.code' is null"),
    ],
)
async def test_business_codes_are_compared_as_json_spells_them(
    body: Any,
    filed_ok: list[Any],
    code: str | None,
    documented: bool,
    error: str | None,
    serve: Serve,
    ctx: ProbeContext,
) -> None:
    async def api(_request: web.Request) -> web.Response:
        return web.json_response(body)

    port = await serve(app(api=api), None)
    spec = probes.spec_for(
        "contract", {"path": "/api", "expect_codes": {"field": "data.code", "ok": filed_ok}}
    )
    result = await contract.probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert result.facts["business_code"] == code
    assert result.facts["business_code_documented"] is documented
    assert result.error == error
    said = {f.summary for f in evaluate(result)}
    assert said == (
        set()
        if documented
        else {
            f"http://127.0.0.1:{port}/ 返回了备案未列明的返回码："
            "没有业务返回码：响应中字段 'data.code' 为 null"
        }
    )


@pytest.mark.parametrize("path", ["http://127.0.0.1:{live}/page", "//127.0.0.1:{live}/page"])
async def test_a_probe_path_naming_another_host_does_not_probe_that_host(
    path: str, serve: Serve, ctx: ProbeContext
) -> None:
    """A filing whose `probe.path` names a live host of its own must not make a dead service
    read up: every kind probes the filed URL, and the other host sees no request."""
    hits: list[str] = []

    async def counted(request: web.Request) -> web.Response:
        hits.append(request.path)
        return await page(request)

    live = await serve(app(page=counted), None)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    for kind, registered in probes.PROBES.items():
        spec = probes.spec_for(kind, {"path": path.format(live=live)}, timeout_s=5)
        result = await registered.probe(Target(f"http://127.0.0.1:{dead}/app/"), spec, ctx)
        assert not result.success, kind
    assert hits == []


async def _split_json_server() -> tuple[asyncio.Server, int]:
    """A JSON API whose body arrives in two TCP segments, the second a moment later."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"code": "0", "msg": "ok"}'
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10])
        )
        await writer.drain()
        # Real time, not a clock: the two writes must reach the probe as two reads.
        await asyncio.sleep(0.2)
        writer.write(body[10:])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("kind", ["contract", "compatibility"])
async def test_a_body_split_over_tcp_segments_is_read_whole(kind: str, ctx: ProbeContext) -> None:
    """Only the first segment was read: "body is not JSON", and a false finding."""
    server, port = await _split_json_server()
    async with server:
        spec = probes.spec_for(kind, CATALOGUE_API, return_codes=RETURN_CODES, timeout_s=5)
        result = await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert (result.success, result.error) == (True, None), result.facts
    assert evaluate(result) == []


async def phones_to_metadata(request: web.Request) -> web.Response:
    """A page that sends phones on to the cloud metadata address, and shows desktops the page."""
    user_agent = request.headers.get("User-Agent", "")
    if "Mobile" in user_agent or "iPhone" in user_agent:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
    return await page(request)


async def test_a_client_sent_to_a_denied_address_is_that_clients_problem(
    serve: Serve, ctx: ProbeContext
) -> None:
    """Phones redirected into a denied network: the phone clients are incompatible, refused
    their own problem, and the desktop keeps what it got (it was all thrown away, no finding)."""
    port = await serve(app(mobdeny=phones_to_metadata), None)
    spec = probes.spec_for("compatibility", {"path": "/mobdeny"}, timeout_s=5)
    result = await compatibility.probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    clients = result.facts["clients"]
    assert result.facts["incompatible_clients"] == ["phone", "wechat", "alipay"]
    assert clients["desktop"]["status"] == 200 and clients["desktop"]["problems"] == []
    for name in ("phone", "wechat", "alipay"):
        (problem,) = clients[name]["problems"]
        assert "inside denied network 169.254.0.0/16" in problem, name
    (finding,) = evaluate(result)
    refused = "169.254.169.254 解析到 169.254.169.254，位于禁止探测的网段 169.254.0.0/16 内"
    assert finding.summary == (
        f"http://127.0.0.1:{port}/ 在部分客户端中不可用：手机浏览器：{refused}；"
        f"微信：{refused}；支付宝：{refused}"
    )


@pytest.mark.parametrize(
    "body",
    [
        b'{"code":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"code": NaN}',
        b'{"code": -Infinity}',
    ],
    ids=["nested too deep", "NaN", "Infinity"],
)
@pytest.mark.parametrize("kind", ["contract", "compatibility"])
async def test_json_a_browser_cannot_read_is_not_json(
    kind: str, body: bytes, serve: Serve, ctx: ProbeContext
) -> None:
    """JSON nested too deep crashed both probes (RecursionError, no verdict), and NaN passed
    compatibility, though browsers' JSON.parse refuses it: each is an answer that is not JSON."""

    async def api(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    port = await serve(app(api=api), None)
    spec = probes.spec_for(kind, CATALOGUE_API, return_codes=RETURN_CODES, timeout_s=5)
    result = await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert not result.success
    if kind == "contract":
        assert result.error == "no business code: body is not JSON (application/json)"
    else:
        assert result.facts["incompatible_clients"] == list(compatibility.CLIENTS)
        for facts in result.facts["clients"].values():
            assert facts["problems"] == ["body is not JSON (application/json)"]


async def login_redirect(_request: web.Request) -> web.Response:
    """A login redirect with no body and no content type, as many gateways send it."""
    return web.Response(status=302, headers={"Location": "/page"})


async def no_content(_request: web.Request) -> web.Response:
    """A 204 No Content."""
    return web.Response(status=204)


async def unauthorised(_request: web.Request) -> web.Response:
    """An API that answers 401 with a JSON body to a caller without a token."""
    return web.json_response({"code": 401, "msg": "auth"}, status=401)


@pytest.mark.parametrize(("path", "status"), [("/login", 302), ("/nocontent", 204), ("/auth", 401)])
async def test_compatibility_takes_the_filed_status_and_a_bodiless_answer(
    path: str, status: int, serve: Serve, ctx: ProbeContext
) -> None:
    """A filed 401, 302 or 204 passed availability and contract, yet compatibility said
    "status 401" or "no content type declared" on every client: a listed status is the result
    for every kind, and an answer without a page needs no content type."""
    port = await serve(app(login=login_redirect, nocontent=no_content, auth=unauthorised), None)
    spec = probes.spec_for("compatibility", {"path": path, "expect_status": [status]})
    result = await compatibility.probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert (result.success, result.error) == (True, None)
    assert {c["status"] for c in result.facts["clients"].values()} == {status}
    assert evaluate(result) == []


async def desktop_blocked(request: web.Request) -> web.Response:
    """A WAF that answers 503 to Windows desktops and serves everyone else."""
    if "Windows NT" in request.headers.get("User-Agent", ""):
        return web.Response(status=503, text="busy", content_type="text/plain", charset="utf-8")
    return await page(request)


async def test_a_failing_desktop_is_the_one_client_named(serve: Serve, ctx: ProbeContext) -> None:
    """The desktop got 503 and the others the page: every working client was blamed ("status
    class 2xx (desktop got 5xx)"); only the desktop is incompatible."""
    port = await serve(app(deskblock=desktop_blocked), None)
    spec = probes.spec_for("compatibility", {"path": "/deskblock"}, timeout_s=5)
    result = await compatibility.probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert result.facts["incompatible_clients"] == ["desktop"]
    assert result.error == "desktop: status 503"


@pytest.mark.parametrize("kind", ["contract", "compatibility"])
async def test_a_json_body_over_the_limit_is_not_called_not_json(
    kind: str, serve: Serve, ctx: ProbeContext
) -> None:
    """A valid 2 MB JSON answer was "not JSON" (a 6.3.2 c finding, all four clients
    incompatible): only its first MiB is read, so its code is not judged, and it says so."""

    async def huge(_request: web.Request) -> web.Response:
        return web.json_response({"code": 0, "data": ["x" * 100] * 20_000})

    port = await serve(app(api=huge), None)
    spec = probes.spec_for(kind, CATALOGUE_API, return_codes=RETURN_CODES, timeout_s=5)
    result = await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert (result.success, result.error) == (True, None)
    assert evaluate(result) == []
    if kind == "contract":
        assert result.facts["business_code_documented"] is None
        assert result.facts["body_error"] == (
            "body over 1048576 bytes, cut at that limit: business code not read"
        )
    else:
        assert all(c["body_truncated"] for c in result.facts["clients"].values())


async def test_documented_return_codes_alone_do_not_make_a_page_an_api(
    serve: Serve, ctx: ProbeContext
) -> None:
    """A login page whose filing lists return_codes but reads no code: contract passed it, and
    compatibility failed every client ("body is not JSON (text/html)")."""
    port = await serve(app(**ROUTES), None)
    results = [
        await probes.PROBES[kind].probe(
            Target(f"http://127.0.0.1:{port}/"),
            probes.spec_for(kind, {"path": "/page"}, return_codes=RETURN_CODES, timeout_s=5),
            ctx,
        )
        for kind in ("contract", "compatibility")
    ]
    assert [(r.success, r.error) for r in results] == [(True, None), (True, None)]


@pytest.mark.parametrize("kind", ["contract", "compatibility"])
async def test_a_head_filing_with_business_codes_is_probed_with_get(
    kind: str, serve: Serve, ctx: ProbeContext
) -> None:
    """HEAD with expect_codes (a filing problem): both probes read no body and failed; they
    probe the default GET instead, and find the code."""
    port = await serve(app(**ROUTES), None)
    filing = {**CATALOGUE_API, "method": "HEAD"}
    spec = probes.spec_for(kind, filing, return_codes=RETURN_CODES, timeout_s=5)
    result = await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert (result.success, result.error) == (True, None)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"data": {"result": {"code": 1001}}}, "响应中字段 'data' 是对象，不是返回码"),
        ({"data": [1001]}, "响应中字段 'data' 是数组，不是返回码"),
    ],
)
async def test_a_code_field_holding_an_object_is_not_said_to_be_missing(
    body: Any, said: str, serve: Serve, ctx: ProbeContext
) -> None:
    """The field is there, an object: the finding said 响应中没有字段 'data'."""

    async def api(_request: web.Request) -> web.Response:
        return web.json_response(body)

    port = await serve(app(api=api), None)
    spec = probes.spec_for("contract", {"path": "/api", "expect_codes": {"field": "data"}})
    result = await contract.probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    (finding,) = evaluate(result)
    assert finding.summary == (
        f"http://127.0.0.1:{port}/ 返回了备案未列明的返回码：没有业务返回码：{said}"
    )


async def test_contract_identifies_as_monitord(serve: Serve, ctx: ProbeContext) -> None:
    """The contract probe sent aiohttp's User-Agent, not monitord's as availability does: a
    WAF allowing monitord answered it 403. Compatibility sends each client's own."""
    seen: list[str] = []

    async def api(request: web.Request) -> web.Response:
        seen.append(request.headers.get("User-Agent", ""))
        return await api_ok(request)

    port = await serve(app(api=api), None)
    for kind in ("availability", "contract", "compatibility"):
        spec = probes.spec_for(kind, CATALOGUE_API, return_codes=RETURN_CODES, timeout_s=5)
        await probes.PROBES[kind].probe(Target(f"http://127.0.0.1:{port}/"), spec, ctx)
    assert seen[:2] == [http.USER_AGENT, http.USER_AGENT]
    assert sorted(seen[2:]) == sorted(compatibility.CLIENTS.values())
