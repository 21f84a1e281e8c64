"""The readers: nginx fields, the JSON audit log, sources (gzip, directories, streams) and the
lines that do not parse."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from monitord.accesslog import jsonlog, lines, nginx
from monitord.accesslog.analysis import AnalysisResult
from monitord.accesslog.configured import make_analyzer
from monitord.accesslog.lines import MAX_LINE, split_lines
from monitord.accesslog.sources import detect, folder_files
from monitord.config import parse_config
from tests.logrules import analyse

T = "[03/Jul/2026:09:15:02 +0800]"
EPOCH = 1783041302  # 2026-07-03T01:15:02Z
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"


def _one(line: str | bytes) -> dict[str, object]:
    raw = line.encode() if isinstance(line, str) else line
    parsed = nginx.parse(split_lines(raw + b"\n"))
    assert parsed.rejected == [], parsed.rejected
    row = parsed.table.to_pylist()[0]
    return {k: v for k, v in row.items() if v is not None and k not in ("line", "source")}


@pytest.mark.parametrize(
    ("line", "expect"),
    [
        (
            f'58.210.1.9 - - {T} "GET /svc/svc-0042/guide?q=1 HTTP/1.1" 200 512 "-" "{UA}"',
            {"ip": "58.210.1.9", "method": "GET", "path": "/svc/svc-0042/guide",
             "service": "svc-0042", "status": 200, "bytes": 512, "client": "desktop"},
        ),
        (  # request time and X-Forwarded-For, which the client wrote: the client is $remote_addr
            f'10.0.0.5 - - {T} "POST /auth/login HTTP/1.1" 401 0 "-" "x iPhone Mobile" '
            '0.125 "61.1.2.3, 10.0.0.1"',
            {"ip": "10.0.0.5", "method": "POST", "path": "/auth/login", "status": 401,
             "bytes": 0, "duration_ms": 125.0, "client": "phone"},
        ),
        (  # IPv6, a user with a space, "-" bytes, an empty request
            f'2001:db8::7 - li lei {T} "" 400 - "-" "-"',
            {"ip": "2001:db8::7", "user": "li lei", "status": 400, "client": "desktop"},
        ),
        (  # nginx's \xXX escapes of a Chinese path and user agent
            f'1.2.3.4 - - {T} "GET /svc/s1/\\xE4\\xB8\\xAD\\xE6\\x96\\x87 HTTP/1.1" 200 1 "-" '
            '"\\xE5\\xBE\\xAE\\xE4\\xBF\\xA1 MicroMessenger/8.0" - "-"',
            {"ip": "1.2.3.4", "method": "GET", "path": "/svc/s1/中文", "service": "s1",
             "status": 200, "bytes": 1, "client": "wechat"},
        ),
        (  # escaped quotes (escape=json) take the full pattern
            f'1.2.3.4 - - {T} "GET /a\\"b HTTP/1.1" 200 1 "-" "AlipayClient \\"x\\""',
            {"ip": "1.2.3.4", "method": "GET", "path": '/a"b', "status": 200, "bytes": 1,
             "client": "alipay"},
        ),
        (  # a leading host:port and trailing extra fields
            f'portal.example:443 1.2.3.4 - - {T} "GET / HTTP/2.0" 304 0 "-" "{UA}" 0.001 "-" x y',
            {"ip": "1.2.3.4", "method": "GET", "path": "/", "status": 304, "bytes": 0,
             "duration_ms": 1.0, "client": "desktop"},
        ),
        (  # a TLS handshake sent to the HTTP port: binary request, still a line
            f'1.2.3.4 - - {T} "\\x16\\x03\\x01\\x02\\x00\\x01" 400 157 "-" "-"',
            {"ip": "1.2.3.4", "status": 400, "bytes": 157, "client": "desktop"},
        ),
    ],
)  # fmt: skip
def test_nginx_fields(line: str, expect: dict[str, object]) -> None:
    assert _one(line) == {"ts": EPOCH, **expect}


def test_gb18030_escaped_path_is_decoded() -> None:
    # An old gateway writing GBK: UTF-8 decoding fails, GB18030 succeeds.
    escaped = "".join(f"\\x{b:02X}" for b in "中文".encode("gb18030"))
    row = _one(f'1.2.3.4 - - {T} "GET /{escaped} HTTP/1.1" 200 1 "-" "-"')
    assert row["path"] == "/中文"


def test_json_fields_and_coercion() -> None:
    good = {"ts": "2026-07-03T09:15:02.113+08:00", "ip": "58.210.1.9", "user_id": "u-1",
            "level": "L3", "role": "admin", "company": "91320500MA1XXXXXXX", "vendor": None,
            "service_id": "svc-0042", "action": "grant_role", "target_user": "u-2",
            "target_role": "handler", "method": "POST", "path": "/svc/svc-0042/roles?x=1",
            "status": 200, "bytes": 10, "duration_ms": 12.5, "ua": "MicroMessenger",
            "extra": 1}  # fmt: skip
    odd = {"ts": "2026-07-03T01:15:02Z", "ip": "1.1.1.1", "status": "404", "action": "view"}
    raw = (json.dumps(good) + "\n" + json.dumps(odd) + "\n").encode()
    parsed = jsonlog.parse(split_lines(raw), raw)
    assert parsed.rejected == []
    rows = parsed.table.to_pylist()
    assert rows[0]["ts"] == EPOCH and rows[1]["ts"] == EPOCH
    assert rows[0]["user"] == "u-1" and rows[0]["service"] == "svc-0042"
    assert rows[0]["path"] == "/svc/svc-0042/roles" and rows[0]["client"] == "wechat"
    assert rows[0]["target_role"] == "handler" and rows[1]["status"] == 404


def test_detect() -> None:
    assert detect(b'\n{"ts": 1}\n') == "json"
    assert detect(b"1.2.3.4 - - [x]") == "nginx"


def test_a_json_log_cut_mid_line_or_opened_by_comments_is_read_as_json() -> None:
    # Told from the first line alone, every line was read as nginx and rejected.
    record = b'{"ts": "2026-07-03T09:00:00+08:00", "ip": "1.1.1.1", "action": "view"}\n'
    cut = record[40:] + record * 5
    assert detect(cut) == "json"
    sample = Path(__file__).parents[2] / "rules" / "samples" / "brute_force_login.jsonl"
    assert sample.read_bytes().startswith(b"#")
    assert detect(sample.read_bytes()) == "json"
    result = analyse([io.BytesIO(cut)])
    assert (result.lines, result.rejected) == (6, 1)
    # An edge log with a stray line is still an edge log.
    edge = b'1.2.3.4 - - [03/Jul/2026:09:15:02 +0800] "GET / HTTP/1.1" 200 1 "-" "-"\n'
    assert detect(b"{junk\n" + edge * 3) == "nginx"


GARBAGE = [
    b"\x00\x01\x02\xff\xfe binary noise",
    b"just some words",
    b'1.2.3.4 - - [03/Jul/2026:09:15:02 +0800] "GET /cut-off-here',
    b'1.2.3.4 - - [99/Foo/2026:99:99:99 +0800] "GET / HTTP/1.1" 200 1 "-" "-"',
    b"{not json",
]


def test_garbage_lines_are_counted_and_sampled(tmp_path: Path) -> None:
    good = f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"'.encode()
    path = tmp_path / "access.log"
    path.write_bytes(b"\n".join([good, *GARBAGE, good, b"", b"   "]) + b"\n")
    result = analyse([path])
    assert result.lines == 8  # blank lines are no lines; a line of spaces is
    assert result.rejected == 6
    assert len(result.rejected_samples) == 6
    assert all(s.startswith(str(path)) for s in result.rejected_samples)
    assert sum(s["requests"] for s in result.stats) == 2


@pytest.mark.parametrize("block_size", [1 << 16, 4 << 20], ids=["carried", "in-block"])
@pytest.mark.parametrize("fmt", ["nginx", "json"])
def test_a_line_over_the_limit_is_counted_and_skipped(
    tmp_path: Path, block_size: int, fmt: str
) -> None:
    # A 3 MiB line (binary junk in the log) between good ones: read whatever the block size,
    # as one rejected line, and never held whole (a 60 MB one once took 3 GB).
    good = (
        f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"'
        if fmt == "nginx"
        else '{"ts": "2026-07-03T09:15:02+08:00", "ip": "1.1.1.1", "action": "view"}'
    ).encode()
    junk = (b"\x00\x01junk" * (3 * MAX_LINE // 6))[: 3 * MAX_LINE]
    path = tmp_path / "access.log"
    path.write_bytes(b"\n".join([good] * 100 + [junk] + [good] * 100) + b"\n")
    result = analyse([path], block_size=block_size)
    assert (result.lines, result.rejected) == (201, 1)
    assert sum(s["requests"] for s in result.stats) == 200
    assert "a line " in result.rejected_samples[0] and "skipped" in result.rejected_samples[0]


def test_a_file_without_a_newline_is_one_rejected_line(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\xff\xfe" * (3 * MAX_LINE))
    result = analyse([path])
    assert (result.lines, result.rejected) == (1, 1)
    assert f"longer than {MAX_LINE:,} bytes" in result.rejected_samples[0]


def test_compressed_data_damaged_inside_a_line_over_the_limit(tmp_path: Path) -> None:
    good = f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"\n'.encode()
    whole = gzip.compress(good * 10 + b"x" * (4 * MAX_LINE) + b"\n" + good * 10)
    path = tmp_path / "access.log.2.gz"
    path.write_bytes(whole[: len(whole) * 3 // 4])  # cut inside the long line
    result = analyse([path], block_size=1 << 16)
    assert (result.lines, result.rejected) == (11, 2)
    assert "skipped" in result.rejected_samples[0] and "damaged" in result.rejected_samples[1]


def test_bad_json_lines_do_not_spoil_their_block(tmp_path: Path) -> None:
    ok = '{"ts": "2026-07-03T09:15:02+08:00", "ip": "1.1.1.1", "action": "view"}'
    lines = [ok] * 300 + ["{broken", "[1, 2]", '{"ts": "yesterday"}', "\xff"] + [ok] * 300
    path = tmp_path / "audit.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n")
    result = analyse([path])
    assert (result.lines, result.rejected) == (604, 4)
    assert sum(s["requests"] for s in result.stats) == 600


@pytest.mark.parametrize(
    "field, value",
    [("status", 10**25), ("status", 2**40), ("status", -(2**63)), ("status", -5), ("bytes", 10**25),
     ("bytes", 1e300), ("bytes", "Infinity")],
)  # fmt: skip
def test_json_numbers_beyond_their_column_are_rejected_lines(field: str, value: object) -> None:
    # A number no column can hold is a bad line, counted and sampled, not a crash of the run.
    ok = {"ts": "2026-07-03T09:15:02+08:00", "ip": "1.1.1.1", "status": 200, "bytes": 5}
    bad = json.dumps({**ok, field: 0}).replace('": 0', f'": {value}')
    raw = f"{json.dumps(ok)}\n{bad}\n{json.dumps(ok)}\n".encode()
    result = analyse([io.BytesIO(raw)], fmt="json")
    assert (result.lines, result.rejected) == (3, 1)
    assert str(value) in result.rejected_samples[0]


@pytest.mark.parametrize("depth", [990, 100_000, 500_000])
@pytest.mark.parametrize("field", ["ua", "extra"])
def test_a_json_line_nested_too_deep_for_python_is_a_rejected_line(depth: int, field: str) -> None:
    # In a block Arrow rejects ("{broken" beside it), the line-by-line fallback raised
    # RecursionError and stopped the whole run. Nested in a field monitord does not read
    # ("extra"), the line is read as Arrow reads it in a clean block.
    ok = '{"ts": "2026-07-03T09:15:02+08:00", "ip": "1.1.1.1", "status": 200}'
    deep = f'{{"ts": "2026-07-03T09:15:03+08:00", "{field}": ' + "[" * depth + "]" * depth + "}"
    raw = "\n".join([ok, deep, "{broken"] + [ok] * 399).encode() + b"\n"
    result = analyse([io.BytesIO(raw)], fmt="json")
    rejected = 2 if field == "ua" else 1  # a list is no user agent
    assert (result.lines, result.rejected) == (402, rejected)
    assert sum(s["requests"] for s in result.stats) == 402 - rejected


def test_nginx_size_beyond_64_bits_is_a_rejected_line() -> None:
    line = f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 %s "-" "-" 0.001 "-"\n'
    raw = (line % 5 + line % ("9" * 19) + line % ("9" * 18)).encode()
    result = analyse([io.BytesIO(raw)], fmt="nginx")
    assert (result.lines, result.rejected) == (3, 1)
    assert "9" * 19 in result.rejected_samples[0]


OUT_OF_RANGE_TIMES = [
    ("[01/Jan/0001:00:00:00 +0800]", "0001-01-01T00:00:00+08:00"),  # year 0 in UTC
    ("[31/Dec/9999:23:59:59 -0800]", "9999-12-31T23:59:59-08:00"),  # year 10000 in UTC
    ("[31/Dec/1969:23:59:59 +0000]", "1969-12-31T23:59:59Z"),  # before 1970
]
IN_RANGE_TIMES = [
    ("[01/Jan/1970:08:00:00 +0800]", "1970-01-01T08:00:00+08:00"),  # schema.EARLIEST
    ("[31/Dec/9999:23:59:59 +0000]", "9999-12-31T23:59:59Z"),  # schema.LATEST
]


def each_fast_path(
    path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AnalysisResult]:
    """`path` analysed by the fast path in C, then in numpy (where the C one is not built)."""
    yield analyse([path], fmt=fmt)
    monkeypatch.setattr(nginx, "_scan", None)
    yield analyse([path], fmt=fmt)


@pytest.mark.parametrize("fmt", ["nginx", "json"])
def test_times_out_of_range_are_rejected_lines_not_fatal(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Such a line once stopped `analyse` with "year 0 is out of range" when its hour closed.
    def line(times: tuple[str, str], n: int) -> str:
        if fmt == "nginx":
            return f'1.2.3.{n} - - {times[0]} "GET /svc/s/a HTTP/1.1" 200 5 "-" "M"'
        return json.dumps({"ts": times[1], "ip": f"1.2.3.{n}", "service_id": "s", "status": 200})

    good = [line(t, n) for n, t in enumerate(IN_RANGE_TIMES)]
    bad = [line(t, n) for n, t in enumerate(OUT_OF_RANGE_TIMES)]
    path = tmp_path / "access.log"
    path.write_text("\n".join(good + bad) + "\n")
    for result in each_fast_path(path, fmt, monkeypatch):
        assert (result.lines, result.rejected) == (5, 3)
        assert [s.split(": ", 1)[1] for s in result.rejected_samples] == bad
        assert sorted(s["hour"] for s in result.stats) == [
            "1970-01-01T00:00:00+00:00",
            "9999-12-31T23:00:00+00:00",
        ]


@pytest.mark.parametrize("fmt", ["nginx", "json"])
def test_days_a_month_lacks_are_rejected_lines(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # strptime rolled 29/Feb/2026 over into 1 March, and 31/Apr into 1 May.
    def line(day: str, month: str, n: int) -> str:
        if fmt == "nginx":
            stamp = f"[{day}/{month}:09:15:02 +0800]"
            return f'1.2.3.{n} - - {stamp} "GET /svc/s/a HTTP/1.1" 200 5 "-" "M"'
        iso = dt.datetime.strptime(f"01/{month}", "%d/%b/%Y").strftime(f"%Y-%m-{day}")
        return json.dumps({"ts": f"{iso}T09:15:02+08:00", "ip": f"1.2.3.{n}", "status": 200})

    good = [line("29", "Feb/2024", 1), line("30", "Apr/2026", 2), line("31", "Dec/2026", 3)]
    bad = [line("29", "Feb/2026", 4), line("31", "Apr/2026", 5), line("30", "Feb/2024", 6)]
    path = tmp_path / "access.log"
    path.write_text("\n".join(good + bad) + "\n")
    for result in each_fast_path(path, fmt, monkeypatch):
        assert (result.lines, result.rejected) == (6, 3)
        assert [s.split(": ", 1)[1] for s in result.rejected_samples] == bad
        days = sorted(s["hour"][:10] for s in result.stats)
        assert days == ["2024-02-29", "2026-04-30", "2026-12-31"]


@pytest.mark.parametrize(
    ("ts", "epoch"),
    [
        ("2026-07-03T09:15:02.113+08:00", EPOCH),
        ("2026-07-03T01:15:02Z", EPOCH),
        ("2026-07-03T01:15:02+0000", EPOCH),
        ("2026-07-03T01:15:02+00", EPOCH),  # an offset of hours alone, as ISO 8601 allows
        ("2026-07-03T02:15:02.5+01", EPOCH),
        ("2026-07-03 09:15:02+08:00", EPOCH),
        ("2026-07-03T09:15:02", EPOCH),  # no zone: Asia/Shanghai, as the portal means
        ("2026-07-03T01:15:02Z[UTC]", None),  # not ISO 8601: rejected, never taken as +08:00
        ("2026-07-03T01:15:02 UTC", None),
        ("2026-07-03T01:15:02+08:00junk", None),
    ],
)
def test_json_times_are_read_with_the_zone_they_name_or_rejected(
    ts: str, epoch: int | None
) -> None:
    raw = (json.dumps({"ts": ts, "ip": "1.1.1.1", "status": 200}) + "\n").encode()
    parsed = jsonlog.parse(split_lines(raw), raw)
    assert parsed.table.column("ts").to_pylist() == ([] if epoch is None else [epoch])
    assert len(parsed.rejected) == (epoch is None)


def test_truncated_gzip_is_reported_not_fatal(tmp_path: Path) -> None:
    line = f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"\n'.encode()
    whole = gzip.compress(line * 5000)
    path = tmp_path / "access.log.1.gz"
    path.write_bytes(whole[: len(whole) // 2])
    result = analyse([path])
    assert 0 < result.lines < 5000
    assert result.rejected == 1
    assert "truncated" in result.rejected_samples[0] or "damaged" in result.rejected_samples[0]


def test_mixed_encodings_in_one_file(tmp_path: Path) -> None:
    utf8 = f'1.2.3.4 - - {T} "GET /中文 HTTP/1.1" 200 1 "-" "-"'.encode()
    gbk = f'1.2.3.4 - - {T} "GET /中文 HTTP/1.1" 200 1 "-" "-"'.encode("gb18030")
    latin = f'1.2.3.4 - - {T} "GET /caf\xe9 HTTP/1.1" 200 1 "-" "-"'.encode("latin-1")
    path = tmp_path / "access.log"
    path.write_bytes(b"\n".join([utf8, gbk, latin]) + b"\n")
    result = analyse([path])
    assert (result.lines, result.rejected) == (3, 0)
    paths = {p for s in result.stats for p, _ in s["top_paths"]}
    assert "/中文" in paths and len(paths) == 2  # latin-1 é is kept as a replacement character


def test_empty_inputs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    gz = tmp_path / "empty.log.gz"
    gz.write_bytes(gzip.compress(b""))
    result = analyse([empty, gz, io.BytesIO(b"")])
    assert (result.lines, result.rejected, result.stats, result.findings) == (0, 0, [], [])
    assert result.to_json() == {
        "lines": 0, "rejected": 0, "rejected_samples": [], "stats": [], "findings": [],
    }  # fmt: skip


def test_directory_of_rotated_files_and_streams(tmp_path: Path) -> None:
    def line(sec: int) -> bytes:
        stamp = f"[03/Jul/2026:09:15:{sec:02d} +0800]"
        return f'1.2.3.4 - - {stamp} "GET / HTTP/1.1" 200 1 "-" "-"\n'.encode()

    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "access.log.2.gz").write_bytes(gzip.compress(line(1) * 3))
    (folder / "access.log.1").write_bytes(line(2) * 2)
    (folder / "access.log").write_bytes(line(3))
    text_stream = io.TextIOWrapper(io.BytesIO(line(4)), encoding="utf-8")
    result = analyse([folder, text_stream, io.BytesIO(line(5) + line(6).rstrip(b"\n"))])
    assert (result.lines, result.rejected) == (9, 0)


@pytest.mark.parametrize(
    "names",
    [
        ["access.log.20260703", "access.log.20260704.gz", "access.log"],
        ["access.log-2026-07-03", "access.log-2026-07-04", "access.log"],
        ["access.log-2026070323.gz", "access.log-2026070400", "access.log"],
    ],
)
def test_a_folder_of_dated_rotations_is_read_oldest_first(tmp_path: Path, names: list[str]) -> None:
    # logrotate's dateext: read newest first, a brute force across midnight was missed.
    def line(moment: dt.datetime) -> bytes:
        stamp = moment.strftime("%d/%b/%Y:%H:%M:%S +0800")
        return f'45.95.147.9 - - [{stamp}] "POST /auth/login HTTP/1.1" 401 1 "-" "-"\n'.encode()

    start = dt.datetime(2026, 7, 3, 23, 58)
    lines = [line(start + dt.timedelta(seconds=5 * i)) for i in range(48)]
    folder = tmp_path / "logs"
    folder.mkdir()
    for k, name in enumerate(names):  # the file written last is the oldest
        data = b"".join(lines[k * 16 : (k + 1) * 16])
        (folder / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        os.utime(folder / name, (1e9 - k, 1e9 - k))
    assert [p.name for p in folder_files(folder)] == names
    found = {(f.rule, f.subject): f.count for f in analyse([folder]).findings}
    assert found.get(("brute_force_ip", "45.95.147.9")) == 48


def test_forced_format_rejects_the_other(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(f'1.2.3.4 - - {T} "GET / HTTP/1.1" 200 1 "-" "-"\n'.encode())
    assert analyse([path], fmt="json").rejected == 1
    assert analyse([path], fmt="nginx").rejected == 0


@pytest.fixture(params=["C", "numpy"])
def line_finder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Lines split by the C scan's `line_offsets` (when built), and by numpy."""
    if request.param == "numpy":
        monkeypatch.setattr(lines, "_line_offsets", None)
    elif not nginx.NATIVE:
        pytest.skip("the C scan is not built")
    return str(request.param)


def test_split_lines_keeps_zero_copy_and_drops_blanks(line_finder: str) -> None:
    arr = split_lines(b"a\r\n\r\n\nb\nc")
    assert arr.to_pylist() == [b"a\r\n", b"b\n", b"c"]
    assert split_lines(b"") == pa.array([], pa.binary())
    assert split_lines(b"\nab\ncd\r").to_pylist() == [b"ab\n", b"cd\r"]
    assert split_lines(b"ab\ncd\n\r").to_pylist() == [b"ab\n", b"cd\n"]
    assert split_lines(b"\r\n").to_pylist() == []
    assert split_lines(bytearray(b"abc\ndef\n")).to_pylist() == [b"abc\n", b"def\n"]
    assert split_lines(b"x").to_pylist() == [b"x"]


def test_splitting_a_block_holds_no_copy_of_it(line_finder: str) -> None:
    # A block is 2 MiB: finding its newlines must not cost a mask of its size on top (the C
    # scan's memchr needs none), only the offsets, 4 bytes a line.
    block = (b"x" * 199 + b"\n") * 10_000  # 2 MB, 10,000 lines
    tracemalloc.start()
    try:
        got = split_lines(block)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == 10_000 and got[9_999].as_py() == b"x" * 199 + b"\n"
    if line_finder == "C":
        assert peak < 200_000


def test_the_configured_trusted_proxies_decide_who_the_client_is() -> None:
    line = f'10.0.0.5 - - {T} "GET / HTTP/1.1" 200 1 "-" "-" 0.001 "198.51.100.9, 61.1.2.3"\n'
    behind = parse_config({"logs": {"trusted_proxies": ["10.0.0.0/8"]}}, "test", env={}).logs
    for settings, client in ((behind, "61.1.2.3"), (None, "10.0.0.5")):
        parsed = make_analyzer(settings).parse(line.encode(), "nginx")
        assert parsed.table.column("ip").to_pylist() == [client]


def test_a_byte_order_mark_before_a_json_file_s_first_line_is_read_past() -> None:
    line = json.dumps({"ts": "2026-07-03T09:15:02+08:00", "ip": "1.2.3.4", "status": 200})
    raw = f"\ufeff{line}\n{line}\n".encode()
    parsed = jsonlog.parse(split_lines(raw), raw)
    assert parsed.rejected == []
    assert parsed.table.column("ip").to_pylist() == ["1.2.3.4", "1.2.3.4"]
