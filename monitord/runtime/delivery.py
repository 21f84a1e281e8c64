"""Alert delivery as the runtime wires it: the outbox, the settings' channels, apprise."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from monitord.store import Store
from monitord.store.models import OutboxAlert

if TYPE_CHECKING:
    from alerts.delivery import DeliveryReport
    from monitord.runtime.app import App


def outbox_idle(store: Store) -> bool:
    """Whether the outbox holds nothing to expand, send or release: no alert pending or sending.

    One indexed query: the delivery job runs every few seconds, and a pass of its own opens
    a handful of sessions even when there is nothing to do.
    """
    with store.session() as session:
        busy = session.scalar(
            select(OutboxAlert.id).where(OutboxAlert.state.in_(("pending", "sending"))).limit(1)
        )
    return busy is None


async def deliver_alerts(app: App, **only: Any) -> DeliveryReport:
    """Deliver due alerts from the outbox through apprise; `only` narrows what is due
    (alerts.delivery.deliver_due's incident_id, kinds, limit)."""
    # Imported on first use: commands that send nothing do not load apprise.
    from alerts.delivery import DeliveryReport, deliver_due, make_apprise_sender

    if await asyncio.to_thread(outbox_idle, app.store):
        return DeliveryReport(delivered=0, failed=0, waiting=0)
    secret = app.settings.secrets.smtp_password
    sender = make_apprise_sender(secret.get_secret_value() if secret else None)
    return await deliver_due(app.store, app.settings, app.clock, sender, **only)
