"""The HTTP side shared by the availability, compatibility and contract probes.

`fetch_stream` (the availability probe, every interval, over plain asyncio streams) and `fetch`
(the slower kinds, through the context's aiohttp session) make one probe request each: they
refuse denied targets, follow redirects themselves (so that every hop is checked against the
deny list and recorded), time each phase, and pick up the facts of the TLS handshake they made.

For `fetch`, phase timings come from two public hooks: aiohttp's `TraceConfig` (DNS,
connection set-up, request sent; see `timing_trace_config`) and the observed SSL object of
`probes.tlsinfo` (handshake start and end). A session built without the trace config still gets
total, TLS and first-byte times; DNS then falls back to the probe's own deny-list lookup.
`make_session` builds a session with everything in place.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
import re
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial
from types import SimpleNamespace
from typing import Any, Protocol, TypeVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from monitord import netguard
from monitord.types import ProbeContext, ProbeResult, Spec, Target, is_probe_path
from probes import resumption, tlsinfo

DEFAULT_EXPECT_STATUS: tuple[int, ...] = tuple(range(200, 400))
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class HttpSpec(Spec):
    """What every HTTP-speaking probe kind needs to know about its request."""

    path: str | None = None
    """Joined onto the service URL (catalogue `probe.path`); None probes the URL itself."""
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    expect_status: tuple[int, ...] | None = None
    """The statuses the filing expects (catalogue `probe.expect_status`); a redirect status
    among them is the answer and is not followed. None: the kind's own default."""
    max_redirects: int = 5
    max_body_bytes: int = 1 << 20
    """Bodies are read up to this size: enough for a keyword or a JSON code, bounded for memory."""
    verify_tls: bool = True
    denied_networks: tuple[str, ...] = netguard.DEFAULT_DENIED_NETWORKS


@dataclass
class Timings:
    """Phase times of one request in perf_counter seconds; filled by the trace callbacks."""

    queued_start: float | None = None
    queued_end: float | None = None
    create_start: float | None = None
    create_end: float | None = None
    dns_start: float | None = None
    dns_end: float | None = None
    headers_sent: float | None = None
    reused: bool = False


def _stamp(attr: str) -> Any:
    async def callback(
        _session: aiohttp.ClientSession, trace_ctx: SimpleNamespace, _params: object
    ) -> None:
        timings = trace_ctx.trace_request_ctx
        if isinstance(timings, Timings) and getattr(timings, attr) is None:
            setattr(timings, attr, time.perf_counter())

    return callback


async def _reused(
    _session: aiohttp.ClientSession, trace_ctx: SimpleNamespace, _params: object
) -> None:
    if isinstance(trace_ctx.trace_request_ctx, Timings):
        trace_ctx.trace_request_ctx.reused = True


def timing_trace_config() -> aiohttp.TraceConfig:
    """The aiohttp TraceConfig that records probe phase timings; give it to the session."""
    config = aiohttp.TraceConfig()
    config.on_connection_queued_start.append(_stamp("queued_start"))
    config.on_connection_queued_end.append(_stamp("queued_end"))
    config.on_connection_create_start.append(_stamp("create_start"))
    config.on_connection_create_end.append(_stamp("create_end"))
    config.on_dns_resolvehost_start.append(_stamp("dns_start"))
    config.on_dns_resolvehost_end.append(_stamp("dns_end"))
    config.on_request_headers_sent.append(_stamp("headers_sent"))
    config.on_connection_reuseconn.append(_reused)
    return config


def make_session(
    *,
    limit: int = 200,
    denied_networks: tuple[str, ...] = netguard.DEFAULT_DENIED_NETWORKS,
    ssl_context: ssl.SSLContext | None = None,
) -> aiohttp.ClientSession:
    """An aiohttp session fit for probing; call it inside the running event loop.

    - a fresh connection per request (`force_close`), because each probe must measure and see a
      full DNS, connect and TLS handshake rather than ride a pooled connection;
    - `GuardedResolver`, so the deny list also holds for the address aiohttp itself connects to;
    - the timing trace config; `limit` caps concurrent connections (the global probe limit).
    """
    connector = aiohttp.TCPConnector(
        limit=limit,
        force_close=True,
        resolver=netguard.GuardedResolver(denied_networks),
        ssl=tlsinfo.observe(ssl_context) if ssl_context else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[timing_trace_config()],
        # Probes decide their own redirect handling and timeouts per request.
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=True,
    )


@lru_cache(maxsize=8192)
def _url(text: str) -> URL:
    """text parsed as a URL, cached: a round probes the same URLs every minute (URLs are
    immutable)."""
    return URL(text)


def probe_url(target: Target, spec: HttpSpec) -> URL:
    """The URL a spec probes: the target URL, or the spec's path on the target's host. A path
    naming a host of its own is not followed there (the catalogue reports it as a filing
    problem); the target URL itself is probed."""
    base = _url(target.url)
    if not spec.path or not is_probe_path(spec.path):
        return base
    path = URL(spec.path)
    return base.join(path) if spec.path.startswith("/") else base.join(URL("./" + spec.path))


def ssl_context_for(ctx: ProbeContext, verify: bool) -> ssl.SSLContext:
    """The client SSL context a probe uses: the context's trust store, observed, or no checks."""
    if not verify:
        return tlsinfo.insecure_context()
    if ctx.ssl_context is not None:
        return tlsinfo.observe(ctx.ssl_context)
    return tlsinfo.trust_context(ctx.ca_file)


def default_port(url: URL) -> int:
    """The port a URL connects to."""
    return url.port or (443 if url.scheme == "https" else 80)


@dataclass
class Hop:
    """One request of a redirect chain."""

    url: str
    status: int
    location: str | None = None


@dataclass
class Fetched:
    """The outcome of `fetch`: the final response and how it was reached."""

    status: int
    url: URL
    headers: CIMultiDictProxy[str]
    body: bytes
    truncated: bool
    hops: list[Hop]
    phases: dict[str, float | None]
    capture: tlsinfo.HandshakeCapture
    addresses: list[str]
    connection_reused: bool
    charset: str | None
    content_type: str | None
    resume_retry_s: float = 0.0
    """Seconds a handshake offering a TLS session took before it failed and was made again in
    full (`fetch_stream`): monitord's own cost, left out of `phases` and the probe's time."""


class _Readable(Protocol):
    """A body stream: asyncio's StreamReader, or aiohttp's response.content."""

    async def read(self, n: int = -1, /) -> bytes:
        """Up to n bytes, as many as have arrived; b"" at the end."""
        ...


async def _read_up_to(stream: _Readable, limit: int) -> tuple[bytes, bool]:
    """What stream holds until its end, up to limit bytes, and whether there was more.

    One read(n) returns what has arrived so far, which for a body split over TCP segments is
    only its first piece: read until the end or past the limit.
    """
    data = bytearray()
    while len(data) <= limit:
        piece = await stream.read(limit + 1 - len(data))
        if not piece:
            break
        data += piece
    return bytes(data[:limit]), len(data) > limit


def is_redirect_to_follow(
    status: int, headers: CIMultiDict[str] | CIMultiDictProxy[str], spec: HttpSpec
) -> bool:
    """Whether an answer is a redirect the probe follows: a redirect status with a Location,
    unless the filing expects that very status (a login page answering 302 is up)."""
    expected = spec.expect_status or ()
    return status in REDIRECT_STATUSES and "Location" in headers and status not in expected


class RedirectLimitError(Exception):
    """More redirects than the spec allows."""


def follow_redirect(
    url: URL, status: int, location: str, method: str, hops: list[Hop], spec: HttpSpec
) -> tuple[URL, str]:
    """Record a redirect hop; return where it leads and the method to use there.

    Raises RedirectLimitError past spec.max_redirects.
    """
    hops.append(Hop(str(url), status, location))
    if len(hops) > spec.max_redirects:
        raise RedirectLimitError(f"more than {spec.max_redirects} redirects")
    # Browsers turn a redirected POST into a GET except for 307/308.
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method = "GET"
    return url.join(URL(location)), method


@dataclass
class _Clock:
    start: float = field(default_factory=time.perf_counter)

    def ms(self, a: float | None, b: float | None) -> float | None:
        if a is None or b is None:
            return None
        return round((b - a) * 1000, 3)


async def fetch(
    ctx: ProbeContext,
    spec: HttpSpec,
    url: URL,
    *,
    extra_headers: dict[str, str] | None = None,
    read_body: bool = True,
) -> Fetched:
    """Make the probe request to `url`, following up to `spec.max_redirects` redirects.

    Raises DeniedTargetError before connecting anywhere denied, RedirectLimitError, TimeoutError
    or aiohttp's errors; the caller turns them into a failed result with `error_text`. Phase
    timings are summed over the hops; certificate facts are those of the first hop, the
    service's own host.
    """
    # monitord's own User-Agent, as the availability probe sends it (a WAF may allow it),
    # unless the spec or the caller (a compatibility client) names one.
    headers = {"User-Agent": USER_AGENT, **dict(spec.headers), **(extra_headers or {})}
    method = spec.method.upper()
    sslctx = ssl_context_for(ctx, spec.verify_tls) if url.scheme == "https" else None
    hops: list[Hop] = []
    totals: dict[str, float] = {"dns_ms": 0.0, "connect_ms": 0.0, "tls_ms": 0.0}
    first_capture: tlsinfo.HandshakeCapture | None = None
    addresses: list[str] = []
    reused = False
    start = time.perf_counter()
    while True:
        host = url.raw_host or ""
        hop_addresses, own_dns_ms = await netguard.resolve_checked(
            host, default_port(url), spec.denied_networks, spec.timeout_s
        )
        addresses = addresses or hop_addresses
        timings = Timings()
        with tlsinfo.capture() as cap:
            response = await ctx.session.request(
                method,
                url,
                headers=headers,
                allow_redirects=False,
                ssl=sslctx if url.scheme == "https" and sslctx is not None else False,
                trace_request_ctx=timings,
                timeout=aiohttp.ClientTimeout(total=spec.timeout_s),
            )
        got_headers = time.perf_counter()
        clock = _Clock()
        dns_ms = clock.ms(timings.dns_start, timings.dns_end)
        totals["dns_ms"] += dns_ms if dns_ms is not None else own_dns_ms
        connect_from = timings.dns_end or timings.create_start
        connect_to = cap.started if cap.started is not None else timings.create_end
        totals["connect_ms"] += clock.ms(connect_from, connect_to) or 0.0
        totals["tls_ms"] += clock.ms(cap.started, cap.finished) or 0.0
        sent = timings.headers_sent or cap.finished or timings.create_end
        first_byte_ms = clock.ms(sent, got_headers)
        reused = reused or timings.reused
        if first_capture is None:
            first_capture = cap
        try:
            if is_redirect_to_follow(response.status, response.headers, spec):
                url, method = follow_redirect(
                    url, response.status, response.headers["Location"], method, hops, spec
                )
                if url.scheme == "https" and sslctx is None:
                    sslctx = ssl_context_for(ctx, spec.verify_tls)
                continue
            body = b""
            truncated = False
            if read_body and method != "HEAD":
                body, truncated = await _read_up_to(response.content, spec.max_body_bytes)
            end = time.perf_counter()
            hops.append(Hop(str(url), response.status))
            phases: dict[str, float | None] = {
                **{k: round(v, 3) for k, v in totals.items()},
                "first_byte_ms": first_byte_ms,
                "transfer_ms": round((end - got_headers) * 1000, 3),
                "total_ms": round((end - start) * 1000, 3),
            }
            return Fetched(
                status=response.status,
                url=url,
                headers=response.headers,
                body=body,
                truncated=truncated,
                hops=hops,
                phases=phases,
                capture=first_capture,
                addresses=addresses,
                connection_reused=reused,
                charset=response.charset,
                content_type=response.content_type if "Content-Type" in response.headers else None,
            )
        finally:
            response.release()


def error_text(exc: BaseException, timeout_s: float) -> str:
    """A one-line, human-readable description of why a probe request failed."""
    if isinstance(exc, netguard.DeniedTargetError | RedirectLimitError | HeadCutShortError):
        return str(exc)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        err = exc.certificate_error
        message = getattr(err, "verify_message", None) or str(err)
        return f"certificate verify failed: {message}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc}"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return f"TLS handshake failed: {exc}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected without a response"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"timed out after {timeout_s:g} s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionResetError):  # e.g. a server refusing our TLS
            return "connection reset by peer"
        said = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return f"connection failed: {said}"
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, aiohttp.ClientOSError) and exc.errno == 104
    ):
        return "connection reset by peer"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"response body broken: {exc}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"bad response: {exc.message}"
    if isinstance(exc, BadResponseError):
        return f"bad response: {exc}"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "response body broken: the connection closed early"
    if isinstance(exc, ConnectionRefusedError | ConnectionAbortedError) or (
        isinstance(exc, OSError) and type(exc) is OSError and exc.errno is not None
    ):
        return f"connection failed: {exc.strerror or exc}"
    return tlsinfo.describe_error(exc)


PROBE_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    netguard.DeniedTargetError,
    RedirectLimitError,
    ValueError,  # a malformed URL or Location header
    asyncio.IncompleteReadError,  # a body the server closed before its length or last chunk
)
"""What a probe turns into a failed result instead of letting it escape."""


def result(
    kind: str,
    target: Target,
    started_at: dt.datetime,
    start: float,
    *,
    success: bool,
    facts: dict[str, Any],
    error: str | None = None,
) -> ProbeResult:
    """Build a probe's immutable result; duration is wall time since `start` (perf_counter)."""
    return ProbeResult(
        kind=kind,
        target=target.url,
        success=success,
        duration_ms=round((time.perf_counter() - start) * 1000, 3),
        started_at=started_at,
        facts=facts,
        error=error,
        service_id=target.service_id,
    )


def failure(
    kind: str,
    target: Target,
    started_at: dt.datetime,
    start: float,
    facts: dict[str, Any],
    error: str,
) -> ProbeResult:
    """A failed probe's result: `result` with success False and why."""
    return result(kind, target, started_at, start, success=False, facts=facts, error=error)


def header_charset(content_type_header: str | None) -> str | None:
    """The charset parameter of a Content-Type header, lower-cased, or None."""
    if not content_type_header:
        return None
    for part in content_type_header.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.strip().lower() == "charset" and value:
            return value.strip().strip('"').lower()
    return None


# ---------------------------------------------------------------------------------------------
# A lean HTTP/1.1 path for the availability probe, the one that runs every minute for every
# service. It speaks just enough HTTP over asyncio streams, or a resuming connection that reads
# as they do (one request, `Connection: close`, Content-Length, chunked or read-to-close bodies),
# and costs about a third less CPU than a request through aiohttp's client (bench/probes.py: 1.18
# against 1.76 CPU ms per probe, before resumption). The slower kinds keep `fetch`.

MAX_HEADER_BYTES = 64 * 1024
USER_AGENT = "monitord-probe/1 (+https://github.com/monitord)"


class BadResponseError(ValueError):
    """The server's answer is not HTTP/1.x as monitord reads it."""


class HeadCutShortError(BadResponseError):
    """The server closed the connection before the end of the response's head: what came is
    not an answer, whatever its status line said."""

    def __init__(self) -> None:
        super().__init__("server disconnected before the headers ended")


_Opened = TypeVar("_Opened")


async def _connect(
    addresses: list[str],
    port: int,
    opened: Callable[[socket.socket, tuple[str, int]], Awaitable[_Opened]],
) -> _Opened:
    """`opened(sock, (address, port))` for a new non-blocking TCP socket and the first of
    `addresses` it connects to, within the caller's timeout. `opened` connects the socket, and
    undoes whatever it set up on it when that fails."""
    error: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # The handshake's last flight and the request go out at once, as asyncio's own
            # connections send them.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return await opened(sock, (address, port))
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    assert error is not None
    raise error


async def _connected(sock: socket.socket, address: tuple[str, int]) -> socket.socket:
    """sock, connected to address. A refusal reads as the system words it ("Connection
    refused"), as a resuming connection's does, not as the event loop's "Connect call failed"."""
    try:
        await asyncio.get_running_loop().sock_connect(sock, address)
    except OSError as exc:
        if exc.errno:
            raise OSError(exc.errno, os.strerror(exc.errno)) from None
        raise
    return sock


class _Reader(_Readable, Protocol):
    """A response stream: asyncio's StreamReader, or a resuming connection."""

    async def readline(self) -> bytes:
        """The next line; ValueError past the reader's limit."""
        ...

    async def readexactly(self, n: int, /) -> bytes:
        """Exactly n bytes; IncompleteReadError when the end comes first."""
        ...


class _Writer(Protocol):
    """A request stream: asyncio's StreamWriter, or a resuming connection."""

    def write(self, data: bytes, /) -> None:
        """Send data (without waiting)."""
        ...

    def close(self) -> None:
        """Close the connection."""
        ...


@dataclass
class _Hop:
    """A connection made for one hop of `fetch_stream`, its TLS handshake done."""

    reader: _Reader
    writer: _Writer
    capture: tlsinfo.HandshakeCapture
    tls: ssl.SSLObject | resumption.ResumingConnection | None
    connect_s: float
    sessions: resumption.ResumableSessions | None
    """The sessions kept for its resuming connection, when it is one."""
    offered: resumption.Offer | None
    """The session its handshake offered (None: a full handshake was asked for)."""
    retry_s: float = 0.0
    """What a failed handshake offering a session took before this one (monitord's cost)."""


async def _open_hop(
    ctx: ProbeContext,
    spec: HttpSpec,
    host: str,
    port: int,
    addresses: list[str],
    context: ssl.SSLContext | None,
) -> _Hop:
    """Connect to host:port (the first of `addresses` that answers) and, with a `context`,
    make the TLS handshake.

    When the probe resumes sessions (`ctx.tls_resume_s`) and `context` verifies, the handshake
    is a resuming connection's (`probes.resumption`), offering the session kept for host:port.
    If it fails, the ssl module makes it again at once (unless the probe's own time ran out:
    cancelled), so a failure is reported in the ssl module's words; some gateways and WAFs
    reset, refuse or never answer a handshake offering a session, and a host whose ssl
    module handshake then works, or that fails twice within a day, gets the ssl module's only
    for a day (`ResumableSessions.failed`, `refuses_offers`); one whose certificate was
    refused, until an ssl module handshake works (`certificate_refused`)."""
    resuming = None
    if context is not None and ctx.tls_resume_s > 0 and context.verify_mode != ssl.CERT_NONE:
        resuming = resumption.resuming_client(context)
    kept = resuming.sessions if resuming else None
    if kept is not None and kept.resting(host, port, ctx.clock()):
        resuming = None
    offer = kept.to_offer(host, port, ctx.clock(), ctx.tls_resume_s) if resuming and kept else None
    retry_s, retried = 0.0, False
    while True:
        began = time.perf_counter()
        cap = tlsinfo.HandshakeCapture()
        if resuming is not None:
            opened = partial(
                resumption.ResumingConnection.open, resuming, host, offer, MAX_HEADER_BYTES
            )
            conn = await _connect(addresses, port, opened)
            connected = time.perf_counter()
            try:
                cap.started = time.perf_counter()
                await conn.handshake()
                cap.finished = time.perf_counter()
            except BaseException as exc:
                conn.close()
                if isinstance(exc, resumption.ResumingCertificateError):
                    # The service's failure, which the ssl module's handshake words.
                    resuming.sessions.certificate_refused(host, port)
                else:  # the offer's failure, or this client's
                    resuming.sessions.failed(host, port, offer, ctx.clock())
                if not isinstance(exc, Exception):
                    raise
                retry_s += time.perf_counter() - began
                resuming, offer, retried = None, None, True
                continue
            return _Hop(conn, conn, cap, conn, connected - began, kept, offer, retry_s)
        sock = await _connect(addresses, port, _connected)
        connected = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEADER_BYTES)
        except BaseException:
            sock.close()
            raise
        try:
            if context is not None:
                # Read the handshake off the stream's own SSL object: it works on any event
                # loop (uvloop's TLS layer does not use the context's SSL object class).
                cap.started = time.perf_counter()
                await writer.start_tls(context, server_hostname=host)
                cap.finished = time.perf_counter()
        except BaseException:
            writer.close()
            raise
        if kept is not None:  # the ssl module's handshake worked
            kept.certificate_accepted(host, port)
            if retried:  # the resuming client was the failure
                kept.refuses_offers(host, port, ctx.clock())
        tls = writer.get_extra_info("ssl_object") if context is not None else None
        return _Hop(reader, writer, cap, tls, connected - began, None, None, retry_s)


def _field_text(line: bytes) -> str:
    """A header line as text: UTF-8 when it is valid UTF-8, as browsers and aiohttp read it
    (nginx's `return 302 /办事;` sends that Location raw), else latin-1, which takes any
    byte."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


async def _read_head(reader: _Reader) -> tuple[int, CIMultiDict[str]]:
    try:
        status_line = await reader.readline()
    except ValueError:
        raise BadResponseError("status line too long") from None
    if not status_line:
        raise aiohttp.ServerDisconnectedError()
    if not status_line.endswith(b"\n"):
        raise HeadCutShortError()
    parts = status_line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadResponseError(f"not an HTTP/1.x status line: {status_line[:60]!r}")
    fields: list[list[str]] = []
    size = 0
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one field longer than the limit
            raise BadResponseError("headers too large") from None
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise BadResponseError("headers too large")
        if line in (b"\r\n", b"\n"):
            break
        if not line.endswith(b"\n"):
            raise HeadCutShortError()
        text = _field_text(line)
        if text[0] in " \t":
            # obs-fold: the line continues the field above, and a client unfolds it with a
            # space (RFC 9112 5.2); read as a field of its own it could be a forged Location.
            # Before any field it is whitespace after the status line: consumed (2.2).
            if fields:
                fields[-1][1] = f"{fields[-1][1]} {text.strip()}".strip()
            continue
        name, sep, value = text.partition(":")
        if sep:
            fields.append([name.strip(), value.strip()])
    return int(parts[1]), CIMultiDict((name, value) for name, value in fields)


def body_framing(method: str, status: int, headers: CIMultiDict[str]) -> str:
    """How a response's body ends (RFC 9112 section 6.3): "none", "chunked", "length" or
    "close" (read until the server closes). Raises BadResponseError on contradictory lengths."""
    if method == "HEAD" or status < 200 or status in (204, 304):
        return "none"  # a length it announces is the length a GET would have had
    codings = headers.get("Transfer-Encoding")
    if codings is not None:
        # Only a final "chunked" frames the body ("gzip, chunked"); otherwise the body runs to
        # the close, and Content-Length is ignored whatever it says.
        last = codings.rsplit(",", 1)[-1].strip().lower()
        return "chunked" if last == "chunked" else "close"
    lengths = {v.strip() for v in ",".join(headers.getall("Content-Length", [])).split(",")}
    lengths.discard("")
    if not lengths:
        return "close"
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        raise BadResponseError(f"Content-Length {', '.join(sorted(lengths))} is not one length")
    return "length"


# The transfer and content codings monitord undoes (RFC 9112 7, RFC 9110 8.4.1), as zlib's
# window bits: gzip's header, or zlib's for "deflate", which some servers send raw (no header).
_CODINGS = {"gzip": (31,), "x-gzip": (31,), "deflate": (15, -15)}


def transfer_codings(headers: CIMultiDict[str]) -> list[str]:
    """The transfer codings to undo, last applied first, without the framing "chunked".

    Raises BadResponseError naming a coding monitord cannot undo (the body's bytes would not be
    the page, and a keyword would never be found in them).
    """
    codings = [
        c.strip().lower() for c in headers.get("Transfer-Encoding", "").split(",") if c.strip()
    ]
    if codings and codings[-1] == "chunked":
        codings.pop()
    for coding in codings:
        if coding not in _CODINGS:
            raise BadResponseError(f"Transfer-Encoding {coding}: not a coding monitord can undo")
    return codings[::-1]


def content_codings(headers: CIMultiDict[str]) -> list[str]:
    """The content codings to undo, last applied first.

    The probe asks for none (no Accept-Encoding), yet servers send gzip anyway, and aiohttp's
    path undoes it. A coding monitord cannot undo (br) leaves the body as sent: the status
    still says whether the service is up.
    """
    named = ",".join(headers.getall("Content-Encoding", [])).split(",")
    codings = [c.strip().lower() for c in named if c.strip().lower() not in ("", "identity")]
    if any(coding not in _CODINGS for coding in codings):
        return []
    return codings[::-1]


def codings_to_undo(headers: CIMultiDict[str]) -> list[tuple[str, str]]:
    """Every coding to undo, in order, each with the header that names it: the transfer
    codings, then the content codings. Raises what `transfer_codings` raises."""
    return [("Transfer-Encoding", c) for c in transfer_codings(headers)] + [
        ("Content-Encoding", c) for c in content_codings(headers)
    ]


def _undo(data: bytes, header: str, coding: str, limit: int) -> bytes:
    """data with one coding undone, at most limit bytes of it (a small body can inflate to
    gigabytes)."""
    error: zlib.error | None = None
    for wbits in _CODINGS[coding]:
        try:
            return zlib.decompressobj(wbits).decompress(data, limit)
        except zlib.error as exc:
            error = exc
    raise BadResponseError(f"{header} {coding}: the body does not decode ({error})")


def decoded_body(
    data: bytes, truncated: bool, codings: list[tuple[str, str]], limit: int
) -> tuple[bytes, bool]:
    """The body with its codings (`codings_to_undo`) undone, up to limit bytes, and whether
    there was more."""
    for header, coding in codings:
        data = _undo(data, header, coding, limit + 1)
    return data[:limit], truncated or len(data) > limit


_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]+")


async def _chunk_size(reader: _Reader) -> int:
    """The size a chunk-size line announces, its extensions ignored (RFC 9112 7.1).

    Raises BadResponseError unless it is a hexadecimal number: int() would also take "-5",
    "0x5" or "5_0", and a negative size is no length to read. Raises IncompleteReadError when
    the connection closed before the line ended.
    """
    try:
        line = await reader.readline()
    except ValueError:
        raise BadResponseError("chunk-size line too long") from None
    if not line.endswith(b"\n"):
        # The close came before the last chunk: the body is cut short, as a Content-Length
        # body the close cuts is.
        raise asyncio.IncompleteReadError(line, None)
    digits = line.split(b";", 1)[0].strip()
    if not _CHUNK_SIZE.fullmatch(digits):
        shown = digits[:20].decode("latin-1")
        raise BadResponseError(f"chunk size {shown!r} is not a hexadecimal number")
    return int(digits, 16)


async def _read_chunked(reader: _Reader, limit: int) -> tuple[bytes, bool]:
    """A chunked body up to limit bytes, and whether there was more.

    A chunk is read only as far as the limit leaves room for: its size comes from the server,
    and one announcing 7fffffffff would otherwise be held in memory whole.
    """
    body = bytearray()
    while True:
        size = await _chunk_size(reader)
        if size == 0:
            return bytes(body), False
        room = limit + 1 - len(body)  # one byte past the limit tells that there was more
        body += await reader.readexactly(min(size, room))
        if len(body) > limit:
            return bytes(body[:limit]), True
        await reader.readline()


async def _read_body(
    reader: _Reader, headers: CIMultiDict[str], framing: str, limit: int
) -> tuple[bytes, bool]:
    """The body up to limit bytes, and whether there was more."""
    if framing == "none":
        return b"", False
    if framing == "chunked":
        return await _read_chunked(reader, limit)
    if framing == "length":
        wanted = int(headers["Content-Length"].split(",")[0])
        data = await reader.readexactly(min(wanted, limit + 1))
        return data[:limit], wanted > limit
    return await _read_up_to(reader, limit)


def host_header(url: URL) -> str:
    """The Host header for url: an IPv6 literal in brackets, the port unless the default."""
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    port = default_port(url)
    if (url.scheme, port) in (("https", 443), ("http", 80)):
        return host
    return f"{host}:{port}"


def basic_auth(url: URL) -> dict[str, str]:
    """The Authorization header for url's user:password@, percent-decoded and in latin-1 as
    aiohttp sends it for the slower kinds; empty when the URL names no user.

    Raises ValueError (a probe error) for a user or password latin-1 cannot spell.
    """
    if not (url.raw_user or url.raw_password):
        return {}
    credentials = f"{url.user or ''}:{url.password or ''}".encode("latin-1")
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")}


def _content_type(headers: CIMultiDict[str]) -> tuple[str | None, str | None]:
    raw = headers.get("Content-Type")
    if raw is None:
        return None, None
    main, *params = (p.strip() for p in raw.split(";"))
    charset = next(
        (p.split("=", 1)[1].strip('"') for p in params if p.lower().startswith("charset=")), None
    )
    return main.lower() or None, charset


async def fetch_stream(
    ctx: ProbeContext,
    spec: HttpSpec,
    url: URL,
    read_body: bool = True,
    extra_headers: dict[str, str] | None = None,
) -> Fetched:
    """Like `fetch`, over asyncio streams or a resuming connection (`_open_hop`): every hop
    resolved and checked against the deny list, redirects followed and recorded,
    DNS/connect/TLS/first-byte/total times, and the facts of the TLS handshake. Raises what
    `fetch` raises, plus ssl and OS errors as they are.

    Run it within the probe's timeout (`asyncio.timeout(spec.timeout_s)`): it sets none of its
    own, which would only end at the same moment."""
    method = spec.method.upper()
    hops: list[Hop] = []
    totals: dict[str, float] = {"dns_ms": 0.0, "connect_ms": 0.0, "tls_ms": 0.0}
    first_capture: tlsinfo.HandshakeCapture | None = None
    addresses: list[str] = []
    start = time.perf_counter()
    resume_retry_s = 0.0
    while True:
        host = url.raw_host or ""
        port = default_port(url)
        hop_addresses, dns_ms = await netguard.resolve_checked(
            host, port, spec.denied_networks, None
        )
        addresses = addresses or hop_addresses
        totals["dns_ms"] += dns_ms
        context = ssl_context_for(ctx, spec.verify_tls) if url.scheme == "https" else None
        hop = await _open_hop(ctx, spec, host, port, hop_addresses, context)
        reader, writer, cap, tls = hop.reader, hop.writer, hop.capture, hop.tls
        resume_retry_s += hop.retry_s
        try:
            totals["connect_ms"] += hop.connect_s * 1000
            if tls is not None:
                cipher = tls.cipher()
                cap.version = tls.version()
                cap.cipher = cipher[0] if cipher else None
                cap.alpn = tls.selected_alpn_protocol()
                cap.peer_der = tls.getpeercert(binary_form=True)
                cap.handshakes = 1
                cap.resumed = tls.session_reused
            if cap.started is not None and cap.finished is not None:
                totals["tls_ms"] += (cap.finished - cap.started) * 1000
            if first_capture is None:
                first_capture = cap
            request_headers = {
                "Host": host_header(url),
                "User-Agent": USER_AGENT,
                "Accept": "*/*",
                **basic_auth(url),
                **dict(spec.headers),
                **(extra_headers or {}),
                "Connection": "close",
            }
            target = url.raw_path_qs or "/"
            head = f"{method} {target} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in request_headers.items()
            )
            writer.write(head.encode("latin-1") + b"\r\n")
            sent = time.perf_counter()
            status, headers = await _read_head(reader)
            while 100 <= status < 200 and status != 101:
                # An interim answer (100 Continue, 103 Early Hints): the final one follows.
                status, headers = await _read_head(reader)
            got_headers = time.perf_counter()
            if hop.sessions is not None and isinstance(tls, resumption.ResumingConnection):
                hop.sessions.after(host, port, tls, hop.offered, ctx.clock(), ctx.tls_resume_s)
            if is_redirect_to_follow(status, headers, spec):
                url, method = follow_redirect(url, status, headers["Location"], method, hops, spec)
                continue
            body, truncated = b"", False
            if read_body:
                framing = body_framing(method, status, headers)
                codings = codings_to_undo(headers) if framing != "none" else []
                body, truncated = await _read_body(reader, headers, framing, spec.max_body_bytes)
                body, truncated = decoded_body(body, truncated, codings, spec.max_body_bytes)
            end = time.perf_counter()
        finally:
            writer.close()
        hops.append(Hop(str(url), status))
        content_type, charset = _content_type(headers)
        phases: dict[str, float | None] = {
            **{k: round(v, 3) for k, v in totals.items()},
            "first_byte_ms": round((got_headers - sent) * 1000, 3),
            "transfer_ms": round((end - got_headers) * 1000, 3),
            "total_ms": round((end - start - resume_retry_s) * 1000, 3),
        }
        return Fetched(
            status=status,
            url=url,
            headers=CIMultiDictProxy(headers),
            body=body,
            truncated=truncated,
            hops=hops,
            phases=phases,
            capture=first_capture,
            addresses=addresses,
            connection_reused=False,
            charset=charset,
            content_type=content_type,
            resume_retry_s=resume_retry_s,
        )
