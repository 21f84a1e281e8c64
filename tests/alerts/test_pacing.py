"""Planning one pass for a paced chat channel."""

from __future__ import annotations

import datetime as dt

from alerts.pacing import plan
from monitord.timeutil import UTC

NOW = dt.datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def test_within_the_rate_every_alert_goes_alone() -> None:
    assert plan([1, 2, 3], [ago(5)], 20, NOW).singles == [1, 2, 3]


def test_over_the_rate_the_last_message_of_the_minute_is_a_digest_of_the_rest() -> None:
    sent = [ago(10)] * 15  # five messages left this minute
    p = plan(list(range(1, 41)), sent, 20, NOW)
    assert p.singles == [1, 2, 3, 4]
    assert p.digest == list(range(5, 41))


def test_a_full_minute_waits_until_the_oldest_message_leaves_the_window() -> None:
    sent = [ago(50)] + [ago(10)] * 19
    p = plan([1, 2], sent, 20, NOW)
    assert (p.singles, p.digest) == ([], [])
    assert p.wait_until == NOW + dt.timedelta(seconds=10)


def test_one_message_of_room_folds_everything_due() -> None:
    assert plan([7, 8, 9], [ago(1)] * 19, 20, NOW).digest == [7, 8, 9]


def test_messages_older_than_a_minute_do_not_count_and_no_rate_means_no_limit() -> None:
    assert plan([1, 2], [ago(61)] * 20, 20, NOW).singles == [1, 2]
    assert plan(list(range(100)), [], None, NOW).singles == list(range(100))
