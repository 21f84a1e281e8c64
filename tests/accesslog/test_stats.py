"""The hourly statistics rows a user sees: counts, distinct users and IPs, percentiles, top paths,
when hours close, follow mode's state, and that memory holds only the open hours."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from monitord.accesslog.findings import iso
from monitord.accesslog.schema import SCHEMA, TEXT, conform
from monitord.accesslog.stats import STATE_VERSION, StatsAccumulator, merge_rows

H0 = 1_780_000_000 - 1_780_000_000 % 3600  # an hour boundary
Row = dict[str, Any]


def block(rows: list[Row], text: str = "plain") -> pa.Table:
    """A parsed block from row dicts (missing fields null); text columns plain or as TEXT."""
    cols = {f.name: pa.array([r.get(f.name) for r in rows], f.type) for f in SCHEMA}
    table = conform(cols, len(rows))
    return _all_text_as_dictionaries(table) if text == "dict" else table


def req(
    t: int,
    ip: str | None = "10.0.0.1",
    service: str | None = "svc-1",
    path: str | None = "/svc/svc-1/",
    status: int | None = 200,
    ms: float | None = 10.0,
    user: str | None = None,
    client: str | None = "desktop",
    source: str = "nginx",
) -> Row:
    return {
        "ts": t,
        "source": source,
        "ip": ip,
        "user": user,
        "service": service,
        "path": path,
        "status": status,
        "duration_ms": ms,
        "client": client,
    }


def run(blocks: list[pa.Table], lateness: int = 1) -> list[Row]:
    acc = StatsAccumulator(lateness)
    rows: list[Row] = []
    for b in blocks:
        acc.add(b)
        rows += acc.take_closed()
    return sorted(rows + acc.finish(), key=lambda r: (r["hour"], r["source"], r["service"]))


def by_key(rows: list[Row]) -> dict[tuple[str, str, str], Row]:
    return {(r["source"], r["service"], r["hour"]): r for r in rows}


def bin_mark(ms: float) -> float:
    """The value a percentile reports for a latency: the middle of its 5 % bin."""
    b = math.floor(math.log(max(ms, 0.1) / 0.1) / math.log(1.05))
    return round(0.1 * float(1.05 ** (b + 0.5)), 1)


@pytest.mark.parametrize("text", ["plain", "dict"])
def test_counts_per_service_and_hour(text: str) -> None:
    first = [
        req(H0 + 10, ip="1.1.1.1", status=200, client="phone", user="alice"),
        req(H0 + 20, ip="1.1.1.2", status=404, client="wechat", user="bob"),
        req(H0 + 30, ip="1.1.1.1", status=503, client=None, user="alice"),
        req(H0 + 40, ip=None, status=None, client="robot", service=None, path="/favicon.ico"),
        req(H0 + 50, ip="1.1.1.3", status=301, client="alipay", service="-", path="/"),
    ]
    second = [
        req(H0 + 3600 + 5, ip="2.2.2.2", service="svc-2", path="/svc/svc-2/x", status=302),
        req(H0 + 60, ip="1.1.1.9", status=100, source="json"),
    ]
    rows = by_key(run([block(first, text), block(second, text)]))
    hour0, hour1 = iso(H0), iso(H0 + 3600)
    assert set(rows) == {
        ("nginx", "svc-1", hour0),
        ("nginx", "-", hour0),
        ("nginx", "svc-2", hour1),
        ("json", "svc-1", hour0),
    }
    svc1 = rows[("nginx", "svc-1", hour0)]
    assert svc1["requests"] == 3
    assert (svc1["ips"], svc1["users"]) == (2, 2)
    assert svc1["status"] == {"2xx": 1, "4xx": 1, "5xx": 1}
    assert svc1["clients"] == {"desktop": 1, "phone": 1, "wechat": 1, "alipay": 0}
    # A null service and "-" are one group; a null IP is not an address; an unknown client
    # kind counts in none of them; a null status is "other".
    dash = rows[("nginx", "-", hour0)]
    assert (dash["requests"], dash["ips"], dash["users"]) == (2, 1, 0)
    assert dash["status"] == {"3xx": 1, "other": 1}
    assert dash["clients"] == {"desktop": 0, "phone": 0, "wechat": 0, "alipay": 1}
    assert dash["top_paths"] == [["/", 1], ["/favicon.ico", 1]]
    assert rows[("json", "svc-1", hour0)]["status"] == {"other": 1}
    assert rows[("nginx", "svc-2", hour1)]["status"] == {"3xx": 1}


def test_distinct_users_and_ips_across_blocks() -> None:
    blocks = [
        block([req(H0 + 1, ip="1.1.1.1", user="a"), req(H0 + 2, ip="1.1.1.2", user="b")]),
        block([req(H0 + 3, ip="1.1.1.1", user="a"), req(H0 + 4, ip="1.1.1.3", user=None)]),
        block([req(H0 + 5, ip="1.1.1.2", user="c")], "dict"),
    ]
    (row,) = run(blocks)
    assert (row["requests"], row["ips"], row["users"]) == (5, 3, 3)


def test_latency_percentiles() -> None:
    durations = [float(ms) for ms in range(1, 101)]  # 1 .. 100 ms
    rows = [req(H0 + i, ms=ms) for i, ms in enumerate(durations)]
    rows += [req(H0 + 200, ms=None)]  # no duration: not in the histogram
    (row,) = run([block(rows[:40]), block(rows[40:])])
    assert row["requests"] == 101
    # The mark of the bin holding the q-th duration.
    assert row["latency_ms"] == {"p50": bin_mark(50), "p95": bin_mark(95), "p99": bin_mark(99)}
    (none,) = run([block([req(H0, ms=None)])])
    assert none["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_top_paths_ties_broken_by_path_null_last() -> None:
    rows = [req(H0, path="/hot") for _ in range(5)]
    for i in range(12):  # twelve paths requested twice each: only nine fit after /hot
        rows += [req(H0 + 1, path=f"/p{11 - i:02d}")] * 2
    rows += [req(H0 + 2, path=None)] * 2  # a null path ties too, and sorts after the others
    (row,) = run([block(rows[:9]), block(rows[9:], "dict")])
    assert row["top_paths"] == [["/hot", 5]] + [[f"/p{i:02d}", 2] for i in range(9)]
    (only_null,) = run([block([req(H0, path=None)] * 3 + [req(H0, path="/b")] * 3)])
    assert only_null["top_paths"] == [["/b", 3], [None, 3]]


def test_hour_closes_only_after_lateness() -> None:
    acc = StatsAccumulator(lateness_hours=1)
    acc.add(block([req(H0 + 10)]))
    acc.add(block([req(H0 + 3600 + 10)]))
    assert acc.take_closed() == []  # one hour later: still open for late lines
    acc.add(block([req(H0 + 20)]))  # a late line joins its open hour
    acc.add(block([req(H0 + 2 * 3600 + 10)]))
    (closed,) = acc.take_closed()  # two hours later: the first hour is final
    assert (closed["hour"], closed["requests"]) == (iso(H0), 2)
    assert acc.take_closed() == []
    assert [r["hour"] for r in acc.finish()] == [iso(H0 + 3600), iso(H0 + 7200)]

    acc = StatsAccumulator(lateness_hours=3)
    for h in range(4):
        acc.add(block([req(H0 + h * 3600)]))
    assert acc.take_closed() == []
    acc.add(block([req(H0 + 4 * 3600)]))
    assert [r["hour"] for r in acc.take_closed()] == [iso(H0)]


def test_state_round_trip_mid_hour_gives_the_same_rows() -> None:
    blocks = generated_blocks(rows=6_000, block=700)
    once = run(blocks)
    acc = StatsAccumulator()
    rows: list[Row] = []
    for b in blocks:
        acc.add(b)
        rows += acc.take_closed()
        state = json.loads(json.dumps(acc.to_state()))  # what follow mode stores
        assert state["version"] == STATE_VERSION
        acc = StatsAccumulator.from_state(state)
    rows += acc.finish()
    assert sorted(rows, key=json.dumps) == sorted(once, key=json.dumps)


@pytest.mark.parametrize(
    "state",
    [{}, {"max_hour": 1, "people": [[{"ip": "x"}]]}, {"version": 99}, {"version": STATE_VERSION}],
)
def test_other_states_start_empty(state: dict[str, Any]) -> None:
    acc = StatsAccumulator.from_state(state)
    assert acc.open_groups() == 0
    acc.add(block([req(H0)]))
    assert [r["requests"] for r in acc.finish()] == [1]


def test_dictionary_and_plain_text_give_the_same_rows() -> None:
    as_text = generated_blocks(rows=5_000, block=900)
    as_dict = [_all_text_as_dictionaries(b) for b in as_text]
    assert run(as_dict) == run(as_text)


def _all_text_as_dictionaries(table: pa.Table) -> pa.Table:
    for i, f in enumerate(SCHEMA):
        if f.type == pa.string():
            table = table.set_column(i, f.name, pc.cast(table.column(i), TEXT))
    return table


def test_memory_holds_only_open_hours() -> None:
    acc = StatsAccumulator()
    held = []
    for h in range(300):
        t = H0 + h * 3600
        ips = [f"10.{h % 200}.{i % 50}.1" for i in range(400)]
        rows = [
            req(t + i, ip=ips[i], service=f"svc-{i % 7}", path=f"/svc/{h}/{i % 40}")
            for i in range(400)
        ]
        acc.add(block(rows, "dict"))
        assert len(acc.take_closed()) == (7 if h >= 2 else 0)
        assert acc.open_groups() <= 14  # two hours of seven services
        held.append(acc.nbytes())
    # Flat: no growth with the hours fed (longer hour numbers in the paths aside).
    assert max(held[100:]) <= 1.05 * max(held[:20]) < 1 << 20
    assert len(acc.finish()) == 14


def generated_blocks(seed: int = 7, rows: int = 20_000, block: int = 1_500) -> list[pa.Table]:
    """Seeded traffic over ~12 hours: two sources, a null and a "-" service, nulls in every
    column, unknown clients and statuses, rows a little out of order and a few hours late."""
    rng = np.random.default_rng(seed)
    ts = H0 + np.sort(rng.integers(0, 12 * 3600, rows)) + rng.integers(-300, 300, rows)
    ts[rng.random(rows) < 0.002] -= 3 * 3600

    def pick(pool: list[Any], p_null: float = 0.0) -> list[Any]:
        out = [pool[i] for i in rng.integers(0, len(pool), rows)]
        return [None if x else v for v, x in zip(out, rng.random(rows) < p_null, strict=True)]

    services = [f"svc-{i:04d}" for i in range(6)] + ["-"]
    paths = [f"/svc/svc-{i % 6:04d}/item/{i}" for i in range(60)] + [
        "/",
        "/中文/路径",
        "/a b",
        "/z",
    ]
    codes = [200, 200, 200, 201, 204, 301, 302, 304, 400, 404, 404, 500, 502, 503, 101, 600]
    status = [codes[i] for i in rng.integers(0, len(codes), rows)]
    status = [None if x else s for s, x in zip(status, rng.random(rows) < 0.01, strict=True)]
    dur = np.exp(rng.normal(3.0, 1.5, rows))
    dur[rng.random(rows) < 0.01] = 0.0
    dur[rng.random(rows) < 0.001] = 1e9
    ms = [None if x else float(d) for d, x in zip(dur, rng.random(rows) < 0.05, strict=True)]
    cols = {
        "ts": pa.array(ts, pa.int64()),
        "source": pa.array(pick(["nginx", "json"])),
        "ip": pa.array(pick([f"10.0.{i // 250}.{i % 250}" for i in range(400)], 0.01)),
        "user": pa.array(pick([f"u-{i}" for i in range(60)], 0.4)),
        "service": pa.array(pick(services, 0.1)),
        "path": pa.array(pick(paths, 0.01)),
        "status": pa.array(status, pa.int32()),
        "duration_ms": pa.array(ms, pa.float64()),
        "client": pa.array(pick(["desktop", "phone", "wechat", "alipay", "robot"], 0.02)),
    }
    table = conform(cols, rows)
    return [table.slice(i, block) for i in range(0, rows, block)]


def digest(rows: list[Row]) -> str:
    text = json.dumps(sorted(rows, key=lambda r: json.dumps(r, sort_keys=True)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# The rows of `generated_blocks()` as the Arrow group-by implementation (commit f878176) made
# them: 226 rows, 20,000 requests. A change here changes what users see.
FROZEN = "e4a54c819ffe8b2803c9754a5e7d1bce840f8a54f8d7f7c65088e4c904e98eb1"


@pytest.mark.parametrize("text", ["plain", "dict"])
def test_same_rows_as_the_group_by_implementation(text: str) -> None:
    blocks = generated_blocks()
    if text == "dict":
        blocks = [_all_text_as_dictionaries(b) for b in blocks]
    rows = run(blocks)
    assert (len(rows), sum(r["requests"] for r in rows)) == (226, 20_000)
    assert digest(rows) == FROZEN


def test_top_paths_match_a_plain_sort_at_any_counts() -> None:
    """Counts spread over many levels (hot paths, ties at large counts, slots of few paths)
    give the top paths a full sort of (requests descending, path) gives."""
    rng = np.random.default_rng(3)
    rows: list[Row] = []
    expected: dict[str, list[list[Any]]] = {}
    for s in range(12):
        service = f"svc-{s}"
        n_paths = int(rng.integers(1, 30))
        counts = rng.choice([1, 2, 3, 15, 16, 17, 31, 32, 33, 64, 65, 300], n_paths).tolist()
        paths = [f"/svc/{service}/{rng.integers(0, 1000)}" for _ in range(n_paths)]
        totals: dict[str, int] = {}
        for path, n in zip(paths, counts, strict=True):
            totals[path] = totals.get(path, 0) + n
            rows += [req(H0 + len(rows) % 3600, service=service, path=path)] * n
        ranked = sorted(totals.items(), key=lambda pn: (-pn[1], pn[0]))[:10]
        expected[service] = [[p, n] for p, n in ranked]
    order = rng.permutation(len(rows))
    shuffled = [rows[i] for i in order]
    third = len(shuffled) // 3
    blocks = [block(shuffled[:third]), block(shuffled[third:], "dict")]
    got = {r["service"]: r["top_paths"] for r in run(blocks)}
    assert got == expected


def test_a_row_of_late_lines_merges_into_the_stored_row() -> None:
    stored = {"source": "a.log", "service": "svc-1", "hour": "2026-07-03T01:00:00+00:00",
              "requests": 10, "users": 4, "ips": 5, "status": {"2xx": 9, "5xx": 1},
              "latency_ms": {"p50": 20.0, "p95": 90.0, "p99": 99.0},
              "clients": {"desktop": 10, "phone": 0, "wechat": 0, "alipay": 0},
              "top_paths": [["/a", 6], ["/b", 4]]}  # fmt: skip
    late = {**stored, "requests": 3, "users": 2, "ips": 6, "status": {"2xx": 2, "4xx": 1},
            "latency_ms": {"p50": 500.0, "p95": 900.0, "p99": 990.0},
            "clients": {"desktop": 1, "phone": 2, "wechat": 0, "alipay": 0},
            "top_paths": [["/b", 3]]}  # fmt: skip
    merged = merge_rows(stored, late)
    assert merged["requests"] == 13
    assert merged["status"] == {"2xx": 11, "5xx": 1, "4xx": 1}
    assert merged["clients"] == {"desktop": 11, "phone": 2, "wechat": 0, "alipay": 0}
    assert (merged["users"], merged["ips"]) == (4, 6)
    assert merged["latency_ms"] == stored["latency_ms"]  # from the part with more requests
    assert merged["top_paths"] == [["/b", 7], ["/a", 6]]
