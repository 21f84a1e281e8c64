"""TLS session resumption for the availability probe, made by pyOpenSSL.

A returning browser resumes its TLS session; so does the availability probe
(`probes.tls_resume_minutes`). The session of a host and port's last full handshake is offered
to the next connections there, which then skip the certificate checks and the key exchange's
signature: a resumed handshake costs a client about half of a full one.

Python's ssl module cannot do this without leaking: it offers a session only once read off a
connection (`SSLObject.session`), and CPython before 3.12.8 and 3.13.1 leaks a copy of the session
on each read (gh-116810; about 6 KB a read). So the connections that resume are made by pyOpenSSL,
on the OpenSSL that cryptography ships, which reads and offers sessions without a copy. A
`ResumingConnection` runs OpenSSL straight on the probe's non-blocking socket, woken by the event
loop, and reads and writes as asyncio's streams do, so the probe's HTTP code is the same for it
and for the ssl module's connections.

The resuming connection checks what the probe's `ssl.SSLContext` checks: the same trusted CAs,
host name, verify flags, versions and TLS 1.2 ciphers (a service probed without certificate
checks, `verify_tls = false`, gets the ssl module's full handshakes). Whatever it cannot
complete (a refused certificate, a gateway that breaks on offered sessions, a server it cannot
agree with) is made again at once by the ssl module (`probes.http`), so every failure a probe
reports, and its wording, is the ssl module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import ipaddress
import os
import socket
import ssl
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.hazmat.bindings.openssl.binding import Binding
from OpenSSL import SSL, crypto

from probes.tlsinfo import parse_certificate

_lib: Any = Binding.lib

RESUME_MISSES = 2
"""Offers in a row a server may turn down before it is offered nothing for a while (a server
that issues no session tickets turns down every one)."""
FAILED_OFFER_REST = dt.timedelta(days=1)
"""How long a host and port whose resuming connection failed twice within this long, or failed
where the ssl module's then worked (some gateways and WAFs reset, refuse or never answer a
handshake offering a session), gets the ssl module's full handshakes only."""
KEY_SHARE_GROUPS = b"X25519:P-256:P-384"
"""The key exchange groups offered. OpenSSL's newest default also sends a post-quantum key
share, which costs a client a sixth of a handshake (a fifth of a resumed one) and protects
nothing a probe sends; a server that speaks none of these fails the resuming handshake, and the
ssl module's follows."""

RECORD_BYTES = 16384
"""The most a TLS record decrypts to."""

_VERSIONS = {
    ssl.TLSVersion.TLSv1: SSL.TLS1_VERSION,
    ssl.TLSVersion.TLSv1_1: SSL.TLS1_1_VERSION,
    ssl.TLSVersion.TLSv1_2: SSL.TLS1_2_VERSION,
    ssl.TLSVersion.TLSv1_3: SSL.TLS1_3_VERSION,
}
"""Python's TLS versions as OpenSSL's; the minimum and maximum supported mean no limit (0)."""


class ResumingHandshakeError(ssl.SSLError):
    """The resuming connection's handshake failed: the ssl module makes it again."""


class ResumingCertificateError(ResumingHandshakeError):
    """The resuming connection's handshake refused the certificate (or its host name): the ssl
    module makes it again, for the verdict in its own words."""


def _ssl_error(exc: SSL.Error) -> ssl.SSLError:
    """A pyOpenSSL TLS error as the ssl module's exception, worded as the ssl module words it
    ("[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC] decryption failed or bad record mac"), without
    its source line."""
    queue = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    entries = [e for e in queue if isinstance(e, tuple) and len(e) == 3]
    # The first error of OpenSSL's queue is the cause; OpenSSL 4.0 adds its layers' after it.
    first = next((e for e in entries if e[0] == "SSL routines"), entries[0] if entries else None)
    if first is None:
        return ssl.SSLError(1, f"TLS error ({type(exc).__name__})")
    reason = str(first[2])
    code = reason.upper().replace(" ", "_")
    error = ssl.SSLError(1, f"[SSL: {code}] {reason}")
    error.library, error.reason = "SSL", code
    return error


class ResumingConnection:
    """One client connection of `ResumingClient`: pyOpenSSL's TLS straight on a connected,
    non-blocking socket, woken by the event loop when the socket is readable or writable.

    It reads as asyncio's `StreamReader` does (`read`, `readline`, `readexactly`), writes as
    its `StreamWriter` does (`write`, `close`), and answers the handshake's facts as
    `ssl.SSLObject` does. OpenSSL reads and writes the socket itself, with no transport and no
    memory BIOs between them.
    """

    def __init__(
        self,
        client: ResumingClient,
        sock: socket.socket,
        host: str,
        offer: Offer | None,
        limit: int,
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._buffer = bytearray()
        self._out = b""
        self._eof = False
        self._failure: BaseException | None = None
        self._offer = offer
        self._peer_der: bytes | None = None
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._conn = SSL.Connection(client.engine, sock)
        self._conn.set_connect_state()
        _check_host(self._conn, host, client.host_flags)
        if offer is not None:
            self._conn.set_session(offer.session)
        # Watched for reading from here to `close`, not wait by wait: each watch begun and
        # ended costs the event loop a poll handle and two system calls, a tenth of a probe.
        self._loop.add_reader(self._fd, self._wake)

    @classmethod
    async def open(
        cls,
        client: ResumingClient,
        host: str,
        offer: Offer | None,
        limit: int,
        sock: socket.socket,
        address: tuple[str, int],
    ) -> ResumingConnection:
        """A resuming connection to `host` on `sock`, connected to `address`, reading lines of
        at most `limit` bytes; its handshake is still to be made. The socket is watched from
        before it connects, once for good."""
        conn = cls(client, sock, host, offer, limit)
        try:
            # Not the event loop's sock_connect, which reads the socket's family and type as
            # enums and keeps a future and a watch of its own: a twentieth of a probe.
            error = sock.connect_ex(address)
            if error == errno.EINPROGRESS:
                await conn._ready(writable=True)
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
        except BaseException:
            conn.close()
            raise
        return conn

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _ready(self, writable: bool) -> None:
        """Wait until the socket can be written (`writable`) or read."""
        self._waiter = waiter = self._loop.create_future()
        if writable:
            self._loop.add_writer(self._fd, self._wake)
        try:
            await waiter
        finally:
            self._waiter = None
            if writable:
                self._loop.remove_writer(self._fd)

    async def handshake(self) -> None:
        """Make the TLS handshake. Raises `ResumingCertificateError` when the certificate (or
        its host name) is refused, `ResumingHandshakeError` when it fails otherwise."""
        while True:
            try:
                self._conn.do_handshake()
                return
            except SSL.WantReadError:
                await self._ready(writable=False)
            except SSL.WantWriteError:
                await self._ready(writable=True)
            except SSL.Error as exc:
                if _lib.SSL_get_verify_result(self._conn._ssl) != 0:  # X509_V_OK
                    raise ResumingCertificateError(str(exc)) from None
                raise ResumingHandshakeError(str(exc)) from None

    def write(self, data: bytes) -> None:
        """Send `data`; what the socket cannot take now is sent before the next read."""
        self._out += data
        self._send()

    def _send(self) -> bool | None:
        """Send what is waiting: None once it is all sent (or the connection has failed),
        else what to wait for first: the socket writable (True) or readable (False)."""
        while self._out and self._failure is None:
            try:
                sent = self._conn.send(self._out)
            except SSL.WantWriteError:
                return True
            except SSL.WantReadError:
                return False
            except SSL.Error as exc:
                # A write to a closed connection: its reads tell how it ended.
                self._failure = _read_error(exc)
                self._out = b""
                break
            self._out = self._out[sent:]
        return None

    async def _fill(self) -> bool:
        """Read what has arrived into the buffer, waiting for it; False at the end."""
        while True:
            wait = self._send()
            if wait is not None:
                await self._ready(writable=wait)
                continue
            if self._failure is not None:
                raise self._failure
            if self._eof:
                return False
            try:
                self._buffer += self._conn.recv(RECORD_BYTES)
                return True
            except SSL.WantReadError:
                await self._ready(writable=False)
            except SSL.WantWriteError:
                await self._ready(writable=True)
            except SSL.ZeroReturnError:
                self._eof = True
            except SSL.Error as exc:
                self._failure = _read_error(exc)
                self._eof = self._failure is None

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (every byte to the end: -1), as many as have arrived; b"" at the end."""
        if n < 0:
            while await self._fill():
                pass
        elif not self._buffer:
            await self._fill()
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        chunk = bytes(self._buffer[:size])
        del self._buffer[:size]
        return chunk

    async def readline(self) -> bytes:
        """The next line with its b"\\n" (without: the last bytes before the end). Raises
        ValueError, having dropped what it read, past the reader's limit, as `StreamReader`."""
        start = 0
        while True:
            found = self._buffer.find(b"\n", start)
            if found >= 0:
                if found >= self._limit:
                    del self._buffer[: found + 1]
                    raise ValueError("Separator is found, but chunk is longer than limit")
                line = bytes(self._buffer[: found + 1])
                del self._buffer[: found + 1]
                return line
            if len(self._buffer) > self._limit:
                self._buffer.clear()
                raise ValueError("Separator is not found, and chunk exceed the limit")
            start = len(self._buffer)
            if not await self._fill():
                line = bytes(self._buffer)
                self._buffer.clear()
                return line

    async def readexactly(self, n: int) -> bytes:
        """Exactly n bytes; `asyncio.IncompleteReadError` when the end comes first."""
        while len(self._buffer) < n:
            if not await self._fill():
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
        chunk = bytes(self._buffer[:n])
        del self._buffer[:n]
        return chunk

    def close(self) -> None:
        """Send close_notify if the socket takes it, and close the socket. The session stays
        resumable: OpenSSL marks that of a connection ended without close_notify sent as not."""
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        try:
            self._conn.shutdown()
        except SSL.Error:
            self._conn.set_shutdown(self._conn.get_shutdown() | SSL.SENT_SHUTDOWN)
        self._sock.close()

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The server's certificate as DER (`binary_form`), else an empty dict."""
        if not binary_form:
            return {}
        if self._peer_der is None and self._offer is not None and self.session_reused:
            # The server sends no certificate when it resumes: it is the offered session's.
            self._peer_der = self._offer.certificate
        if self._peer_der is None:
            cert = self._conn.get_peer_certificate()
            if cert is not None:
                self._peer_der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)
        return self._peer_der

    def cipher(self) -> tuple[str, str, int] | None:
        """The suite agreed on: (name, protocol, secret bits), as `ssl.SSLObject.cipher`."""
        name = self._conn.get_cipher_name()
        if name is None:
            return None
        return name, self._conn.get_cipher_version() or "", self._conn.get_cipher_bits() or 0

    def version(self) -> str | None:
        """The protocol version agreed on ("TLSv1.3")."""
        return self._conn.get_protocol_version_name() or None

    def selected_alpn_protocol(self) -> None:
        """No ALPN is offered, as by the ssl module's trust context."""
        return None

    @property
    def session_reused(self) -> bool:
        """Whether the handshake resumed the session offered."""
        return bool(_lib.SSL_session_reused(self._conn._ssl))

    @property
    def session(self) -> SSL.Session | None:
        """The connection's session, to offer later connections (no copy is made)."""
        return self._conn.get_session()


def _read_error(exc: SSL.Error) -> BaseException | None:
    """What a failed read or write raises, as asyncio's TLS transports raise it: an OS error
    (a reset) as itself, a TLS error worded as the ssl module words it. None for a server that
    closed TCP without close_notify: the end of the stream, as those transports read it (a
    body that runs to the close ends there)."""
    if isinstance(exc, SSL.SysCallError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else -1
        return OSError(code, os.strerror(code)) if code > 0 else None
    return _ssl_error(exc)


@lru_cache(maxsize=4096)
def _host_form(host: str) -> tuple[bytes | None, bytes | None]:
    """(packed IP address, None) for an address, (None, IDNA name) for a name, as a certificate
    is checked against it; cached, as a round names the same hosts every minute."""
    try:
        return ipaddress.ip_address(host.strip("[]")).packed, None
    except ValueError:
        return None, host.encode("idna")


def _check_host(conn: SSL.Connection, host: str, flags: int | None) -> None:
    """Name `host` in SNI unless it is an IP address and, with `flags` (None: the model
    context does not check host names), have the handshake check it against the certificate,
    as `check_hostname` does."""
    param = _lib.SSL_get0_param(conn._ssl)
    packed, name = _host_form(host)
    checked = 1
    if name is not None:
        conn.set_tlsext_host_name(name)
        if flags is not None:
            _lib.X509_VERIFY_PARAM_set_hostflags(param, flags)
            checked = _lib.X509_VERIFY_PARAM_set1_host(param, name, len(name))
    elif packed is not None and flags is not None:
        checked = _lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    if checked != 1:
        raise ResumingHandshakeError(f"cannot check the certificate against {host!r}")


@dataclass
class ResumingClient:
    """How the resuming connections of one `ssl.SSLContext` are made (`resuming_client`): what
    they trust and check, and the sessions kept for them."""

    engine: SSL.Context
    sessions: ResumableSessions
    host_flags: int | None
    """How host names are checked (`X509_CHECK_FLAG_*`); None: they are not."""


def _engine(model: ssl.SSLContext) -> SSL.Context:
    """A pyOpenSSL client context checking what `model` checks."""
    engine = SSL.Context(SSL.TLS_CLIENT_METHOD)
    engine.set_verify(SSL.VERIFY_PEER if model.verify_mode != ssl.CERT_NONE else SSL.VERIFY_NONE)
    store = engine.get_cert_store()
    assert store is not None
    # The CAs `model` loaded from files, the system's among them, and the directory of hashed
    # certificates OpenSSL looks in at each handshake (not listed until used).
    for der in model.get_ca_certs(binary_form=True):
        store.add_cert(crypto.load_certificate(crypto.FILETYPE_ASN1, der))
    capath = ssl.get_default_verify_paths().capath
    if capath:
        engine.load_verify_locations(None, capath)
    param = _lib.SSL_CTX_get0_param(engine._context)
    _lib.X509_VERIFY_PARAM_set_flags(param, int(model.verify_flags))
    if model.minimum_version in _VERSIONS:
        engine.set_min_proto_version(_VERSIONS[model.minimum_version])
    if model.maximum_version in _VERSIONS:
        engine.set_max_proto_version(_VERSIONS[model.maximum_version])
    tls12 = [c["name"] for c in model.get_ciphers() if c["protocol"] != "TLSv1.3"]
    if tls12:
        engine.set_cipher_list(":".join(tls12).encode())
    if model.options & ssl.OP_IGNORE_UNEXPECTED_EOF:
        engine.set_options(SSL.OP_IGNORE_UNEXPECTED_EOF)
    if _lib.SSL_CTX_set1_curves_list(engine._context, KEY_SHARE_GROUPS) != 1:
        raise ssl.SSLError(f"OpenSSL refused the key share groups {KEY_SHARE_GROUPS!r}")
    return engine


_RESUMING: weakref.WeakKeyDictionary[ssl.SSLContext, ResumingClient] = weakref.WeakKeyDictionary()


def resuming_client(model: ssl.SSLContext) -> ResumingClient:
    """The resuming client of a verifying `model` (made once, and kept as long as `model`:
    a daemon's trust context lives for good, and its sessions with it)."""
    found = _RESUMING.get(model)
    if found is None:
        flags = _lib.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
        if not model.hostname_checks_common_name:
            flags |= _lib.X509_CHECK_FLAG_NEVER_CHECK_SUBJECT
        host_flags = flags if model.check_hostname else None
        found = ResumingClient(_engine(model), ResumableSessions(), host_flags)
        _RESUMING[model] = found
    return found


# ---------------------------------------------------------------------------------------------
# The sessions kept: a full handshake per host and port every few minutes


@dataclass(frozen=True)
class Offer:
    """A kept session to offer a new connection, and the certificate (DER) of the full
    handshake that made it: a resumed connection's, as the server sends none when it resumes."""

    session: SSL.Session
    certificate: bytes | None


@dataclass
class _KeptSession:
    session: SSL.Session | None
    """None: the server gave nothing to resume, turned down `RESUME_MISSES` offers in a row,
    or failed a resuming connection; nothing is offered until `until`."""
    kept_at: dt.datetime
    """When the full handshake that checked the certificate ended (or the rest began)."""
    until: dt.datetime
    """The session is offered until then: `max_age_s` after `kept_at`, and never past the end of
    the certificate that handshake checked, which a full handshake then shows at once."""
    missed: int = 0
    resting: bool = False
    """The host and port gets the ssl module's full handshakes until `until`."""
    certificate: bytes | None = None
    """The certificate (DER) the full handshake checked."""

    def current(self, now: dt.datetime) -> bool:
        """Whether the entry still holds at `now` (a clock stepped back ends it)."""
        return self.kept_at <= now < self.until


class ResumableSessions:
    """The TLS sessions of full handshakes, offered to the next connections to the same host and
    port for `max_age_s`, as a returning browser resumes its session.

    Each entry is replaced only by a full handshake, so every host and port gets one (its
    certificate checked, its facts read again) at least every `max_age_s`, and at once whenever
    the server turns an offer down (a restart, a new certificate with new ticket keys).
    """

    def __init__(self) -> None:
        self._kept: dict[tuple[str, int], _KeptSession] = {}
        self._failed: dict[tuple[str, int], dt.datetime] = {}
        """When a resuming connection last failed, per host and port."""
        self._refused: set[tuple[str, int]] = set()
        """The hosts and ports whose certificate a resuming connection refused lately."""
        self._prune_at = 1024

    def resting(self, host: str, port: int, now: dt.datetime) -> bool:
        """Whether host:port gets the ssl module's full handshakes for now: it breaks resuming
        connections (`refuses_offers`), or its certificate was refused (`certificate_refused`)."""
        if (host, port) in self._refused:
            return True
        kept = self._kept.get((host, port))
        return kept is not None and kept.resting and kept.current(now)

    def certificate_refused(self, host: str, port: int) -> None:
        """A resuming connection refused host:port's certificate: its next probes are the ssl
        module's alone, until one succeeds (`certificate_accepted`). Otherwise every probe of a
        broken service would make its failing handshake twice, within its one timeout."""
        self._refused.add((host, port))

    def certificate_accepted(self, host: str, port: int) -> None:
        """An ssl module handshake with host:port succeeded: resuming connections again."""
        self._refused.discard((host, port))

    def to_offer(self, host: str, port: int, now: dt.datetime, max_age_s: float) -> Offer | None:
        """The session to offer a new connection to host:port, or None for a full handshake."""
        kept = self._kept.get((host, port))
        if kept is None or kept.session is None or not kept.current(now):
            return None
        if (now - kept.kept_at).total_seconds() > max_age_s:
            return None  # the limit was lowered by a reload since
        return Offer(kept.session, kept.certificate)

    def after(
        self,
        host: str,
        port: int,
        tls: ResumingConnection,
        offered: Offer | None,
        now: dt.datetime,
        max_age_s: float,
    ) -> None:
        """Note how a connection's handshake went, once its answer began (a TLS 1.3 server's
        session ticket comes after the handshake): a full handshake's session is kept."""
        key = (host, port)
        kept = self._kept.get(key)
        if offered is not None and (kept is None or kept.session is not offered.session):
            return  # another connection has replaced the session this one offered
        if tls.session_reused:
            if kept is not None:
                kept.missed = 0
            return
        if kept is not None and kept.session is None and kept.current(now):
            return  # turned down offers lately: nothing is kept either
        missed = kept.missed + 1 if offered is not None and kept is not None else 0
        until = now + dt.timedelta(seconds=max_age_s)
        session = tls.session if missed < RESUME_MISSES else None
        if session is None:
            self._keep(key, _KeptSession(None, now, until), now)
            return
        der = tls.getpeercert(binary_form=True)
        with contextlib.suppress(ValueError):  # one cryptography cannot read: no date to keep
            until = min(until, parse_certificate(der).not_after) if der else until
        self._keep(key, _KeptSession(session, now, until, missed, certificate=der), now)

    def failed(self, host: str, port: int, offered: Offer | None, now: dt.datetime) -> None:
        """A resuming connection that offered `offered` (None: none) failed its handshake (reset,
        refused, no answer in time): the next one makes a full handshake. A second such failure
        within `FAILED_OFFER_REST` rests host:port that long (`refuses_offers`)."""
        key = (host, port)
        kept = self._kept.get(key)
        if offered is not None and kept is not None and kept.session is not offered.session:
            return  # another connection has replaced that session already
        before = self._failed.get(key)
        if before is not None and before <= now < before + FAILED_OFFER_REST:
            self.refuses_offers(host, port, now)
            return
        self._failed[key] = now
        self._kept.pop(key, None)

    def refuses_offers(self, host: str, port: int, now: dt.datetime) -> None:
        """host:port breaks resuming connections: the ssl module's only, for
        `FAILED_OFFER_REST`."""
        self._keep((host, port), _KeptSession(None, now, now + FAILED_OFFER_REST, 0, True), now)

    def _keep(self, key: tuple[str, int], kept: _KeptSession, now: dt.datetime) -> None:
        self._kept[key] = kept
        if len(self._kept) > self._prune_at:
            self._kept = {k: v for k, v in self._kept.items() if v.current(now)}
            self._failed = {
                k: at for k, at in self._failed.items() if at <= now < at + FAILED_OFFER_REST
            }
            self._prune_at = max(1024, 2 * len(self._kept))
