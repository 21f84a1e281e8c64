"""What the chat robots take and answer: a byte budget for a message, and the refusals DingTalk's
and WeCom's robots put in the body of an HTTP 200.

A robot refuses a message past its size (WeCom: content of 2,048 bytes of UTF-8; DingTalk: 20,000
bytes; Feishu and Lark: a request of 20 KB), and apprise sends what it is given as it is
(overflow `upstream`). So monitord sizes its messages itself: a digest takes the alerts that fit
(`fits`), and a message that does not fit goes in numbered parts (`in_parts`), each whole lines
where it can, never a UTF-8 character cut in two: a 7.3.3 notification arrives whole.

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

from alerts.templates import Message

TEXT_BUDGETS = {"wecombot": 2048, "dingtalk": 9000, "feishu": 9000, "lark": 9000}
"""The UTF-8 bytes of one message (title, line break and body, as apprise joins them), by scheme.
WeCom counts the content: 2,048. DingTalk's limit is 20,000 bytes and Feishu's and Lark's a
20 KB request; apprise writes DingTalk's JSON with every Chinese character as a \\uXXXX escape
(6 bytes for UTF-8's 3), so 9,000 bytes of text stay under the limit however it is counted."""
_PART_MARK_BYTES = len("（999/999）".encode())
"""Room kept in a part's title for its number."""

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


def text_budget(scheme: str) -> int | None:
    """The bytes one message to a channel of this scheme may take, None when unbounded."""
    return TEXT_BUDGETS.get(scheme.lower())


def text_bytes(message: Message) -> int:
    """The UTF-8 bytes of a message as a robot counts it: title, line break, body."""
    return len(f"{message.title}\r\n{message.body}".encode())


def fits(message: Message, budget: int | None) -> bool:
    """Whether a message fits a channel's budget (any message fits no budget)."""
    return budget is None or text_bytes(message) <= budget


def cut_utf8(text: str, size: int) -> str:
    """The longest start of text that takes at most `size` UTF-8 bytes, no character cut."""
    return text.encode()[:size].decode("utf-8", errors="ignore")


def _chunks(body: str, room: int) -> list[str]:
    """body in pieces of at most `room` bytes, cut between lines where a line fits."""
    chunks: list[str] = []
    current = ""
    for line in body.split("\n"):
        while len(line.encode()) > room:  # a line longer than a whole part: cut it
            if current:
                chunks.append(current)
                current = ""
            head = cut_utf8(line, room)
            chunks.append(head)
            line = line[len(head) :]
        joined = f"{current}\n{line}" if current else line
        if current and len(joined.encode()) > room:
            chunks.append(current)
            joined = line
        current = joined
    if current or not chunks:
        chunks.append(current)
    return chunks


def in_parts(message: Message, budget: int | None) -> list[Message]:
    """The message as it goes to a channel with this budget: itself when it fits, else numbered
    parts (title （1/3）, （2/3）...), each within the budget, that together carry all of it."""
    if fits(message, budget) or budget is None:
        return [message]
    title = cut_utf8(message.title, budget // 4)  # a title never leaves no room for the text
    room = budget - len(f"{title}\r\n".encode()) - _PART_MARK_BYTES
    chunks = _chunks(message.body, room)
    total = len(chunks)
    return [
        Message(f"{title}（{n}/{total}）", chunk, message.attachments)
        for n, chunk in enumerate(chunks, 1)
    ]
