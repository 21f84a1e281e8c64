"""Shared TLS helpers for the tls, availability and compatibility probes.

Three ways of looking at a server's TLS live here, each used where it is cheapest:

* **Observed handshakes.** `observe(context)` gives an SSL context whose `SSLObject` notes the
  moment the handshake starts and ends and the certificate, version, cipher and ALPN it settled
  on, into the `HandshakeCapture` active in the calling task (`capture()`). That is how the
  availability probe gets its TLS time and the certificate facts of the very handshake aiohttp did,
  through public APIs only (`SSLContext.sslobject_class`), with no second connection.
* **Stdlib handshakes** (`handshake`, `accepted_protocols`) over asyncio streams, always under a
  timeout: the negotiated facts, the trust verdict, and which of TLSv1 … TLSv1.3 the server accepts
  when each is offered alone (with ``@SECLEVEL=0`` so OpenSSL 3 will still speak TLSv1/1.1).
* **A raw TLS 1.2 ClientHello** (`raw_hello`), read up to ServerHelloDone and then dropped. The
  stdlib cannot show the certificate chain the server sends (Python 3.11 has no
  `get_unverified_chain`) nor a stapled OCSP response, and this OpenSSL build cannot even offer RC4,
  3DES or export suites. A hand-built ClientHello can offer any suite by its IANA number and see the
  plaintext Certificate and CertificateStatus messages of TLS 1.2. It never completes a handshake,
  so it needs no cryptography of its own. TLS 1.3 encrypts those messages: for a TLS 1.3-only
  server the chain falls back to the leaf and OCSP stapling to "unknown".

The weak suites checked are `WEAK_CIPHERS`: NULL, export, single DES, RC4, 3DES, anonymous (no
server authentication) and CBC with SHA-1 MACs, named as in the IANA TLS cipher-suite registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import ipaddress
import os
import ssl
import struct
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp

from monitord.types import ConnectionSlot, no_connection_limit

# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class CertInfo:
    """What one X.509 certificate says, parsed once per distinct certificate."""

    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    self_signed: bool
    key_type: str
    key_bits: int | None
    signature_algorithm: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    sha256: str


def _key_facts(cert: x509.Certificate) -> tuple[str, int | None]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC ({key.curve.name})", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, None


@lru_cache(maxsize=8192)
def parse_certificate(der: bytes) -> CertInfo:
    """Parse a DER certificate into `CertInfo`.

    Cached by content: a round over thousands of services sees the same few hundred certificates
    every minute, and parsing is the costly part of the cheap certificate facts.
    """
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    self_signed = False
    if cert.subject == cert.issuer:
        try:
            cert.verify_directly_issued_by(cert)
            self_signed = True
        except (ValueError, TypeError, Exception):  # any failure means "not its own signer"
            self_signed = False
    key_type, key_bits = _key_facts(cert)
    oid = cert.signature_algorithm_oid
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        self_signed=self_signed,
        key_type=key_type,
        key_bits=key_bits,
        # cryptography names well-known OIDs ("sha256WithRSAEncryption") only on this attribute.
        signature_algorithm=str(getattr(oid, "_name", oid.dotted_string)),
        dns_names=dns_names,
        ip_addresses=ips,
        sha256=cert.fingerprint(hashes.SHA256()).hex(),
    )


def days_until(moment: dt.datetime, now: dt.datetime) -> float:
    """Days from `now` to `moment`, negative when past, to two decimals."""
    return round((moment - now).total_seconds() / 86400, 2)


def hostname_matches(info: CertInfo, host: str) -> bool:
    """Whether the certificate's subjectAltName covers `host` (RFC 6125, as browsers do it).

    The subject CN is ignored, as browsers ignore it; a wildcard covers exactly one left-most
    label and never an IP address.
    """
    host = host.rstrip(".").lower()
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        return any(ipaddress.ip_address(a) == ip for a in info.ip_addresses)
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    for name in info.dns_names:
        pattern = name.rstrip(".").lower()
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if label and rest == pattern[2:]:
                return True
    return False


def cert_facts(der: bytes, host: str, now: dt.datetime) -> dict[str, Any]:
    """The certificate facts both the tls and the availability probe report, as JSON values."""
    facts = dict(_fixed_cert_facts(der, host))
    facts["days_to_expiry"] = days_until(parse_certificate(der).not_after, now)
    return facts


@lru_cache(maxsize=8192)
def _fixed_cert_facts(der: bytes, host: str) -> dict[str, Any]:
    """`cert_facts` but the days to expiry, cached: a round's probes see the same certificates
    and hosts every minute. Copy it before changing it."""
    info = parse_certificate(der)
    return {
        "cert_subject": info.subject,
        "cert_issuer": info.issuer,
        "cert_not_before": info.not_before.isoformat(),
        "cert_not_after": info.not_after.isoformat(),
        "days_to_expiry": None,
        "hostname_match": hostname_matches(info, host),
        "self_signed": info.self_signed,
        "key_type": info.key_type,
        "key_bits": info.key_bits,
        "signature_algorithm": info.signature_algorithm,
    }


# OpenSSL checks a certificate in a fixed order (crypto/x509/x509_vfy.c, verify_chain): it first
# builds the chain up to a trusted root, and only then checks key sizes and digests, the host
# name and the validity dates. So a handshake refused for one of these codes had a trusted chain
# and a certificate with the problem named; every other code (no issuer found locally,
# self-signed, a bad signature, an invalid CA…) is a chain that is not trusted.
CERT_PROBLEMS: dict[int, str] = {
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    62: "hostname_mismatch",  # X509_V_ERR_HOSTNAME_MISMATCH
    64: "hostname_mismatch",  # X509_V_ERR_IP_ADDRESS_MISMATCH
    66: "weak_key",  # X509_V_ERR_EE_KEY_TOO_SMALL
    67: "weak_key",  # X509_V_ERR_CA_KEY_TOO_SMALL
    68: "weak_signature",  # X509_V_ERR_CA_MD_TOO_WEAK
}
UNTRUSTED = "untrusted"


def trust_verdict(verified: bool, verify_code: int | None) -> dict[str, Any]:
    """The `chain_trusted` and `cert_problem` facts of a verifying handshake's outcome.

    Verified: a trusted chain and no problem. Refused with a verify code: `CERT_PROBLEMS` names
    the certificate's problem on a trusted chain, any other code is an untrusted chain. Failed
    without a verify code (reset, no common protocol): nothing is known, both None.
    """
    if verified:
        return {"chain_trusted": True, "cert_problem": None}
    if verify_code is None:
        return {"chain_trusted": None, "cert_problem": None}
    problem = CERT_PROBLEMS.get(verify_code)
    return {"chain_trusted": problem is not None, "cert_problem": problem or UNTRUSTED}


# ---------------------------------------------------------------------------------------------
# Observed handshakes (availability): timing and facts of the handshake aiohttp itself does


@dataclass
class HandshakeCapture:
    """What the observed SSL object saw during one request; perf_counter seconds."""

    started: float | None = None
    finished: float | None = None
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    peer_der: bytes | None = None
    handshakes: int = 0
    resumed: bool = False
    """The handshake resumed an earlier session (`probes.resumption`): no certificate was sent or
    checked, and `peer_der` is the one the session's full handshake checked."""


_CAPTURE: contextvars.ContextVar[HandshakeCapture | None] = contextvars.ContextVar(
    "monitord_tls_capture", default=None
)


class _ObservedSSLObject(ssl.SSLObject):
    """An SSLObject that reports its handshake to the capture of the task that opened it.

    asyncio's SSL transport calls `do_handshake` from callbacks scheduled in the context of the
    task that opened the connection, so the context variable finds the right capture even with
    thousands of probes in flight.
    """

    def do_handshake(self) -> None:
        cap = _CAPTURE.get()
        if cap is not None and cap.started is None:
            cap.started = time.perf_counter()
        super().do_handshake()  # raises SSLWantReadError until the handshake is done
        if cap is not None:
            cap.finished = time.perf_counter()
            cap.handshakes += 1
            cipher = self.cipher()
            cap.version = self.version()
            cap.cipher = cipher[0] if cipher else None
            cap.alpn = self.selected_alpn_protocol()
            cap.peer_der = self.getpeercert(binary_form=True)


def observe(context: ssl.SSLContext) -> ssl.SSLContext:
    """Make `context` report its handshakes to `capture()`; returns the same context.

    Only the class of the SSL objects it creates changes: trust, versions and ciphers stay as they
    were, and with no capture active the observer does nothing.
    """
    if context.sslobject_class is not _ObservedSSLObject:
        context.sslobject_class = _ObservedSSLObject
    return context


@contextlib.contextmanager
def capture() -> Iterator[HandshakeCapture]:
    """Collect the facts of TLS handshakes made, in this task, through an `observe`d context."""
    cap = HandshakeCapture()
    token = _CAPTURE.set(cap)
    try:
        yield cap
    finally:
        _CAPTURE.reset(token)


def trust_context(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context: the system's CAs plus `ca_file` (the government CA), observed.

    Made once per bundle and kept (building one reads the system store: 24 ms, each round);
    a bundle replaced or edited in place is read again.
    """
    try:
        changed = os.stat(ca_file).st_mtime_ns if ca_file else 0
    except OSError:
        changed = -1  # load_verify_locations says what is wrong with it
    return _trust_context(ca_file, changed)


@lru_cache(maxsize=16)
def _trust_context(ca_file: str | None, changed: int) -> ssl.SSLContext:
    # `ssl.create_default_context(cafile=...)` would load the file *instead of* the system
    # store, so the extra bundle is added after the defaults.
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return observe(context)


@lru_cache(maxsize=16)
def insecure_context(
    version: ssl.TLSVersion | None = None, ciphers: str | None = None
) -> ssl.SSLContext:
    """A client context that verifies nothing, optionally pinned to one version or cipher string.

    For looking at whatever the server presents (expired, self-signed, wrong host); never used
    to send data that matters. Pinned to TLSv1/1.1 it also drops to ``@SECLEVEL=0``, without which
    OpenSSL 3 refuses those versions outright.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    legacy = version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
    if version is not None:
        # Python deprecates naming TLSv1/1.1; enumerating them is the point here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
            context.maximum_version = version
    if ciphers is not None:
        context.set_ciphers(ciphers)
    elif legacy:
        context.set_ciphers("ALL:@SECLEVEL=0")
    with contextlib.suppress(NotImplementedError):
        context.set_alpn_protocols(["h2", "http/1.1"])
    return observe(context)


def any_protocol_context() -> ssl.SSLContext:
    """`insecure_context` that also speaks TLSv1 and TLSv1.1 (at ``@SECLEVEL=0``).

    For reading the certificate of a server that speaks nothing newer, which the default
    minimum of TLS 1.2 cannot even reach.
    """
    context = insecure_context(ciphers="ALL:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    return context


# ---------------------------------------------------------------------------------------------
# Stdlib handshakes


@dataclass(frozen=True)
class Handshake:
    """The outcome of one stdlib handshake."""

    ok: bool
    version: str | None = None
    cipher: str | None = None
    alpn: str | None = None
    peer_der: bytes | None = None
    verify_code: int | None = None
    error: str | None = None
    connected: bool = True
    """False when not even TCP connected (refused, unreachable, timed out before TLS)."""


async def close_connection(writer: asyncio.StreamWriter) -> None:
    """Close a connection to the service and return once it is closed.

    The connection slot it held (`ProbeContext.connection`) is handed on only then. A server
    that never answers TLS close_notify gets the connection cut after a second rather than
    held open, and the probe with it, until asyncio gives up on the shutdown.
    """
    writer.close()
    try:
        async with asyncio.timeout(1.0):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except Exception:  # a close that fails has closed the connection all the same
        pass


async def handshake(
    host: str,
    port: int,
    context: ssl.SSLContext,
    *,
    server_hostname: str | None,
    timeout_s: float,
) -> Handshake:
    """Connect, complete a TLS handshake with `context`, report what was agreed, and hang up.

    Never raises for network or TLS trouble: a failure is a `Handshake` with `ok=False`, the
    OpenSSL verify code when certificate verification failed, and the error text.
    """
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                host,
                port,
                ssl=context,
                server_hostname=server_hostname or None,
                ssl_handshake_timeout=timeout_s,
            )
        sslobj = writer.get_extra_info("ssl_object")
        cipher = sslobj.cipher() if sslobj else None
        return Handshake(
            ok=True,
            version=sslobj.version() if sslobj else None,
            cipher=cipher[0] if cipher else None,
            alpn=sslobj.selected_alpn_protocol() if sslobj else None,
            peer_der=sslobj.getpeercert(binary_form=True) if sslobj else None,
        )
    except ssl.SSLCertVerificationError as exc:
        return Handshake(ok=False, verify_code=exc.verify_code, error=exc.verify_message)
    except (ssl.SSLError, ConnectionResetError, EOFError) as exc:
        return Handshake(ok=False, error=describe_error(exc))
    except (OSError, TimeoutError) as exc:
        return Handshake(ok=False, error=describe_error(exc), connected=False)
    finally:
        if writer is not None:
            await close_connection(writer)


PROTOCOLS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}


def local_protocol_support() -> dict[str, bool]:
    """Which protocol versions this machine's OpenSSL can offer at all (at ``@SECLEVEL=0``)."""
    support: dict[str, bool] = {}
    for name, version in PROTOCOLS.items():
        try:
            insecure_context(version)
            support[name] = getattr(ssl, "HAS_" + name.replace("v", "V").replace(".", "_"), True)
        except (ssl.SSLError, ValueError):
            support[name] = False
    return support


async def accepted_protocols(
    host: str,
    port: int,
    *,
    server_hostname: str | None,
    timeout_s: float,
    connection: ConnectionSlot = no_connection_limit,
) -> list[str]:
    """The versions among TLSv1, TLSv1.1, TLSv1.2 and TLSv1.3 the server accepts, each alone.

    The four handshakes run as many at once as `connection` gives slots (`ProbeContext.
    connection`), each timed from when it has one. A version this machine's OpenSSL cannot
    offer is missing from the answer rather than reported as refused by the server; see
    `local_protocol_support`.
    """

    async def attempt(name: str, version: ssl.TLSVersion) -> str | None:
        try:
            context = insecure_context(version)
        except (ssl.SSLError, ValueError):
            return None
        async with connection():
            result = await handshake(
                host, port, context, server_hostname=server_hostname, timeout_s=timeout_s
            )
        return name if result.ok and result.version == name else None

    found = await asyncio.gather(*(attempt(n, v) for n, v in PROTOCOLS.items()))
    return [name for name in found if name]


# ---------------------------------------------------------------------------------------------
# Raw TLS 1.2 ClientHello: chain as sent, OCSP stapling, weak suites by IANA number

WEAK_CIPHERS: dict[int, str] = {
    # NULL: no encryption at all
    0x0001: "TLS_RSA_WITH_NULL_MD5",
    0x0002: "TLS_RSA_WITH_NULL_SHA",
    0x003B: "TLS_RSA_WITH_NULL_SHA256",
    0xC006: "TLS_ECDHE_ECDSA_WITH_NULL_SHA",
    0xC010: "TLS_ECDHE_RSA_WITH_NULL_SHA",
    0xC015: "TLS_ECDH_anon_WITH_NULL_SHA",
    # export grade (40/56-bit keys)
    0x0003: "TLS_RSA_EXPORT_WITH_RC4_40_MD5",
    0x0006: "TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5",
    0x0008: "TLS_RSA_EXPORT_WITH_DES40_CBC_SHA",
    0x0011: "TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA",
    0x0014: "TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA",
    0x0017: "TLS_DH_anon_EXPORT_WITH_RC4_40_MD5",
    0x0019: "TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA",
    0x0062: "TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA",
    0x0064: "TLS_RSA_EXPORT1024_WITH_RC4_56_SHA",
    # single DES (56-bit), weaker than the 3DES below
    0x0009: "TLS_RSA_WITH_DES_CBC_SHA",
    0x0012: "TLS_DHE_DSS_WITH_DES_CBC_SHA",
    0x0015: "TLS_DHE_RSA_WITH_DES_CBC_SHA",
    # RC4 (RFC 7465 forbids it)
    0x0004: "TLS_RSA_WITH_RC4_128_MD5",
    0x0005: "TLS_RSA_WITH_RC4_128_SHA",
    0xC007: "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    0xC011: "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    # 3DES (64-bit blocks: Sweet32)
    0x000A: "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    0x0013: "TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA",
    0x0016: "TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA",
    0xC008: "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA",
    0xC012: "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    # anonymous: no server authentication, so anyone in the middle can read everything
    0x0018: "TLS_DH_anon_WITH_RC4_128_MD5",
    0x001A: "TLS_DH_anon_WITH_DES_CBC_SHA",
    0x001B: "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA",
    0x0034: "TLS_DH_anon_WITH_AES_128_CBC_SHA",
    0x003A: "TLS_DH_anon_WITH_AES_256_CBC_SHA",
    0x006C: "TLS_DH_anon_WITH_AES_128_CBC_SHA256",
    0x006D: "TLS_DH_anon_WITH_AES_256_CBC_SHA256",
    0x00A6: "TLS_DH_anon_WITH_AES_128_GCM_SHA256",
    0x00A7: "TLS_DH_anon_WITH_AES_256_GCM_SHA384",
    0xC016: "TLS_ECDH_anon_WITH_RC4_128_SHA",
    0xC017: "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA",
    0xC018: "TLS_ECDH_anon_WITH_AES_128_CBC_SHA",
    0xC019: "TLS_ECDH_anon_WITH_AES_256_CBC_SHA",
    # CBC with a SHA-1 MAC (Lucky13 / POODLE-era constructions)
    0x002F: "TLS_RSA_WITH_AES_128_CBC_SHA",
    0x0035: "TLS_RSA_WITH_AES_256_CBC_SHA",
    0x0032: "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    0x0033: "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    0x0038: "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    0x0039: "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    0x0041: "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA",
    0x0084: "TLS_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x0045: "TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA",
    0x0088: "TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA",
    0x0096: "TLS_RSA_WITH_SEED_CBC_SHA",
    0x0007: "TLS_RSA_WITH_IDEA_CBC_SHA",
    0xC009: "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    0xC00A: "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    0xC013: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    0xC014: "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
}

# Suites offered when only the chain and the OCSP staple are wanted: what real servers pick.
_COMMON_CIPHERS: tuple[int, ...] = (
    0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC023, 0xC027, 0xC024, 0xC028,
    0x009E, 0x009F, 0x009C, 0x009D, 0x0067, 0x006B, 0x003C, 0x003D,
    *WEAK_CIPHERS,
)  # fmt: skip

_SIGALGS = (0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0807)
_SIGALGS_LEGACY = (0x0201, 0x0203, 0x0303, 0x0301, 0x0402, 0x0202)
_GROUPS = (0x001D, 0x0017, 0x0018, 0x0019, 0x001E, 0x0100, 0x0101)

_HS_SERVER_HELLO, _HS_CERTIFICATE, _HS_SERVER_HELLO_DONE, _HS_CERT_STATUS = 2, 11, 14, 22
_VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2"}


def _vec16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _ext(kind: int, data: bytes) -> bytes:
    return struct.pack("!H", kind) + _vec16(data)


def client_hello(server_name: str | None, ciphers: Sequence[int], *, status_request: bool) -> bytes:
    """A TLS 1.2 ClientHello record offering `ciphers`, with SNI and optionally OCSP stapling."""
    exts = b""
    if server_name:
        try:
            ipaddress.ip_address(server_name)
        except ValueError:
            # SNI carries DNS names only; an IP-address target is sent without it, as browsers do.
            name = server_name.encode("idna")
            exts += _ext(0x0000, _vec16(b"\x00" + _vec16(name)))
    if status_request:
        exts += _ext(0x0005, b"\x01\x00\x00\x00\x00")  # ocsp, no responder ids, no extensions
    exts += _ext(0x000A, _vec16(b"".join(struct.pack("!H", g) for g in _GROUPS)))
    exts += _ext(0x000B, b"\x01\x00")  # uncompressed points
    sigalgs = _SIGALGS + _SIGALGS_LEGACY
    exts += _ext(0x000D, _vec16(b"".join(struct.pack("!H", s) for s in sigalgs)))
    exts += _ext(0xFF01, b"\x00")  # renegotiation_info: some servers refuse hellos without it
    suites = b"".join(struct.pack("!H", c) for c in ciphers)
    body = b"\x03\x03" + os.urandom(32) + b"\x00" + _vec16(suites) + b"\x01\x00" + _vec16(exts)
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + _vec16(message)


@dataclass
class RawHello:
    """What the server answered to a raw ClientHello, up to ServerHelloDone."""

    version: str | None = None
    cipher: int | None = None
    certificates: list[bytes] = field(default_factory=list)
    ocsp_response: bytes | None = None
    alert: int | None = None
    error: str | None = None


def _parse_server_hello(body: bytes, out: RawHello) -> None:
    version = struct.unpack("!H", body[0:2])[0]
    sid_len = body[34]
    offset = 35 + sid_len
    out.version = _VERSION_NAMES.get(version, hex(version))
    out.cipher = struct.unpack("!H", body[offset : offset + 2])[0]


def _parse_certificates(body: bytes) -> list[bytes]:
    total = int.from_bytes(body[0:3], "big")
    certs, offset = [], 3
    while offset < 3 + total:
        length = int.from_bytes(body[offset : offset + 3], "big")
        certs.append(body[offset + 3 : offset + 3 + length])
        offset += 3 + length
    return certs


async def raw_hello(
    host: str,
    port: int,
    *,
    server_name: str | None,
    ciphers: Sequence[int],
    timeout_s: float,
    status_request: bool = True,
    stop_after_server_hello: bool = False,
) -> RawHello:
    """Send a raw TLS 1.2 ClientHello and read the server's plaintext answer, then hang up.

    Returns the version and suite chosen, the certificates sent (leaf first), the stapled OCSP
    response (DER) when there is one, or the alert the server sent. Never raises for network
    trouble; `error` says what went wrong.
    """
    out = RawHello()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(client_hello(server_name, ciphers, status_request=status_request))
            await writer.drain()
            buffer = b""
            while True:
                header = await reader.readexactly(5)
                content_type, length = header[0], struct.unpack("!H", header[3:5])[0]
                payload = await reader.readexactly(length)
                if content_type == 21:  # alert: [level, description]
                    out.alert = payload[1] if len(payload) > 1 else None
                    return out
                if content_type != 22:
                    return out
                buffer += payload
                # Handshake messages may span records, or share one: reassemble, then split.
                while len(buffer) >= 4:
                    kind, size = buffer[0], int.from_bytes(buffer[1:4], "big")
                    if len(buffer) < 4 + size:
                        break
                    body, buffer = buffer[4 : 4 + size], buffer[4 + size :]
                    if kind == _HS_SERVER_HELLO:
                        _parse_server_hello(body, out)
                        if stop_after_server_hello:
                            return out
                    elif kind == _HS_CERTIFICATE:
                        out.certificates = _parse_certificates(body)
                    elif kind == _HS_CERT_STATUS and body[:1] == b"\x01":
                        out.ocsp_response = body[4 : 4 + int.from_bytes(body[1:4], "big")]
                    elif kind == _HS_SERVER_HELLO_DONE:
                        return out
    except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError, struct.error) as exc:
        out.error = describe_error(exc)
        return out
    finally:
        if writer is not None:
            await close_connection(writer)


async def accepted_weak_ciphers(
    host: str, port: int, *, server_name: str | None, timeout_s: float
) -> list[str]:
    """The suites of `WEAK_CIPHERS` the server accepts, by IANA name.

    Offers every weak suite not yet found; the server picks one; that one is removed and the
    hello sent again, until the server refuses. N accepted suites cost N+1 short exchanges rather
    than one handshake per suite.
    """
    remaining = list(WEAK_CIPHERS)
    accepted: list[str] = []
    for _ in range(len(WEAK_CIPHERS)):
        answer = await raw_hello(
            host,
            port,
            server_name=server_name,
            ciphers=remaining,
            timeout_s=timeout_s,
            status_request=False,
            stop_after_server_hello=True,
        )
        if answer.cipher is None or answer.cipher not in remaining:
            break
        accepted.append(WEAK_CIPHERS[answer.cipher])
        remaining.remove(answer.cipher)
    return accepted


async def sent_chain_and_staple(
    host: str, port: int, *, server_name: str | None, timeout_s: float
) -> RawHello:
    """The certificate chain the server sends and its stapled OCSP response, over TLS 1.2."""
    return await raw_hello(
        host, port, server_name=server_name, ciphers=_COMMON_CIPHERS, timeout_s=timeout_s
    )


def ocsp_facts(response: bytes | None, checked: bool) -> dict[str, Any]:
    """The `ocsp_stapled` fact: whether a response was stapled and the certificate status in it.

    `checked` is False when the TLS 1.2 exchange that would show a staple did not happen (a TLS
    1.3-only server); then `stapled` is None, meaning unknown, not "no".
    """
    if response is None:
        return {"stapled": False if checked else None, "status": None}
    try:
        parsed = ocsp.load_der_ocsp_response(response)
    except ValueError:
        return {"stapled": True, "status": "unparseable"}
    if parsed.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return {"stapled": True, "status": parsed.response_status.name.lower()}
    return {"stapled": True, "status": parsed.certificate_status.name.lower()}


# ---------------------------------------------------------------------------------------------
# HTTP-level facts and error text


def parse_hsts(value: str | None) -> dict[str, Any]:
    """The `hsts` fact from a Strict-Transport-Security header value (or its absence).

    `enabled` is whether a browser keeps the host HTTPS-only (RFC 6797 §6.1.1): a header
    without a valid max-age is ignored, and max-age=0 switches HSTS off.
    """
    if value is None:
        return {
            "present": False,
            "enabled": False,
            "max_age": None,
            "include_subdomains": False,
            "preload": False,
        }
    max_age: int | None = None
    flags: set[str] = set()
    for part in value.split(";"):
        key, _, val = part.strip().partition("=")
        key = key.strip().lower()
        if key == "max-age":
            with contextlib.suppress(ValueError):
                max_age = int(val.strip().strip('"'))
        elif key:
            flags.add(key)
    return {
        "present": True,
        "enabled": max_age is not None and max_age > 0,
        "max_age": max_age,
        "include_subdomains": "includesubdomains" in flags,
        "preload": "preload" in flags,
    }


def describe_error(exc: BaseException) -> str:
    """A one-line description of a network or TLS failure for a probe result."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed mid-handshake"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


def earliest(moments: Iterable[dt.datetime]) -> dt.datetime | None:
    """The earliest of `moments`, or None when there are none."""
    return min(moments, default=None)
