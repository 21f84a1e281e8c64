"""An existing store upgraded: the outbox rows an older monitord wrote are kept and delivered."""

from __future__ import annotations

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import select, text

from monitord.models import OutboxAlert
from monitord.store import MIGRATIONS, Store, open_store

ROW = (
    "insert into alert_outbox (idempotency_key, channel, kind, payload, parent_id, title, body,"
    " created_at, next_attempt_at, attempts, state) values (:key, :channel, 'opened', '{}',"
    " :parent, '', '', '2026-11-02 01:00:00', '2026-11-02 01:00:00', 0, :state)"
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
