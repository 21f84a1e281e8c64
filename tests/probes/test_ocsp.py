"""OCSP stapling, against `openssl s_server -status_file` (Python's ssl cannot staple)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from probes import tlsinfo
from tests.conftest import free_port
from tests.probes.helpers import NOW

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl s_server")


@pytest.fixture
def stapling_server(ca: trustme.CA, certdir: Path) -> Iterator[int]:
    """openssl s_server stapling a GOOD OCSP response for its certificate."""
    leaf = ca.issue_cert("localhost")
    cert_file, key_file = certdir / "ocsp-leaf.pem", certdir / "ocsp-leaf.key"
    cert_file.write_bytes(leaf.cert_chain_pems[0].bytes())
    key_file.write_bytes(leaf.private_key_pem.bytes())
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    issuer = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    issuer_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    response = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=cert,
            issuer=issuer,
            algorithm=hashes.SHA256(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + dt.timedelta(days=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    status_file = certdir / "ocsp.der"
    status_file.write_bytes(response.public_bytes(serialization.Encoding.DER))
    port = free_port()
    process = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert_file),
         "-key", str(key_file), "-status_file", str(status_file), "-www", "-quiet"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.02)  # waiting for another process to listen: no clock to inject
        else:
            pytest.fail("openssl s_server did not start listening")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=5)


async def test_stapled_ocsp_response_is_seen(stapling_server: int) -> None:
    """The raw TLS 1.2 hello sees the stapled response and reads the certificate status."""
    sent = await tlsinfo.sent_chain_and_staple(
        "127.0.0.1", stapling_server, server_name="localhost", timeout_s=5
    )
    assert sent.error is None and sent.alert is None
    assert len(sent.certificates) == 1
    assert tlsinfo.ocsp_facts(sent.ocsp_response, checked=True) == {
        "stapled": True,
        "status": "good",
    }
