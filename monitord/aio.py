"""Running monitord's coroutines: on uvloop, whose event loop and TLS layer cost less CPU per
probe than the standard library's (measured in bench/probes.py)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a new uvloop event loop."""
    return uvloop.run(main)
