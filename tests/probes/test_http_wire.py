"""The availability probe's own HTTP/1.1 client against servers that answer byte for byte as
real ones do in the wild (RFC 9112): each case a raw server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from monitord.types import ProbeContext, ProbeResult, Target
from probes import availability

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
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
            200,
            4,
            id="several codings, chunked last",
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
