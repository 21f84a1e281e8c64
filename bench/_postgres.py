"""A throw-away PostgreSQL server for the benches and the test suite (not a bench itself: `make
bench` skips files whose name starts with an underscore; tests/conftest.py imports it, so that
no bench imports tests/). It can also be restarted, and load pg_stat_statements."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def postgres_bin() -> Path | None:
    """Where PostgreSQL's server programs are: on PATH, or under /usr/lib/postgresql."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder (fsync off, as the tests run it).

    `preload` names libraries for shared_preload_libraries (pg_stat_statements, to count the
    statements the daemons send).
    """

    def __init__(self, folder: Path, bindir: Path, preload: str = "") -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.preload = preload
        self.counter = 0
        # PostgreSQL refuses to run as root: drop to the postgres user then.
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(folder, "postgres")
            folder.chmod(0o755)
            for parent in folder.parents:
                if parent.stat().st_mode & 0o001 == 0:
                    parent.chmod(parent.stat().st_mode | 0o001)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.prefix, str(self.bindir / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def _options(self) -> str:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c max_connections=300"
        if self.preload:
            options += f" -c shared_preload_libraries={self.preload}"
        return options

    def start(self) -> None:
        """Create the cluster and start it."""
        self._run("initdb", "-D", str(self.data), "-U", "monitord", "-A", "trust", "-E", "UTF8")
        self._pg_ctl("start")

    def _pg_ctl(self, action: str, *extra: str) -> None:
        log = str(self.folder / "log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", self._options(), *extra, action
        )

    def restart(self) -> float:
        """`pg_ctl restart -m fast`, as an operator would under load; returns the seconds taken."""
        started = time.monotonic()
        self._pg_ctl("restart", "-m", "fast")
        return time.monotonic() - started

    def pid(self) -> int:
        """The server's main process (postmaster), whose children are its backends."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        """Stop at once (the data is thrown away)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def new_database(self) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self.counter += 1
        name = f"db{self.counter}_{int(time.time() * 1000) % 100000}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "monitord", name)
        return f"postgresql://monitord@127.0.0.1:{self.port}/{name}"
