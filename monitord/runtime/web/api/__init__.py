"""The JSON API under /api/v1/, a module per resource, described by the OpenAPI document at
/api/v1/openapi.json that is built from the routes themselves (see openapi.py).

Roles: viewer reads; oncall acknowledges, notifies and resolves; admin accepts findings and
triggers scans. Every write goes through the function the CLI calls, which puts it in the audit
trail under the token's name.
"""

from __future__ import annotations

from monitord.runtime.web.api import cluster, findings, incidents, meta, quarterly, scans, services

ROUTES = (
    *meta.ROUTES,
    *services.ROUTES,
    *incidents.ROUTES,
    *findings.ROUTES,
    *scans.ROUTES,
    *quarterly.ROUTES,
    *cluster.ROUTES,
)
