"""`monitord demo`, what `make run` starts: the newcomer sees it sync, probe and alert."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from monitord.demo.run import _fresh_store
from monitord.errors import StoreError, UsageError
from monitord.store import open_store

pytestmark = pytest.mark.timeout(90)

EXPECTED = (
    "catalogue synced: 30 services",
    "demo portal: svc-0006 filed a suspension",
    "service state: svc-0001 企业开办一件事: up",
    "传输未加密或加密薄弱",  # the plain-HTTP service's security incident
    "用户异常行为",  # abnormal behaviour found in the demo's access logs
    "📨 值班群 received: 【可用性事件】",
    "access logs: ",
    "scan 1 of svc-0001 finished",
    "compliance report (its data up to now) is written: ",
    "📨 管理单位（市数据局） received: 【季度合规报告】",
)


async def test_the_demo_syncs_probes_and_alerts_then_stops_cleanly(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "monitord.cli",
        "demo",
        "--interval",
        "2",
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stderr is not None
    try:
        seen = await watch(process, process.stderr)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # The store outlasts the demo, with a command ready to read it.
    found = re.search(r"The demo's store is kept in var/demo/.*\n  monitord --config (\S+) ", seen)
    assert found, seen[-2000:]
    assert found.group(1) == str(tmp_path / "var" / "demo" / "monitord.toml")
    listed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitord.cli", "--config", found.group(1), "incidents", "list",
        "--json", stdout=asyncio.subprocess.PIPE, cwd="/",
    )  # fmt: skip
    out, _ = await listed.communicate()
    assert listed.returncode == 0
    assert any(i["kind"] == "insecure_transport" for i in json.loads(out))
    # The report outlasts the demo's temporary store, in var/reports of the working folder.
    [report] = (tmp_path / "var" / "reports").glob("monitord-*.pdf")
    assert report.read_bytes().startswith(b"%PDF")


async def watch(process: asyncio.subprocess.Process, stderr: asyncio.StreamReader) -> str:
    seen = ""
    deadline = time.monotonic() + 60
    while not all(text in seen for text in EXPECTED) and time.monotonic() < deadline:
        try:
            line = await asyncio.wait_for(stderr.readline(), 5)
        except TimeoutError:
            continue
        seen += line.decode()
    page = await status_page(seen)
    process.send_signal(signal.SIGINT)
    rest = await asyncio.wait_for(stderr.read(), 20)
    await process.wait()
    seen += rest.decode()
    missing = [text for text in EXPECTED if text not in seen]
    assert not missing, f"the demo never showed {missing}:\n{seen[-3000:]}"
    assert process.returncode == 0
    at = seen.find("Traceback")
    assert at < 0, seen[max(0, at - 500) : at + 3000]
    assert "maximum number of running instances" not in seen  # no raw scheduler warning
    # The page the demo printed, with its token, shows the demo's incidents.
    assert "安全事件 #" in page and "传输未加密或加密薄弱" in page, page[-3000:]
    return seen


async def status_page(seen: str) -> str:
    """The status page the demo printed the address and token of, as its holder sees it."""
    found = re.search(
        r"status page: (http://\S+/) \(sign in with the demo on-call token (\S+);", seen
    )
    assert found, f"the demo printed no page address and token:\n{seen[-3000:]}"
    headers = {"Authorization": f"Bearer {found.group(2)}"}
    async with aiohttp.ClientSession() as http, http.get(found.group(1), headers=headers) as answer:
        assert answer.status == 200
        return await answer.text()


def test_a_new_demo_starts_on_a_fresh_store_unless_one_still_runs(tmp_path: Path) -> None:
    kept = tmp_path / "var" / "demo"
    url = _fresh_store(kept)
    running = open_store(url, for_daemon=True)  # a demo still running on it
    try:
        with pytest.raises(StoreError, match=r"a demo is running on .*/var/demo/ already: stop it"):
            _fresh_store(kept)
        assert (kept / "monitord.db").exists()
    finally:
        running.dispose()
    assert _fresh_store(kept) == url
    assert not (kept / "monitord.db").exists()  # the previous demo's data, hours ahead, is gone


def test_a_demo_where_nothing_can_be_written_says_so_in_one_line(tmp_path: Path) -> None:
    # A traceback: OSError from var/demo's mkdir.
    (tmp_path / "var").write_text("a file where the demo's folder goes", encoding="utf-8")
    with pytest.raises(UsageError, match=r"var/demo: cannot write the demo's store there \("):
        _fresh_store(tmp_path / "var" / "demo")


@pytest.mark.parametrize("interval", ["0", "-5", "86401"])
def test_a_demo_interval_out_of_range_is_refused_naming_it_and_keeps_the_last_demo(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    interval: str,
) -> None:
    # The previous demo's store was deleted first, then the refusal named
    # portal.sync_interval_seconds and said the (deleted) store was kept.
    from monitord.cli import main

    monkeypatch.chdir(tmp_path)
    open_store(_fresh_store(tmp_path / "var" / "demo")).dispose()
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--interval", interval])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --interval: expected" in err
    assert "sync_interval_seconds" not in err
    assert (tmp_path / "var" / "demo" / "monitord.db").exists()
