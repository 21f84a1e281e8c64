"""The arithmetic of pacing one chat channel."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import event

from alerts.delivery import deliver_due, digest_key, make_apprise_sender
from alerts.pacing import DIGEST_MAX, batch_size, room, room_again
from monitord.config import Settings, parse_config
from monitord.incidents import open_manual
from monitord.store import Store
from monitord.store.models import OutboxAlert, Service
from monitord.timeutil import UTC
from tests.conftest import FakeClock, query_plan
from tests.receivers import Webhook

NOW = dt.datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


def test_only_the_last_minutes_messages_take_room() -> None:
    assert room([ago(61), ago(59), ago(1)], 20, NOW) == 18


def test_a_full_channel_has_room_again_when_its_oldest_message_leaves_the_window() -> None:
    sent = [ago(50)] + [ago(10)] * 19
    assert room(sent, 20, NOW) == 0
    assert room_again(sent, 20, NOW) == NOW + dt.timedelta(seconds=10)


def test_alerts_go_one_by_one_while_the_minute_has_room_for_each() -> None:
    assert batch_size(backlog=5, room_left=5) == 1


def test_a_backlog_larger_than_the_room_goes_in_digests() -> None:
    assert batch_size(backlog=60, room_left=20) == DIGEST_MAX
    assert batch_size(backlog=3, room_left=1) == 3
    assert batch_size(backlog=3, room_left=0) == 0


async def test_sixty_alerts_in_a_minute_reach_a_paced_channel_within_its_rate_and_whole(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A channel paced as DingTalk's robot is: 20 messages a minute (a json:// webhook stands in
    # for DingTalk, whose API host apprise fixes).
    url = hook.url.replace("http://", "json://") + "/robot"
    cfg = parse_config(
        {"alerts": {"oncall": [url], "rate_per_minute": {"json": 20}}}, "test", env={}
    )
    with sqlite_store.session() as session:
        for n in range(60):
            session.add(
                Service(id=f"svc-{n:04d}", name=f"服务{n}", first_seen=clock(), last_seen=clock())
            )
    arrivals: list[dt.datetime] = []
    sender = make_apprise_sender(None)
    for second in range(0, 150, 5):  # a delivery pass every 5 s; 60 incidents in the first minute
        with sqlite_store.session() as session:
            for n in range(second // 5 * 5, min(60, second // 5 * 5 + 5)):
                open_manual(
                    session,
                    cfg,
                    "data_exposure",
                    [f"svc-{n:04d}"],
                    f"第 {n} 号事件",
                    "ops",
                    clock(),
                )
        before = len(hook.received)
        await deliver_due(sqlite_store, cfg, clock, sender)
        arrivals += [clock()] * (len(hook.received) - before)
        clock.advance(seconds=5)

    for i, at in enumerate(arrivals):  # never more than 20 in any minute
        assert sum(1 for t in arrivals[i:] if t - at < dt.timedelta(minutes=1)) <= 20
    text = "\n".join(f"{m['title']}\n{m['message']}" for m in hook.received)
    for n in range(1, 61):  # every alert's content and key, in a message of its own or a digest
        assert f"编号 incident:{n}:opened" in text
        assert f"第 {n - 1} 号事件" in text
    assert any(m["title"].startswith("【告警汇总】") for m in hook.received)
    assert len(hook.received) < 60
    assert arrivals[-1] - arrivals[0] <= dt.timedelta(minutes=2)  # none waited past a window


def test_a_flood_on_a_channel_without_a_rate_goes_in_digests() -> None:
    assert batch_size(backlog=9, room_left=9, flood=10) == 1
    assert batch_size(backlog=50, room_left=50, flood=10) == DIGEST_MAX


def _webhook_config(hook: Webhook) -> Settings:
    return parse_config({"alerts": {"oncall": [hook.apprise_url()]}}, "test", env={})


def _open_incidents(store: Store, cfg: Settings, clock: FakeClock, first: int, count: int) -> None:
    """Incidents `first`… of as many services, opened by hand: one alert each to on-call."""
    with store.session() as session:
        for n in range(first, first + count):
            session.add(
                Service(id=f"svc-{n:04d}", name=f"服务{n}", first_seen=clock(), last_seen=clock())
            )
        for n in range(first, first + count):
            open_manual(
                session, cfg, "data_exposure", [f"svc-{n:04d}"], f"第 {n} 号事件", "ops", clock()
            )


async def _incidents_at_once(store: Store, clock: FakeClock, hook: Webhook, count: int) -> None:
    cfg = _webhook_config(hook)
    _open_incidents(store, cfg, clock, 0, count)
    await deliver_due(store, cfg, clock, make_apprise_sender(None))


async def test_thirty_alerts_due_at_once_on_a_webhook_arrive_as_a_few_whole_digests(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    await _incidents_at_once(sqlite_store, clock, hook, 30)

    assert len(hook.received) == 4  # 8 + 8 + 8 + 6, not thirty pings
    assert all(m["title"].endswith("条告警（同时到达，合并发送）") for m in hook.received)
    text = "\n".join(f"{m['title']}\n{m['message']}" for m in hook.received)
    for n in range(1, 31):
        assert f"编号 incident:{n}:opened" in text
        assert f"第 {n - 1} 号事件" in text


async def test_a_few_alerts_due_at_once_on_a_webhook_still_go_one_each(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    await _incidents_at_once(sqlite_store, clock, hook, 5)

    assert len(hook.received) == 5
    assert not any(m["title"].startswith("【告警汇总】") for m in hook.received)


async def test_a_failed_digest_keeps_its_oldest_alert_first_once_the_channel_is_back(
    sqlite_store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # A digest's copies were recorded one by one, each with a backoff of its own attempts: the
    # newer ones (first try, 15 s) came due before the older one that led it (second try, 30 s)
    # and went out ahead of it.
    cfg = _webhook_config(hook)
    send = make_apprise_sender(None)

    hook.failing = True
    _open_incidents(sqlite_store, cfg, clock, 0, 1)
    await deliver_due(sqlite_store, cfg, clock, send)  # incident 1's opening fails once
    _open_incidents(sqlite_store, cfg, clock, 1, 11)
    clock.advance(seconds=15)
    await deliver_due(sqlite_store, cfg, clock, send)  # a digest led by it fails
    hook.failing = False
    clock.advance(seconds=15)
    await deliver_due(sqlite_store, cfg, clock, send)
    assert hook.received == []  # nothing overtakes incident 1's opening
    clock.advance(seconds=15)
    await deliver_due(sqlite_store, cfg, clock, send)
    keys = [
        int(n)
        for m in hook.received
        for n in re.findall(r"编号 incident:(\d+):opened", m["message"])
    ]
    assert keys == list(range(1, 13))


def test_a_digest_rebuilt_with_other_alerts_goes_under_another_key() -> None:
    # A receiver drops a repeat by its key: a retried digest that took alerts queued since
    # carried the same key and its new alerts were dropped.
    copies = [OutboxAlert(idempotency_key=f"incident:{n}:opened#ab12") for n in (1, 2, 3)]
    assert digest_key(copies[:2]) == digest_key(copies[:2])
    assert digest_key(copies[:2]) != digest_key(copies)
    assert digest_key(copies).startswith("digest:incident:1:opened#ab12:")


async def test_a_paced_channels_last_minute_is_read_along_an_index_not_every_alert_sent(
    store: Store, clock: FakeClock, hook: Webhook
) -> None:
    # Before each message to a paced channel, and before a digest, the worker counts what the
    # channel was sent in the last minute. The outbox is never purged, and the only index those
    # queries could take (on state) led to every alert ever delivered: after months of running,
    # tens of thousands of rows read in each pass.
    cfg = parse_config(
        {"alerts": {"oncall": [hook.apprise_url()], "rate_per_minute": {"json": 20}}},
        "test",
        env={},
    )
    _open_incidents(store, cfg, clock, 0, 3)
    lately: list[tuple[str, object]] = []

    def seen(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        if "alert_outbox.delivered_at >" in statement:
            lately.append((statement, params))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        await deliver_due(store, cfg, clock, make_apprise_sender(None))
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    assert len(hook.received) == 3
    # The times of the minute's messages (pacing) and their count (could a digest go?).
    assert {statement.split()[1] for statement, _ in lately} == {
        "alert_outbox.delivered_at,",
        "count(*)",
    }
    for statement, params in lately:
        plan = query_plan(store, statement, params)
        if store.engine.dialect.name == "sqlite":  # SEARCH … USING INDEX … (… delivered_at>?)
            assert "USING INDEX" in plan and "delivered_at>?" in plan, plan
        else:  # Index Cond: ((state = …) AND (delivered_at > …))
            assert "Seq Scan" not in plan, plan
            assert any(
                "Index Cond" in step and "delivered_at >" in step for step in plan.split(" / ")
            ), plan
