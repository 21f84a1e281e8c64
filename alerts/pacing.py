"""Pacing a chat channel: never more messages in a minute than its service takes.

DingTalk's custom robot takes 20 messages a minute and then blocks the robot for ten minutes;
WeCom's group robot takes 20 a minute; Feishu's custom bot 100 a minute. A storm of alerts sent
one by one would silence the channel exactly when it matters. So each pass plans, per channel:
as many single messages as the minute still allows, and, when more are due than that, the rest
folded into one digest message that lists them all. Nothing is dropped, and nothing waits longer
than the pacing window for room.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

WINDOW = dt.timedelta(minutes=1)
DEFAULT_PER_MINUTE: dict[str, int] = {"dingtalk": 20, "wecombot": 20, "feishu": 100}
"""Messages a minute each chat service takes from one robot, by apprise URL scheme."""


@dataclass(frozen=True)
class Plan:
    """What to send to one channel in this pass."""

    singles: list[int] = field(default_factory=list)
    """Outbox row ids to send one message each, in this order."""
    digest: list[int] = field(default_factory=list)
    """Outbox row ids to fold into one message (never a single row)."""
    wait_until: dt.datetime | None = None
    """When the channel has room again, for the rows this pass cannot send."""


def plan(
    due: Sequence[int], sent: Sequence[dt.datetime], per_minute: int | None, now: dt.datetime
) -> Plan:
    """Plan one pass for a channel: `due` row ids (most urgent first), the times of the
    messages it was sent in the last minute, and its rate (None: no limit)."""
    if per_minute is None or not due:
        return Plan(singles=list(due))
    recent = sorted(t for t in sent if now - t < WINDOW)
    room = per_minute - len(recent)
    if room <= 0:
        return Plan(wait_until=recent[-per_minute] + WINDOW if recent else now)
    if len(due) <= room:
        return Plan(singles=list(due))
    if room == 1:
        return Plan(digest=list(due))
    # room - 1 messages one by one, the last message of the minute a digest of the rest
    return Plan(singles=list(due[: room - 1]), digest=list(due[room - 1 :]))
