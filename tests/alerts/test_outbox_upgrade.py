"""An existing store upgraded: the outbox rows an older monitord wrote are kept and delivered."""

from __future__ import annotations

import hashlib

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import select, text

from alerts.delivery import deliver_due, make_apprise_sender
from monitord.config import parse_config
from monitord.store import MIGRATIONS, Store, open_store
from monitord.store.models import OutboxAlert
from tests.conftest import FakeClock
from tests.receivers import serve_webhook

ROW = (
    "insert into alert_outbox (idempotency_key, channel, kind, payload, parent_id, title, body,"
    " created_at, next_attempt_at, attempts, state) values (:key, :channel, 'opened', '{}',"
    " :parent, '【可用性事件】#1', '正文', '2026-11-02 01:00:00', '2026-11-02 01:00:00', 0, :state)"
)


def store_at_0005(url: str, rows: list[dict[str, object]]) -> None:
    """A store as monitord left it before the outbox kept channel names, holding `rows`."""
    old = Store(url)
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
        for row in rows:
            connection.execute(text(ROW), {"parent": None, **row})
    old.dispose()


def test_an_alert_marked_nobody_by_an_older_monitord_waits_pending(store_url: str) -> None:
    store_at_0005(store_url, [{"key": "incident:1:opened", "channel": "oncall", "state": "nobody"}])
    upgraded = open_store(store_url)
    with upgraded.session() as session:
        states = session.scalars(select(OutboxAlert.state)).all()
    upgraded.dispose()
    assert states == ["pending"]


async def test_copies_an_older_monitord_wrote_with_urls_lose_their_secrets_and_still_go_out(
    store_url: str, clock: FakeClock
) -> None:
    async with serve_webhook() as hook:
        url = hook.apprise_url("oncall").replace("json://", "json://bot:s3cr3t-w3bh00k@")
        key = f"incident:1:opened#{hashlib.sha256(url.encode()).hexdigest()[:10]}"
        store_at_0005(
            store_url,
            [
                {"key": "incident:1:opened", "channel": "oncall", "state": "expanded"},
                {"key": key, "channel": url, "state": "pending", "parent": 1},
                {"key": "incident:0:opened#1", "channel": url, "state": "delivered", "parent": 1},
            ],
        )
        upgraded = open_store(store_url)
        with upgraded.session() as session:
            channels = session.scalars(select(OutboxAlert.channel)).all()
        assert not any("s3cr3t" in channel for channel in channels)
        cfg = parse_config({"alerts": {"oncall": [url]}}, "test", env={})
        for _ in range(2):
            await deliver_due(upgraded, cfg, clock, make_apprise_sender(None))
        upgraded.dispose()
    assert [m["key"] for m in hook.received] == [key]
