"""The availability probe's own HTTP/1.1 client against servers that answer byte for byte as
real ones do in the wild (RFC 9112): each case a raw server on loopback."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from monitord.types import ProbeContext, ProbeResult, Target
from probes import availability
from rules.probe_rules import evaluate

Answer = Callable[[bytes], bytes]
"""Given the request's head, the bytes the server writes before it closes."""
Start = Callable[[Answer, str], Awaitable[tuple[int, list[bytes]]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer, host: str = "127.0.0.1") -> tuple[int, list[bytes]]:
        heads: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await reader.readuntil(b"\r\n\r\n")
            heads.append(head)
            writer.write(answer(head))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, host, 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], heads

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def canned(raw: bytes) -> Answer:
    return lambda _head: raw


async def probe(port: int, ctx: ProbeContext, host: str = "127.0.0.1", **spec: Any) -> ProbeResult:
    url = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    spec.setdefault("timeout_s", 5)
    return await availability.probe(Target(url), availability.AvailabilitySpec(**spec), ctx)


@pytest.mark.parametrize(
    ("raw", "status", "body_bytes"),
    [
        pytest.param(
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            200,
            2,
            id="103 Early Hints, then 200",
        ),
        pytest.param(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes",
            200,
            3,
            id="two interim answers",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 999\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            200,
            3,
            id="chunked wins over Content-Length",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the close",
            200,
            15,
            id="no length: read to the close",
        ),
        pytest.param(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n",
            304,
            0,
            id="304 announcing a length it does not send",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\n\r\nsame",
            200,
            4,
            id="a repeated, equal Content-Length",
        ),
    ],
)
async def test_healthy_answers_are_judged_healthy(
    raw_server: Start, ctx: ProbeContext, raw: bytes, status: int, body_bytes: int
) -> None:
    port, _ = await raw_server(canned(raw), "127.0.0.1")
    result = await probe(port, ctx, expect_status=(200, 304))
    assert (result.success, result.error) == (True, None)
    assert result.facts["status"] == status
    assert result.facts["body_bytes"] == body_bytes


async def test_a_head_request_reads_no_body_whatever_its_length(
    raw_server: Start, ctx: ProbeContext
) -> None:
    # The server holds the connection open until the probe is done: reading a body would time
    # out.
    done = asyncio.Event()

    async def holds_open(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        await writer.drain()
        await done.wait()
        writer.close()

    server = await asyncio.start_server(holds_open, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await probe(port, ctx, method="HEAD", timeout_s=2)
        done.set()
        await asyncio.sleep(0)
    assert (result.success, result.facts["status"]) == (True, 200)


async def test_contradictory_lengths_are_a_bad_response_not_a_guess(
    raw_server: Start, ctx: ProbeContext
) -> None:
    port, _ = await raw_server(
        canned(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 7\r\n\r\nabcdefg"),
        "127.0.0.1",
    )
    result = await probe(port, ctx)
    assert not result.success
    assert result.error == "bad response: Content-Length 4, 7 is not one length"


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789", id="length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n0123456789",
            id="chunked",
        ),
        pytest.param(
            # Read as "ok, 5 bytes": the empty line at the close was taken for the last chunk.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            id="chunked, closed after a whole chunk",
        ),
    ],
)
async def test_a_body_cut_short_by_the_close_is_a_failure_that_says_so(
    raw_server: Start, ctx: ProbeContext, raw: bytes
) -> None:
    # It was "probe crashed: IncompleteReadError" with a traceback in the log every round, and
    # no service_down finding.
    port, _ = await raw_server(canned(raw), "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.error) == (
        False,
        "response body broken: the connection closed early",
    )
    assert "service_down" in {f.rule for f in evaluate(result)}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Ty", id="in a header"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n", id="before the end"),
        pytest.param(b"HTTP/1.1 200 O", id="in the status line"),
    ],
)
async def test_headers_cut_short_by_the_close_are_a_failure_that_says_so(
    raw_server: Start, ctx: ProbeContext, raw: bytes
) -> None:
    # It was "ok 200": the close was taken for the end of the headers.
    port, _ = await raw_server(canned(raw), "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.error) == (
        False,
        "server disconnected before the headers ended",
    )
    assert "service_down" in {f.rule for f in evaluate(result)}


async def test_an_ipv6_literal_gets_its_brackets_in_the_host_header(
    raw_server: Start, ctx: ProbeContext
) -> None:
    def strict(head: bytes) -> bytes:
        # As nginx does: a Host it cannot parse is a 400.
        host = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"host:")
        )
        if not host.startswith(b"[::1]:"):
            return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    port, heads = await raw_server(strict, "::1")
    result = await probe(port, ctx, host="::1")
    assert (result.success, result.facts["status"]) == (True, 200), result.error
    assert f"Host: [::1]:{port}\r\n".encode() in heads[0]


PAGE = "<html><title>企业开办一件事</title>在线办理</html>".encode() * 40
"""A page with the keyword 在线办理, long enough that its compressed form differs."""


def chunked(data: bytes, size: int = 100, extension: bytes = b"") -> bytes:
    """data in chunks of size bytes, each chunk-size line carrying extension, then the end."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in pieces) + b"0\r\n"


@pytest.mark.parametrize(
    ("codings", "body"),
    [
        pytest.param(b"gzip, chunked", chunked(gzip.compress(PAGE)) + b"\r\n", id="gzip, chunked"),
        pytest.param(b"x-gzip, chunked", chunked(gzip.compress(PAGE)) + b"\r\n", id="x-gzip"),
        pytest.param(b"deflate, chunked", chunked(zlib.compress(PAGE)) + b"\r\n", id="deflate"),
        pytest.param(b"gzip", gzip.compress(PAGE), id="gzip to the close"),
        pytest.param(b"chunked", chunked(PAGE) + b"\r\n", id="chunked only"),
    ],
)
async def test_transfer_codings_are_undone_before_the_keyword_is_looked_for(
    raw_server: Start, ctx: ProbeContext, codings: bytes, body: bytes
) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: %s\r\n\r\n"
    port, _ = await raw_server(canned(head % codings + body), "127.0.0.1")
    result = await probe(port, ctx, keyword="在线办理")
    assert (result.success, result.error) == (True, None)
    assert result.facts["body_bytes"] == len(PAGE)


def raw_deflate(data: bytes) -> bytes:
    """data as "deflate" without zlib's header, as some servers send it."""
    squeezer = zlib.compressobj(wbits=-15)
    return squeezer.compress(data) + squeezer.flush()


@pytest.mark.parametrize(
    ("framing", "coding", "body"),
    [
        pytest.param(b"Content-Length", b"gzip", gzip.compress(PAGE), id="gzip"),
        pytest.param(b"Content-Length", b"x-gzip", gzip.compress(PAGE), id="x-gzip"),
        pytest.param(b"Content-Length", b"deflate", zlib.compress(PAGE), id="deflate"),
        pytest.param(b"Content-Length", b"deflate", raw_deflate(PAGE), id="raw deflate"),
        pytest.param(b"Transfer-Encoding", b"gzip", gzip.compress(PAGE), id="gzip, chunked"),
    ],
)
async def test_an_unrequested_content_encoding_is_undone_before_the_keyword_is_looked_for(
    raw_server: Start, ctx: ProbeContext, framing: bytes, coding: bytes, body: bytes
) -> None:
    # The probe asks for no coding, yet servers gzip anyway: the keyword read "not found" and
    # the service down, while the contract and compatibility probes (aiohttp) decoded it.
    if framing == b"Transfer-Encoding":
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body) + b"\r\n"
    else:
        framed = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: %s\r\n" % coding
    port, _ = await raw_server(canned(raw + framed), "127.0.0.1")
    result = await probe(port, ctx, keyword="在线办理")
    assert (result.success, result.error) == (True, None)
    assert result.facts["body_bytes"] == len(PAGE)


async def test_a_content_encoded_bomb_is_cut_at_the_limit(
    raw_server: Start, ctx: ProbeContext
) -> None:
    bomb = gzip.compress(bytes(64 << 20))
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    port, _ = await raw_server(canned(raw % len(bomb) + bomb), "127.0.0.1")
    result = await probe(port, ctx, max_body_bytes=1 << 20)
    assert (result.success, result.facts["body_bytes"]) == (True, 1 << 20)


async def test_a_content_encoding_monitord_cannot_undo_leaves_the_body_as_sent(
    raw_server: Start, ctx: ProbeContext
) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n\x0b\x02"
    port, _ = await raw_server(canned(raw), "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.facts["body_bytes"]) == (True, 2)


async def test_a_transfer_coding_monitord_cannot_undo_is_named(
    raw_server: Start, ctx: ProbeContext
) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br, chunked\r\n\r\n" + chunked(b"\x0b\x02")
    port, _ = await raw_server(canned(raw + b"\r\n"), "127.0.0.1")
    result = await probe(port, ctx, keyword="在线办理")
    assert not result.success
    assert result.error == "bad response: Transfer-Encoding br: not a coding monitord can undo"


async def test_a_compressed_body_bigger_than_the_limit_is_cut_at_the_limit(
    raw_server: Start, ctx: ProbeContext
) -> None:
    # 64 MiB of zeros in 64 KiB of gzip: the probe must not inflate it all to find that out.
    bomb = gzip.compress(bytes(64 << 20))
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunked(bomb, 8192)
    port, _ = await raw_server(canned(raw + b"\r\n"), "127.0.0.1")
    result = await probe(port, ctx, max_body_bytes=1 << 20)
    assert (result.success, result.facts["body_bytes"]) == (True, 1 << 20)


async def test_chunk_extensions_and_trailers_are_read_past(
    raw_server: Start, ctx: ProbeContext
) -> None:
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
        + chunked(PAGE, 70, b' ;name="a;b" ;flag')[: -len(b"0\r\n")]
        + b"0;last\r\nX-Checksum: 1234\r\nServer-Timing: db;dur=53\r\n\r\n"
    )
    port, _ = await raw_server(canned(raw), "127.0.0.1")
    result = await probe(port, ctx, keyword="在线办理")
    assert (result.success, result.error) == (True, None)
    assert result.facts["body_bytes"] == len(PAGE)


async def test_folded_header_lines_are_unfolded_as_rfc_9112_asks_of_a_client(
    raw_server: Start, ctx: ProbeContext
) -> None:
    # obs-fold (RFC 9112 5.2): a line starting with a space continues the header above it. Read
    # as a header of its own, or dropped, the redirect below goes nowhere.
    def answer(head: bytes) -> bytes:
        if head.startswith(b"GET /next "):
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html;\r\n\t charset=utf-8\r\n"
                b"X-Upstream: cache-3\r\n Content-Length: 5\r\nContent-Length: 2\r\n\r\nok"
            )
        return b"HTTP/1.1 302 Found\r\nLocation:\r\n  /next\r\nContent-Length: 0\r\n\r\n"

    port, heads = await raw_server(answer, "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.error) == (True, None), result.facts
    assert result.facts["final_url"] == f"http://127.0.0.1:{port}/next"
    assert result.facts["content_type"] == "text/html"
    assert result.facts["body_bytes"] == 2  # the folded "Content-Length: 5" is X-Upstream's
    assert len(heads) == 2


async def test_a_chunk_announced_huge_is_read_only_up_to_the_limit(ctx: ProbeContext) -> None:
    # A chunk of 7fffffffff bytes (512 GiB) was read whole into memory: the daemon was
    # OOM-killed. The server sends 4 MiB of it and keeps the connection open; the probe must
    # stop at the limit and close, not wait for the rest.
    async def endless_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffff\r\n")
        writer.write(b"x" * (4 << 20))
        await writer.drain()
        await reader.read()  # until the probe closes
        writer.close()

    server = await asyncio.start_server(endless_chunk, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        result = await probe(port, ctx, max_body_bytes=1 << 20, timeout_s=3)
    assert (result.success, result.error) == (True, None)
    assert result.facts["body_bytes"] == 1 << 20


@pytest.mark.parametrize("size", [b"-5", b"0x5", b"+5", b"5_0", b"zz"])
async def test_a_chunk_size_that_is_not_hexadecimal_is_a_bad_response(
    raw_server: Start, ctx: ProbeContext, size: bytes
) -> None:
    # "-5" leaked "ValueError: readexactly size can not be less than zero" into the finding.
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nhello\r\n0\r\n\r\n"
    port, _ = await raw_server(canned(raw % size), "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.error) == (
        False,
        f"bad response: chunk size {size.decode()!r} is not a hexadecimal number",
    )


async def test_the_urls_user_and_password_are_sent_as_basic_auth_and_never_shown(
    raw_server: Start, ctx: ProbeContext
) -> None:
    # The contract and compatibility probes sent them (aiohttp does); this probe did not, and
    # a service that needs them read down.
    def needs_auth(head: bytes) -> bytes:
        if b"\r\nAuthorization: Basic dXNlcjpwQHNz\r\n" in head:  # user:p@ss
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        return b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"

    port, _ = await raw_server(needs_auth, "127.0.0.1")
    url = f"http://user:p%40ss@127.0.0.1:{port}/"
    result = await availability.probe(Target(url), availability.AvailabilitySpec(timeout_s=5), ctx)
    assert (result.success, result.facts["status"]) == (True, 200), result.error
    assert result.facts["url"] == f"http://user:***@127.0.0.1:{port}/"
    assert "p%40ss" not in repr(result.facts) and "p@ss" not in repr(result.facts)


async def test_a_raw_utf8_location_is_followed_to_the_page_it_names(
    raw_server: Start, ctx: ProbeContext
) -> None:
    # nginx's `return 302 /办事;` sends the path as raw UTF-8; read as latin-1 it was followed
    # to /%C3%A5%C2%8A... and a 404.
    def answer(head: bytes) -> bytes:
        if head.startswith(b"GET / "):
            return "HTTP/1.1 302 Found\r\nLocation: /办事\r\nContent-Length: 0\r\n\r\n".encode()
        if head.startswith(b"GET /%E5%8A%9E%E4%BA%8B "):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"

    port, heads = await raw_server(answer, "127.0.0.1")
    result = await probe(port, ctx)
    assert (result.success, result.facts["status"]) == (True, 200), heads
    assert result.facts["final_url"] == f"http://127.0.0.1:{port}/%E5%8A%9E%E4%BA%8B"
    assert result.facts["redirects"][0]["location"] == "/办事"
