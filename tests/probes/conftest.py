"""Real servers on loopback for the probe tests: aiohttp over TLS with certificates made here."""

from __future__ import annotations

import datetime as dt
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import probes
from monitord.types import ProbeContext

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def fixed_clock() -> dt.datetime:
    """The injected clock: certificates below are made relative to the same moment."""
    return NOW


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    """The test root CA, trusted by the probe context."""
    return trustme.CA()


@pytest.fixture(scope="session")
def certdir() -> Iterator[Path]:
    """A folder for key and certificate files the server contexts load."""
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


@dataclass(frozen=True)
class ServerCert:
    """PEM files for a server: key, and certificate chain as the server will send it."""

    key: Path
    chain: Path


def write_cert(certdir: Path, name: str, key_pem: bytes, chain_pems: list[bytes]) -> ServerCert:
    """Write a key and chain for `name` into `certdir`."""
    key = certdir / f"{name}.key"
    chain = certdir / f"{name}.pem"
    key.write_bytes(key_pem)
    chain.write_bytes(b"".join(chain_pems))
    return ServerCert(key, chain)


def self_signed(certdir: Path, host: str) -> ServerCert:
    """A self-signed certificate for `host`, valid for a year."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return write_cert(certdir, f"self-{host}", key_pem, [pem])


def server_context(
    cert: ServerCert,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A server context; TLSv1/1.1 need SECLEVEL=0 on OpenSSL 3, and Python warns on naming them."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert.chain, cert.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


Serve = Callable[[web.Application, ssl.SSLContext | None], Awaitable[int]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start aiohttp apps on 127.0.0.1 (optionally over TLS); returns the port."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, context: ssl.SSLContext | None = None) -> int:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def ctx(ca: trustme.CA) -> AsyncIterator[ProbeContext]:
    """A probe context as the daemon builds it: probing session, injected clock, trusted CA."""
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with probes.make_session() as session:
        yield ProbeContext(session=session, clock=fixed_clock, ssl_context=client)
