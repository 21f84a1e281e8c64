"""`monitord probe` against real servers on loopback: the facts that matter without --json,
and an exit status a script can use."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from monitord.cli import main


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback answering 200, and the CA file that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/", bundle
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probe_shows_status_tls_version_and_days_to_expiry_and_exits_0(
    https_site: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, bundle = https_site
    for kind in ("availability", "tls"):
        assert main(["probe", url, "--kind", kind, "--ca-file", str(bundle)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split()[:6] == ["KIND", "TARGET", "RESULT", "HTTP", "TLS", "CERT"]
        cells = lines[1].split()
        assert cells[:3] == [kind, url, "ok"]
        assert cells[3] == ("200" if kind == "availability" else "-")
        assert cells[4].startswith("TLSv1.")
        assert int(cells[5]) > 300  # trustme's certificates last for years


def test_a_probe_of_a_refused_port_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{closed_port()}/"
    assert main(["probe", url, "--kind", "availability"]) == 1
    row = capsys.readouterr().out.splitlines()[1]
    assert "FAIL" in row and "Connection refused" in row
    assert main(["probe", url, "--kind", "availability", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["success"] is False


def test_a_certificate_expired_hours_ago_shows_minus_one_day_not_zero() -> None:
    # int() cut -0.5 to 0: "0 days left" for a certificate that had expired.
    from monitord.cli.probe import _fact_cells

    assert _fact_cells({"status": 200, "days_to_expiry": -0.5})[2] == "-1"
    assert _fact_cells({"days_to_expiry": 5.9})[2] == "5"


@pytest.mark.parametrize("kind", ["contract", "compatibility"])
def test_the_http_column_shows_the_status_contract_and_compatibility_got(
    kind: str, https_site: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Their HTTP column was "-": contract names its fact http_status, compatibility has one per
    # client (the desktop's is shown, the one the others are compared with).
    url, bundle = https_site
    main(["probe", url, "--kind", kind, "--ca-file", str(bundle)])
    cells = capsys.readouterr().out.splitlines()[1].split()
    assert cells[:2] == [kind, url] and cells[3] == "200"
