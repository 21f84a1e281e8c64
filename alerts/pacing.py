"""Pacing a chat channel: never more messages in a minute than its service takes.

DingTalk's custom robot takes 20 messages a minute and then blocks the robot for ten minutes;
WeCom's group robot takes 20 a minute; Feishu's custom bot 100 a minute. A storm of alerts sent
one by one would silence the channel exactly when it matters. So while more alerts are due for a
channel than its minute has room for, each message carries several of them (a digest listing
each in full); when the minute is full, the rest wait for room. Nothing is dropped, and nothing
waits longer than the pacing window. The rates are `[alerts] rate_per_minute`, by URL scheme.

A channel without a rate (a webhook, e-mail) is folded the same way when a flood is due for it
at once (`[alerts] storm_threshold` alerts or more: the escalations and recoveries of fifty
services behind one gateway), so it is not fifty pings in a row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

WINDOW = dt.timedelta(minutes=1)
DIGEST_MAX = 8
"""Alerts one digest carries at most; fewer when they do not fit the channel's message size
(alerts.robots.TEXT_BUDGETS: WeCom's robot takes 2,048 bytes): the rest go in the next one."""


def room(sent: Sequence[dt.datetime], per_minute: int, now: dt.datetime) -> int:
    """How many more messages the channel takes in the minute up to now."""
    return per_minute - sum(1 for t in sent if now - t < WINDOW)


def room_again(sent: Sequence[dt.datetime], per_minute: int, now: dt.datetime) -> dt.datetime:
    """When a full channel has room again: the oldest of its last `per_minute` messages
    leaves the window."""
    recent = sorted(t for t in sent if now - t < WINDOW)
    return recent[-per_minute] + WINDOW if len(recent) >= per_minute else now


def batch_size(backlog: int, room_left: int, flood: int | None = None, lately: int = 0) -> int:
    """How many due alerts the next message to a channel carries: one each while the minute
    has room for all of them and they, with the `lately` sent in the last minute, are fewer
    than a `flood`; else a digest of up to DIGEST_MAX (0: wait for room)."""
    if room_left <= 0:
        return 0
    if backlog <= room_left and (flood is None or backlog + lately < flood):
        return 1
    return min(backlog, DIGEST_MAX)
