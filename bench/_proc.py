"""What the benches read of a process from /proc (its CPU, its memory, its children), and how
they time a command as typed (`timed`, by GNU time).

Every figure is the process's own: CPU is user+system time of all its threads, and the peak is
its high-water mark (VmHWM), which an exec resets, unlike `ru_maxrss` (that one carries the
parent's memory at spawn into the child's figure).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    # The command name, in parentheses, may hold spaces: split after its closing one.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int | str = "self", *, waited_children: bool = False) -> float:
    """User+system CPU seconds of a process (all its threads), and of the children it waited for
    when `waited_children`."""
    fields = _stat_fields(pid)
    ticks = int(fields[11]) + int(fields[12])
    if waited_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICKS_PER_SECOND


def status_kib(pid: int | str, field: str) -> int:
    """A memory line of /proc/PID/status in KiB (e.g. "VmRSS", "VmHWM")."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise LookupError(f"/proc/{pid}/status has no {field} line")


def peak_mib(pid: int | str = "self") -> float:
    """A process's own peak resident memory (VmHWM), in MiB."""
    return status_kib(pid, "VmHWM") / 1024


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (e.g. a PostgreSQL server's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int(_stat_fields(entry.name)[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError):  # it ended while we looked
                continue
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and of its children alive now (a server and its workers)."""
    total = 0.0
    for member in (pid, *children(pid)):
        try:
            total += cpu_seconds(member)
        except OSError:  # it ended while we looked
            continue
    return total


GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MONITORD = str(Path(sys.executable).parent / "monitord")


def timed(
    cmd: list[str], output: Path, cwd: Path | None = None, expect: tuple[int, ...] = (0,)
) -> tuple[float, float | None, float | None]:
    """Run cmd (in `cwd`, without $MONITORD_CONFIG) with stdout to `output`: wall-clock seconds,
    and its peak MiB and CPU seconds (user + system, every thread) by GNU time. An exit code
    not in `expect` ends the bench with the command's error."""
    full = [GNU_TIME, "-f", "%M %U %S", *cmd] if GNU_TIME else cmd
    env = {k: v for k, v in os.environ.items() if k != "MONITORD_CONFIG"}
    start = time.perf_counter()
    with output.open("w") as out:
        done = subprocess.run(full, stdout=out, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env)
    seconds = time.perf_counter() - start
    if done.returncode not in expect:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    if not GNU_TIME:
        return seconds, None, None
    kib, user, system = done.stderr.strip().splitlines()[-1].split()
    return seconds, int(kib) / 1024, float(user) + float(system)
