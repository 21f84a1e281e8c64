"""What the chat robots answer: DingTalk's and WeCom's refusals come in the body of an HTTP 200.

DingTalk's custom robot and WeCom's group robot answer every request with HTTP 200 and say in
the JSON body whether they took the message: `{"errcode": 0, "errmsg": "ok"}`, or a refusal
such as 310000 (keywords not in content), 130101 (sent too fast), 40058 (content too long) or
45009 (too many requests). apprise's plugins for them look only at the HTTP status (its Feishu
and Lark plugins read the body's `code`), so apprise calls a refused message sent. monitord reads
the body itself.

To see the body, `answers_recorded` gathers the responses requests receives within it. requests
sends every request, whether through `requests.post` or a session, by `Session.send`, which is
wrapped once for that; the wrapper records only inside the block (a context variable, carried
into the `asyncio.to_thread` call that runs apprise), so every other use of requests is left as
it was. This relies on requests' public `Session.send` alone, not on the inside of a plugin.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests

ERRCODE_SCHEMES = frozenset({"dingtalk", "wecombot"})
"""Robots that answer HTTP 200 and put their refusal in the body's errcode."""

_answers: contextvars.ContextVar[list[requests.Response] | None] = contextvars.ContextVar(
    "robot_answers", default=None
)
_unrecorded_send = requests.Session.send


def _send_recorded(
    self: requests.Session, request: requests.PreparedRequest, **kwargs: Any
) -> requests.Response:
    """requests.Session.send, keeping the response inside `answers_recorded`."""
    response = _unrecorded_send(self, request, **kwargs)
    answers = _answers.get()
    if answers is not None:
        answers.append(response)
    return response


@contextmanager
def answers_recorded() -> Iterator[list[requests.Response]]:
    """Within the block, the responses requests receives on this thread (and in
    `asyncio.to_thread` calls made from it) gather in the list yielded."""
    if requests.Session.send is not _send_recorded:
        requests.Session.send = _send_recorded  # type: ignore[method-assign]
    answers: list[requests.Response] = []
    token = _answers.set(answers)
    try:
        yield answers
    finally:
        _answers.reset(token)


def robot_refusal(scheme: str, answers: list[requests.Response]) -> str | None:
    """What a robot said when it refused a message apprise counted as sent, or None.

    Only DingTalk's and WeCom's robots are read: any other answer is apprise's to judge."""
    if scheme not in ERRCODE_SCHEMES:
        return None
    for answer in answers:
        try:
            said = answer.json()
        except ValueError:
            continue  # not JSON: not the robot's API answering
        if not isinstance(said, dict):
            continue
        code = said.get("errcode", 0)
        if code not in (0, "0"):
            return f"{scheme} refused the message: errcode {code} ({said.get('errmsg', '')})"
    return None
