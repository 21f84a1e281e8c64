"""The nginx fast path against the exact path: the same rows and rejects for every kind of line.

`nginx.parse` takes lines of the usual shape in C (or in numpy, where the C scan is not built)
and leaves the rest to the exact path; `nginx_exact.parse_exact` takes every line the exact way.
They must agree on any log, so these tests feed both a varied log (generated traffic plus
hand-written odd lines) and compare, once for each way of the fast path.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from monitord.accesslog import nginx, nginx_exact, schema
from monitord.accesslog.lines import split_lines
from monitord.cli import main
from monitord.demo import synth
from tests.logrules import analyse

T = "[03/Jul/2026:09:15:02 +0800]"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"
GOOD = f'58.210.1.9 - - {T} "GET /svc/svc-0042/guide?q=1 HTTP/1.1" 200 512 "-" "{UA}" 0.019 "-"'

# The usual shape, with variations the fast path takes itself.
USUAL: list[str] = [
    GOOD,
    f'2001:db8::7 - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{UA}" 0.019 "-"',
    f'1.2.3.4 - li lei {T} "POST /svc/b/x HTTP/1.1" 201 12 "-" "{UA}" 1.500 "-"',
    f'1.2.3.4 - bob  {T} "GET / HTTP/1.1" 200 1 "-" "{UA}" 0.000 "-"',
    # $remote_user is what the client sent as Basic credentials: nginx escapes no "[" or "]".
    f'1.2.3.4 - u[x {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - [admin] {T} "POST /auth/login HTTP/1.1" 401 10 "-" "curl" 0.001 "-"',
    f'1.2.3.4 - a {T} {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # a time in the user
    f'1.2.3.4 - -  {T} "GET / HTTP/1.1" 200 1 "-" "{UA}" 0.000 "-"',  # "-" then two spaces
    f'1.2.3.4 - - {T} "GET /svc/c HTTP/1.1" 200 1 "-" "{UA}"',  # combined, no rt
    f'1.2.3.4 - - {T} "GET /svc/c HTTP/1.1" 200 1 "-" "{UA}" 0.250',  # rt, no xff
    f'10.0.0.5 - - {T} "GET /svc/d HTTP/1.1" 200 1 "-" "{UA}" 0.125 "61.1.2.3, 10.0.0.1"',
    f'10.0.0.5 - - {T} "GET /svc/d HTTP/1.1" 200 1 "-" "{UA}" 0.125 " 2001:db8::1"',
    f'10.0.0.5 - - {T} "GET /svc/d HTTP/1.1" 200 1 "-" "{UA}" 0.125 "unknown"',
    f'10.0.0.5 - - {T} "GET /svc/d HTTP/1.1" 200 1 "-" "{UA}" 0.125 ""',
    f'1.2.3.4 - - {T} "-" 400 0 "-" "-" 0.000 "-"',
    f'1.2.3.4 - - {T} "" 400 - "-" "-"',
    f'1.2.3.4 - - {T} "\\x16\\x03\\x01\\x02\\x00\\x01" 400 157 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "get /lower HTTP/1.1" 400 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "PROPPATCH /dav/x HTTP/1.1" 207 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "MKCALENDAR /dav/y HTTP/1.1" 201 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "ABCDEFGHIJKLM /too-long HTTP/1.1" 400 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /a\tb HTTP/1.1" 400 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET  /two-spaces HTTP/1.1" 400 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /no-protocol" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/e#frag HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc//empty HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/ HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "\\x4DicroMessenger" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "AlipayClient/10" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "x iPhone Mobile" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "http://a/?b" "{UA}" 0.001 "-" x "y" z',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "{UA}" 0.001 "-"\r',
]
# Request targets holding an nginx escape (bytes outside printable ASCII, '"' and '\\'), which
# both fast paths unescape themselves, as schema.unescape does.
ESCAPED_TARGETS: list[str] = [
    f'1.2.3.4 - - {T} "GET /svc/f\\x3Fnot-a-query?q HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/g/\\xE4\\xB8\\xAD\\xE6\\x96\\x87 HTTP/1.1" 200 1 "-" "-" - "-"',
    f'1.2.3.4 - - {T} "GET /svc/\\xe4\\xb8\\xad?a=\\xE6\\x96\\x87 HTTP/1.1" 200 1 "-" "-" 0.1 "-"',
    f'1.2.3.4 - - {T} "GET /svc/a\\x2Fb/c HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # an escaped '/'
    f'1.2.3.4 - - {T} "GET /svc/j\\x23frag?q HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/k\\\\x22 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # \\ then x22
    f'1.2.3.4 - - {T} "GET /svc/l\\\\\\x22 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # \\ then \x22
    f'1.2.3.4 - - {T} "GET /svc/m\\xZZ\\x4\\y HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # not escapes
    f'1.2.3.4 - - {T} "GET /svc/n\\x HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # \x at the target's end
    f'1.2.3.4 - - {T} "GET /svc/o\\ HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/w\\x" 200 1 "-" "-" 0.001 "-"',  # \x at the request's end
    f'1.2.3.4 - - {T} "GET \\x3Fq HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # an empty path
    f'1.2.3.4 - - {T} "GET /svc/p\\x00\\x09\\x0D\\x7F HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/\\x61 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # the same as /svc/a
    f'1.2.3.4 - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/q HTTP/1.1" 200 1 "-" "x Channel/\\x22portal\\x22" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/r/\\xE5\\x8A\\x9E HTTP/1.1" 200 1 "-" "a \\x22b\\x22" 0.001 "-"',
    # Escapes only in the query: the path reads as written, whatever the query decodes to.
    f'1.2.3.4 - - {T} "GET /svc/u/ok?q=\\xC0\\xAF HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # overlong
    f'1.2.3.4 - - {T} "GET /svc/x/ok?q=\\xFF\\xFE&r=\\x0 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/y#f\\x3F\\x23 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/z/?q=\\\\x0A HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # \\ then x0A
]
# Escaped targets the C scan leaves to the exact path: unescaped they are not UTF-8 (the exact
# path then tries GB18030, else replaces), or hold a newline (where its query strip stops).
ESCAPED_FOR_EXACT: list[str] = [
    f'1.2.3.4 - - {T} "GET /svc/h/a\\x0Ab?c HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/i\\x3Fj\\x0Ak HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/s/\\xD6\\xD0\\xCE\\xC4 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # GBK
    f'1.2.3.4 - - {T} "GET /svc/t/\\xFF\\xE4\\xB8 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/v/\\xED\\xA0\\x80 HTTP/1.1" 200 1 "-" "-" 0.001 "-"',  # surrogate
    # A newline in the query, and a path of raw UTF-8 that a query not UTF-8 makes GB18030.
    f'1.2.3.4 - - {T} "GET /svc/h2/ok?q=a\\x0ab HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /svc/中/p?q=\\xFF HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
]
_ODD: list[str | bytes] = [
    *USUAL,
    *ESCAPED_TARGETS,
    *ESCAPED_FOR_EXACT,
    # $body_bytes_sent and $request_time of every width.
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1234567 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 12345678 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 123456789012345678 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1234567890123456789 "-" "-" 0.001 "-"',  # rejected
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 0000012 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 12a "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 -5 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 2000 5 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 20x 5 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 999.999 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 1000.000 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 0.5 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 12 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 1.2345 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" - "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 0.1x "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 0.a23 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 1234567 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 12345 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 5 "-" "-" 1.2.3 "-"',
    # Times: odd but valid, impossible, and malformed.
    '1.2.3.4 - - [31/Feb/2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [29/Feb/2024:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [29/Feb/2100:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Foo/2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/jul/2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:24:00:00 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:23:59:60 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [00/Jul/2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:09:15:02 -0500] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:09:15:02 +0545] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:09:15:02 +2400] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:09:15:02 +0860] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [01/Jan/1969:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [01/Mar/0999:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [3/Jul/2026:9:15:02 +0800]   "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul/2026:09:15:02+0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    '1.2.3.4 - - [03/Jul]2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    # Addresses longer than the C scan's 16-byte steps, ended by a space, a tab or nothing.
    f'2001:db8:85a3:0:0:8a2e:370:7334 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'2001:db8:85a3:0:0:8a2e:370:7334\t- - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'2001:db8:85a3:0:0:8a2e:370:7334-{T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    # Lines for the exact path: prefixes, escape=json, too few fields, bad bytes.
    f'portal.example:443 1.2.3.4 - - {T} "GET / HTTP/2.0" 304 0 "-" "{UA}" 0.001 "-" x y',
    f'- - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 x - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /a\\"b HTTP/1.1" 200 1 "-" "AlipayClient \\"x\\"" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "-" 0.001 "a\\"b"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "-" "Mozilla \\"Mobile\\" x" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /x HTTP/1.1" 200 1 "http://a/\\"b\\"" "iPhone" 0.001 "-"',
    f'1.2.3.4 - - {T} "GET /cut-off-here',
    f'1.2.3.4 - - {T} "GET /svc/w\\x',  # \x at the line's end
    f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-"',
    f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-',
    f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "61.1.2.3',
    f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "{UA}',
    f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "',
    f'1.2.3.4 - - {T} "GET /caf\xe9 HTTP/1.1" 200 1 "-" "-" 0.001 "-"'.encode("latin-1"),
    f'1.2.3.4 - - {T} "GET /中文 HTTP/1.1" 200 1 "-" "-" 0.001 "-"'.encode("gb18030"),
    f'1.2.3.4 - - {T} "GET /中文 HTTP/1.1" 200 1 "-" "浏览器" 0.001 "-"',
    b"\x00\x01\x02\xff\xfe binary noise",
    b"just some words",
    b"   ",
]
ODD_LINES = [line.encode() if isinstance(line, str) else line for line in _ODD]


def _synth_lines(rng: random.Random, n: int) -> list[bytes]:
    world = synth.make_world(rng, services=12, companies=30)
    start = synth.local(2026, 6, 1)
    events = synth.normal_traffic(world, rng, n, start, 2)
    return [synth.nginx_line(e).rstrip("\n").encode() for e in events]


def _rows(table: pa.Table) -> list[str]:
    # Rows as comparable text, in a canonical order: the fast path lists its rows first.
    return sorted(repr(sorted(row.items())) for row in table.to_pylist())


def _assert_same(
    block: bytes, pattern: str = schema.DEFAULT_SERVICE_PATTERN, trusted: tuple[str, ...] = ()
) -> nginx_exact.Parsed:
    lines = split_lines(block)
    fast = nginx.parse(lines, pattern, trusted)
    exact = nginx_exact.parse_exact(lines, pattern, trusted)
    assert fast.table.schema == exact.table.schema
    assert _rows(fast.table) == _rows(exact.table)
    assert sorted(fast.rejected) == sorted(exact.rejected)
    return fast


def _block(rng: random.Random, lines: list[bytes], newline: bytes = b"\n") -> bytes:
    lines = list(lines)
    rng.shuffle(lines)
    return newline.join(lines) + newline


@pytest.fixture(autouse=True, params=["c", "numpy"])
def fast_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with the C scan and with the numpy path."""
    if request.param == "c" and not nginx.NATIVE:
        pytest.skip("the C scan (monitord/accesslog/_nginxscan.c) was not built: no C compiler?")
    if request.param == "numpy":
        monkeypatch.setattr(nginx, "_scan", None)
    return str(request.param)


@pytest.fixture(scope="module")
def traffic() -> list[bytes]:
    return _synth_lines(random.Random(5), 1500)


def test_fast_path_takes_the_usual_lines(
    traffic: list[bytes], monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    # If the fast path broke, everything would still parse (the exact way): count what it left.
    left: list[int] = []
    exact = nginx_exact.exact

    def counting(lines: pa.Array, pattern: str) -> Any:
        left.append(len(lines))
        return exact(lines, pattern)

    monkeypatch.setattr(nginx_exact, "exact", counting)
    parsed = nginx.parse(split_lines(b"\n".join(traffic) + b"\n"))
    assert parsed.table.num_rows == len(traffic) and parsed.rejected == []
    assert left == []
    nginx.parse(split_lines("\n".join(USUAL).encode() + b"\n"))
    assert left == []
    nginx.parse(split_lines("\n".join(ESCAPED_TARGETS).encode() + b"\n"))
    assert left == []
    nginx.parse(split_lines("\n".join(ESCAPED_FOR_EXACT).encode() + b"\n"))
    assert left == ([len(ESCAPED_FOR_EXACT)] if fast_path == "c" else [])


def test_generated_traffic_matches_the_exact_path(traffic: list[bytes]) -> None:
    _assert_same(b"\n".join(traffic) + b"\n")


@pytest.mark.parametrize("seed", range(6))
def test_mixed_blocks_match_the_exact_path(traffic: list[bytes], seed: int) -> None:
    rng = random.Random(seed)
    lines = rng.sample(traffic, 200) + ODD_LINES * 2
    newline = b"\r\n" if seed == 3 else b"\n"
    block = _block(rng, lines, newline)
    if seed % 2:
        block = block.rstrip(b"\r\n")  # a last line without its newline
    parsed = _assert_same(block)
    assert parsed.rejected  # the garbage lines are there
    _assert_same(block, r"^/(?P<service>[a-z]+)/")  # a configured pattern (RE2 on the paths)
    _assert_same(block, trusted=TRUSTED)  # behind proxies: X-Forwarded-For read


TRUSTED = ("10.0.0.0/8", "2001:db8:ff::/48")


def _xff(remote: str, xff: str | None) -> bytes:
    rest = "" if xff is None else f' "{xff}"'
    return f'{remote} - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{UA}" 0.001{rest}'.encode()


@pytest.mark.parametrize(
    ("remote", "xff", "client"),
    [
        # At the edge, X-Forwarded-For is what the client sent: never read from an address
        # that is not a trusted proxy.
        ("203.0.113.7", "198.51.100.1", "203.0.113.7"),
        ("203.0.113.7", "10.0.0.1", "203.0.113.7"),
        # From a trusted proxy: from the right, the first address that is not a trusted proxy.
        ("10.0.0.5", "61.1.2.3", "61.1.2.3"),
        ("10.0.0.5", "61.1.2.3, 10.0.0.1", "61.1.2.3"),
        ("10.0.0.5", "198.51.100.9,61.1.2.3 , 10.0.0.1", "61.1.2.3"),  # a forged left part
        ("10.0.0.5", "10.0.0.2, 10.0.0.1", "10.0.0.2"),  # all trusted: the furthest
        ("10.0.0.5", "unknown, 10.0.0.1", "10.0.0.1"),  # not an address: the proxy before it
        ("10.0.0.5", "-", "10.0.0.5"),
        ("10.0.0.5", "", "10.0.0.5"),
        ("10.0.0.5", None, "10.0.0.5"),  # no X-Forwarded-For field
        ("::ffff:10.0.0.5", "2001:db8::1", "2001:db8::1"),  # IPv4-mapped: its IPv4 address
        ("2001:db8:ff::1", "61.1.2.3", "61.1.2.3"),
    ],
)
def test_the_client_is_the_remote_address_unless_a_trusted_proxy_forwarded_it(
    remote: str, xff: str | None, client: str
) -> None:
    block = _xff(remote, xff) + b"\n"
    for trusted, expect in (((), remote), (TRUSTED, client)):
        parsed = _assert_same(block, trusted=trusted)
        assert parsed.table.column("ip").to_pylist() == [expect]


SCANNED = (
    *(".env", ".git/config", "wp-admin", "wp-login.php", ".aws/credentials", "phpmyadmin"),
    *("config.php", ".htpasswd", "server-status", "actuator/env", ".DS_Store", "backup.zip"),
)
"""Sensitive paths, one a line: a scanner's probing, as scanner_probing counts it."""


def scanner_lines(remote: str, forwarded: Callable[[int], str]) -> list[str]:
    """A scanner's lines from `remote`, the n-th with X-Forwarded-For `forwarded(n)`."""
    return [
        f'{remote} - - [03/Jul/2026:09:15:{n:02d} +0800] "GET /{path} HTTP/1.1" 404 10 "-" '
        f'"curl/8" 0.001 "{forwarded(n)}"'
        for n, path in enumerate(SCANNED)
    ]


def test_forged_forwarded_addresses_do_not_dodge_the_per_ip_rules() -> None:
    # One scanner probing sensitive paths, each line with another made-up X-Forwarded-For.
    lines = scanner_lines("203.0.113.7", lambda n: f"198.51.100.{n}")
    result = analyse([io.BytesIO("\n".join(lines).encode() + b"\n")], fmt="nginx")
    found = {(f.rule, f.subject) for f in result.findings}
    assert ("scanner_probing", "203.0.113.7") in found


def test_escaped_targets_match_the_exact_path() -> None:
    # Byte for byte: paths, services, lines; with plain lines around them, and alone.
    escaped = ESCAPED_TARGETS + ESCAPED_FOR_EXACT
    _assert_same(_block(random.Random(4), [x.encode() for x in escaped + USUAL]))
    _assert_same(_block(random.Random(4), [x.encode() for x in escaped]), r"^/svc/(?P<service>.+)$")
    for line in escaped:
        _assert_same(line.encode() + b"\n")


def test_escaped_targets_repeated_in_a_block_read_as_the_first(
    monkeypatch: pytest.MonkeyPatch, fast_path: str
) -> None:
    # The C scan reads an escaped target once a block and gives its repeats the same values:
    # the first one's path and service, or the exact path, for every copy.
    block = _block(
        random.Random(8), [x.encode() for x in (ESCAPED_TARGETS + ESCAPED_FOR_EXACT) * 3]
    )
    _assert_same(block)
    left: list[int] = []
    exact = nginx_exact.exact
    monkeypatch.setattr(nginx_exact, "exact", lambda *a: left.append(len(a[0])) or exact(*a))
    nginx.parse(split_lines(block))
    assert left == ([3 * len(ESCAPED_FOR_EXACT)] if fast_path == "c" else [])


@pytest.mark.parametrize("share", [0.25, 1.0])
def test_logs_with_escapes_match_the_exact_path_and_take_the_fast_path(
    share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(6)
    world = synth.make_world(rng, services=12, companies=30)
    events = synth.stream(world, rng, 1500, synth.local(2026, 6, 1), 2, escaped=share)
    lines = [synth.nginx_line(e).rstrip("\n").encode() for e in events]
    assert sum(b"\\x" in line for line in lines) > share * len(lines) * 0.8
    block = b"\n".join(lines) + b"\n"
    _assert_same(block)
    left: list[int] = []
    exact = nginx_exact.exact
    monkeypatch.setattr(nginx_exact, "exact", lambda *a: left.append(len(a[0])) or exact(*a))
    assert nginx.parse(split_lines(block)).table.num_rows == len(lines)
    assert left == []


def test_each_odd_line_alone() -> None:
    # One line a block: the fast path's checks at the very start and end of a buffer.
    for line in ODD_LINES:
        _assert_same(line + b"\n")
        _assert_same(line)


def test_requests_that_end_early() -> None:
    # Distinct requests lie back to back in a dictionary: a method must end inside its own.
    lines = [f'1.2.3.4 - - {T} "{r}" 200 1 "-" "-" 0.001 "-"' for r in ("GET", " /x HTTP/1.1")]
    _assert_same("\n".join(lines).encode() + b"\n")


def test_times_of_every_kind_match_strptime() -> None:
    rng = random.Random(7)
    lines = []
    for _ in range(400):
        day, month = rng.randint(0, 32), rng.choice((*synth.MONTHS, "Foo", "jan"))
        year, hour = rng.choice((1, 1970, 1999, 2026, 2100, 9999)), rng.randint(0, 24)
        tz = f"{rng.choice('+-')}{rng.randint(0, 14):02d}{rng.choice((0, 30, 45)):02d}"
        clock = f"{hour:02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 60):02d}"
        stamp = f"[{day:02d}/{month}/{year}:{clock} {tz}]"
        lines.append(f'1.2.3.4 - - {stamp} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"'.encode())
    _assert_same(b"\n".join(lines) + b"\n")


def test_request_times_and_sizes_of_every_width() -> None:
    rng = random.Random(8)
    lines = []
    for _ in range(400):
        size = rng.choice(("-", str(rng.randint(0, 10 ** rng.randint(1, 12)))))
        seconds = f"{rng.randint(0, 10 ** rng.randint(1, 4)) / 1000:.3f}"
        rt = rng.choice((seconds, seconds[:-1], "-", "0", seconds + "9"))
        lines.append(f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 {size} "-" "-" {rt} "-"'.encode())
    _assert_same(b"\n".join(lines) + b"\n")


TEXT_COLUMNS = ("source", "ip", "user", "service", "method", "path", "client")


@pytest.mark.parametrize("mix", ["all", "usual", "no-xff", "one-address"])
def test_text_columns_are_dictionaries_of_distinct_used_values(
    traffic: list[bytes], mix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With dictionary types in the schema (as readers are meant to produce), conform keeps what
    # parse builds; its dictionaries must be tight enough to group by code.
    lines = {
        "all": traffic[:300] + ODD_LINES,
        "usual": [line.encode() for line in USUAL],
        "no-xff": [line.encode() for line in USUAL if line.endswith('"-"') or line.count('"') < 8],
        "one-address": [  # two heads, one address, no user
            f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"'.encode(),
            f'1.2.3.4 - -  {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "-"'.encode(),
        ],
    }[mix]
    patched = pa.schema(
        [
            pa.field(f.name, schema.TEXT)
            if f.name in TEXT_COLUMNS
            else pa.field("line", pa.binary())
            if f.name == "line"
            else f
            for f in schema.SCHEMA
        ]
    )
    monkeypatch.setattr(schema, "SCHEMA", patched)
    parsed = _assert_same(_block(random.Random(9), lines))
    for name in TEXT_COLUMNS:
        col = parsed.table.column(name).combine_chunks()
        assert col.type == schema.TEXT, name
        values = col.dictionary.to_pylist()
        assert len(set(values)) == len(values), name
        used = set(col.indices.drop_null().to_pylist())
        assert used == set(range(len(values))), name


def test_sliced_and_copied_line_arrays() -> None:
    block = b"\n".join(ODD_LINES[:12]) + b"\n"
    lines = split_lines(block)
    for part in (
        lines.slice(3, 6),
        lines.filter(pa.array([i % 2 == 0 for i in range(len(lines))])),
    ):
        fast, exact = nginx.parse(part), nginx_exact.parse_exact(part)
        assert _rows(fast.table) == _rows(exact.table)


def test_client_kinds_of_few_and_many_agents() -> None:
    # A handful of distinct user agents is matched in Python, many take Arrow's kernels: both
    # must agree with the exact path, escapes included.
    agents = [
        "x MicroMessenger y",
        "AliApp(AP/1)",
        "\\x4DicroMessenger",
        "Mobile Safari",
        "Windows Phone 10",
        "curl/8.0",
        "\\xE4\\xB8\\xAD Android",
    ]
    lines = [
        f'1.2.3.{i % 250} - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{ua}" 0.001 "-"'.encode()
        for i, ua in enumerate(agents)
    ]
    _assert_same(b"\n".join(lines) + b"\n")
    many = [
        f'1.2.3.4 - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{agents[i % 7]} {i}" 0.001 "-"'
        for i in range(200)
    ]
    _assert_same("\n".join(many).encode() + b"\n")


# Bytes a mutation writes: what delimits, escapes or ends the fields, and some that are not ASCII.
_MUTATIONS = b'" \\\t\r\x0b\x0c[]-?#/:.+0123456789AZaz\x80\xc3\xa9\xe4\xff'


@pytest.mark.parametrize("seed", range(4))
def test_mutated_lines_match_the_exact_path(traffic: list[bytes], seed: int) -> None:
    # Lines of the usual shape with a byte changed, dropped or added, or cut short: whichever
    # way the fast path reads them, they must read as the exact path reads them.
    rng = random.Random(100 + seed)
    lines = []
    for line in rng.sample(traffic + ODD_LINES[: len(USUAL)], 400):
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(line)) if line else 0  # a line cut to nothing stays empty
            byte = bytes([rng.choice(_MUTATIONS)])
            line = rng.choice(
                (
                    line[:at] + byte + line[at + 1 :],
                    line[:at] + line[at + 1 :],
                    line[:at] + byte + line[at:],
                    line[:at],
                )
            )
        lines.append(line.replace(b"\n", b" "))
    _assert_same(b"\n".join(lines) + b"\n")


BOM = "\ufeff"


def test_a_byte_order_mark_before_a_file_s_first_line_is_no_part_of_the_address() -> None:
    # An editor or a log shipper may write one: the address was "\ufeff1.2.3.4", another one.
    for line in (
        f'1.2.3.4 - - {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{UA}" 0.001 "-"',
        f'1.2.3.4 - li lei {T} "GET /svc/a HTTP/1.1" 200 1 "-" "{UA}" 0.001 "-"',
        f'portal.example:443 1.2.3.4 - - {T} "GET / HTTP/2.0" 304 0 "-" "{UA}"',
        f'1.2.3.4 - - {T} "GET /a\\"b HTTP/1.1" 200 1 "-" "{UA}"',  # escape=json: full pattern
    ):
        parsed = _assert_same(f"{BOM}{line}\n{line}\n".encode())
        assert parsed.table.column("ip").to_pylist() == ["1.2.3.4", "1.2.3.4"], line
        assert parsed.rejected == []


def test_analyse_names_the_client_a_configured_trusted_proxy_forwarded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The daemon read [logs] trusted_proxies; `monitord analyse` ignored it and named the proxy.
    lines = scanner_lines("10.0.0.5", lambda n: "203.0.113.7")
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tmp_path / "monitord.toml"
    config.write_text('[logs]\ntrusted_proxies = ["10.0.0.0/8"]\n', encoding="utf-8")
    assert main(["--config", str(config), "analyse", "--json", str(log)]) == 0
    found = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["rule"], f["subject"]) for f in found] == [
        ("scanner_probing", {"ip": "203.0.113.7"})
    ]


def test_a_user_holding_brackets_does_not_hide_an_address_from_the_per_ip_rules() -> None:
    # A client sending "Authorization: Basic" of "[admin]:x" made every line unreadable, and a
    # brute force from its address went unseen.
    lines = [
        f'45.95.147.9 - [admin] [03/Jul/2026:09:00:{n:02d} +0800] "POST /auth/login HTTP/1.1" '
        f'401 10 "-" "curl"'
        for n in range(50)
    ]
    for block in ("\n".join(lines) + "\n", lines[0] + "\n"):
        parsed = _assert_same(block.encode())
        assert parsed.rejected == []
        assert set(parsed.table.column("user").to_pylist()) == {"[admin]"}
    result = analyse([io.BytesIO("\n".join(lines).encode() + b"\n")], fmt="nginx")
    assert result.rejected == 0
    found = {(f.rule, f.subject, f.count) for f in result.findings}
    assert ("brute_force_ip", "45.95.147.9", 50) in found
