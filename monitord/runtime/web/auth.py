"""Who is asking: API tokens, their roles, and the check every protected handler makes.

Tokens live in the config only as their SHA-256 (`[[api.tokens]]`), so the config file never
holds a secret; a client sends the token itself as `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from monitord.config import API_ROLES, ApiRole, ApiSettings, ApiToken

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CALLER = web.RequestKey("caller", ApiToken)
"""The token a request was authenticated with, set by `require`."""


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The hex SHA-256 of a token, as `[[api.tokens]] sha256` holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


def identify(settings: ApiSettings, token: str) -> ApiToken | None:
    """The configured token that `token` is, or None. Compares every hash in constant time."""
    digest = token_hash(token)
    found = None
    for candidate in settings.tokens:
        if hmac.compare_digest(candidate.sha256, digest):
            found = candidate
    return found


def bearer(request: web.Request) -> str | None:
    """The token of a request's `Authorization: Bearer …` header, if it has one."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def allows(role: ApiRole, needed: ApiRole) -> bool:
    """Whether a token of `role` may do what needs `needed` (viewer < oncall < admin)."""
    return API_ROLES.index(role) >= API_ROLES.index(needed)
