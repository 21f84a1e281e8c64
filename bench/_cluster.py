"""What bench/cluster.py and bench/soak.py share: TLS files, a daemon's config, `monitord run`
processes and what /proc says of them. Not a bench itself (`make bench` skips `_*.py`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from bench._proc import cpu_seconds, status_kib

TOKEN = "bench-portal-token"
"""The portal token the daemons are given (no portal answers: the catalogue sync fails)."""


def tls_files(workdir: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost certificate signed by it: (CA file, certificate chain, key)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    ca_file, cert, key = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    leaf.private_key_pem.write_to_path(str(key))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(cert), append=True)
    return ca_file, cert, key


def write_config(
    folder: Path,
    name: str,
    store_url: str,
    interval: float,
    ca_file: Path,
    extra: str = "",
    slo_ms: float = 3000.0,
) -> Path:
    """A daemon's monitord.toml in `folder`: availability probes only, loopback allowed, no
    API, no ZAP, no portal (port 9 refuses: the sync fails once at start, changing nothing)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "monitord.toml"
    config.write_text(
        f"""
[daemon]
grace_seconds = 5.0
[store]
url = "{store_url}"
[portal]
url = "http://127.0.0.1:9"
sync_interval_seconds = 86400
retries = 0
[logging]
file = "{folder / "monitord.log.jsonl"}"
[probes]
interval_seconds = {interval}
slo_ms = {slo_ms}
ca_file = "{ca_file}"
deep_kinds = []
denied_networks = []
[zap]
enabled = false
[api]
enabled = false
[cluster]
name = "{name}"
{extra}
""",
        encoding="utf-8",
    )
    return config


@dataclass
class Daemon:
    """One `monitord run` of the bench, restartable; stderr goes to `folder/stderr.log`."""

    name: str
    config: Path
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    """Every process this daemon has been, in order (a restart is a new one)."""

    def start(self) -> None:
        """Start (or start again) `monitord run` with this daemon's config."""
        env = dict(os.environ, MONITORD_PORTAL_TOKEN=TOKEN)
        with open(self.config.parent / "stderr.log", "ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "monitord.cli", "--config", str(self.config), "run"],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
            )
        self.pids.append(self.process.pid)

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None, "started"
        return self.process.pid

    def signal(self, sig: signal.Signals) -> None:
        """Send sig to the daemon (SIGKILL also reaps it)."""
        assert self.process is not None, "started"
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL when it does not stop within 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)  # in case a fault left it stopped
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def alive(self) -> bool:
        """Whether the process runs (a stopped one counts as running)."""
        return self.process is not None and self.process.poll() is None

    def cpu_s(self) -> float:
        """User+system CPU seconds of the running process."""
        return cpu_seconds(self.pid)

    def rss_mib(self) -> float:
        """Resident memory of the running process, in MiB."""
        return status_kib(self.pid, "VmRSS") / 1024


def stderr_tail(daemon: Daemon, lines: int = 5) -> str:
    """The last lines a daemon wrote to stderr (to say why it stopped)."""
    text = (daemon.config.parent / "stderr.log").read_text(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
