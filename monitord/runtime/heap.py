"""Handing the C heap's free pages back to the system after a probe round.

A probe round allocates and frees a lot at once: 2,000 probe tasks, their TLS connections and
read buffers on the event loop, the rows and statements of its recording in a worker thread.
glibc's malloc keeps what was freed inside its arenas (one for the main thread, one per worker
thread) for reuse, and gives a page back to the system only from the top of a heap; what the
round freed below a block still in use stays resident. Each round's peak lands a little
differently, so the daemon's resident memory crept up round after round with no Python object
growing (bench/memory.py measures it). `malloc_trim(0)` returns every free page of every arena
to the system; called once the round's garbage is gone, it keeps the daemon's memory flat.

What is freed but still inside a page in use cannot be given back, and glibc makes an arena for
each thread that finds the others busy, up to eight per core. As jobs ran side by side and the
worker pool grew, each daemon of bench/soak.py came to hold 11 or 12 arenas, and the one holding
the once-only jobs kept rising for half an hour. The daemon therefore caps malloc at two arenas
before its threads start (what `MALLOC_ARENA_MAX=2` does), so that its memory levels off within
its first rounds whatever the number of cores.

Python's own collector is tuned too (`tune_collector`): a round's millions of short-lived objects
made it run ten times a second over the whole start-up heap.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable
from functools import cache

GC_YOUNG_THRESHOLD = 20_000
"""Allocations between collections of the youngest generation (Python's default: 700). A
probe round allocates millions of short-lived objects; at 700 the collector ran ten times a
second, mostly over objects about to be freed anyway."""
DAEMON_ARENAS = 2
"""malloc arenas the daemon may use: the main thread's and one shared by its worker threads."""
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library, or None where ctypes cannot find it."""
    import ctypes.util  # 5 ms of imports (subprocess, shutil): only where the library is wanted

    try:
        return ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def limit_arenas(count: int = DAEMON_ARENAS) -> bool:
    """Let malloc make at most `count` arenas from now on; False where that cannot be done.

    Called before the daemon starts its threads: an arena made already stays.
    """
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None or _malloc_trim() is None:  # mallopt's numbers are glibc's own
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Give the pages malloc holds free back to the system; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def tune_collector() -> None:
    """For a process that runs probe rounds (the daemon, `monitord probe --all`) or analyses
    logs (`monitord analyse`), once started:
    keep what start-up built (modules, classes, the config, the store's engine) out of every
    later garbage collection, and collect the young generation less often.

    In a daemon probing 2,000 services the collector took a fifth of its CPU: full collections
    walked the whole start-up heap, which lives as long as the process, and young ones ran ten
    times a second. Collected first, so that no garbage of the start is kept for ever.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)
