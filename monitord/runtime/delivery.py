"""Alert delivery as the runtime wires it: the outbox, the settings' channels, apprise."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.delivery import DeliveryReport
    from monitord.runtime.app import App


async def deliver_alerts(app: App, **only: Any) -> DeliveryReport:
    """Deliver due alerts from the outbox through apprise; `only` narrows what is due
    (alerts.delivery.deliver_due's incident_id, kinds, limit)."""
    # Imported on first use: commands that send nothing do not load apprise.
    from alerts.delivery import deliver_due, make_apprise_sender

    secret = app.settings.secrets.smtp_password
    sender = make_apprise_sender(secret.get_secret_value() if secret else None)
    return await deliver_due(app.store, app.settings, app.clock, sender, **only)
