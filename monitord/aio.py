"""Running monitord's coroutines: on uvloop, whose event loop and TLS layer cost less CPU per
probe than the standard library's (measured in bench/probes.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a new uvloop event loop."""
    return uvloop.run(main)


async def in_own_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking call in a daemon thread of its own and return (or raise) what it does.

    For a call that may hang for minutes (a remote API's client whose server stopped
    answering): a cancelled wait abandons the thread, and neither the event loop's close nor
    the interpreter's exit waits for it, as both wait for `asyncio.to_thread`'s pool — a
    Ctrl-C would stop nothing until the call timed out.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not answer.done():  # nobody waits for a cancelled call's answer
            outcome()

    def post(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the call was abandoned
            loop.call_soon_threadsafe(settle, outcome)

    def work() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, as to_thread does
            post(functools.partial(answer.set_exception, exc))
        else:
            post(functools.partial(answer.set_result, value))

    threading.Thread(target=work, name=f"call-{getattr(fn, '__name__', 'fn')}", daemon=True).start()
    return await answer
