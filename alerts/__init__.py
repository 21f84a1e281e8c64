"""Alerts: routing audiences to apprise URLs, Chinese templates, and delivery from the outbox."""
