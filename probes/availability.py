"""The availability probe: is the service answering, how fast, and what certificate did it show.

Run every interval, so it is the cheap one: one request (plus redirects), phase timings, an
optional keyword check, and the certificate facts of the handshake that request made anyway.
Only when certificate verification fails does it spend a second handshake, without
verification, to say what was wrong with the certificate.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from dataclasses import dataclass
from typing import Any

from yarl import URL

from monitord import netguard
from monitord.redact import mask_url
from monitord.types import ProbeContext, ProbeResult, Target
from probes import tlsinfo
from probes.http import (
    DEFAULT_EXPECT_STATUS,
    PROBE_ERRORS,
    Fetched,
    HttpSpec,
    default_port,
    error_text,
    failure,
    fetch_stream,
    probe_url,
    result,
)

KIND = "availability"


@dataclass(frozen=True)
class AvailabilitySpec(HttpSpec):
    """What the availability probe checks (catalogue `probe`: path, method, expect_status …)."""

    keyword: str | None = None
    slo_ms: float = 3000.0
    """The service's latency objective; reported as a fact so the `slow` rule can compare."""
    cert_facts: bool = True


def _keyword_found(fetched: Fetched, keyword: str) -> bool:
    # Search the bytes in each plausible encoding rather than decoding the whole page: cheaper,
    # and it still works for GBK pages that mislabel themselves.
    encodings = dict.fromkeys(["utf-8", fetched.charset or "utf-8", "gb18030"])
    for encoding in encodings:
        try:
            if keyword.encode(encoding) in fetched.body:
                return True
        except (LookupError, UnicodeEncodeError):
            continue
    return False


def _handshake_facts(
    cap: tlsinfo.HandshakeCapture, host: str, now: dt.datetime, verified: bool
) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "tls_version": cap.version,
        "cipher": cap.cipher,
        "alpn": cap.alpn,
        "tls_resumed": cap.resumed,
        "chain_trusted": True if verified else None,
        "tls_verify_error": None,
    }
    if cap.peer_der:
        facts.update(tlsinfo.cert_facts(cap.peer_der, host, now))
    return facts


async def _unverified_facts(
    url: URL, spec: AvailabilitySpec, error: ssl.SSLCertVerificationError, now: dt.datetime
) -> dict[str, Any]:
    """Certificate facts after verification refused the handshake: look again, unverified."""
    host = url.raw_host or ""
    verify_code = error.verify_code
    shake = await tlsinfo.handshake(
        host,
        default_port(url),
        tlsinfo.insecure_context(),
        server_hostname=host,
        timeout_s=spec.timeout_s,
    )
    facts: dict[str, Any] = {
        "tls_version": shake.version,
        "cipher": shake.cipher,
        "alpn": shake.alpn,
        **tlsinfo.trust_verdict(False, verify_code),
        "tls_verify_error": error.verify_message or str(error),
    }
    if shake.peer_der:
        facts.update(tlsinfo.cert_facts(shake.peer_der, host, now))
    return facts


async def probe(target: Target, spec: AvailabilitySpec, ctx: ProbeContext) -> ProbeResult:
    """Request the service's probe URL once and report status, timings and certificate facts.

    Success means a final status in `spec.expect_status` (when none is filed, any 2xx or 3xx)
    and, when a keyword is set, the keyword in the body. A failed TLS verification is a
    failure, as it is for the browser of a user.
    """
    started_at = ctx.clock()
    start = time.perf_counter()
    url = probe_url(target, spec)
    facts: dict[str, Any] = {
        "url": mask_url(str(url)),
        "scheme": url.scheme,
        "slo_ms": spec.slo_ms,
        "refused": False,
    }
    try:
        async with ctx.connection(), asyncio.timeout(spec.timeout_s):
            fetched = await fetch_stream(ctx, spec, url)
    except ssl.SSLCertVerificationError as exc:
        if spec.cert_facts:
            async with ctx.connection():
                facts.update(await _unverified_facts(url, spec, exc, started_at))
        return failure(KIND, target, started_at, start, facts, error_text(exc, 0))
    except PROBE_ERRORS as exc:
        facts["refused"] = isinstance(exc, netguard.DeniedTargetError)
        return failure(KIND, target, started_at, start, facts, error_text(exc, spec.timeout_s))
    facts.update(
        {
            "status": fetched.status,
            "final_url": mask_url(str(fetched.url)),
            "redirects": [
                {"url": mask_url(hop.url), "status": hop.status, "location": hop.location}
                for hop in fetched.hops[:-1]
            ],
            **fetched.phases,
            "body_bytes": len(fetched.body),
            "content_type": fetched.content_type,
            "addresses": fetched.addresses,
            "connection_reused": fetched.connection_reused,
            "hsts": tlsinfo.parse_hsts(fetched.headers.get("Strict-Transport-Security"))
            if fetched.url.scheme == "https"
            else None,
        }
    )
    if url.scheme == "https" and spec.cert_facts:
        facts.update(
            _handshake_facts(fetched.capture, url.raw_host or "", started_at, spec.verify_tls)
        )
    problems: list[str] = []
    if fetched.status not in (spec.expect_status or DEFAULT_EXPECT_STATUS):
        problems.append(f"status {fetched.status} not in the expected statuses")
    if spec.keyword is not None:
        found = _keyword_found(fetched, spec.keyword)
        facts["keyword_found"] = found
        if not found:
            problems.append(f"keyword {spec.keyword!r} not found in the page")
    return result(
        KIND,
        target,
        started_at,
        start + fetched.resume_retry_s,  # monitord's own failed offer is not the service's time
        success=not problems,
        facts=facts,
        error="; ".join(problems) or None,
    )
