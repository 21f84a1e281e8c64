"""The rule engine's contract with the readers: text columns as dictionaries or plain strings,
lines as text or bytes, blocks of one source or mixed; and follow mode's state, which must give
the findings of an uninterrupted run however often it is saved and restored."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from monitord.accesslog import Analyzer
from monitord.accesslog.findings import LogFinding
from monitord.accesslog.schema import TEXT
from monitord.demo import synth
from rules.log_rule_file import load_rules
from rules.log_rules import STATE_VERSION, LogRuleEngine

LINES_PER_BLOCK = 400  # small blocks: windows straddle many of them


def _blocks(path: Path) -> list[pa.Table]:
    lines = path.read_bytes().splitlines(keepends=True)
    parser = Analyzer(engine=LogRuleEngine([]))
    return [
        parser.parse(b"".join(lines[i : i + LINES_PER_BLOCK])).table
        for i in range(0, len(lines), LINES_PER_BLOCK)
    ]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[pa.Table]]:
    """Two days of planted traffic, as the readers parse it today (plain strings)."""
    world = synth.make_world(random.Random(5), services=8, companies=60)
    normal = synth.normal_traffic(world, random.Random(6), 6_000, synth.local(2026, 6, 1), 2)
    plants = synth.plant_all(
        world, random.Random(7), synth.local(2026, 6, 2, 10), synth.local(2026, 6, 2, 23, 30)
    )
    folder = tmp_path_factory.mktemp("engine")
    nginx, audit = folder / "access.log", folder / "audit.jsonl"
    synth.write_logs(synth.merged(normal, plants), nginx, audit)
    return {"nginx": _blocks(nginx), "json": _blocks(audit)}


def _as_readers_will(table: pa.Table) -> pa.Table:
    """Text columns as dictionaries (each block its own), lines as raw bytes."""
    columns = []
    for f in table.schema:
        col = table.column(f.name)
        if f.name == "line":
            col = pc.cast(col, pa.binary())
        elif pa.types.is_string(f.type):
            col = pc.cast(pc.dictionary_encode(col), TEXT)
        columns.append(col)
    return pa.table(columns, names=table.column_names)


def _everything(findings: list[LogFinding]) -> list[str]:
    return sorted(json.dumps(f.to_state(), sort_keys=True, ensure_ascii=False) for f in findings)


def _run(blocks: list[pa.Table], restart_every: int = 0) -> list[str]:
    engine = LogRuleEngine.load()
    for i, block in enumerate(blocks, 1):
        engine.feed(block)
        if restart_every and i % restart_every == 0:
            state = json.loads(json.dumps(engine.to_state()))  # what the store keeps
            engine = LogRuleEngine.load()
            engine.restore(state)
    return _everything(engine.findings())


def test_planted_traffic_is_found(logs: dict[str, list[pa.Table]]) -> None:
    found = {json.loads(f)["rule"] for f in _run(logs["nginx"] + logs["json"])}
    assert found == {r.name for r in load_rules()}


def test_dictionaries_and_plain_strings_give_the_same_findings(
    logs: dict[str, list[pa.Table]],
) -> None:
    blocks = logs["nginx"] + logs["json"]
    assert _run([_as_readers_will(b) for b in blocks]) == _run(blocks)


def test_saving_and_restoring_mid_window_changes_nothing(
    logs: dict[str, list[pa.Table]],
) -> None:
    blocks = logs["nginx"] + logs["json"]
    assert _run(blocks, restart_every=3) == _run(blocks)


def test_a_block_mixing_sources_is_read_per_source(logs: dict[str, list[pa.Table]]) -> None:
    edge, audit = logs["nginx"], logs["json"]
    mixed = [_as_readers_will(pa.concat_tables([e, a])) for e, a in zip(edge, audit, strict=False)]
    apart = [t for e, a in zip(edge, audit, strict=False) for t in (e, a)]
    n = min(len(edge), len(audit))
    rest = edge[n:] + audit[n:]

    def counts(blocks: list[pa.Table]) -> dict[tuple[str, str, str], Any]:
        engine = LogRuleEngine.load()
        for block in blocks:
            engine.feed(block)
        return {f.key: (f.count, f.first_seen, f.last_seen) for f in engine.findings()}

    assert counts(mixed + rest) == counts(apart + rest)


def test_evidence_comes_from_binary_lines_without_line_ends() -> None:
    line = '{"ts": "2026-06-02T23:00:00+08:00", "ip": "1.2.3.4", "user_id": "u-1", '
    line += '"action": "admin", "service_id": "svc-1", "path": "/a\\u00e9", "status": 200}'
    block = Analyzer(engine=LogRuleEngine([])).parse((line + "\n").encode()).table
    # A raw line with a byte that is not UTF-8, ending in CR LF.
    raw = pa.array([line.encode() + b"\xff\r\n"])
    block = _as_readers_will(block.set_column(block.schema.get_field_index("line"), "line", raw))
    engine = LogRuleEngine.load()
    engine.feed(block)
    (f,) = [f for f in engine.findings() if f.rule == "off_hours_privileged"]
    assert f.subject == "u-1" and f.evidence == [line + "\ufffd"]


def test_state_of_another_version_starts_the_windows_afresh(
    logs: dict[str, list[pa.Table]],
) -> None:
    engine = LogRuleEngine.load()
    for block in logs["json"][:5]:
        engine.feed(block)
    state = json.loads(json.dumps(engine.to_state()))
    assert state["version"] == STATE_VERSION and state["windows"]
    state["version"] = STATE_VERSION + 1
    state["windows"] = {key: {"buckets": "unreadable"} for key in state["windows"]}
    again = LogRuleEngine.load()
    again.restore(state)
    assert again.to_state()["windows"] == {}
    assert _everything(again.findings()) == _everything(engine.findings())
    for block in logs["json"][5:]:
        again.feed(block)


def test_a_state_saved_before_samples_were_kept_restores_its_windows(
    logs: dict[str, list[pa.Table]],
) -> None:
    def counts(engine: LogRuleEngine) -> dict[tuple[str, str, str], Any]:
        return {f.key: (f.count, f.first_seen, f.last_seen) for f in engine.findings()}

    engine = LogRuleEngine.load()
    for block in logs["json"][:5]:
        engine.feed(block)
    state = json.loads(json.dumps(engine.to_state()))
    state["version"] = 2
    for window in state["windows"].values():
        del window["samples"]
    again = LogRuleEngine.load()
    again.restore(state)
    assert again.to_state()["windows"].keys() == state["windows"].keys()
    for block in logs["json"][5:]:
        engine.feed(block)
        again.feed(block)
    assert counts(again) == counts(engine)


def test_lines_are_kept_only_for_subjects_near_a_floor() -> None:
    # Two requests from each of 500 addresses, and 70 from one (a quarter of request_flood's
    # 240 in two minutes is 60): only that one's first lines wait for a window to quote them.
    lines = [
        f'{ip} - - [02/Jun/2026:10:00:{n % 60:02d} +0800] "GET /x HTTP/1.1" 200 5 "-" "ua"\n'
        for ip, times in [*((f"10.0.{i // 250}.{i % 250}", 2) for i in range(500)), ("9.9.9.9", 70)]
        for n in range(times)
    ]
    block = Analyzer(engine=LogRuleEngine([])).parse("".join(lines).encode()).table
    engine = LogRuleEngine.load()
    engine.feed(block)
    windows = engine.to_state()["windows"]
    kept = {(s, len(texts)) for s, _, texts in windows["request_flood|ip|nginx"]["samples"]}
    assert kept == {("9.9.9.9", 5)}


def test_a_finding_saved_with_one_count_keeps_it_and_counts_on_per_source() -> None:
    # Follow-mode state from before counts were per source holds one settled number.
    raw = {"rule": "request_flood", "clause": "6.4 c", "severity": "medium",
           "subject_kind": "ip", "subject": "1.2.3.4", "first_seen": 0, "last_seen": 60,
           "settled": 40, "open_counts": {"nginx:7": 5}}  # fmt: skip
    f = LogFinding.from_state(raw)
    assert f.count == 45
    f.open_counts["json:7"] = 3  # the audit log's lines of the same requests
    f.settle("nginx:7")
    f.settle("json:7")
    assert f.count == 45
    assert LogFinding.from_state(json.loads(json.dumps(f.to_state()))).count == 45
