"""The systemd unit: the hardening it promises is there, and systemd reads every line of it."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from monitord.config import DaemonSettings, ProbeSettings

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "monitord.service"


def service_section() -> dict[str, list[str]]:
    """The [Service] keys of the unit, each with its values in order."""
    keys: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            keys.setdefault(key, []).append(value)
    return keys


def test_the_unit_hides_other_processes_caps_memory_and_denies_metadata_addresses() -> None:
    keys = service_section()
    assert keys["ProtectProc"] == ["invisible"]
    assert keys["UMask"] == ["0027"]  # the store and the log: 0640, the monitord group reads
    assert keys["MemoryMax"] and keys["MemoryMax"][0] not in ("", "infinity")
    denied = {ipaddress.ip_network(n) for v in keys["IPAddressDeny"] for n in v.split()}
    assert ipaddress.ip_network("169.254.0.0/16") in denied
    assert ipaddress.ip_network("fe80::/10") in denied
    assert {ipaddress.ip_network(n) for n in ProbeSettings().denied_networks} <= denied


def test_the_unit_stops_after_the_grace_period_not_before() -> None:
    timeout = service_section()["TimeoutStopSec"][0]
    assert timeout.endswith("s")
    assert float(timeout[:-1]) > DaemonSettings().grace_seconds


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_systemd_knows_every_key_of_the_unit(tmp_path: Path) -> None:
    # A misspelt key is ignored by systemd with a warning, and its protection silently missing.
    unit = tmp_path / "monitord.service"
    text = UNIT.read_text(encoding="utf-8")
    unit.write_text(
        text.replace("ExecStart=/opt/monitord/.venv/bin/monitord", "ExecStart=/bin/true"),
        encoding="utf-8",
    )
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert "Unknown key" not in done.stderr, done.stderr
    assert "Unknown lvalue" not in done.stderr, done.stderr
