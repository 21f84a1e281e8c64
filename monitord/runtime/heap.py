"""Handing the C heap's free pages back to the system after a probe round.

A probe round allocates and frees a lot at once: 2,000 probe tasks, their TLS connections and
read buffers on the event loop, the rows and statements of its recording in a worker thread.
glibc's malloc keeps what was freed inside its arenas (one for the main thread, one per worker
thread) for reuse, and gives a page back to the system only from the top of a heap; what the
round freed below a block still in use stays resident. Each round's peak lands a little
differently, so the daemon's resident memory crept up round after round with no Python object
growing (bench/memory.py measures it). `malloc_trim(0)` returns every free page of every arena
to the system; called once the round's garbage is gone, it keeps the daemon's memory flat.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from functools import cache


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    function: Callable[[int], int] = trim
    return function


def release_free_memory() -> bool:
    """Give the pages malloc holds free back to the system; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
