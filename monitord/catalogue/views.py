"""The catalogue as the command line lists it: services and sync runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from monitord.redact import mask_url
from monitord.store import Store
from monitord.store.models import Service, SyncRun


def service_rows(store: Store, *, include_gone: bool = True) -> list[dict[str, Any]]:
    """Every service the store holds, as plain dicts (for the CLI and the API), a password or
    token in a URL masked."""
    with store.session() as session:
        services = session.scalars(select(Service).order_by(Service.id)).all()
        return [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "url": mask_url(s.url) if s.url else None,
                "type": s.type,
                "permission": s.permission,
                "source": s.source,
                "provider": s.provider,
                "coverage": s.coverage,
                "filing_problems": s.filing_problems,
                "unknown_values": s.unknown_values,
                "gone": s.gone,
                "gone_at": s.gone_at.isoformat() if s.gone_at else None,
                "updated_at": s.updated_at.isoformat() if s.updated_at else None,
                "last_seen": s.last_seen.isoformat(),
            }
            for s in services
            if include_gone or not s.gone
        ]


def sync_rows(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The newest sync runs first, as plain dicts."""
    with store.session() as session:
        runs = session.scalars(select(SyncRun).order_by(SyncRun.id.desc()).limit(limit)).all()
        return [
            {
                "id": r.id,
                "started_at": r.started_at.isoformat(),
                "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                "outcome": r.outcome,
                "reason": r.reason,
                "source": r.source,
                "services_seen": r.services_seen,
                "added": r.added,
                "changed": r.changed,
                "gone": r.gone,
                "warnings": r.warnings,
            }
            for r in runs
        ]
