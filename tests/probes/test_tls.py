"""The tls and availability probes against real TLS servers on loopback, and the rules they feed."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gc
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

import probes
from monitord.types import ProbeContext, Target
from probes import availability, tls, tlsinfo
from rules.probe_rules import evaluate
from tests.probes.helpers import (
    NOW,
    Serve,
    ServerCert,
    pipe,
    self_signed,
    server_context,
    write_cert,
)

HSTS = "max-age=31536000; includeSubDomains"
STRONG = "ECDHE+AESGCM"
NO_HSTS = {
    "present": False,
    "enabled": False,
    "max_age": None,
    "include_subdomains": False,
    "preload": False,
}


def issued(
    *hosts: str, not_before: dt.timedelta = dt.timedelta(days=-30), days: float = 365
) -> Callable[[trustme.CA, Path], ServerCert]:
    """A leaf from the test CA for `hosts`, valid from NOW+not_before for `days` from NOW."""

    def make(ca: trustme.CA, certdir: Path) -> ServerCert:
        leaf = ca.issue_cert(
            *hosts, not_before=NOW + not_before, not_after=NOW + dt.timedelta(days=days)
        )
        name = f"{'-'.join(hosts)}-{days}"
        pems = [p.bytes() for p in leaf.cert_chain_pems]
        return write_cert(certdir, name, leaf.private_key_pem.bytes(), pems)

    return make


def via_intermediate(*, send_intermediate: bool) -> Callable[[trustme.CA, Path], ServerCert]:
    """A leaf issued by an intermediate CA; the server sends the intermediate or forgets it."""

    def make(ca: trustme.CA, certdir: Path) -> ServerCert:
        leaf = ca.create_child_ca().issue_cert("localhost")
        pems = [p.bytes() for p in leaf.cert_chain_pems]
        chain = pems if send_intermediate else pems[:1]
        name = f"inter-{send_intermediate}"
        return write_cert(certdir, name, leaf.private_key_pem.bytes(), chain)

    return make


def rsa_leaf(key_bits: int) -> Callable[[trustme.CA, Path], ServerCert]:
    """An RSA leaf for localhost from the test CA with a key of `key_bits` (OpenSSL refuses
    fewer than 2048 on a trusted chain)."""

    def make(ca: trustme.CA, certdir: Path) -> ServerCert:
        ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return write_cert(certdir, f"rsa-{key_bits}", key_pem, [pem])

    return make


def own_signature(_ca: trustme.CA, certdir: Path) -> ServerCert:
    """A self-signed certificate for localhost."""
    return self_signed(certdir, "localhost")


@dataclass
class Case:
    """One TLS server set-up and what both probes must report about it."""

    cert: Callable[[trustme.CA, Path], ServerCert]
    avail_success: bool
    avail_facts: dict[str, Any]
    tls_facts: dict[str, Any]
    avail_findings: set[str]
    tls_findings: set[str]
    hsts: str | None = HSTS
    server: dict[str, Any] = field(default_factory=lambda: {"ciphers": STRONG})


LEGACY = ssl.TLSVersion.TLSv1
CASES: dict[str, Case] = {
    "valid": Case(
        issued("localhost"),
        True,
        {"status": 200, "chain_trusted": True, "hostname_match": True, "days_to_expiry": 365.0},
        {
            "chain_trusted": True,
            "hostname_match": True,
            "self_signed": False,
            "weak_ciphers": [],
            "hsts": {
                "present": True,
                "enabled": True,
                "max_age": 31536000,
                "include_subdomains": True,
            },
            "key_type": "EC (secp256r1)",
            "key_bits": 256,
            "signature_algorithm": "ecdsa-with-SHA256",
            "ocsp_stapled": {"stapled": False, "status": None},
        },
        set(),
        set(),
    ),
    # A certificate refused on a trusted chain is not an untrusted chain: its finding names
    # the reason (it said 证书链不受信任 and opened an insecure_transport incident).
    "expired": Case(
        issued("localhost", not_before=dt.timedelta(days=-90), days=-2),
        False,
        {"days_to_expiry": -2.0, "chain_trusted": True, "cert_problem": "expired"},
        {"days_to_expiry": -2.0, "chain_trusted": True, "cert_problem": "expired"},
        {"service_down", "cert_expired"},
        {"cert_expired"},
    ),
    "not_yet_valid": Case(
        issued("localhost", not_before=dt.timedelta(days=2), days=300),
        False,
        {"chain_trusted": True, "cert_problem": "not_yet_valid"},
        {"chain_trusted": True, "cert_problem": "not_yet_valid", "hostname_match": True},
        {"service_down", "cert_not_yet_valid"},
        {"cert_not_yet_valid"},
    ),
    "rsa_1024_key": Case(
        rsa_leaf(1024),
        False,
        {"chain_trusted": True, "cert_problem": "weak_key", "key_bits": 1024},
        {"chain_trusted": True, "cert_problem": "weak_key", "key_bits": 1024},
        {"service_down", "cert_weak_key"},
        {"cert_weak_key"},
        server={"ciphers": "ECDHE+AESGCM:@SECLEVEL=0"},
    ),
    "expiring_in_5_days": Case(
        issued("localhost", days=5),
        True,
        {"days_to_expiry": 5.0, "chain_trusted": True},
        {"days_to_expiry": 5.0, "chain_trusted": True},
        {"cert_expiring_7d"},
        {"cert_expiring_7d"},
    ),
    "expiring_in_20_days": Case(
        issued("localhost", days=20),
        True,
        {"days_to_expiry": 20.0},
        {"days_to_expiry": 20.0},
        {"cert_expiring_30d"},
        {"cert_expiring_30d"},
    ),
    "self_signed": Case(
        own_signature,
        False,
        {"self_signed": True, "chain_trusted": False, "cert_problem": "untrusted"},
        {"self_signed": True, "chain_trusted": False, "hostname_match": True},
        {"service_down", "untrusted_chain"},
        {"untrusted_chain"},
    ),
    "wrong_host_name": Case(
        issued("other.example"),
        False,
        {"hostname_match": False, "chain_trusted": True},
        {"hostname_match": False, "chain_trusted": True},
        {"service_down", "hostname_mismatch"},
        {"hostname_mismatch"},
    ),
    "missing_intermediate": Case(
        via_intermediate(send_intermediate=False),
        False,
        {"chain_trusted": False, "hostname_match": True},
        {"chain_trusted": False, "self_signed": False},
        {"service_down", "untrusted_chain"},
        {"untrusted_chain"},
    ),
    "intermediate_sent": Case(
        via_intermediate(send_intermediate=True),
        True,
        {"chain_trusted": True},
        {"chain_trusted": True},
        set(),
        set(),
    ),
    "tls_1_0_and_1_1_enabled": Case(
        issued("localhost"),
        True,
        {"chain_trusted": True},
        {"protocols": ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]},
        set(),
        # TLS 1.0 has no GCM suites: a server that speaks it offers CBC with SHA-1 too.
        {"legacy_protocol", "weak_cipher"},
        server={"minimum": LEGACY, "ciphers": "ECDHE+AESGCM:ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"},
    ),
    "weak_ciphers_enabled": Case(
        issued("localhost"),
        True,
        {"chain_trusted": True},
        {
            "protocols": ["TLSv1.2", "TLSv1.3"],
            "weak_ciphers": [
                "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
                "TLS_ECDHE_ECDSA_WITH_NULL_SHA",
            ],
        },
        set(),
        {"weak_cipher"},
        server={
            "minimum": ssl.TLSVersion.TLSv1_2,
            "ciphers": "ECDHE+AESGCM:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-NULL-SHA:@SECLEVEL=0",
        },
    ),
    "no_hsts": Case(
        issued("localhost"),
        True,
        {"hsts": NO_HSTS},
        {"hsts": NO_HSTS},
        set(),
        {"no_hsts"},
        hsts=None,
    ),
    # RFC 6797 §6.1.1: max-age=0 switches HSTS off, and a header without max-age is ignored.
    "hsts_switched_off": Case(
        issued("localhost"),
        True,
        {},
        {"hsts": {"present": True, "enabled": False, "max_age": 0}},
        set(),
        {"no_hsts"},
        hsts="max-age=0",
    ),
    "hsts_without_max_age": Case(
        issued("localhost"),
        True,
        {},
        {"hsts": {"present": True, "enabled": False, "include_subdomains": True}},
        set(),
        {"no_hsts"},
        hsts="includeSubDomains",
    ),
}


async def ok(_request: web.Request) -> web.Response:
    """A plain 200 answer."""
    return web.Response(text="ok")


def subset(expected: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """The part of `facts` that `expected` speaks about, nested dicts compared on their keys."""
    out: dict[str, Any] = {}
    for key, value in expected.items():
        got = facts.get(key)
        if isinstance(value, dict) and isinstance(got, dict):
            got = {k: got.get(k) for k in value}
        if key == "weak_ciphers" and isinstance(got, list):
            got = sorted(got)
        out[key] = got
    return out


@pytest.mark.parametrize("name", list(CASES))
async def test_tls_server_cases(
    name: str, ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    """Each TLS set-up gives the facts and the findings it should, from both probes."""
    case = CASES[name]
    if case.server.get("minimum") == LEGACY and not tlsinfo.local_protocol_support()["TLSv1"]:
        pytest.skip("this machine's OpenSSL cannot speak TLS 1.0 even at @SECLEVEL=0")

    async def page(_request: web.Request) -> web.Response:
        headers = {"Strict-Transport-Security": case.hsts} if case.hsts else {}
        return web.Response(text="<html>办事大厅</html>", content_type="text/html", headers=headers)

    app = web.Application()
    app.router.add_get("/", page)
    port = await serve(app, server_context(case.cert(ca, certdir), **case.server))
    target = Target(f"https://localhost:{port}/", service_id=f"svc-{name}")

    avail = await availability.probe(target, availability.AvailabilitySpec(timeout_s=5), ctx)
    assert avail.success is case.avail_success, avail.error
    assert subset(case.avail_facts, avail.facts) == case.avail_facts
    assert {f.rule for f in evaluate(avail)} == case.avail_findings

    result = await tls.probe(target, tls.TlsSpec(timeout_s=5), ctx)
    assert result.success, result.error
    assert set(result.facts) == set(tls.TLS_FACT_KEYS)
    assert subset(case.tls_facts, result.facts) == case.tls_facts
    assert {f.rule for f in evaluate(result)} == case.tls_findings
    for finding in evaluate(result):
        assert finding.subject == f"svc-{name}"
        assert finding.clause == "6.3.2 a"


async def test_valid_server_reports_timings_and_negotiation(
    ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    """Availability splits its time into phases and reports the handshake it made."""
    app = web.Application()
    app.router.add_get("/", ok)
    port = await serve(app, server_context(issued("localhost")(ca, certdir), ciphers=STRONG))
    result = await availability.probe(
        Target(f"https://localhost:{port}/"), availability.AvailabilitySpec(), ctx
    )
    facts = result.facts
    assert result.success and result.started_at == NOW
    for phase in ("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms"):
        assert facts[phase] is not None and facts[phase] >= 0, phase
    assert facts["tls_ms"] > 0
    assert facts["tls_version"] == "TLSv1.3"
    assert facts["connection_reused"] is False
    assert facts["cert_not_after"] == (NOW + dt.timedelta(days=365)).isoformat()

    tls_result = await tls.probe(Target(f"https://localhost:{port}/"), tls.TlsSpec(), ctx)
    assert tls_result.facts["tls_version"] == "TLSv1.3"
    assert tls_result.facts["cipher"].startswith("TLS_")
    assert tls_result.facts["chain_earliest_expiry"] == (NOW + dt.timedelta(days=365)).isoformat()


async def test_alpn_shows_whether_the_server_speaks_h2(
    ca: trustme.CA, certdir: Path, ctx: ProbeContext
) -> None:
    """ALPN: a bare TLS server that selects h2 is reported as such."""
    context = server_context(issued("localhost")(ca, certdir))
    context.set_alpn_protocols(["h2", "http/1.1"])

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await tls.probe(
            Target(f"https://localhost:{port}/"),
            tls.TlsSpec(timeout_s=3, check_hsts=False, enumerate_weak_ciphers=False),
            ctx,
        )
    assert result.facts["alpn"] == "h2"
    assert result.facts["hsts"] is None


async def test_plain_http_gets_no_tls_facts_but_a_finding(serve: Serve, ctx: ProbeContext) -> None:
    """An http:// service: the tls probe refuses it, the availability result flags 6.3.2 b."""
    app = web.Application()
    app.router.add_get("/", ok)
    port = await serve(app, None)
    target = Target(f"http://127.0.0.1:{port}/", service_id="plain")
    result = await tls.probe(target, tls.TlsSpec(), ctx)
    assert not result.success and "6.3.2 b" in (result.error or "")
    assert evaluate(result) == []
    avail = await availability.probe(target, availability.AvailabilitySpec(), ctx)
    findings = evaluate(avail)
    assert [(f.rule, f.clause) for f in findings] == [("plain_http", "6.3.2 b")]


@pytest.mark.parametrize("kind", ["availability", "contract", "compatibility"])
async def test_a_server_that_speaks_only_tls_1_0_is_down_with_a_reason_people_can_read(
    kind: str, ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    # The contract and compatibility probes said "connection failed: " and nothing more.
    if not tlsinfo.local_protocol_support()["TLSv1"]:
        pytest.skip("this machine's OpenSSL cannot speak TLS 1.0 even at @SECLEVEL=0")
    app = web.Application()
    app.router.add_get("/", ok)
    context = server_context(
        issued("localhost")(ca, certdir),
        minimum=LEGACY,
        maximum=LEGACY,
        ciphers="ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
    )
    port = await serve(app, context)
    spec = probes.spec_for(kind, {}, timeout_s=5)
    result = await probes.PROBES[kind].probe(Target(f"https://localhost:{port}/"), spec, ctx)
    assert not result.success
    said = result.error if kind != "compatibility" else result.facts["clients"]["desktop"]["error"]
    assert said in ("connection reset by peer", "TLS handshake failed: connection reset by peer")


async def test_an_https_service_that_sends_users_to_plain_http_is_a_6_3_2_b_finding(
    ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    # https://x/ → 302 http://x/ passed as HTTPS: the rule read the target's scheme only.
    plain = web.Application()
    plain.router.add_get("/home", ok)
    plain_port = await serve(plain, None)
    landing = f"http://127.0.0.1:{plain_port}/home?access_token=abcdef1234567890abcd"

    async def to_plain(_request: web.Request) -> web.Response:
        raise web.HTTPFound(landing)

    app = web.Application()
    app.router.add_get("/", to_plain)
    port = await serve(app, server_context(issued("localhost")(ca, certdir), ciphers=STRONG))
    target = Target(f"https://localhost:{port}/", service_id="svc-downgrade")
    result = await availability.probe(target, availability.AvailabilitySpec(timeout_s=5), ctx)
    assert result.success
    assert result.facts["final_url"] == landing.replace("abcdef1234567890abcd", "***")
    (finding,) = [f for f in evaluate(result) if f.clause == "6.3.2 b"]
    assert (finding.rule, finding.severity) == ("plain_http_redirect", "high")
    assert finding.summary == (
        f"https://localhost:{port}/ 将用户重定向到明文 HTTP 地址 "
        f"http://127.0.0.1:{plain_port}/home?access_token=***，未全程使用 HTTPS"
    )


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1", "TLSv1.1"]
)
async def test_a_server_that_speaks_only_tls_1_0_or_1_1_still_shows_its_certificate(
    version: ssl.TLSVersion, ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    # Its certificate facts were all None (the first handshake asked for TLS 1.2 at least), so
    # an expired certificate there was never reported.
    if not tlsinfo.local_protocol_support()["TLSv1"]:
        pytest.skip("this machine's OpenSSL cannot speak TLS 1.0 even at @SECLEVEL=0")
    app = web.Application()
    app.router.add_get("/", ok)
    expired = issued("localhost", not_before=dt.timedelta(days=-90), days=-2)(ca, certdir)
    context = server_context(
        expired, minimum=version, maximum=version, ciphers="ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"
    )
    port = await serve(app, context)
    spec = tls.TlsSpec(timeout_s=5, check_hsts=False)
    result = await tls.probe(Target(f"https://localhost:{port}/"), spec, ctx)
    assert result.success, result.error
    name = "TLSv1" if version == ssl.TLSVersion.TLSv1 else "TLSv1.1"
    assert result.facts["tls_version"] == name and result.facts["protocols"] == [name]
    assert result.facts["days_to_expiry"] == -2.0
    assert result.facts["cert_subject"] is not None and result.facts["hostname_match"] is True
    # The verifying handshake (TLS 1.2 at least) cannot reach it: trust is unknown, not "no".
    assert result.facts["chain_trusted"] is None
    assert {"cert_expired", "legacy_protocol"} <= {f.rule for f in evaluate(result)}
    assert "untrusted_chain" not in {f.rule for f in evaluate(result)}


async def _slow_proxy(to_port: int, delay: float) -> asyncio.Server:
    """A loopback TCP proxy to `to_port` that holds each new connection `delay` seconds first
    (a slow server: each handshake takes that long, well within its timeout)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", to_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_slow_server_probed_one_connection_at_a_time_keeps_its_tls_facts(
    ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    # At a limit of one connection, the probe's parts waited for each other's slots inside a
    # cap of three timeouts: eight 0.6 s handshakes in a row read "timed out", all facts lost.
    app = web.Application()
    app.router.add_get("/", ok)
    port = await serve(app, server_context(issued("localhost")(ca, certdir), ciphers=STRONG))
    proxy = await _slow_proxy(port, 0.6)
    one_slot = asyncio.Semaphore(1)
    limited = dataclasses.replace(ctx, connection=lambda: one_slot)
    target = Target(f"https://localhost:{proxy.sockets[0].getsockname()[1]}/")
    try:
        result = await tls.probe(target, tls.TlsSpec(timeout_s=1.0), limited)
    finally:
        proxy.close()
    assert result.success, result.error
    assert result.facts["tls_version"] == "TLSv1.3"
    assert "TLSv1.2" in result.facts["protocols"]


class _FirstSlotOnly:
    """A service's connection slots of which only the first is ever given (the others are
    taken by other probes for as long as the test runs)."""

    def __init__(self) -> None:
        self.given = 0
        self.waiting = 0
        self._never = asyncio.Event()

    async def __aenter__(self) -> None:
        if self.given:
            self.waiting += 1
            await self._never.wait()
        self.given += 1

    async def __aexit__(self, *_exc: object) -> None:
        pass


async def test_a_tls_probe_cancelled_while_it_waits_for_slots_leaves_no_work_unrun(
    ca: trustme.CA, certdir: Path, serve: Serve, ctx: ProbeContext
) -> None:
    # A stop during a deep round printed "RuntimeWarning: coroutine '_hsts' was never awaited"
    # (and the same of the weak-suite enumeration) on stderr after "monitord stopped".
    app = web.Application()
    app.router.add_get("/", ok)
    port = await serve(app, server_context(issued("localhost")(ca, certdir), ciphers=STRONG))
    slots = _FirstSlotOnly()
    limited = dataclasses.replace(ctx, connection=lambda: slots)
    target = Target(f"https://localhost:{port}/")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probing = asyncio.create_task(tls.probe(target, tls.TlsSpec(timeout_s=5), limited))
        async with asyncio.timeout(10):
            while slots.waiting < 5:  # every part waits for a slot
                await asyncio.sleep(0.01)
        probing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probing
        del probing
        gc.collect()
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == []
