"""The tls probe: the facts a security reviewer checks on an HTTPS service (clause 6.3.2 a).

The expensive one, run on a slow schedule: protocol and weak-suite enumeration, the chain the
server sends, OCSP stapling and HSTS. Its facts are exactly `TLS_FACT_KEYS`, whatever happens;
a fact that could not be learnt is None. Every connection goes to the address checked against
the deny list, never to a second lookup of the name.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from monitord import netguard
from monitord.types import ProbeContext, ProbeResult, Target
from probes import tlsinfo
from probes.http import (
    PROBE_ERRORS,
    HttpSpec,
    default_port,
    error_text,
    failure,
    probe_url,
    result,
    ssl_context_for,
)

KIND = "tls"

TLS_FACT_KEYS: tuple[str, ...] = (
    "tls_version",
    "protocols",
    "cipher",
    "weak_ciphers",
    "cert_subject",
    "cert_issuer",
    "cert_not_before",
    "cert_not_after",
    "days_to_expiry",
    "chain_trusted",
    "cert_problem",
    "tls_verify_error",
    "hostname_match",
    "self_signed",
    "key_type",
    "key_bits",
    "signature_algorithm",
    "chain_earliest_expiry",
    "ocsp_stapled",
    "alpn",
    "hsts",
)

T = TypeVar("T")


@dataclass(frozen=True)
class TlsSpec(HttpSpec):
    """What the tls probe looks at; each expensive part can be turned off."""

    enumerate_protocols: bool = True
    enumerate_weak_ciphers: bool = True
    check_hsts: bool = True


async def probe(target: Target, spec: TlsSpec, ctx: ProbeContext) -> ProbeResult:
    """Collect the TLS facts of an HTTPS target (`TLS_FACT_KEYS`).

    Success means a TLS handshake happened; whether what it showed is acceptable is for the
    rules. A plain http:// target fails here with an error, and the `plain_http` rule (6.3.2 b)
    flags it from the availability probe.
    """
    started_at = ctx.clock()
    start = time.perf_counter()
    facts: dict[str, Any] = dict.fromkeys(TLS_FACT_KEYS)
    url = probe_url(target, spec)
    if url.scheme != "https":
        return failure(
            KIND,
            target,
            started_at,
            start,
            facts,
            f"not an HTTPS URL ({url.scheme}://): plain HTTP, see clause 6.3.2 b",
        )
    host = url.raw_host or ""
    port = default_port(url)
    try:
        async with asyncio.timeout(spec.timeout_s):
            addresses, _ = await netguard.resolve_checked(
                host, port, spec.denied_networks, spec.timeout_s
            )
    except PROBE_ERRORS as exc:
        return failure(KIND, target, started_at, start, facts, error_text(exc, spec.timeout_s))
    # A name may resolve to an address that does not answer (an AAAA record with no IPv6
    # route); use the first one that takes a connection for everything else.
    insecure = tlsinfo.insecure_context()
    for address in addresses:
        async with ctx.connection():
            shake = await tlsinfo.handshake(
                address, port, insecure, server_hostname=host, timeout_s=spec.timeout_s
            )
        if shake.connected:
            break
    if not shake.connected:
        return failure(KIND, target, started_at, start, facts, f"connection failed: {shake.error}")
    if not shake.ok:
        # A server that speaks only TLS 1.0 or 1.1 refuses the default context (TLS 1.2 at
        # least): read its certificate over what it speaks, so an expiry there is still seen.
        async with ctx.connection():
            legacy = await tlsinfo.handshake(
                address,
                port,
                tlsinfo.any_protocol_context(),
                server_hostname=host,
                timeout_s=spec.timeout_s,
            )
        if legacy.ok:
            shake = legacy

    async def limited(work: Callable[[], Awaitable[T]]) -> T:
        # One of the service's connection slots (ProbeContext.connection) per part: each opens
        # one connection at a time (the weak-suite enumeration one after another). The work is
        # made once the part has its slot: a probe cancelled while it waits leaves none unrun.
        # Its cap counts from then too: at a limit of one, the parts wait for each other, and
        # that wait is no sign of a slow server.
        async with ctx.connection(), asyncio.timeout(spec.timeout_s * 3):
            return await work()

    timeout = spec.timeout_s
    verified = limited(
        lambda: tlsinfo.handshake(
            address, port, ssl_context_for(ctx, True), server_hostname=host, timeout_s=timeout
        )
    )
    raw = limited(
        lambda: tlsinfo.sent_chain_and_staple(address, port, server_name=host, timeout_s=timeout)
    )
    # Each of its handshakes takes a slot of its own, and is timed from then.
    protocols = (
        tlsinfo.accepted_protocols(
            address, port, server_hostname=host, timeout_s=timeout, connection=ctx.connection
        )
        if spec.enumerate_protocols
        else _none()
    )
    weak = (
        limited(
            lambda: tlsinfo.accepted_weak_ciphers(
                address, port, server_name=host, timeout_s=timeout
            )
        )
        if spec.enumerate_weak_ciphers
        else _none()
    )
    hsts = limited(lambda: _hsts(ctx, spec, target)) if spec.check_hsts else _none()
    try:
        check, sent, accepted, weak_found, hsts_fact = await asyncio.gather(
            verified, raw, protocols, weak, hsts
        )
    except TimeoutError:
        return failure(KIND, target, started_at, start, facts, "timed out")
    facts.update(
        _facts(shake, check, sent, started_at, host),
        protocols=accepted,
        weak_ciphers=weak_found,
        hsts=hsts_fact,
    )
    return result(
        KIND,
        target,
        started_at,
        start,
        success=shake.ok,
        facts=facts,
        error=None if shake.ok else f"TLS handshake failed: {shake.error}",
    )


def _facts(
    shake: tlsinfo.Handshake,
    check: tlsinfo.Handshake,
    sent: tlsinfo.RawHello,
    now: dt.datetime,
    host: str,
) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "tls_version": shake.version,
        "cipher": shake.cipher,
        "alpn": shake.alpn,
    }
    if not shake.ok or not shake.peer_der:
        return facts
    facts.update(tlsinfo.cert_facts(shake.peer_der, host, now))
    facts.update(tlsinfo.trust_verdict(check.ok, check.verify_code))
    facts["tls_verify_error"] = None if check.ok else check.error
    # Certificates the server sends over TLS 1.2 include the intermediates; over TLS 1.3 only
    # the leaf is visible to us, so the earliest expiry falls back to the leaf's.
    chain = sent.certificates or [shake.peer_der]
    expiries = []
    for der in chain:
        try:
            expiries.append(tlsinfo.parse_certificate(der).not_after)
        except ValueError:
            continue
    first = tlsinfo.earliest(expiries)
    facts["chain_earliest_expiry"] = first.isoformat() if first else None
    # A TLS 1.2 exchange that reached ServerHelloDone shows whether a staple was sent.
    checked = sent.version is not None and sent.error is None and sent.alert is None
    facts["ocsp_stapled"] = tlsinfo.ocsp_facts(sent.ocsp_response, checked)
    return facts


async def _hsts(ctx: ProbeContext, spec: TlsSpec, target: Target) -> dict[str, Any] | None:
    """The HSTS header of the service's HTTPS answer, read without certificate checks.

    Redirects are not followed: a redirect from the service's own URL carries the header that
    counts for its host.
    """
    try:
        async with ctx.session.request(
            "GET",
            probe_url(target, spec),
            allow_redirects=False,
            ssl=False,
            timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
        ) as response:
            return tlsinfo.parse_hsts(response.headers.get("Strict-Transport-Security"))
    except PROBE_ERRORS:
        return None


async def _none() -> None:
    return None
