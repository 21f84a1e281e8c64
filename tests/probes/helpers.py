"""Certificates and server contexts shared by the probe tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def fixed_clock() -> dt.datetime:
    """The injected clock: certificates below are made relative to the same moment."""
    return NOW


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
    if ciphers is not None:
        # Before the certificate: "@SECLEVEL=0" is what lets a server load a weak key.
        context.set_ciphers(ciphers)
    context.load_cert_chain(cert.chain, cert.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
    return context


Serve = Callable[[web.Application, ssl.SSLContext | None], Awaitable[int]]


async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy `source` to `sink` until it ends, then close `sink`: one direction of a test proxy."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        sink.close()
