"""The systemd unit: the hardening it promises is there, and systemd reads every line of it."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from monitord.config import SECRET_CREDENTIAL, DaemonSettings, ProbeSettings, load_config

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


def test_a_reload_checks_the_config_before_signalling_and_secrets_are_credentials() -> None:
    keys = service_section()
    # `kill -HUP` alone reported success when the daemon refused the new config; a plain
    # check-config only warned of a log file the daemon's user cannot write, which it refuses.
    reload = keys["ExecReload"]
    assert reload[0].endswith("--config /etc/monitord/monitord.toml check-config --for-reload")
    assert reload[-1] == "/bin/kill -HUP $MAINPID"
    assert "adm" in keys["SupplementaryGroups"]
    assert keys["SystemCallErrorNumber"] == ["EPERM"]
    credential = keys["LoadCredential"][0].split(":", 1)[0]
    assert credential == SECRET_CREDENTIAL["portal", "token"]


INSTALL = UNIT.parent / "install.sh"


@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh makes a user and chowns: needs root")
@pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd (Debian's passwd)")
def test_the_install_script_lays_out_a_scratch_root_and_runs_again_harmlessly(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    for _ in range(2):  # idempotent: the second run changes nothing and fails at nothing
        done = subprocess.run(
            ["sh", str(INSTALL), "--root", str(root), "--no-venv"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    passwd = (root / "etc" / "passwd").read_text(encoding="utf-8")
    [user] = [line for line in passwd.splitlines() if line.startswith("monitord:")]
    uid, gid, home, shell = (user.split(":")[i] for i in (2, 3, 5, 6))
    assert (home, shell) == ("/var/lib/monitord", "/usr/sbin/nologin")
    adm = next(g for g in (root / "etc" / "group").read_text().splitlines() if g.startswith("adm:"))
    assert "monitord" in adm.split(":")[3].split(",")

    def mode(path: str) -> tuple[int, int, int]:
        status = (root / path).stat()
        return stat.S_IMODE(status.st_mode), status.st_uid, status.st_gid

    assert mode("etc/monitord") == (0o750, 0, int(gid))
    assert mode("etc/monitord/monitord.toml") == (0o640, 0, int(gid))
    assert mode("etc/monitord/credentials") == (0o700, 0, 0)
    assert mode("etc/monitord/credentials/portal-token") == (0o600, 0, 0)
    assert mode("var/lib/monitord") == (0o750, int(uid), int(gid))
    assert mode("var/log/monitord") == (0o750, int(uid), int(gid))
    assert (root / "etc/systemd/system/monitord.service").read_text() == UNIT.read_text()
    # `monitord` on PATH, as the README's examples type it (only the venv's was there).
    assert os.readlink(root / "usr/local/bin/monitord") == "/opt/monitord/.venv/bin/monitord"
    # The config it writes is valid as it stands, with the service's absolute paths.
    config = load_config(root / "etc" / "monitord" / "monitord.toml")
    assert config.store.url == "sqlite:////var/lib/monitord/monitord.db"
    assert config.logging.file == "/var/log/monitord/monitord.log.jsonl"
    assert str(config.store.files_dir) == "/var/lib/monitord/evidence"
    assert config.report.dir == "/var/lib/monitord/reports"  # not var/reports of any folder
    # A config the operator edited is kept.
    (root / "etc/monitord/monitord.toml").write_text("# mine\n", encoding="utf-8")
    subprocess.run(["sh", str(INSTALL), "--root", str(root), "--no-venv"], check=True, timeout=120)
    assert (root / "etc/monitord/monitord.toml").read_text() == "# mine\n"


def copy_checkout(target: Path) -> Path:
    """A copy of this checkout at target, as a fresh clone would be (no venv, build or store)."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", "*.so", ".*_cache"
    )
    shutil.copytree(UNIT.parent.parent, target, ignore=ignore)
    return target


@pytest.mark.timeout(900)
@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh makes a user and chowns: needs root")
@pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd (Debian's passwd)")
def test_installing_a_checkout_over_another_installs_exactly_that_checkout(tmp_path: Path) -> None:
    # An upgrade kept a module the new checkout no longer has, and a file older than the one
    # installed (a roll-back) was not installed at all: setuptools reused the last build/.
    root = tmp_path / "root"
    first = copy_checkout(tmp_path / "first")
    (first / "monitord" / "gone_since.py").write_text("GONE = True\n", encoding="utf-8")
    second = copy_checkout(tmp_path / "second")
    rules = second / "rules" / "logs.toml"
    rules.write_text(rules.read_text(encoding="utf-8") + "# the second checkout's\n", "utf-8")
    os.utime(rules, (0, 0))
    for checkout in (first, second):
        done = subprocess.run(
            ["sh", str(checkout / "deploy" / "install.sh"), "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=800,
        )
        assert done.returncode == 0, done.stderr
    [site] = (root / "opt/monitord/.venv/lib").glob("python3*/site-packages")
    assert not (site / "monitord" / "gone_since.py").exists()
    assert (site / "rules" / "logs.toml").read_text(encoding="utf-8").endswith("checkout's\n")
    assert not (root / "opt/monitord/monitord/gone_since.py").exists()
    assert not (root / "opt/monitord/build").exists()
